"""Order tracker properties over random sequences of updates, legal and illegal."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nija_broker.core.errors import IllegalTransition, StateError
from nija_broker.core.models import (
    LEGAL_TRANSITIONS,
    Order,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)
from nija_broker.core.orders import OrderTracker, OrderTrackerRegistry

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNTS = ("PLATFORM", "USER:alice", "USER:bob")
SYMBOLS = ("BTC/USD", "ETH/USD")
FEE = 0.004
LAST_PRICES = {"BTC/USD": 50_000.0}  # ETH has none: its market orders stay unpriced
LIVE = {OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED}

_PROPERTY = settings(max_examples=120, deadline=None)


@st.composite
def updates(draw: st.DrawFn, accounts: tuple[str, ...] = ("PLATFORM",)) -> Order:
    """A report about one of a few orders; repeats, regressions and side flips included."""
    slot = draw(st.integers(0, 4))
    order_type = draw(st.sampled_from([OrderType.LIMIT, OrderType.MARKET, OrderType.STOP]))
    amount = float(slot + 1)
    fields: dict[str, Any] = {
        "id": f"o{slot}",
        "account_id": draw(st.sampled_from(accounts)),
        "symbol": SYMBOLS[slot % 2],
        "side": draw(st.sampled_from([Side.BUY, Side.SELL])),
        "type": order_type,
        "role": draw(st.sampled_from(list(OrderRole))),
        "amount": amount,
        "filled": amount * draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        "status": draw(st.sampled_from(list(OrderStatus))),
        "created_at": T0 + timedelta(minutes=slot),
        "parent_position_id": draw(st.sampled_from([None, "pos-1"])),
    }
    if order_type is OrderType.LIMIT:
        fields["price"] = draw(st.sampled_from([10.0, 100.0, 2_000.0]))
    elif order_type is OrderType.STOP:
        fields["stop_price"] = draw(st.sampled_from([9.0, 90.0]))
    return Order(**fields)


def expected_held(orders: list[Order], last_prices: Mapping[str, float]) -> float:
    """DESIGN's held capital, written out case by case."""
    total = 0.0
    for order in orders:
        if order.status not in LIVE or order.remaining == 0:
            continue
        last = last_prices.get(order.symbol)
        if order.side is Side.BUY:
            if order.type is OrderType.MARKET:
                price = last if last is not None else order.price
            else:
                price = order.price if order.price is not None else order.stop_price
            if price is not None:
                total += order.remaining * price * (1 + FEE)
        else:
            if order.price is not None:
                price = order.price
            elif order.stop_price is not None:
                price = order.stop_price
            else:
                price = last
            if price is not None:
                total += order.remaining * price
    return total


def acceptable(previous: Order | None, update: Order) -> bool:
    if previous is None:
        return True
    return (
        update.status in LEGAL_TRANSITIONS[previous.status]
        and update.filled >= previous.filled
        and update.side is previous.side
        and update.symbol == previous.symbol
    )


@_PROPERTY
@given(st.lists(updates(), min_size=1, max_size=40))
def test_filled_never_decreases_and_held_capital_is_the_sum_over_live_orders(
    sequence: list[Order],
) -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=FEE)
    for symbol, price in LAST_PRICES.items():
        tracker.set_last_price(symbol, price)
    max_filled: dict[str, float] = {}

    for update in sequence:
        previous = tracker.get(update.id)
        before = tracker.orders()
        try:
            tracker.apply(update)
        except (IllegalTransition, StateError):
            assert not acceptable(previous, update)
            assert tracker.orders() == before
        else:
            assert acceptable(previous, update)
            assert tracker.get(update.id) is update

        for order in tracker.orders():
            assert order.filled >= max_filled.get(order.id, 0.0)
            max_filled[order.id] = order.filled
            if previous is not None and previous.id == order.id and previous.is_terminal:
                assert order.status is previous.status

        held = tracker.held_capital()
        assert held.total >= 0
        assert held.buys >= 0
        assert held.sells >= 0
        assert math.isclose(held.total, held.buys + held.sells, rel_tol=1e-12, abs_tol=1e-9)
        assert math.isclose(
            held.total, expected_held(tracker.orders(), LAST_PRICES), rel_tol=1e-9, abs_tol=1e-9
        )
        assert set(held.unpriced_order_ids) == {
            o.id
            for o in tracker.live_orders()
            if o.type is OrderType.MARKET and o.remaining > 0 and o.symbol not in LAST_PRICES
        }
        live = tracker.live_orders()
        assert {o.id for o in live} == {o.id for o in tracker.orders() if o.status in LIVE}
        assert {o.id for o in tracker.open_orders()} == {o.id for o in live if o.is_open}


@_PROPERTY
@given(st.lists(updates(ACCOUNTS), min_size=1, max_size=60))
def test_each_account_sees_only_its_own_updates_whatever_the_interleaving(
    sequence: list[Order],
) -> None:
    registry = OrderTrackerRegistry(fee_rate=FEE)
    outcomes: dict[str, list[bool]] = {account: [] for account in ACCOUNTS}
    for update in sequence:
        tracker = registry.get(update.account_id)
        try:
            tracker.apply(update)
            outcomes[update.account_id].append(True)
        except (IllegalTransition, StateError):
            outcomes[update.account_id].append(False)
        # The same report offered to any other account is refused and leaves it untouched.
        other = registry.get(next(a for a in ACCOUNTS if a != update.account_id))
        before = other.orders()
        try:
            other.apply(update)
        except StateError:
            pass
        else:
            raise AssertionError(f"{other.account_id} accepted an order of {update.account_id}")
        assert other.orders() == before

    now = T0 + timedelta(hours=2)
    for account in ACCOUNTS:
        alone = OrderTracker(account, fee_rate=FEE)
        alone_outcomes = []
        for update in sequence:
            if update.account_id != account:
                continue
            try:
                alone.apply(update)
                alone_outcomes.append(True)
            except (IllegalTransition, StateError):
                alone_outcomes.append(False)
        shared = registry.get(account)
        assert alone_outcomes == outcomes[account]
        assert shared.orders() == alone.orders()
        assert all(order.account_id == account for order in shared.orders())
        assert shared.held_capital() == alone.held_capital()
        assert shared.stats(now) == alone.stats(now)
        assert shared.double_reservations({"BTC/USD": 1.0}) == alone.double_reservations(
            {"BTC/USD": 1.0}
        )
