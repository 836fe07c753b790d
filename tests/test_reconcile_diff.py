"""The pure reconciliation core: tables of tracked state vs listings, and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nija_broker.core.errors import StateError
from nija_broker.core.events import (
    AttentionRequired,
    OrderAdopted,
    OrderCancelled,
    OrderChanged,
    OrderFilled,
    OrderPartiallyFilled,
    OrderVanished,
)
from nija_broker.core.models import Balance, Order, OrderRole, OrderStatus, OrderType, Side, Ticker
from nija_broker.core.reconcile import (
    Snapshot,
    adopt,
    diff,
    equity_of,
    fill_between,
    hold_mismatches,
    infer_role,
    resolve,
    snapshot_of,
)
from nija_broker.state.book import AccountBook

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)
ACCOUNT = "USER:alice"


def order(order_id: str = "1", **changes: object) -> Order:
    fields: dict[str, object] = {
        "id": order_id,
        "account_id": ACCOUNT,
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "price": 100.0,
        "amount": 2.0,
        "created_at": T0,
    }
    fields.update(changes)
    return Order.model_validate(fields)


def tracked_of(*orders: Order) -> dict[str, Order]:
    return {o.id: o for o in orders}


# ----------------------------------------------------------------------------- diff table

DIFF_CASES = [
    pytest.param([order()], Snapshot([order()]), [], id="nothing-changed"),
    pytest.param([], Snapshot([order()]), [OrderAdopted], id="unknown-order-is-adopted"),
    pytest.param(
        [order()],
        Snapshot([order(filled=0.5, average=100.0, status=OrderStatus.PARTIALLY_FILLED)]),
        [OrderPartiallyFilled],
        id="fill-growth-on-listing",
    ),
    pytest.param([order()], Snapshot([order(price=99.0)]), [OrderChanged], id="amended-price"),
    pytest.param(
        [order()], Snapshot([]), [OrderVanished], id="missing-from-complete-list-vanishes"
    ),
    pytest.param([order()], Snapshot([], complete=False), [], id="truncated-list-ends-nothing"),
    pytest.param(
        [order(status=OrderStatus.PENDING)], Snapshot([]), [], id="pending-order-never-vanishes"
    ),
    pytest.param(
        [order(filled=1.0, average=100.0, status=OrderStatus.PARTIALLY_FILLED)],
        Snapshot([order(filled=0.5, average=100.0, status=OrderStatus.PARTIALLY_FILLED)]),
        [AttentionRequired],
        id="filled-shrinking-is-refused",
    ),
    pytest.param(
        [order()], Snapshot([order(updated_at=NOW)]), [], id="timestamp-alone-is-not-news"
    ),
]


@pytest.mark.parametrize(("tracked", "snapshot", "expected"), DIFF_CASES)
def test_diff_table(tracked: list[Order], snapshot: Snapshot, expected: list[type]) -> None:
    events = diff(tracked_of(*tracked), snapshot, NOW)
    assert [type(e) for e in events] == expected
    assert all(e.account_id == ACCOUNT and e.at == NOW for e in events)


def test_vanished_order_is_not_changed_by_diff() -> None:
    open_order = order(filled=0.5, average=100.0, status=OrderStatus.PARTIALLY_FILLED)
    (event,) = diff(tracked_of(open_order), Snapshot([]), NOW)
    assert isinstance(event, OrderVanished)
    assert event.order is open_order


def test_update_keeps_the_role_and_parent_only_we_know() -> None:
    stop = order(
        side=Side.SELL,
        type=OrderType.STOP_LIMIT,
        stop_price=90.0,
        price=89.0,
        role=OrderRole.STOP,
        parent_position_id="pos-1",
        client_order_id="c-1",
    )
    listed = stop.model_copy(
        update={
            "role": OrderRole.ENTRY,
            "parent_position_id": None,
            "client_order_id": None,
            "filled": 1.0,
            "average": 89.0,
            "status": OrderStatus.PARTIALLY_FILLED,
        }
    )
    (event,) = diff(tracked_of(stop), Snapshot([listed]), NOW)
    assert isinstance(event, OrderPartiallyFilled)
    assert event.order.role is OrderRole.STOP
    assert event.order.parent_position_id == "pos-1"
    assert event.order.client_order_id == "c-1"


@pytest.mark.parametrize(
    ("side", "type_", "role"),
    [
        (Side.BUY, OrderType.LIMIT, OrderRole.ENTRY),
        (Side.BUY, OrderType.STOP_LIMIT, OrderRole.ENTRY),
        (Side.SELL, OrderType.LIMIT, OrderRole.EXIT),
        (Side.SELL, OrderType.MARKET, OrderRole.EXIT),
        (Side.SELL, OrderType.STOP, OrderRole.STOP),
        (Side.SELL, OrderType.STOP_LIMIT, OrderRole.STOP),
        (Side.SELL, OrderType.TAKE_PROFIT, OrderRole.TARGET),
    ],
)
def test_adopted_role_is_inferred_from_side_and_type(
    side: Side, type_: OrderType, role: OrderRole
) -> None:
    placed = order(
        side=side,
        type=type_,
        stop_price=95.0,
        price=None if type_ in (OrderType.MARKET, OrderType.STOP) else 100.0,
    )
    assert infer_role(placed) is role
    (event,) = diff({}, Snapshot([placed]), NOW)
    assert isinstance(event, OrderAdopted)
    assert event.order.role is role


def test_adopt_uses_the_intent_role_when_known() -> None:
    assert adopt(order(side=Side.SELL), OrderRole.TARGET).role is OrderRole.TARGET


def test_adopting_a_partly_filled_order_books_what_it_already_filled() -> None:
    listed = order(filled=0.5, average=99.0, fee=0.05, status=OrderStatus.PARTIALLY_FILLED)
    (event,) = diff({}, Snapshot([listed]), NOW)
    assert event.fill is not None  # type: ignore[attr-defined]
    fill = event.fill  # type: ignore[attr-defined]
    assert (fill.amount, fill.price, fill.fee, fill.cumulative_filled) == (0.5, 99.0, 0.05, 0.5)


def test_limit_buy_reported_filled_above_its_limit_is_refused_with_attention() -> None:
    listed = order(filled=0.5, average=101.0, status=OrderStatus.PARTIALLY_FILLED)
    (event,) = diff({}, Snapshot([listed]), NOW)
    assert isinstance(event, AttentionRequired)
    assert "above its limit" in event.reason
    assert event.order_id == listed.id


def test_limit_sell_reported_filled_below_its_limit_is_refused() -> None:
    listed = order(side=Side.SELL, filled=0.5, average=99.0, status=OrderStatus.PARTIALLY_FILLED)
    assert isinstance(resolve(None, listed, NOW), AttentionRequired)


def test_fill_within_the_price_tick_of_the_limit_is_not_impossible() -> None:
    listed = order(filled=0.5, average=100.004, status=OrderStatus.PARTIALLY_FILLED)
    (event,) = diff({}, Snapshot([listed]), NOW, {"BTC/USD": 0.01})
    assert not isinstance(event, AttentionRequired)


# ----------------------------------------------------------------------------- resolve table

RESOLVE_CASES = [
    pytest.param(
        order(),
        order(status=OrderStatus.FILLED, filled=2.0, average=100.0),
        OrderFilled,
        2.0,
        id="filled-between-polls",
    ),
    pytest.param(
        order(filled=0.5, average=100.0, status=OrderStatus.PARTIALLY_FILLED),
        order(status=OrderStatus.CANCELLED, filled=1.2, average=100.0),
        OrderCancelled,
        0.7,
        id="partially-filled-then-cancelled",
    ),
    pytest.param(
        order(),
        order(status=OrderStatus.CANCELLED),
        OrderCancelled,
        None,
        id="cancelled-by-someone-else",
    ),
    pytest.param(order(), order(), None, None, id="still-open-says-nothing"),
    pytest.param(
        order(status=OrderStatus.FILLED, filled=2.0, average=100.0),
        order(status=OrderStatus.CANCELLED, filled=2.0, average=100.0),
        AttentionRequired,
        None,
        id="terminal-never-changes",
    ),
]


@pytest.mark.parametrize(("tracked", "answer", "expected", "fill_amount"), RESOLVE_CASES)
def test_resolve_table(
    tracked: Order, answer: Order, expected: type | None, fill_amount: float | None
) -> None:
    event = resolve(tracked, answer, NOW)
    if expected is None:
        assert event is None
        return
    assert isinstance(event, expected)
    fill = getattr(event, "fill", None)
    assert (None if fill is None else pytest.approx(fill.amount)) == fill_amount


def test_a_cancel_answer_stamped_with_the_cancel_s_time_keeps_the_placement_time() -> None:
    # Binance answers DELETE /api/v3/order with transactTime (the cancel's), which ccxt
    # reads as the order's timestamp: the order was still placed at T0.
    answer = order(status=OrderStatus.CANCELLED, created_at=NOW)
    event = resolve(order(), answer, NOW)
    assert isinstance(event, OrderCancelled)
    assert event.order.created_at == T0
    # An earlier placement time reported later is the better one.
    event = resolve(order(created_at=NOW), order(status=OrderStatus.CANCELLED), NOW)
    assert event is not None
    assert event.order.created_at == T0  # type: ignore[attr-defined]


def test_marginal_fill_price_comes_from_the_average_change() -> None:
    before = order(filled=1.0, average=100.0, fee=0.1, status=OrderStatus.PARTIALLY_FILLED)
    after = order(filled=2.0, average=101.0, fee=0.3, status=OrderStatus.FILLED)
    fill = fill_between(before, after, NOW)
    assert not isinstance(fill, str)
    assert fill is not None
    assert fill.price == pytest.approx(102.0)
    assert fill.fee == pytest.approx(0.2)
    assert fill.key == f"1:c:{2.0!r}"


def test_fill_without_any_price_is_not_invented_by_the_book() -> None:
    market = order(type=OrderType.MARKET, price=None)
    filled = market.model_copy(update={"filled": 2.0, "status": OrderStatus.FILLED})
    book = AccountBook(market.account_id)
    book.apply_order(market)
    with pytest.raises(StateError, match="no average price"):
        book.apply_changes([filled])
    assert book.orders.get(market.id) == market
    assert book.positions() == []


# ----------------------------------------------------------------------------- equity


def test_equity_is_quote_plus_assets_at_last_price_and_names_the_unpriced() -> None:
    balances = {
        "USD": Balance(currency="USD", total=100.0, free=100.0),
        "BTC": Balance(currency="BTC", total=0.5, free=0.5),
        "DOGE": Balance(currency="DOGE", total=10.0, free=10.0),
        "ETH": Balance(currency="ETH", total=0.0),
    }
    tickers = {"BTC/USD": Ticker(symbol="BTC/USD", last=200.0)}
    assert equity_of(balances, tickers, "USD") == (200.0, ("DOGE",))


# ----------------------------------------------------------------------------- properties

_statuses = st.sampled_from(
    [
        OrderStatus.OPEN,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING,
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
    ]
)


@st.composite
def _orders(draw: st.DrawFn) -> list[Order]:
    count = draw(st.integers(0, 12))
    found = []
    for index in range(count):
        status = draw(_statuses)
        amount = draw(st.floats(0.001, 10.0))
        filled = (
            0.0
            if status in (OrderStatus.OPEN, OrderStatus.PENDING)
            else (amount if status is OrderStatus.FILLED else amount * draw(st.floats(0.0, 0.99)))
        )
        found.append(
            order(
                str(index + 1),
                amount=amount,
                filled=filled,
                status=status,
                average=100.0 if filled > 0 else None,
                side=draw(st.sampled_from(list(Side))),
                role=draw(st.sampled_from(list(OrderRole))),
                created_at=T0 + timedelta(seconds=draw(st.integers(0, 10_000))),
            )
        )
    return found


@settings(max_examples=80, deadline=None)
@given(_orders())
def test_diff_of_a_state_against_its_own_listing_is_empty(orders: list[Order]) -> None:
    tracked = {o.id: o for o in orders if not o.status.is_terminal}
    assert diff(tracked, snapshot_of(tracked.values()), NOW) == []


@settings(max_examples=80, deadline=None)
@given(_orders(), st.data())
def test_diff_never_ends_an_order_and_truncation_never_vanishes(
    orders: list[Order], data: st.DataObject
) -> None:
    tracked = {o.id: o for o in orders if not o.status.is_terminal}
    shown = data.draw(
        st.lists(st.sampled_from(list(tracked.values())), unique_by=lambda o: o.id)
        if tracked
        else st.just([])
    )
    for complete in (True, False):
        events = diff(tracked, Snapshot(shown, complete=complete), NOW)
        # A listing of open orders ends nothing; only the exchange's word about an order can.
        assert not any(isinstance(e, OrderFilled | OrderCancelled) for e in events)
        vanished = {e.order.id for e in events if isinstance(e, OrderVanished)}
        if complete:
            expected = {i for i, o in tracked.items() if o.status.is_open} - {o.id for o in shown}
            assert vanished == expected
        else:
            assert vanished == set()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=8))
def test_fills_derived_from_growth_add_up_to_the_filled_amount(steps: list[float]) -> None:
    total = sum(steps)
    current = order(amount=total * 1.01)
    booked = 0.0
    keys = set()
    cumulative = 0.0
    for step in steps:
        cumulative += step
        nxt = current.model_copy(
            update={"filled": cumulative, "average": 100.0, "status": OrderStatus.PARTIALLY_FILLED}
        )
        event = resolve(current, nxt, NOW)
        fill = getattr(event, "fill", None)
        assert fill is not None
        keys.add(fill.key)
        booked += fill.amount
        # Replaying the same report books nothing more.
        assert resolve(nxt, nxt, NOW) is None
        current = nxt
    assert booked == pytest.approx(cumulative)
    assert len(keys) == len(steps)


# ----------------------------------------------------------------------------- holds


def _hold_order(
    oid: str, side: str, amount: float, price: float, type_: str = "limit", filled: float = 0.0
) -> Order:
    return Order(
        id=oid,
        account_id="A",
        symbol="BTC/USD",
        side=side,
        type=type_,
        price=None if type_ == "stop" else price,
        stop_price=price if type_ == "stop" else None,
        amount=amount,
        filled=filled,
        status="partially_filled" if filled else "open",
        created_at=T0,
    )


def _bal(currency: str, used: float) -> dict[str, Balance]:
    return {currency: Balance(currency=currency, free=1_000.0, used=used, total=1_000.0 + used)}


@pytest.mark.parametrize(
    ("orders", "balances", "problem"),
    [
        # A resting buy of 0.5 BTC at 100 locks 50 USD (50.2 with Kraken's fee hold).
        ([("b", "buy", 0.5, 100.0)], _bal("USD", 50.0), None),
        ([("b", "buy", 0.5, 100.0)], _bal("USD", 50.2), None),
        # The exchange holds nothing: the order is gone there.
        ([("b", "buy", 0.5, 100.0)], _bal("USD", 0.0), "USD"),
        # The exchange holds for an order we do not know.
        ([], _bal("USD", 300.0), "USD"),
        # A sell locks base; a resting stop may or may not hold.
        ([("s", "sell", 0.5, 120.0)], _bal("BTC", 0.5), None),
        ([("s", "sell", 0.5, 90.0, "stop")], _bal("BTC", 0.0), None),
        ([("s", "sell", 0.5, 90.0, "stop")], _bal("BTC", 0.5), None),
        ([("s", "sell", 0.5, 120.0)], _bal("BTC", 0.1), "BTC"),
    ],
)
def test_held_capital_is_cross_checked_against_the_exchanges_used_balance(
    orders: list[tuple[Any, ...]], balances: dict[str, Balance], problem: str | None
) -> None:
    found = hold_mismatches([_hold_order(*o) for o in orders], balances, fee_rate=0.004)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].startswith(f"{problem}: the exchange holds")
