"""Circuit breakers end to end: the whole sidecar, real ccxt, the Binance emulator on loopback.

The runtime (:class:`~nija_broker.service.runtime.Broker`) runs with the config a new
user writes (no ``quote_currency``, USDT accounts, the bot's own account ids);
the account's equity curve comes from the reconciler's balance refreshes and
its round trips from the fills it books, so every breaker here trips on what
the exchange really did: a price that fell, a stop order that filled.

The runtime cannot run on a fake clock (ccxt and the emulator stamp requests
with real time), so a cooldown's end is watched with a short
``[tiers.MICRO_CAP] stoploss_cooldown_s`` and a condition wait; the default
30 minutes is checked in the figures the API shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.breakers import BREAKERS
from nija_broker.core.clock import SystemClock
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market, OrderRole, OrderStatus, OrderType, Side, TradeRecord
from nija_broker.service.cli import main
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.state.book import AccountBook

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PLATFORM, ALICE = "PLATFORM", "USER_alice_binance"
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
MARKETS = [
    (
        Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        50_000.0,
    ),
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.0001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
]
ALICE_USDT = 400.0  # MICRO_CAP ($15 to $500): all five breakers armed by default
SHORT_COOLDOWN_S = 6.0


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    # Still prices: only the test moves them, so the equity curve moves only when told.
    engine = SimEngine(seed=13, clock=SystemClock(), maker_fee=0.001, taker_fee=0.001)
    for market, price in MARKETS:
        engine.add_market(market, price, volatility=0.0)
    engine.open_account(PLATFORM, {"USDT": 10_000.0})
    engine.open_account(ALICE, {"USDT": ALICE_USDT})
    async with EmulatorServer(engine, KEYS) as server:
        yield server


def _config(url: str, tmp_path: Path, *, tiers: dict[str, Any] | None = None) -> Any:
    """What a trader writes: no quote_currency, keys by environment variable name; a
    balance refresh (an equity point) every 0.2 s so the curve follows the price at once."""
    accounts = [
        {
            "id": account_id,
            "exchange": "binance",
            "api_key_env": f"{env}_KEY",
            "secret_env": f"{env}_SECRET",
            "ccxt": binance_ccxt_config(url),
            "poll_interval_s": 0.2,
            "balance_interval_s": 0.2,
        }
        for account_id, env in ((PLATFORM, "PLATFORM"), (ALICE, "ALICE"))
    ]
    return parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"port": 0},
            "reconciler": {"visibility_window_s": 0.0, "call_timeout_s": 5.0, "jitter": 0.0},
            "tiers": tiers or {},
            "accounts": accounts,
        }
    )


async def _until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state another task owns
            await asyncio.sleep(0.05)


def _last_equity(book: AccountBook) -> float | None:
    last = book.performance.equity_points(limit=1)
    return last[0].equity if last else None


def _held(broker: Broker, asset: str) -> float:
    balance = broker.live[ALICE].balances.get(asset)
    return balance.total if balance is not None else 0.0


def _entry(symbol: str, price: float) -> OrderIntent:
    return OrderIntent(account_id=ALICE, symbol=symbol, side=Side.BUY, size_usd=20.0, price=price)


async def _get(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _post(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def _journal(broker: Broker) -> list[tuple[str, str]]:
    """The account's breaker journal as (rule, kind), oldest first."""
    assert broker.store is not None
    return [(r.rule, r.kind) for r in reversed(broker.store.breaker_events(ALICE))]


