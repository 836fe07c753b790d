"""SimExchange over the engine, and the seeded fault injector behind it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.base import Capabilities, Exchange, OrderRequest
from adapters.sim import FaultInjector, FaultKind, FaultPlan, SimEngine, SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import (
    ExchangeError,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    TransientError,
)
from nija_broker.core.models import Market, OrderStatus, OrderType, Side

BTC = Market(symbol="BTC/USD", base="BTC", quote="USD", amount_step=0.0001, price_step=0.01)
ETH = Market(symbol="ETH/USD", base="ETH", quote="USD", amount_step=0.001, price_step=0.01)
SOL = Market(symbol="SOL/USD", base="SOL", quote="USD", amount_step=0.01, price_step=0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 1, tzinfo=UTC))


@pytest.fixture
def engine(clock: FakeClock) -> SimEngine:
    engine = SimEngine(seed=1, clock=clock)
    engine.add_market(BTC, 50_000.0)
    engine.add_market(ETH, 3_000.0)
    engine.add_market(SOL, 150.0)
    engine.open_account("A", {"USD": 10_000.0})
    return engine


def buy(symbol: str, price: float, amount: float = 0.01, cid: str | None = None) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=amount,
        price=price,
        client_order_id=cid,
    )


def always(kind: FaultKind, *, timeout_s: float = 0.0) -> FaultPlan:
    return FaultPlan(rate=1.0, kinds=frozenset({kind}), timeout_s=timeout_s)


# ------------------------------------------------------------------- fault injector


def decisions(plan: FaultPlan, methods: list[str]) -> list[FaultKind | None]:
    injector = FaultInjector(plan, FakeClock())
    return [injector.next(method) for method in methods]


def test_fault_decisions_are_seeded_and_repeat_exactly() -> None:
    methods = ["fetch_open_orders", "create_order", "fetch_balance"] * 100
    plan = FaultPlan(rate=0.3, seed=7)
    first = decisions(plan, methods)
    assert decisions(plan, methods) == first
    assert decisions(FaultPlan(rate=0.3, seed=8), methods) != first
    faulted = sum(kind is not None for kind in first)
    assert 60 <= faulted <= 120  # 30% of 300, loosely
    assert len({kind for kind in first if kind is not None}) == len(FaultKind)


def test_a_methods_faults_do_not_depend_on_other_methods_calls() -> None:
    plan = FaultPlan(rate=0.5, seed=3)
    alone = decisions(plan, ["fetch_order"] * 50)
    mixed = decisions(plan, ["fetch_order", "fetch_balance"] * 50)
    assert mixed[0::2] == alone


def test_no_faults_at_rate_zero_or_outside_the_planned_methods() -> None:
    assert set(decisions(FaultPlan(rate=0.0), ["create_order"] * 200)) == {None}
    plan = FaultPlan(rate=1.0, methods=frozenset({"fetch_balance"}))
    assert set(decisions(plan, ["create_order"] * 50)) == {None}
    assert None not in decisions(plan, ["fetch_balance"] * 50)


def test_only_listings_are_truncated() -> None:
    plan = FaultPlan(rate=1.0, kinds=frozenset({FaultKind.TRUNCATED_PAGE}))
    assert set(decisions(plan, ["create_order"] * 20)) == {None}
    assert set(decisions(plan, ["fetch_open_orders"] * 20)) == {FaultKind.TRUNCATED_PAGE}


def test_injector_counts_every_call_and_can_be_switched_off() -> None:
    injector = FaultInjector(FaultPlan(rate=1.0), FakeClock())
    assert injector.next("create_order") is not None
    injector.disable()
    assert injector.next("create_order") is None
    assert injector.calls["create_order"] == 2
    assert sum(injector.injected.values()) == 1


# ----------------------------------------------------------------- faults at the edge


@pytest.mark.asyncio
async def test_lost_response_places_the_order_but_the_caller_sees_a_timeout(
    engine: SimEngine, clock: FakeClock
) -> None:
    faults = FaultInjector(always(FaultKind.LOST_RESPONSE, timeout_s=10.0), clock)
    exchange = SimExchange(engine, "A", faults=faults)
    with pytest.raises(TransientError, match="timed out") as caught:
        await exchange.create_order(buy("BTC/USD", 40_000.0, cid="intent-1"))
    assert (caught.value.exchange, caught.value.account_id) == ("sim", "A")
    assert clock.monotonic() == 10.0
    # The exchange has it: the client id is how the caller finds out.
    placed = engine.get_order_by_client_id("A", "intent-1")
    assert placed.status is OrderStatus.OPEN
    faults.disable()
    assert (await exchange.fetch_order_by_client_id("intent-1", "BTC/USD")).id == placed.id


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (FaultKind.TIMEOUT, TransientError),
        (FaultKind.SERVER_ERROR, TransientError),
        (FaultKind.RATE_LIMIT, RateLimited),
    ],
)
async def test_failed_requests_never_reach_the_engine(
    engine: SimEngine, clock: FakeClock, kind: FaultKind, error: type[Exception]
) -> None:
    exchange = SimExchange(engine, "A", faults=FaultInjector(always(kind), clock))
    with pytest.raises(error):
        await exchange.create_order(buy("BTC/USD", 40_000.0))
    with pytest.raises(error):
        await exchange.cancel_order("1", "BTC/USD")
    assert engine.all_orders("A") == []
    assert exchange.calls["create_order"] == 1


@pytest.mark.asyncio
async def test_truncated_page_is_marked_incomplete_and_cut_short(
    engine: SimEngine, clock: FakeClock
) -> None:
    for i in range(6):
        engine.place_order("A", buy("BTC/USD", 40_000.0 + i))
    faults = FaultInjector(always(FaultKind.TRUNCATED_PAGE), clock)
    page = await SimExchange(engine, "A", faults=faults).fetch_open_orders()
    assert page.complete is False
    assert len(page.orders) == 3
    faults.disable()
    whole = await SimExchange(engine, "A", faults=faults).fetch_open_orders()
    assert (whole.complete, len(whole.orders)) == (True, 6)


@pytest.mark.asyncio
async def test_fresh_order_is_hidden_from_queries_for_the_planned_window(
    engine: SimEngine, clock: FakeClock
) -> None:
    faults = FaultInjector(FaultPlan(hidden_after_create_s=2.0), clock)
    exchange = SimExchange(engine, "A", faults=faults)
    order = await exchange.create_order(buy("BTC/USD", 40_000.0, cid="c-1"))
    assert (await exchange.fetch_open_orders()).orders == []
    with pytest.raises(OrderNotFound):
        await exchange.fetch_order(order.id, "BTC/USD")
    with pytest.raises(OrderNotFound):
        await exchange.fetch_order_by_client_id("c-1", "BTC/USD")
    assert engine.get_order("A", order.id).status is OrderStatus.OPEN  # it exists all along
    clock.advance(2.0)
    assert [o.id for o in (await exchange.fetch_open_orders()).orders] == [order.id]
    assert (await exchange.fetch_order(order.id, "BTC/USD")).id == order.id


@pytest.mark.asyncio
async def test_latency_delays_the_answer_on_the_injected_clock(
    engine: SimEngine, clock: FakeClock
) -> None:
    plan = FaultPlan(
        rate=1.0, kinds=frozenset({FaultKind.LATENCY}), latency_s=3.0, base_latency_s=0.5
    )
    exchange = SimExchange(engine, "A", faults=FaultInjector(plan, clock))
    balances = await exchange.fetch_balance()
    assert balances["USD"].total == 10_000.0
    assert clock.monotonic() == 3.5


# --------------------------------------------------------------------- the adapter


@pytest.mark.asyncio
async def test_counts_and_logs_every_request(engine: SimEngine) -> None:
    exchange = SimExchange(engine, "A")
    assert isinstance(exchange, Exchange)
    request = buy("BTC/USD", 40_000.0)
    order = await exchange.create_order(request)
    await exchange.fetch_open_orders()
    await exchange.cancel_order(order.id, "BTC/USD")
    assert exchange.calls == {"create_order": 1, "fetch_open_orders": 1, "cancel_order": 1}
    assert exchange.call_log == [
        ("create_order", {"request": request}),
        ("fetch_open_orders", {"symbol": None}),
        ("cancel_order", {"order_id": order.id, "symbol": "BTC/USD"}),
    ]


@pytest.mark.asyncio
async def test_each_call_yields_to_the_loop_before_it_acts(engine: SimEngine) -> None:
    exchange = SimExchange(engine, "A")
    task = asyncio.create_task(exchange.create_order(buy("BTC/USD", 40_000.0)))
    await asyncio.sleep(0)
    assert engine.all_orders("A") == []  # started, suspended, not yet placed
    await task
    assert len(engine.all_orders("A")) == 1


@pytest.mark.asyncio
async def test_listing_per_symbol_makes_one_request_per_symbol(engine: SimEngine) -> None:
    engine.place_order("A", buy("BTC/USD", 40_000.0))
    engine.place_order("A", buy("SOL/USD", 100.0, amount=1.0))
    caps = Capabilities(
        open_orders_without_symbol=False, fetch_order_by_client_id=True, watch_orders=False
    )
    exchange = SimExchange(engine, "A", capabilities=caps)
    page = await exchange.fetch_open_orders(["BTC/USD", "ETH-USD", "SOL/USD"])
    assert page.calls == 3
    assert exchange.calls["fetch_open_orders"] == 3
    assert sorted(o.symbol for o in page.orders) == ["BTC/USD", "SOL/USD"]
    with pytest.raises(InvalidOrder, match="one symbol at a time"):
        await exchange.fetch_open_orders()


@pytest.mark.asyncio
async def test_one_truncated_symbol_makes_the_whole_listing_incomplete(
    engine: SimEngine, clock: FakeClock
) -> None:
    caps = Capabilities(
        open_orders_without_symbol=False, fetch_order_by_client_id=True, watch_orders=False
    )
    plan = FaultPlan(rate=0.5, kinds=frozenset({FaultKind.TRUNCATED_PAGE}), seed=2)
    exchange = SimExchange(engine, "A", capabilities=caps, faults=FaultInjector(plan, clock))
    pages = [await exchange.fetch_open_orders(["BTC/USD", "ETH/USD"]) for _ in range(10)]
    assert {page.complete for page in pages} == {True, False}


@pytest.mark.asyncio
async def test_fetch_order_with_the_wrong_symbol_is_not_found(engine: SimEngine) -> None:
    exchange = SimExchange(engine, "A")
    order = await exchange.create_order(buy("BTC/USD", 40_000.0))
    with pytest.raises(OrderNotFound) as caught:
        await exchange.fetch_order(order.id, "ETH/USD")
    assert caught.value.exchange == "sim"
    with pytest.raises(OrderNotFound):
        await exchange.cancel_order(order.id, "ETH/USD")
    assert engine.get_order("A", order.id).status is OrderStatus.OPEN


@pytest.mark.asyncio
async def test_history_trades_tickers_and_markets_come_from_the_engine(
    engine: SimEngine,
) -> None:
    exchange = SimExchange(engine, "A", exchange_id="kraken-sim")
    resting = await exchange.create_order(buy("BTC/USD", 40_000.0))
    filled = await exchange.create_order(buy("ETH/USD", 3_100.0, amount=0.5))
    closed = await exchange.fetch_closed_orders(None, None)
    assert [o.id for o in closed] == [filled.id]
    assert resting.id not in {o.id for o in closed}
    [trade] = await exchange.fetch_my_trades("ETH/USD", None)
    assert (trade.order_id, trade.amount) == (filled.id, 0.5)
    tickers = await exchange.fetch_tickers(["BTC-USD", "SOL/USD"])
    assert tickers["BTC/USD"].last == 50_000.0
    assert set(await exchange.load_markets()) == {"BTC/USD", "ETH/USD", "SOL/USD"}
    assert exchange.exchange_id == "kraken-sim"


@pytest.mark.asyncio
async def test_order_trades_are_that_orders_fills_with_the_fees_charged(
    engine: SimEngine,
) -> None:
    engine.open_account("B", {"USD": 10_000.0}, fee_mode="base_for_buys")
    exchange = SimExchange(engine, "B")
    first = await exchange.create_order(buy("ETH/USD", 3_100.0, amount=0.5))
    resting = await exchange.create_order(buy("ETH/USD", 2_900.0, amount=0.2))
    await exchange.create_order(buy("ETH/USD", 3_100.0, amount=0.1))
    engine.fill_partially("B", resting.id, 0.1)

    [trade] = await exchange.fetch_order_trades(first)
    partial = await exchange.fetch_order_trades(await exchange.fetch_order(resting.id, "ETH/USD"))

    assert (trade.order_id, trade.amount, trade.fee_currency) == (first.id, 0.5, "ETH")
    assert trade.fee_cost == pytest.approx(0.5 * engine.taker_fee)
    assert [(t.order_id, t.amount) for t in partial] == [(resting.id, 0.1)]
    assert exchange.calls["fetch_order_trades"] == 2


@pytest.mark.asyncio
async def test_exchange_without_client_ids_drops_ours_and_refuses_lookups(
    engine: SimEngine,
) -> None:
    caps = Capabilities(
        open_orders_without_symbol=True,
        fetch_order_by_client_id=False,
        watch_orders=False,
        client_order_id=False,
    )
    exchange = SimExchange(engine, "A", capabilities=caps)
    order = await exchange.create_order(buy("BTC/USD", 40_000.0, cid="mine"))
    assert order.client_order_id is None
    with pytest.raises(InvalidOrder, match="client order id"):
        await exchange.fetch_order_by_client_id("mine", "BTC/USD")


@pytest.mark.asyncio
async def test_closed_exchange_refuses_calls(engine: SimEngine) -> None:
    exchange = SimExchange(engine, "A")
    await exchange.aclose()
    await exchange.aclose()
    with pytest.raises(ExchangeError, match="closed"):
        await exchange.fetch_balance()
