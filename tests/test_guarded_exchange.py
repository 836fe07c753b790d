"""GuardedExchange and the async submit wrapper: a blocked order never leaves; everything
else passes through; 1,000 concurrent entries on one symbol reach the exchange once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import Exchange, OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim import FaultInjector, FaultKind, FaultPlan, SimEngine, SimExchange
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import EntryBlocked, InsufficientFunds, TransientError
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.models import Balance, Market, Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.guard.guard import Guard
from nija_broker.guard.guarded import GuardedExchange, guard_submit, market_order_reader
from nija_broker.state.store import Store

from . import _guard_support
from ._guard_support import ALICE, T0, account_live, make_guard, settle_at_startup, sim

# The guard tests' shared fixtures, bound here by name so pytest finds them.
clock = _guard_support.clock
store = _guard_support.store
guard = _guard_support.guard


@pytest.fixture
def live() -> dict[str, AccountLive]:
    return {ALICE: account_live()}


def market_buy(
    symbol: str = "BTC/USD", amount: float = 0.0002, cid: str | None = None
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol, side=Side.BUY, type=OrderType.MARKET, amount=amount, client_order_id=cid
    )


def created(exchange: SimExchange) -> list[OrderRequest]:
    return [args["request"] for method, args in exchange.call_log if method == "create_order"]


# --------------------------------------------------------------------------- over the sim


@pytest.mark.asyncio
async def test_blocked_entry_raises_and_never_reaches_the_exchange(
    guard: Guard, clock: FakeClock
) -> None:
    _, inner = sim(clock)
    exchange = GuardedExchange(inner, guard)
    first = await exchange.create_order(market_buy())
    with pytest.raises(EntryBlocked) as info:
        await exchange.create_order(market_buy())
    # The first buy filled at once and its fill was booked with it: a position now.
    assert info.value.rule == "dca"
    assert "BTC/USD" in info.value.reason
    assert [r.client_order_id for r in created(inner)] == [first.client_order_id]
    assert inner.calls["create_order"] == 1


@pytest.mark.asyncio
async def test_allowed_order_carries_its_client_id_and_lands_in_the_book(
    guard: Guard, clock: FakeClock, store: Store
) -> None:
    _, inner = sim(clock)
    order = await GuardedExchange(inner, guard).create_order(market_buy())
    assert isinstance(order, Order)
    assert order.client_order_id is not None
    assert order.client_order_id.startswith("nb-")
    assert guard.books.get(ALICE).orders.get(order.id) == order
    assert store.pending_intents(ALICE) == []
    [record] = store.decisions(ALICE)
    assert record.allowed
    assert record.client_order_id == order.client_order_id


@pytest.mark.asyncio
async def test_a_refused_order_releases_its_place(
    guard: Guard, clock: FakeClock, store: Store
) -> None:
    _, inner = sim(clock, {"USD": 5.0})  # the exchange knows better than the last balance
    exchange = GuardedExchange(inner, guard)
    with pytest.raises(InsufficientFunds):
        await exchange.create_order(market_buy())
    assert store.pending_intents(ALICE) == []
    assert guard.reservations(ALICE) == []
    with pytest.raises(InsufficientFunds):
        await exchange.create_order(market_buy())  # judged again, not blocked as a duplicate
    assert inner.calls["create_order"] == 2


@pytest.mark.asyncio
async def test_an_order_whose_answer_was_lost_keeps_its_place_until_resolved(
    guard: Guard, clock: FakeClock, store: Store
) -> None:
    engine, _ = sim(clock)
    faults = FaultInjector(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.LOST_RESPONSE}),
            methods=frozenset({"create_order"}),
        ),
        clock,
    )
    inner = SimExchange(engine, ALICE, faults=faults)
    exchange = GuardedExchange(inner, guard)
    with pytest.raises(TransientError):
        await exchange.create_order(market_buy())
    [intent] = store.pending_intents(ALICE)
    assert intent.status == "sent"
    with pytest.raises(EntryBlocked):
        await exchange.create_order(market_buy())
    faults.set_plan(FaultPlan())
    resolved, _ = await settle_at_startup(guard, inner, clock)
    assert resolved == {intent.client_order_id}
    assert inner.calls["create_order"] == 1
    assert len(engine.open_orders(ALICE)) + len(engine.fills) >= 1


@pytest.mark.asyncio
async def test_every_other_method_passes_through(guard: Guard, clock: FakeClock) -> None:
    _, inner = sim(clock)
    exchange = GuardedExchange(inner, guard)
    assert isinstance(exchange, Exchange)
    assert exchange.account_id == ALICE
    assert exchange.capabilities == inner.capabilities
    balances = await exchange.fetch_balance()
    assert balances["USD"].free == 100.0
    assert inner.calls["fetch_balance"] == 1
    assert exchange.engine is inner.engine


def test_a_raw_exchange_without_an_account_id_is_refused(guard: Guard) -> None:
    with pytest.raises(ValueError, match="account_id"):
        GuardedExchange(object(), guard)


@pytest.mark.asyncio
async def test_exits_pass_while_entries_are_blocked(
    guard: Guard, clock: FakeClock, live: dict[str, AccountLive]
) -> None:
    _, inner = sim(clock, {"USD": 100.0, "BTC": 0.001})
    live[ALICE] = account_live(state=SyncState.FAILED)
    exchange = GuardedExchange(inner, guard)
    with pytest.raises(EntryBlocked) as info:
        await exchange.create_order(market_buy("ETH/USD", amount=0.002))
    assert info.value.rule == "sync_unknown"
    stop = OrderRequest(
        symbol="BTC/USD",
        side=Side.SELL,
        type=OrderType.STOP,
        amount=0.001,
        stop_price=45_000.0,
        role=OrderRole.STOP,
    )
    placed = await exchange.create_order(stop)
    assert placed.status is OrderStatus.OPEN
    assert [r.side for r in created(inner)] == [Side.SELL]


@pytest.mark.asyncio
async def test_1000_concurrent_entries_on_one_symbol_reach_the_exchange_once(
    guard: Guard, clock: FakeClock, store: Store
) -> None:
    _, inner = sim(clock)
    exchange = GuardedExchange(inner, guard)
    results = await asyncio.gather(
        *(exchange.create_order(market_buy()) for _ in range(1_000)), return_exceptions=True
    )
    orders = [r for r in results if isinstance(r, Order)]
    blocked = [r for r in results if isinstance(r, EntryBlocked)]
    assert len(orders) == 1
    assert len(blocked) == 999
    assert {b.rule for b in blocked} == {"duplicate_symbol_entry"}
    assert inner.calls["create_order"] == 1
    assert len(store.decisions(ALICE, limit=2_000, blocked_only=True)) == 999


# --------------------------------------------------------------------------- submit functions


@pytest.mark.asyncio
async def test_async_submit_function_is_guarded_and_gets_the_client_id(
    guard: Guard, clock: FakeClock
) -> None:
    engine, inner = sim(clock)
    seen: list[str] = []

    async def place_market_order(
        symbol: str,
        side: str,
        quantity: float,
        size_type: str = "quote",
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        assert client_order_id is not None
        seen.append(client_order_id)
        price = engine.price(symbol)
        amount = round(quantity / price, 8) if size_type == "quote" else quantity
        order = await inner.create_order(
            OrderRequest(
                symbol=symbol,
                side=Side(side),
                type=OrderType.MARKET,
                amount=amount,
                client_order_id=client_order_id,
            )
        )
        return {"status": "filled", "order_id": order.id}

    place = guard_submit(
        guard, place_market_order, market_order_reader(ALICE), client_id_kwarg="client_order_id"
    )
    result = await place("BTC-USD", "buy", 10.0)
    assert result["status"] == "filled"
    with pytest.raises(EntryBlocked):
        await place("BTC-USD", "buy", 10.0)
    assert inner.calls["create_order"] == 1
    assert seen == [created(inner)[0].client_order_id]


# --------------------------------------------------------------------------- real ccxt

BTC_USDT = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
KEYS = {ALICE: ("alice-key-0001", "alice-secret-0001")}


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(BTC_USDT, 50_000.0)
    engine.open_account(ALICE, {"USDT": 100.0})
    async with EmulatorServer(engine, KEYS) as server:
        yield server


def usdt_guard(store: Store) -> Guard:
    live = account_live(balances={"USDT": Balance(currency="USDT", free=100.0, total=100.0)})
    live.quote_currency = "USDT"
    live.markets = {"BTC/USDT": BTC_USDT}
    guard = make_guard(store, FakeClock(T0), {ALICE: live})
    guard.books.get(ALICE).orders.set_last_price("BTC/USDT", 50_000.0)
    return guard


@pytest.mark.integration
@pytest.mark.asyncio
async def test_blocked_order_through_ccxt_makes_no_network_call(
    emulator: EmulatorServer, store: Store
) -> None:
    raw = ccxt.binance(binance_ccxt_config(emulator.url, *KEYS[ALICE]))
    adapter = CcxtExchange(raw, account_id=ALICE, budget=RateBudget(1_000.0))
    exchange = GuardedExchange(adapter, usdt_guard(store))
    try:
        await exchange.load_markets()
        placed = await exchange.create_order(
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0002,
                price=49_000.0,
            )
        )
        assert placed.client_order_id is not None
        before = sum(emulator.requests.values())
        with pytest.raises(EntryBlocked):
            await exchange.create_order(
                OrderRequest(
                    symbol="BTC/USDT",
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=0.0002,
                    price=48_000.0,
                )
            )
        assert sum(emulator.requests.values()) == before
        assert emulator.requests["POST /api/v3/order"] == 1
    finally:
        await exchange.aclose()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_raw_ccxt_exchange_is_guarded_with_its_own_call_shape(
    emulator: EmulatorServer, store: Store
) -> None:
    guard = usdt_guard(store)
    exchange = GuardedExchange(
        ccxt.binance(binance_ccxt_config(emulator.url, *KEYS[ALICE])), guard, account_id=ALICE
    )
    try:
        await exchange.load_markets()
        placed = await exchange.create_order("BTC/USDT", "limit", "buy", 0.0002, 49_000.0)
        assert placed["clientOrderId"].startswith("nb-")
        with pytest.raises(EntryBlocked):
            await exchange.create_order("BTC/USDT", "limit", "buy", 0.0002, 48_000.0)
        assert emulator.requests["POST /api/v3/order"] == 1
        [reservation] = guard.reservations(ALICE)
        assert reservation.client_order_id == placed["clientOrderId"]
        assert guard.store is not None
        assert guard.store.pending_intents(ALICE) == []
    finally:
        await exchange.close()