async def _stopped_out(broker: Broker, engine: SimEngine) -> TradeRecord:
    """A BTC entry through the guard, its stop-loss (role stop) on the exchange, the price
    through the stop: the round trip the reconciler books, once the balance shows no BTC."""
    alice = broker.guarded_exchange(ALICE)
    entry = await alice.create_order(
        OrderRequest(
            symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.002, price=51_000.0
        )
    )
    assert entry.status is OrderStatus.FILLED  # marketable: filled at once at 50,000
    stop = await alice.create_order(
        OrderRequest(
            symbol="BTC/USDT",
            side=Side.SELL,
            type=OrderType.STOP,
            amount=0.002,
            stop_price=48_000.0,
            role=OrderRole.STOP,
        )
    )
    assert stop.status is OrderStatus.OPEN
    fills = engine.set_price("BTC/USDT", 47_000.0)
    assert [f.order_id for f in fills] == [stop.id]
    store = broker.store
    assert store is not None
    await _until(lambda: len(store.trades(ALICE)) == 1)
    await _until(lambda: _held(broker, "BTC") == 0.0)
    (trade,) = store.trades(ALICE)
    assert trade.exit_role is OrderRole.STOP
    assert trade.net < 0
    return trade


# --------------------------------------------------------------------------- drawdown


