"""The engine's change feed: every change to an order or a balance is told, in order, once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import OrderRequest
from adapters.sim import (
    BalanceChanged,
    Deposit,
    EngineEvent,
    OrderChange,
    OrderChanged,
    SimEngine,
)
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import InsufficientFunds, InvalidOrder
from nija_broker.core.models import Market, OrderStatus, OrderType, Side

BTC = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=0.0001,
    price_step=0.01,
    min_amount=0.0001,
    min_notional=10.0,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, EngineEvent]] = []

    def __call__(self, account_id: str, event: EngineEvent) -> None:
        self.events.append((account_id, event))

    def take(self) -> list[tuple[str, EngineEvent]]:
        taken, self.events = self.events, []
        return taken

    def kinds(self) -> list[str]:
        return [
            event.change.value if isinstance(event, OrderChanged) else "balance"
            for _, event in self.take()
        ]


def make_engine(*, seed: int = 0, partial_fill_prob: float = 0.0) -> SimEngine:
    engine = SimEngine(
        seed=seed,
        clock=FakeClock(datetime(2026, 3, 1, tzinfo=UTC)),
        maker_fee=0.001,
        taker_fee=0.002,
        partial_fill_prob=partial_fill_prob,
    )
    engine.add_market(BTC, 50_000.0, volatility=0.01)
    engine.open_account("A", {"USD": 10_000.0, "BTC": 1.0})
    return engine


@pytest.fixture
def engine() -> SimEngine:
    return make_engine()


@pytest.fixture
def heard(engine: SimEngine) -> Recorder:
    recorder = Recorder()
    engine.subscribe(recorder)
    return recorder


def limit(side: Side, amount: float, price: float) -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USD", side=side, type=OrderType.LIMIT, amount=amount, price=price
    )


def market(side: Side, amount: float) -> OrderRequest:
    return OrderRequest(symbol="BTC/USD", side=side, type=OrderType.MARKET, amount=amount)


def order_events(events: list[tuple[str, EngineEvent]]) -> list[OrderChanged]:
    return [event for _, event in events if isinstance(event, OrderChanged)]


def balance_events(events: list[tuple[str, EngineEvent]]) -> list[BalanceChanged]:
    return [event for _, event in events if isinstance(event, BalanceChanged)]


# ------------------------------------------------------------------- each path


def test_resting_order_is_told_new_then_the_funds_it_holds(
    engine: SimEngine, heard: Recorder
) -> None:
    placed = engine.place_order("A", limit(Side.BUY, 0.1, 40_000.0))
    events = heard.take()
    assert [type(e) for _, e in events] == [OrderChanged, BalanceChanged]
    new, held = events[0][1], events[1][1]
    assert isinstance(new, OrderChanged)
    assert isinstance(held, BalanceChanged)
    assert (new.change, new.order, new.fill) == (OrderChange.NEW, placed, None)
    assert held.changed == ("USD",)
    assert held.balances == engine.balances("A")
    assert held.balances["USD"].used > 0
    assert {account for account, _ in events} == {"A"}


def test_market_order_is_told_new_then_one_trade_with_trade_id_and_fee_then_balances(
    engine: SimEngine, heard: Recorder
) -> None:
    placed = engine.place_order("A", market(Side.BUY, 0.01))
    events = heard.take()
    new, trade = order_events(events)
    assert new.change is OrderChange.NEW
    assert new.order.status is OrderStatus.OPEN
    assert trade.change is OrderChange.TRADE
    assert trade.order == placed
    assert trade.order.status is OrderStatus.FILLED
    assert trade.fill == engine.trades("A")[-1]
    assert trade.fill.trade_id is not None
    assert trade.fill.fee_cost == pytest.approx(500.0 * 0.002)
    assert trade.maker is False
    (moved,) = balance_events(events)
    assert moved.changed == ("BTC", "USD")
    assert moved.balances == engine.balances("A")
    assert isinstance(events[-1][1], BalanceChanged)


def test_partial_fill_then_the_price_filling_the_rest_are_two_trades_as_maker(
    engine: SimEngine, heard: Recorder
) -> None:
    order = engine.place_order("A", limit(Side.SELL, 0.5, 52_000.0))
    heard.take()
    engine.fill_partially("A", order.id, 0.2)
    first = heard.take()
    engine.set_price("BTC/USD", 52_000.0)
    second = heard.take()
    (part,) = order_events(first)
    (rest,) = order_events(second)
    assert part.order.status is OrderStatus.PARTIALLY_FILLED
    assert part.fill is not None
    assert part.fill.amount == pytest.approx(0.2)
    assert rest.order.status is OrderStatus.FILLED
    assert rest.fill is not None
    assert rest.fill.cumulative_filled == pytest.approx(0.5)
    assert (part.maker, rest.maker) == (True, True)
    assert part.fill.trade_id != rest.fill.trade_id
    assert len(balance_events(first)) == len(balance_events(second)) == 1


def test_price_steps_tell_each_fill_they_cause() -> None:
    engine = make_engine(seed=3)
    heard = Recorder()
    for price in (49_000.0, 48_000.0, 51_000.0, 52_000.0):
        side = Side.BUY if price < 50_000 else Side.SELL
        engine.place_order("A", limit(side, 0.01, price))
    engine.subscribe(heard)
    fills = engine.step(200)
    assert fills
    told = [event.fill for event in order_events(heard.take())]
    assert told == fills


def test_cancel_is_told_cancelled_then_the_released_hold(
    engine: SimEngine, heard: Recorder
) -> None:
    order = engine.place_order("A", limit(Side.BUY, 0.1, 40_000.0))
    heard.take()
    engine.cancel_order("A", order.id)
    events = heard.take()
    (cancelled,) = order_events(events)
    assert cancelled.change is OrderChange.CANCELLED
    assert cancelled.order.status is OrderStatus.CANCELLED
    (released,) = balance_events(events)
    assert released.balances["USD"].used == 0


def test_delayed_cancel_is_told_pending_then_cancelled_when_completed(
    engine: SimEngine, heard: Recorder
) -> None:
    order = engine.place_order("A", limit(Side.BUY, 0.1, 40_000.0))
    engine.delay_cancels(1)
    heard.take()
    engine.cancel_order("A", order.id)
    assert heard.kinds() == ["cancel_pending"]
    engine.complete_cancels("A")
    events = heard.take()
    (done,) = order_events(events)
    assert (done.change, done.flags.cancel_pending) == (OrderChange.CANCELLED, False)
    assert len(balance_events(events)) == 1


def test_ioc_that_finds_little_liquidity_is_told_trade_then_expired(
    engine: SimEngine, heard: Recorder
) -> None:
    engine.set_liquidity("BTC/USD", 0.03)
    engine.place_order("A", limit(Side.BUY, 0.1, 50_000.0), time_in_force="IOC")
    events = order_events(heard.take())
    assert [e.change for e in events] == [OrderChange.NEW, OrderChange.TRADE, OrderChange.EXPIRED]
    assert events[-1].order.filled == pytest.approx(0.03)


def test_self_trade_prevention_tells_the_expired_maker_with_its_flag(
    engine: SimEngine, heard: Recorder
) -> None:
    maker = engine.place_order("A", limit(Side.SELL, 0.1, 50_100.0))
    engine.set_liquidity("BTC/USD", 0.0)
    heard.take()
    engine.place_order("A", limit(Side.BUY, 0.1, 50_200.0), stp_mode="EXPIRE_MAKER")
    events = order_events(heard.take())
    expired = [e for e in events if e.change is OrderChange.EXPIRED]
    assert [e.order.id for e in expired] == [maker.id]
    assert expired[0].flags.expired_in_match


def test_stop_is_told_triggered_then_its_fill(engine: SimEngine, heard: Recorder) -> None:
    engine.place_order(
        "A",
        OrderRequest(
            symbol="BTC/USD", side=Side.SELL, type=OrderType.STOP, amount=0.1, stop_price=49_000.0
        ),
    )
    heard.take()
    engine.set_price("BTC/USD", 48_900.0)
    assert heard.kinds() == ["triggered", "trade", "balance"]


def test_stop_market_buy_that_gaps_past_its_funds_is_told_rejected() -> None:
    engine = make_engine()
    engine.open_account("C", {"USD": 1_000.0})
    heard = Recorder()
    engine.subscribe(heard)
    engine.place_order(
        "C",
        OrderRequest(
            symbol="BTC/USD", side=Side.BUY, type=OrderType.STOP, amount=0.019, stop_price=52_000.0
        ),
    )
    heard.take()
    engine.set_price("BTC/USD", 60_000.0)
    events = heard.take()
    assert [e.change for e in order_events(events)] == [
        OrderChange.TRIGGERED,
        OrderChange.REJECTED,
    ]
    assert balance_events(events)[-1].balances["USD"].used == 0


def test_deposit_is_told_as_a_balance_change_naming_the_deposit(
    engine: SimEngine, heard: Recorder
) -> None:
    engine.deposit("A", "eth", 2.5)
    ((account, event),) = heard.take()
    assert account == "A"
    assert isinstance(event, BalanceChanged)
    assert (event.changed, event.deposit) == (("ETH",), Deposit("ETH", 2.5))
    assert event.balances["ETH"].total == 2.5


def test_opening_an_account_tells_its_first_deposits(engine: SimEngine, heard: Recorder) -> None:
    engine.open_account("B", {"USD": 500.0, "BTC": 0.5})
    events = heard.take()
    assert [(a, e.deposit) for a, e in events if isinstance(e, BalanceChanged)] == [
        ("B", Deposit("USD", 500.0)),
        ("B", Deposit("BTC", 0.5)),
    ]


def test_refused_order_and_empty_deposit_tell_nothing(engine: SimEngine, heard: Recorder) -> None:
    with pytest.raises(InsufficientFunds):
        engine.place_order("A", limit(Side.BUY, 10.0, 40_000.0))
    with pytest.raises(InvalidOrder):
        engine.place_order("A", limit(Side.BUY, 0.00001, 40_000.0))
    engine.deposit("A", "USD", 0.0)
    assert heard.take() == []


# ------------------------------------------------------------------- delivery


def test_events_arrive_once_the_engine_call_has_returned(engine: SimEngine) -> None:
    seen_status: list[OrderStatus] = []

    def look(account_id: str, event: EngineEvent) -> None:
        if isinstance(event, OrderChanged) and event.change is OrderChange.NEW:
            seen_status.append(engine.get_order(account_id, event.order.id).status)

    engine.subscribe(look)
    engine.place_order("A", market(Side.BUY, 0.01))
    # The NEW event still shows the order as it was, but the engine is done with the match.
    assert seen_status == [OrderStatus.FILLED]


def test_subscriber_that_raises_is_logged_and_leaves_the_engine_and_others_alone(
    engine: SimEngine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(account_id: str, event: EngineEvent) -> None:
        raise RuntimeError("subscriber bug")

    heard = Recorder()
    engine.subscribe(broken)
    engine.subscribe(heard)
    with caplog.at_level(logging.ERROR, logger="adapters.sim._events"):
        order = engine.place_order("A", market(Side.BUY, 0.01))
    assert order.status is OrderStatus.FILLED
    assert heard.kinds() == ["new", "trade", "balance"]
    assert "subscriber bug" in caplog.text


def test_callback_that_changes_the_engine_hears_that_change_after_the_current_ones(
    engine: SimEngine,
) -> None:
    heard = Recorder()
    cancelled: list[str] = []

    def cancel_new_orders(account_id: str, event: EngineEvent) -> None:
        heard(account_id, event)
        if isinstance(event, OrderChanged) and event.change is OrderChange.NEW:
            cancelled.append(engine.cancel_order(account_id, event.order.id).id)

    engine.subscribe(cancel_new_orders)
    order = engine.place_order("A", limit(Side.BUY, 0.1, 40_000.0))
    assert cancelled == [order.id]
    assert heard.kinds() == ["new", "balance", "cancelled", "balance"]


def test_unsubscribed_callback_hears_nothing_more(engine: SimEngine) -> None:
    heard = Recorder()
    unsubscribe = engine.subscribe(heard)
    engine.deposit("A", "USD", 1.0)
    unsubscribe()
    unsubscribe()
    engine.deposit("A", "USD", 1.0)
    assert len(heard.take()) == 1


# ------------------------------------------------------------------- property


OPS = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell", "market", "cancel", "partial", "step", "deposit"]),
        st.integers(min_value=0, max_value=10_000),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS, seed=st.integers(min_value=0, max_value=50))
def test_the_feed_replays_every_fill_once_in_order_and_ends_at_the_engines_state(
    ops: list[tuple[str, int]], seed: int
) -> None:
    engine = make_engine(seed=seed, partial_fill_prob=0.5)
    heard = Recorder()
    engine.subscribe(heard)
    for op, n in ops:
        price = engine.price("BTC/USD")
        open_ids = [o.id for o in engine.open_orders("A")]
        try:
            if op == "buy":
                engine.place_order("A", limit(Side.BUY, 0.01, round(price * 0.99, 2)))
            elif op == "sell":
                engine.place_order("A", limit(Side.SELL, 0.01, round(price * 1.01, 2)))
            elif op == "market":
                engine.place_order("A", market(Side.BUY if n % 2 else Side.SELL, 0.001))
            elif op == "cancel" and open_ids:
                engine.cancel_order("A", open_ids[n % len(open_ids)])
            elif op == "partial" and open_ids:
                engine.fill_partially("A", open_ids[n % len(open_ids)], 0.001)
            elif op == "step":
                engine.step(1 + n % 5)
            elif op == "deposit":
                engine.deposit("A", "USD", float(n))
        except (InsufficientFunds, InvalidOrder, ValueError):
            pass
    events = heard.take()
    assert [e.seq for _, e in events] == list(range(1, len(events) + 1))
    orders = order_events(events)
    assert [e.fill for e in orders if e.fill is not None] == list(engine.trades("A"))
    last = {e.order.id: e.order for e in orders}
    assert last == {o.id: o for o in engine.all_orders("A")}
    balances = balance_events(events)
    if balances:
        assert balances[-1].balances == engine.balances("A")
