"""Accounts of one exchange share what is not theirs: tables, connections and markets.

Built from specs as the runtime builds them, through real ccxt against the
Binance emulator on loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultInjector, FaultKind, FaultPlan
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import TransientError
from nija_broker.core.exchange import ExchangeSpec
from nija_broker.core.models import Market, OrderType, Side

BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
ACCOUNTS = ("PLATFORM", "USER:alice", "USER:bob")
KEYS = {a: (f"key-{n}", f"secret-{n}") for n, a in enumerate(ACCOUNTS)}


def _engine() -> SimEngine:
    engine = SimEngine(seed=1, clock=SystemClock())
    engine.add_market(BTC, 60_000.0)
    for account_id in ACCOUNTS:
        engine.open_account(account_id, {"USDT": 1_000.0})
    return engine


def _open(server: EmulatorServer, account_id: str, **extra: object) -> CcxtExchange:
    api_key, secret = KEYS[account_id]
    spec = ExchangeSpec(
        account_id=account_id,
        exchange_id="binance",
        api_key=api_key,
        secret=secret,
        options={**binance_ccxt_config(server.url), **extra},
    )
    return CcxtExchange.from_spec(spec, clock=FakeClock(), budget=RateBudget(1e6))


@pytest.mark.asyncio
async def test_accounts_of_one_exchange_share_one_session_one_markets_load_and_the_tables() -> None:
    async with EmulatorServer(_engine(), KEYS) as server:
        accounts = [_open(server, a) for a in ACCOUNTS]
        try:
            markets = await asyncio.gather(*(a.load_markets() for a in accounts))
            balances = await asyncio.gather(*(a.fetch_balance() for a in accounts))
            assert all(m.keys() == {"BTC/USDT"} for m in markets)
            assert all(b["USDT"].total == 1_000.0 for b in balances)
            # One exchangeInfo request for the three accounts, loaded at the same time.
            assert server.requests["GET /api/v3/exchangeInfo"] == 1
            first, *others = (a._ex for a in accounts)
            for other in others:
                assert other.session is first.session  # one connection pool
                assert other.markets is first.markets  # ccxt's markets, shared read-only
                assert other.api is first.api
                assert other.exceptions is first.exceptions
                assert other.has is first.has
                assert other.options is not first.options  # ccxt writes there: its own
        finally:
            for account in accounts:
                await account.aclose()


@pytest.mark.asyncio
async def test_the_shared_session_outlives_a_closed_account_and_closes_with_the_last() -> None:
    async with EmulatorServer(_engine(), KEYS) as server:
        platform, alice = _open(server, "PLATFORM"), _open(server, "USER:alice")
        await platform.fetch_balance()
        await alice.fetch_balance()
        session = alice._ex.session
        await platform.aclose()
        assert not session.closed
        assert (await alice.fetch_balance())["USDT"].total == 1_000.0
        await alice.aclose()
        assert session.closed


@pytest.mark.asyncio
async def test_an_account_whose_settings_differ_loads_its_own_markets() -> None:
    async with EmulatorServer(_engine(), KEYS) as server:
        plain = _open(server, "PLATFORM")
        own = _open(server, "USER:alice", has={"fetchMarkets": True}, timeout=7000)
        try:
            await plain.load_markets()
            await own.load_markets()
            assert server.requests["GET /api/v3/exchangeInfo"] == 2
            assert own._ex.markets is not plain._ex.markets
            assert own._ex.has is not plain._ex.has  # a table its settings name is its own
            assert own._ex.api is plain._ex.api
        finally:
            await plain.aclose()
            await own.aclose()


@pytest.mark.asyncio
async def test_a_failed_markets_load_is_not_kept_for_the_next_account() -> None:
    faults = FaultInjector(
        FaultPlan(rate=1.0, kinds=frozenset({FaultKind.SERVER_ERROR}), methods={"load_markets"}),
        SystemClock(),
    )
    async with EmulatorServer(_engine(), KEYS, faults=faults) as server:
        platform, alice = _open(server, "PLATFORM"), _open(server, "USER:alice")
        try:
            with pytest.raises(TransientError):
                await platform.load_markets()
            faults.set_plan(FaultPlan())
            assert (await alice.load_markets()).keys() == {"BTC/USDT"}
            assert (await platform.load_markets()).keys() == {"BTC/USDT"}
            assert platform._ex.markets is alice._ex.markets
        finally:
            await platform.aclose()
            await alice.aclose()


@pytest.mark.asyncio
async def test_no_answers_body_is_kept_on_the_ccxt_instance_after_its_call() -> None:
    # ccxt keeps the last body on the instance: a listing's or a sweep's is about 500
    # bytes an order, for every account of a fleet, held for nothing between polls.
    engine = _engine()
    for n in range(30):
        engine.place_order(
            "USER:alice",
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0005,
                price=50_000.0 + n,
            ),
        )
    async with EmulatorServer(engine, KEYS) as server:
        alice = _open(server, "USER:alice")
        try:
            await alice.load_markets()
            listed = await alice.fetch_open_orders()
            assert len(listed.orders) == 30
            assert alice._ex.last_http_response is None
            await alice.fetch_closed_orders("BTC/USDT", since=None)
            assert alice._ex.last_http_response is None
            await alice.fetch_balance()
            assert alice._ex.last_http_response is None
        finally:
            await alice.aclose()