async def test_micro_cap_account_12_pct_below_its_peak_gets_no_entry_until_the_trader_resumes(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    engine = emulator.engine
    async with Broker(_config(emulator.url, tmp_path), environ=ENV) as broker:
        assert broker.api is not None
        assert broker.books is not None
        book = broker.books.get(ALICE)
        eth_entry = _entry("ETH/USDT", 3_000.0)
        assert broker.check(eth_entry).allowed

        # $300 of the $400 in BTC, bought through the guard.
        bought = await broker.guarded_exchange(ALICE).create_order(
            OrderRequest(
                symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.006, price=51_000.0
            )
        )
        assert bought.status is OrderStatus.FILLED
        await _until(lambda: _held(broker, "BTC") > 0)
        # BTC 50,000 -> 42,000: the position loses $48, 12% of the $400 peak.
        engine.set_price("BTC/USDT", 42_000.0)
        truth = engine.balances(ALICE)
        equity = truth["USDT"].total + truth["BTC"].total * 42_000.0
        await _until(lambda: (_last_equity(book) or ALICE_USDT) < ALICE_USDT * 0.9)
        assert _last_equity(book) == pytest.approx(equity, rel=1e-6)
        assert book.metrics().peak_balance == pytest.approx(ALICE_USDT)
        expected_pct = (ALICE_USDT - equity) / ALICE_USDT * 100.0
        assert expected_pct == pytest.approx(12.08, abs=0.01)

        decision = broker.check(eth_entry)
        assert isinstance(decision, Blocked)
        assert decision.rule == "drawdown_limit"
        assert decision.figures["drawdown_pct"] == pytest.approx(expected_pct, rel=1e-6)
        assert "12.1% below its equity peak" in decision.reason
        # Exits are never blocked: selling the BTC that lost the money is allowed.
        btc_exit = OrderIntent(
            account_id=ALICE,
            symbol="BTC/USDT",
            side=Side.SELL,
            type=OrderType.MARKET,
            amount=truth["BTC"].total,
        )
        assert broker.check(btc_exit).allowed
        (row,) = broker.status(ALICE)
        assert row.breakers_tripped == ("drawdown_limit",)
        assert set(row.breakers_armed) == set(BREAKERS)

        api = broker.api.url
        async with aiohttp.ClientSession() as session:
            answer = await _post(
                session,
                f"{api}/v1/guard/check",
                {"account_id": ALICE, "symbol": "ETH-USDT", "side": "buy", "size_usd": 20.0},
            )
            assert (answer["allowed"], answer["rule"]) == (False, "drawdown_limit")
            answer = await _post(
                session,
                f"{api}/v1/guard/check",
                {
                    "account_id": ALICE,
                    "symbol": "BTC-USDT",
                    "side": "sell",
                    "type": "market",
                    "amount": truth["BTC"].total,
                },
            )
            assert answer["allowed"] is True
            view = await _get(session, f"{api}/v1/accounts/{ALICE}")
            assert view["breakers"]["drawdown_limit"]["tripped"] is True
            assert view["breakers"]["drawdown_limit"]["figures"]["drawdown_pct"] == (
                pytest.approx(expected_pct, rel=1e-6)
            )
            assert [r for r, v in view["breakers"].items() if v["tripped"]] == ["drawdown_limit"]
            assert view["breakers_tripped"] == ["drawdown_limit"]
            # A STANDARD account arms no breaker and is not touched by Alice's.
            platform = await _get(session, f"{api}/v1/accounts/{PLATFORM}")
            assert (platform["breakers"], platform["breakers_tripped"]) == ({}, [])

            resumed = await _post(session, f"{api}/v1/accounts/{ALICE}/resume", {})
            assert resumed["resumed"] == ["drawdown_limit"]
            assert resumed["breakers"]["drawdown_limit"]["tripped"] is False
            view = await _get(session, f"{api}/v1/accounts/{ALICE}")
            assert view["breakers_tripped"] == []

        assert broker.check(eth_entry).allowed
        assert broker.status(ALICE)[0].breakers_tripped == ()
        assert _journal(broker) == [
            ("drawdown_limit", "tripped"),
            ("drawdown_limit", "manual_resume"),
        ]


# --------------------------------------------------------------------------- stop-loss


async def test_stop_loss_exit_blocks_entries_on_that_symbol_only_until_its_cooldown_ends(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = _config(
        emulator.url, tmp_path, tiers={"MICRO_CAP": {"stoploss_cooldown_s": SHORT_COOLDOWN_S}}
    )
    async with Broker(config, environ=ENV) as broker:
        assert broker.api is not None
        trade = await _stopped_out(broker, emulator.engine)
        until = trade.exit_time + timedelta(seconds=SHORT_COOLDOWN_S)
        btc_entry, eth_entry = _entry("BTC/USDT", 47_000.0), _entry("ETH/USDT", 3_000.0)

        decision = broker.check(btc_entry)
        assert isinstance(decision, Blocked), decision
        assert decision.rule == "stoploss_cooldown"
        assert "BTC/USDT" in decision.reason
        assert broker.check(eth_entry).allowed  # another symbol's entry passes
        assert broker.status(ALICE)[0].breakers_tripped == ("stoploss_cooldown",)
        async with aiohttp.ClientSession() as session:
            view = await _get(session, f"{broker.api.url}/v1/accounts/{ALICE}")
        cooldown = view["breakers"]["stoploss_cooldown"]
        assert cooldown["tripped"] is True
        assert cooldown["symbols"] == ["BTC/USDT"]
        assert cooldown["until"] == until.isoformat()

        # No resume: the cooldown runs out by itself.
        await _until(lambda: broker.check(btc_entry).allowed)
        assert SystemClock().now() >= until
        assert broker.status(ALICE)[0].breakers_tripped == ()
        assert _journal(broker) == [
            ("stoploss_cooldown", "tripped"),
            ("stoploss_cooldown", "resumed"),
        ]


# --------------------------------------------------------------------------- CLI


async def test_cli_resume_clears_a_30_minute_stop_loss_cooldown_on_the_running_sidecar(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Broker(_config(emulator.url, tmp_path), environ=ENV) as broker:
        assert broker.api is not None
        trade = await _stopped_out(broker, emulator.engine)
        btc_entry = _entry("BTC/USDT", 47_000.0)
        decision = broker.check(btc_entry)
        assert isinstance(decision, Blocked), decision
        assert decision.rule == "stoploss_cooldown"
        report = broker.guard.breaker_report(ALICE)  # type: ignore[union-attr]
        assert report is not None
        # The default cooldown: 30 minutes after the stop-loss exit.
        assert report.verdicts["stoploss_cooldown"].until == trade.exit_time + timedelta(minutes=30)

        # The API runs on this loop: the CLI's blocking request goes from a thread.
        code = await asyncio.to_thread(
            main, ["resume", "--account", ALICE, "--url", broker.api.url]
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert f"{ALICE}: resumed stoploss_cooldown at " in out
        assert "  stoploss_cooldown: ok" in out

        assert broker.check(btc_entry).allowed
        assert _journal(broker) == [
            ("stoploss_cooldown", "tripped"),
            ("stoploss_cooldown", "manual_resume"),
        ]
