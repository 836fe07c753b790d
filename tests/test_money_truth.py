"""Money truth end to end: the sidecar's books match what the exchange really did.

The whole runtime (:class:`~nija_broker.service.runtime.Broker`: reconciler, guard,
store) runs through real ccxt against the Binance emulator on loopback, with
the config a new user writes: no ``quote_currency``, USDT accounts, the bot's
own account ids and symbols. Ground truth is the emulator's engine: its
fills, the fees it charged (in quote, in the base asset received, or in a
third asset), and its balances.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.ratelimit import RateBudget
from adapters.sim import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PLATFORM, ALICE = "PLATFORM", "USER_alice_binance"
KRAKEN_ALICE = "USER_alice_kraken"
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
    # A fine lot step, so the base received after a base-currency fee can be sold whole.
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.000001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
    (
        Market(
            symbol="BNB/USDT",
            base="BNB",
            quote="USDT",
            amount_step=0.001,
            price_step=0.01,
            min_amount=0.001,
            min_notional=5.0,
        ),
        600.0,
    ),
]
FEE_MODES = ["quote", "base_for_buys", "BNB"]


def _engine(alice_fee_mode: str = "quote", alice_usdt: float = 400.0) -> SimEngine:
    engine = SimEngine(seed=11, clock=SystemClock(), maker_fee=0.001, taker_fee=0.001)
    for market, price in MARKETS:
        engine.add_market(market, price, volatility=0.0)
    engine.open_account(PLATFORM, {"USDT": 10_000.0, "BTC": 0.1})
    alice = {"USDT": alice_usdt}
    if alice_fee_mode == "BNB":
        alice["BNB"] = 1.0
    engine.open_account(ALICE, alice, fee_mode=alice_fee_mode)
    return engine


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Callable[[SimEngine], Any]]:
    servers: list[EmulatorServer] = []

    async def serve(engine: SimEngine) -> EmulatorServer:
        server = EmulatorServer(engine, KEYS)
        await server.__aenter__()
        servers.append(server)
        return server

    yield serve
    for server in servers:
        await server.__aexit__(None, None, None)


def _config(
    url: str,
    tmp_path: Path,
    *,
    poll_interval_s: float = 0.2,
    balance_interval_s: float = 60.0,
    **account: Any,
) -> Any:
    """What a trader writes: no quote_currency, keys by environment variable name."""
    accounts = []
    for account_id, env in ((PLATFORM, "PLATFORM"), (ALICE, "ALICE")):
        accounts.append(
            {
                "id": account_id,
                "exchange": "binance",
                "api_key_env": f"{env}_KEY",
                "secret_env": f"{env}_SECRET",
                "ccxt": binance_ccxt_config(url),
                "poll_interval_s": poll_interval_s,
                "balance_interval_s": balance_interval_s,
                **account,
            }
        )
    return parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"port": 0},
            "reconciler": {"visibility_window_s": 0.0, "call_timeout_s": 5.0, "jitter": 0.0},
            "accounts": accounts,
        }
    )


async def _until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state another task owns
            await asyncio.sleep(0.05)


def _engine_fees(engine: SimEngine, account_id: str) -> float:
    return sum(f.fee for f in engine.trades(account_id))


async def _round_trip_through_reserve_and_confirm(
    broker: Broker, engine: SimEngine, symbol: str, amount: float
) -> None:
    """The bot's way: reserve, send with the client order id through its own SDK, confirm
    with the order id; the entry and its exit fill at once, between two polls."""
    guard = broker.guard
    assert guard is not None
    price = engine.price(symbol)
    held = guard.reserve(
        OrderIntent(
            account_id=ALICE,
            symbol=symbol,
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=amount,
            price=price * 1.01,
        )
    )
    buy = engine.place_order(
        ALICE,
        OrderRequest(
            symbol=symbol,
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=amount,
            price=price * 1.01,
            client_order_id=held.client_order_id,
        ),
    )
    guard.confirm(held.id, buy.id)
    base = symbol.split("/")[0]
    received = engine.balances(ALICE)[base].free
    exit_intent = OrderIntent(
        account_id=ALICE,
        symbol=symbol,
        side=Side.SELL,
        type=OrderType.MARKET,
        amount=received,
        role="exit",
    )
    sold = guard.reserve(exit_intent)
    sell = engine.place_order(
        ALICE,
        OrderRequest(
            symbol=symbol,
            side=Side.SELL,
            type=OrderType.MARKET,
            amount=received,
            client_order_id=sold.client_order_id,
        ),
    )
    guard.confirm(sold.id, sell.id)


# --------------------------------------------------------------------------- equity


async def test_usdt_account_with_the_default_config_has_its_equity_and_tier(
    served: Callable[[SimEngine], Any], tmp_path: Path
) -> None:
    server = await served(_engine())
    async with Broker(_config(server.url, tmp_path), environ=ENV) as broker:
        rows = {row.account_id: row for row in broker.status()}
        # 10,000 USDT at par + 0.1 BTC at the exchange's BTC/USDT price.
        assert rows[PLATFORM].equity_usd == pytest.approx(15_000.0, rel=1e-6)
        assert rows[PLATFORM].tier == "STANDARD"
        assert rows[ALICE].equity_usd == pytest.approx(400.0)
        assert rows[ALICE].tier == "MICRO_CAP"
        assert {row.sync for row in rows.values()} == {"ok"}


# --------------------------------------------------------------------------- fees


@pytest.mark.parametrize("fee_mode", FEE_MODES)
async def test_confirmed_round_trip_between_two_polls_is_booked_once_net_of_its_fees(
    served: Callable[[SimEngine], Any], tmp_path: Path, fee_mode: str
) -> None:
    engine = _engine(fee_mode)
    server = await served(engine)
    async with Broker(_config(server.url, tmp_path), environ=ENV) as broker:
        await _round_trip_through_reserve_and_confirm(broker, engine, "ETH/USDT", 0.05)
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        assert broker.store is not None
        store = broker.store
        await _until(lambda: len(store.trades(ALICE)) >= 1)
        await asyncio.sleep(0.5)  # more cycles: nothing may be booked twice
        assert broker.store is not None
        fills = broker.store.fills(ALICE)
        truth = engine.trades(ALICE)
        assert sorted(f.trade_id or "" for f in fills) == sorted(t.trade_id or "" for t in truth)
        for stored, real in zip(
            sorted(fills, key=lambda f: f.trade_id or ""),
            sorted(truth, key=lambda f: f.trade_id or ""),
            strict=True,
        ):
            assert stored.amount == pytest.approx(real.amount)
            assert stored.fee_currency == (real.fee_currency or "USDT")
            assert stored.fee_cost == pytest.approx(real.fee_cost or real.fee)
            assert stored.fee_valued
        (trade,) = broker.store.trades(ALICE)
        fees = _engine_fees(engine, ALICE)
        assert fees > 0
        assert trade.fees == pytest.approx(fees, abs=0.005)
        assert trade.net == pytest.approx(trade.pnl - fees, abs=0.005)
        # Cash truth: what the round trip cost the account, valued in USDT.
        spent_usdt = 400.0 - engine.balances(ALICE)["USDT"].total
        bnb_spent = (1.0 - engine.balances(ALICE)["BNB"].total) if fee_mode == "BNB" else 0.0
        assert -trade.net == pytest.approx(spent_usdt + bnb_spent * 600.0, abs=0.01)
        assert book.positions() == []


async def test_round_trips_made_while_the_sidecar_is_down_are_booked_once_at_start(
    served: Callable[[SimEngine], Any], tmp_path: Path
) -> None:
    engine = _engine("base_for_buys")
    server = await served(engine)
    config = _config(server.url, tmp_path, watch_symbols=["ETH-USDT"])
    async with Broker(config, environ=ENV):
        pass
    for _ in range(2):  # two round trips nobody saw, on a symbol only watched
        buy = engine.place_order(
            ALICE,
            OrderRequest(symbol="ETH/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.02),
        )
        held = engine.balances(ALICE)["ETH"].free
        engine.place_order(
            ALICE,
            OrderRequest(symbol="ETH/USDT", side=Side.SELL, type=OrderType.MARKET, amount=held),
        )
        assert buy.id
    for _ in range(2):  # a restart after the first catch-up books nothing more
        async with Broker(config, environ=ENV) as broker:
            assert broker.store is not None
            await _until(lambda: len(broker.store.trades(ALICE)) >= 2)  # type: ignore[union-attr]
            await asyncio.sleep(0.4)
            assert len(broker.store.fills(ALICE)) == len(engine.trades(ALICE)) == 4
            trades = broker.store.trades(ALICE)
            assert len(trades) == 2
            assert sum(t.fees for t in trades) == pytest.approx(
                _engine_fees(engine, ALICE), abs=0.005
            )
            assert broker.books.get(ALICE).positions() == []  # type: ignore[union-attr]


# --------------------------------------------------------------------------- instant entries


async def test_micro_cap_entry_that_filled_at_once_blocks_a_second_entry_within_one_poll(
    served: Callable[[SimEngine], Any], tmp_path: Path
) -> None:
    engine = _engine()
    server = await served(engine)
    # Full balance refreshes every 10 minutes; the pollers wait as long, so the one
    # cycle run here is the next poll.
    config = _config(server.url, tmp_path, poll_interval_s=600.0, balance_interval_s=600.0)
    async with Broker(config, environ=ENV) as broker:
        guard = broker.guard
        assert guard is not None
        assert broker.reconciler is not None
        second = OrderIntent(
            account_id=ALICE, symbol="BTC-USDT", side=Side.BUY, size_usd=20.0, price=50_000.0
        )
        assert guard.check(second).allowed
        # The bot's own market buy, straight to the exchange, never through the guard.
        engine.place_order(
            ALICE,
            OrderRequest(symbol="BTC/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.0005),
        )
        assert guard.check(second).allowed  # nothing has polled since
        await broker.reconciler.sync_once(ALICE)  # the next poll
        decision = guard.check(second)
        assert isinstance(decision, Blocked)
        assert decision.rule == "dca"
        # A STANDARD account pays nothing for this: its cycle is at most its listing (none
        # at all where it lists only the symbols it has orders on, and it has none).
        calls = broker.exchanges[PLATFORM].calls  # type: ignore[attr-defined]
        before = dict(calls)
        await broker.reconciler.sync_once(PLATFORM)
        spent = {k: v - before.get(k, 0) for k, v in calls.items() if v - before.get(k, 0)}
        assert spent in ({}, {"fetch_open_orders": 1})


# --------------------------------------------------------------------------- kraken


async def test_kraken_round_trip_found_by_the_sweep_is_booked_once_net_of_its_fees(
    tmp_path: Path,
) -> None:
    """Kraken: trade ids come with ClosedOrders (trades=true), fees from QueryTrades."""
    RateBudget.forget(f"kraken:{KRAKEN_ALICE}")  # the process-wide budget of this key
    secret = base64.b64encode(b"kraken-alice-secret-0001").decode()
    engine = SimEngine(seed=5, clock=SystemClock(), maker_fee=0.0016, taker_fee=0.0026)
    engine.add_market(
        Market(
            symbol="ETH/USD",
            base="ETH",
            quote="USD",
            amount_step=1e-8,
            price_step=0.01,
            min_amount=0.002,
            min_notional=0.5,
        ),
        3_000.0,
        volatility=0.0,
    )
    engine.open_account(KRAKEN_ALICE, {"USD": 400.0})
    async with KrakenEmulatorServer(engine, {KRAKEN_ALICE: ("kraken-alice-key", secret)}) as server:
        config = parse_config(
            {
                "store": {"path": str(tmp_path / "broker.sqlite3")},
                "api": {"port": 0},
                "reconciler": {"visibility_window_s": 0.0, "call_timeout_s": 5.0},
                "accounts": [
                    {
                        "id": KRAKEN_ALICE,
                        "exchange": "kraken",
                        "api_key_env": "K_KEY",
                        "secret_env": "K_SECRET",
                        "ccxt": kraken_ccxt_config(server.url),
                        # Kraken's request budget (0.33 calls/s, 15 at most) allows a
                        # short burst only: a few cycles a second would queue behind it.
                        "poll_interval_s": 2.0,
                        "balance_interval_s": 2.0,
                        "watch_symbols": ["ETH-USD"],
                    }
                ],
            }
        )
        environ = {"K_KEY": "kraken-alice-key", "K_SECRET": secret}
        async with Broker(config, environ=environ) as broker:
            assert broker.store is not None
            store = broker.store
            engine.place_order(
                KRAKEN_ALICE,
                OrderRequest(symbol="ETH/USD", side=Side.BUY, type=OrderType.MARKET, amount=0.05),
            )
            engine.place_order(
                KRAKEN_ALICE,
                OrderRequest(symbol="ETH/USD", side=Side.SELL, type=OrderType.MARKET, amount=0.05),
            )
            await _until(lambda: len(store.trades(KRAKEN_ALICE)) >= 1, timeout_s=30.0)
            await asyncio.sleep(2.5)  # another sweep: nothing booked twice
            fills = store.fills(KRAKEN_ALICE)
            assert len(fills) == len(engine.trades(KRAKEN_ALICE)) == 2
            assert {f.fee_currency for f in fills} == {"USD"}
            (trade,) = store.trades(KRAKEN_ALICE)
            fees = _engine_fees(engine, KRAKEN_ALICE)
            assert trade.fees == pytest.approx(fees, abs=0.005)
            assert -trade.net == pytest.approx(
                400.0 - engine.balances(KRAKEN_ALICE)["USD"].total, abs=0.01
            )
            assert broker.books.get(KRAKEN_ALICE).positions() == []  # type: ignore[union-attr]
