"""The trader's controls end to end: pause and resume, cancel, positions, equity, exports.

Real ccxt against the emulator over loopback, a USDT account set up as a trader
writes it (the bot's own account ids, defaults), the sidecar's HTTP API and the
``nija-broker`` commands a trader types.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.emulator._kraken_names import order_txid
from adapters.sim import SimEngine
from adapters.sim.faults import FaultKind, FaultPlan
from nija_broker.core.clock import SystemClock
from nija_broker.core.events import AccountPaused, AccountResumed
from nija_broker.core.models import (
    EquityPoint,
    Fill,
    Market,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TradeRecord,
)
from nija_broker.service.cli import main
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

pytestmark = pytest.mark.integration

PLATFORM, ALICE = "PLATFORM", "USER:alice"
KEYS = {
    PLATFORM: ("platform-key-01", "platform-secret-01"),
    ALICE: ("alice-key-01", "alice-secret-01"),
}
ENV = {
    "PLATFORM_KEY": KEYS[PLATFORM][0],
    "PLATFORM_SECRET": KEYS[PLATFORM][1],
    "ALICE_KEY": KEYS[ALICE][0],
    "ALICE_SECRET": KEYS[ALICE][1],
}
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
FAST = ReconcilerSettings(
    poll_interval_s=0.2,
    balance_interval_s=0.2,
    visibility_window_s=0.0,
    call_timeout_s=5.0,
    full_listing_interval_s=1.0,
)


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(BTC, 50_000.0, volatility=0.0)
    engine.open_account(PLATFORM, {"USDT": 10_000.0, "BTC": 0.01})
    engine.open_account(ALICE, {"USDT": 100.0})
    async with EmulatorServer(engine, KEYS, faults=FaultPlan()) as server:
        yield server


def _config(url: str, tmp_path: Path) -> Any:
    return parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"host": "127.0.0.1", "port": 0},
            "accounts": [
                {
                    "id": account_id,
                    "exchange": "binance",
                    "api_key_env": f"{env}_KEY",
                    "secret_env": f"{env}_SECRET",
                    "quote_currency": "USDT",
                    "ccxt": binance_ccxt_config(url),
                }
                for account_id, env in ((PLATFORM, "PLATFORM"), (ALICE, "ALICE"))
            ],
        }
    )


async def _until(predicate: Any, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state another task owns
            await asyncio.sleep(0.05)


async def _call(
    broker: Broker, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    assert broker.api is not None
    url = f"{broker.api.url}{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return r.status, await r.json()


async def _text(broker: Broker, path: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    assert broker.api is not None
    url = f"{broker.api.url}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.text(), dict(r.headers)


def _entry(account: str = ALICE, size_usd: float = 10.0) -> dict[str, Any]:
    return {"account_id": account, "symbol": "BTC/USDT", "side": "buy", "size_usd": size_usd}


def _exit(account: str = PLATFORM) -> dict[str, Any]:
    return {
        "account_id": account,
        "symbol": "BTC/USDT",
        "side": "sell",
        "amount": 0.001,
        "role": "exit",
    }


def _resting(engine: SimEngine, account: str = PLATFORM, price: float = 40_000.0) -> Order:
    """A limit buy below the market, placed straight on the exchange (as the live bot does)."""
    return engine.place_order(
        account,
        OrderRequest(
            symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.001, price=price
        ),
    )


# ---------------------------------------------------------------------------- pause


@pytest.mark.asyncio
async def test_a_paused_account_gets_no_entry_exits_pass_and_the_pause_survives_a_restart(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = _config(emulator.url, tmp_path)
    async with Broker(config, environ=ENV, reconciler_settings=FAST) as broker:
        events = broker.reconciler.subscribe()  # type: ignore[union-attr]
        status, answer = await _call(
            broker,
            "POST",
            f"/v1/accounts/{PLATFORM}/pause",
            {"by": "dana", "reason": "CPI at 14:30"},
        )
        assert status == 200
        assert (answer["paused"], answer["by"]) == (True, "dana")

        # A STANDARD account no other rule would stop: only the pause blocks it.
        status, check = await _call(broker, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert (check["allowed"], check["rule"]) == (False, "paused")
        assert "paused by dana" in check["reason"]
        assert "CPI at 14:30" in check["reason"]
        status, check = await _call(broker, "POST", "/v1/guard/check", _exit())
        assert check["allowed"] is True
        # The other account is not paused.
        status, check = await _call(broker, "POST", "/v1/guard/check", _entry(ALICE))
        assert check["rule"] != "paused"

        status, row = await _call(broker, "GET", f"/v1/accounts/{PLATFORM}")
        assert (row["paused"], row["paused_by"], row["pause_reason"]) == (
            True,
            "dana",
            "CPI at 14:30",
        )
        assert row["last_block"]["rule"] == "paused"
        paused = await anext(e async for e in events if isinstance(e, AccountPaused))
        assert (paused.account_id, paused.by) == (PLATFORM, "dana")

    async with Broker(config, environ=ENV, reconciler_settings=FAST) as again:
        status, check = await _call(again, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert check["rule"] == "paused"
        events = again.reconciler.subscribe()  # type: ignore[union-attr]
        status, answer = await _call(
            again, "POST", f"/v1/accounts/{PLATFORM}/resume", {"by": "dana"}
        )
        assert (status, answer["unpaused"], answer["paused"]) == (200, True, False)
        status, check = await _call(again, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert check["allowed"] is True
        resumed = await anext(e async for e in events if isinstance(e, AccountResumed))
        assert resumed.by == "dana"
        assert again.store is not None
        journal = again.store.pause_events(PLATFORM)
        assert [(r.kind, r.by) for r in journal] == [("resumed", "dana"), ("paused", "dana")]


@pytest.mark.asyncio
async def test_pause_refuses_a_bad_body_naming_the_field_and_an_unknown_account(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/pause", {"by": "dana\nrm -rf"}
        )
        assert (status, answer["field"]) == (422, "by")
        status, answer = await _call(broker, "POST", f"/v1/accounts/{PLATFORM}/pause", {"x": 1})
        assert (status, answer["field"]) == (422, "x")
        status, answer = await _call(broker, "POST", "/v1/accounts/USER:nobody/pause", {})
        assert (status, answer["field"]) == (404, "account_id")
        status, check = await _call(broker, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert check["allowed"] is True  # nothing was paused by the refused calls


# ---------------------------------------------------------------------------- cancel


@pytest.mark.asyncio
async def test_cancel_goes_through_the_exchange_and_is_booked_on_its_answer(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        order = _resting(emulator.engine)
        book = broker.books.get(PLATFORM)  # type: ignore[union-attr]
        await _until(lambda: book.orders.get(order.id) is not None)

        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/orders/{order.id}/cancel"
        )
        assert (status, answer["confirmed"], answer["status"]) == (200, True, "cancelled")
        assert emulator.engine.get_order(PLATFORM, order.id).status is OrderStatus.CANCELLED
        assert book.orders.get(order.id).status is OrderStatus.CANCELLED  # type: ignore[union-attr]

        # Again: nothing is sent, the answer says so.
        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/orders/{order.id}/cancel"
        )
        assert (status, answer["sent"], answer["confirmed"]) == (200, False, True)
        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/orders/no-such-order/cancel"
        )
        assert (status, answer["field"]) == (404, "order_id")


@pytest.mark.asyncio
async def test_a_cancel_the_exchange_does_not_answer_leaves_the_order_open(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        order = _resting(emulator.engine)
        book = broker.books.get(PLATFORM)  # type: ignore[union-attr]
        await _until(lambda: book.orders.get(order.id) is not None)
        assert emulator.faults is not None
        emulator.faults.set_plan(
            FaultPlan(
                rate=1.0,
                kinds=frozenset({FaultKind.SERVER_ERROR}),
                methods=frozenset({"cancel_order"}),
            )
        )
        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/orders/{order.id}/cancel"
        )
        assert (status, answer["confirmed"], answer["status"]) == (502, False, "open")
        assert book.orders.get(order.id).status is OrderStatus.OPEN  # type: ignore[union-attr]
        assert emulator.engine.get_order(PLATFORM, order.id).status is OrderStatus.OPEN


@pytest.mark.asyncio
async def test_a_cancel_that_arrives_after_the_fill_books_the_fill_once(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        order = _resting(emulator.engine, price=49_000.0)
        book = broker.books.get(PLATFORM)  # type: ignore[union-attr]
        await _until(lambda: book.orders.get(order.id) is not None)
        # The exchange fills it; the cancel reaches the exchange after that.
        emulator.engine.set_price("BTC/USDT", 48_000.0)
        status, answer = await _call(
            broker, "POST", f"/v1/accounts/{PLATFORM}/orders/{order.id}/cancel"
        )
        # The exchange refused the cancel (409: the order is filled there), or the poll saw
        # the fill first (nothing sent): either way the order ends filled, never cancelled.
        assert (status, answer["sent"]) in {(409, True), (200, False)}
        await _until(
            lambda: book.orders.get(order.id).status is OrderStatus.FILLED  # type: ignore[union-attr]
        )
        assert broker.store is not None
        fills = [f for f in broker.store.fills(PLATFORM) if f.order_id == order.id]
        assert sum(f.amount for f in fills) == pytest.approx(0.001)


@pytest.mark.asyncio
async def test_cancel_and_pause_from_the_command_line(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        assert broker.api is not None
        url = broker.api.url
        order = _resting(emulator.engine)
        book = broker.books.get(PLATFORM)  # type: ignore[union-attr]
        await _until(lambda: book.orders.get(order.id) is not None)

        # A thread: the commands block on HTTP, and the cancel needs this loop.
        argv = ["--account", PLATFORM, "--url", url]
        assert await asyncio.to_thread(main, ["orders", *argv]) == 0
        assert order.id in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["cancel", *argv, order.id]) == 0
        assert "cancelled, the exchange confirms" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["cancel", *argv, "nope"]) == 2
        assert "tracks no order 'nope'" in capsys.readouterr().err

        assert await asyncio.to_thread(main, ["pause", *argv, "--reason", "news"]) == 0
        assert "entries paused by cli:" in capsys.readouterr().out
        _, check = await _call(broker, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert check["rule"] == "paused"
        assert await asyncio.to_thread(main, ["resume", *argv]) == 0
        assert "pause lifted" in capsys.readouterr().out
        _, check = await _call(broker, "POST", "/v1/guard/check", _entry(PLATFORM, 50.0))
        assert check["allowed"] is True

        assert await asyncio.to_thread(main, ["positions", *argv, "--json"]) == 0
        positions = json.loads(capsys.readouterr().out)
        assert positions["positions"][0]["symbol"] == "BTC/USDT"
        assert await asyncio.to_thread(main, ["trades", *argv]) == 0
        assert "no trades yet" in capsys.readouterr().out


# ---------------------------------------------------------------------------- positions, equity


@pytest.mark.asyncio
async def test_positions_say_what_is_held_and_where_it_is_known_from(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    async with Broker(
        _config(emulator.url, tmp_path), environ=ENV, reconciler_settings=FAST
    ) as broker:
        # PLATFORM holds BTC it bought before the sidecar ran: the balance knows, no fills.
        status, answer = await _call(broker, "GET", f"/v1/accounts/{PLATFORM}/positions")
        (held,) = answer["positions"]
        assert (held["symbol"], held["source"], held["average_cost"]) == (
            "BTC/USDT",
            "exchange",
            None,
        )
        assert held["amount"] == pytest.approx(0.01)
        assert held["value"] == pytest.approx(500.0)
        assert answer["quote_currency"] == "USDT"

        # Alice buys through the guard: booked from the fill, then seen in the balance.
        alice = broker.guarded_exchange(ALICE)
        bought = await alice.create_order(
            OrderRequest(
                symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.0004, price=51_000
            )
        )
        assert bought.status is OrderStatus.FILLED
        alice_book = broker.books.get(ALICE)  # type: ignore[union-attr]
        await _until(lambda: broker.live[ALICE].balances.get("BTC") is not None)
        await _until(lambda: bool(alice_book.ledger.positions()))  # its trades fetched
        status, answer = await _call(broker, "GET", f"/v1/accounts/{ALICE}/positions")
        (held,) = answer["positions"]
        assert held["source"] == "both"
        assert held["ledger_amount"] == pytest.approx(0.0004)
        assert held["average_cost"] == pytest.approx(50_000.0)
        assert held["unrealized_pnl"] == pytest.approx(0.0, abs=1e-6)
        status, row = await _call(broker, "GET", f"/v1/accounts/{ALICE}")
        assert (row["positions"], row["exchange"], row["quote_currency"]) == (
            1,
            "binance",
            "USDT",
        )

        status, curve = await _call(broker, "GET", f"/v1/accounts/{ALICE}/equity?limit=50")
        assert status == 200
        assert curve["points"]
        assert all(p["drawdown_pct"] >= 0 for p in curve["points"])
        times = [p["at"] for p in curve["points"]]
        assert times == sorted(times)


# ---------------------------------------------------------------------------- exports


async def _round_trip(broker: Broker) -> None:
    alice = broker.guarded_exchange(ALICE)
    for side, price in ((Side.BUY, 51_000.0), (Side.SELL, 49_000.0)):
        await alice.create_order(
            OrderRequest(
                symbol="BTC/USDT", side=side, type=OrderType.LIMIT, amount=0.0004, price=price
            )
        )
        if side is Side.BUY:
            await _until(lambda: broker.live[ALICE].balances.get("BTC") is not None)
    book = broker.books.get(ALICE)  # type: ignore[union-attr]
    await _until(lambda: book.performance.trade_count == 1)


@pytest.mark.asyncio
async def test_exports_open_as_csv_with_a_header_from_the_page_and_the_command(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(emulator.url, tmp_path)
    async with Broker(config, environ=ENV, reconciler_settings=FAST) as broker:
        await _round_trip(broker)
        models = {"trades": TradeRecord, "fills": Fill, "orders": Order, "equity": EquityPoint}
        for what, model in models.items():
            status, text, headers = await _text(broker, f"/v1/accounts/{ALICE}/{what}.csv")
            assert status == 200
            assert headers["Content-Type"].startswith("text/csv")  # type: ignore[index]
            assert f"USER_alice-{what}.csv" in headers["Content-Disposition"]  # type: ignore[index]
            rows = list(csv.DictReader(io.StringIO(text)))
            assert rows, what
            assert list(rows[0]) == list(model.model_fields)
        status, text, _ = await _text(broker, f"/v1/accounts/{ALICE}/trades.csv")
        (trade,) = csv.DictReader(io.StringIO(text))
        assert float(trade["entry_price"]) == pytest.approx(50_000.0)
        assert float(trade["exit_price"]) == pytest.approx(50_000.0)
        assert float(trade["fees"]) > 0  # Binance's fee, booked from the fills
        status, text, _ = await _text(broker, f"/v1/accounts/{ALICE}/fills.json")
        assert len(json.loads(text)) == 2
        status, text, _ = await _text(broker, f"/v1/accounts/{ALICE}/bogus.csv")
        assert status == 404

    # The command reads the store: the sidecar may be stopped.
    out = tmp_path / "alice-trades.csv"
    config_file = tmp_path / "broker.toml"
    config_file.write_text(
        f'[store]\npath = "{tmp_path / "broker.sqlite3"}"\n\n[[accounts]]\nid = "{ALICE}"\n'
        'exchange = "binance"\napi_key_env = "ALICE_KEY"\nsecret_env = "ALICE_SECRET"\n'
        'quote_currency = "USDT"\n'
    )
    argv = ["export", "--account", ALICE, "--what", "trades", "--out", str(out)]
    assert main([*argv, "--config", str(config_file)]) == 0
    assert "1 trades written" in capsys.readouterr().out
    (row,) = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))
    assert row["symbol"] == "BTC/USDT"
    assert (
        main([*argv[:-2], "--out", str(tmp_path / "none" / "x.csv"), "--config", str(config_file)])
        == 2
    )
    bad = ["export", "--account", "USER:nobody", "--what", "fills", "--out", str(out)]
    assert main([*bad, "--config", str(config_file)]) == 2


@pytest.mark.asyncio
async def test_a_kraken_cancel_whose_answer_has_no_status_is_booked_from_the_order_itself(
    tmp_path: Path,
) -> None:
    # Kraken answers CancelOrder with {"count": 1}: the adapter asks for the order, and
    # only its status (cancelled) books it.
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(BTC.replace(symbol="BTC/USD", quote="USD"), 50_000.0, volatility=0.0)
    engine.open_account(ALICE, {"USD": 400.0})
    secret = base64.b64encode(b"alice-kraken-secret-0123456789ab").decode()
    async with KrakenEmulatorServer(engine, {ALICE: ("alice-kraken-key", secret)}) as server:
        config = parse_config(
            {
                "store": {"path": str(tmp_path / "broker.sqlite3")},
                "api": {"host": "127.0.0.1", "port": 0},
                "accounts": [
                    {
                        "id": ALICE,
                        "exchange": "kraken",
                        "api_key_env": "K",
                        "secret_env": "S",
                        "ccxt": kraken_ccxt_config(server.url),
                    }
                ],
            }
        )
        env = {"K": "alice-kraken-key", "S": secret}
        async with Broker(config, environ=env, reconciler_settings=FAST) as broker:
            order = engine.place_order(
                ALICE,
                OrderRequest(
                    symbol="BTC/USD",
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=0.001,
                    price=40_000,
                ),
            )
            txid = order_txid(order.id)  # the id Kraken's wire carries
            book = broker.books.get(ALICE)  # type: ignore[union-attr]
            await _until(lambda: book.orders.get(txid) is not None)
            status, answer = await _call(
                broker, "POST", f"/v1/accounts/{ALICE}/orders/{txid}/cancel"
            )
            assert (status, answer["status"], answer["confirmed"]) == (200, "cancelled", True)
            assert engine.get_order(ALICE, order.id).status is OrderStatus.CANCELLED
