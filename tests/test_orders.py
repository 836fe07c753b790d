"""Per-account order tracker: what a trader relies on, scenario by scenario."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nija_broker.core.errors import IllegalTransition, StateError
from nija_broker.core.models import Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.core.orders import OrderTracker, OrderTrackerRegistry

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FEE = 0.004


def order(order_id: str, account_id: str = "PLATFORM", **fields: Any) -> Order:
    values: dict[str, Any] = {
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "role": OrderRole.ENTRY,
        "price": 100.0,
        "amount": 1.0,
        "created_at": T0,
    }
    values.update(fields)
    return Order(id=order_id, account_id=account_id, **values)


def stop(order_id: str, amount: float, parent: str | None = "pos-1", **fields: Any) -> Order:
    return order(
        order_id,
        side=Side.SELL,
        type=OrderType.STOP,
        role=OrderRole.STOP,
        price=None,
        stop_price=90.0,
        amount=amount,
        parent_position_id=parent,
        **fields,
    )


def target(order_id: str, amount: float, parent: str | None = "pos-1", **fields: Any) -> Order:
    return order(
        order_id,
        side=Side.SELL,
        role=OrderRole.TARGET,
        price=120.0,
        amount=amount,
        parent_position_id=parent,
        **fields,
    )


# -- per-account counts and held capital --------------------------------------


def test_counts_are_kept_per_account() -> None:
    registry = OrderTrackerRegistry()
    platform = registry.get("PLATFORM")
    alice = registry.get("USER:alice")
    platform.apply(order("p1"))
    platform.apply(order("p2", symbol="ETH/USD"))
    platform.apply(order("p3", status=OrderStatus.PENDING))
    alice.apply(order("a1", account_id="USER:alice"))

    assert platform.count() == 2
    assert platform.count(include_pending=True) == 3
    assert alice.count() == 1
    assert platform.count(symbol="ETH-USD") == 1
    assert [o.id for o in alice.open_orders()] == ["a1"]
    assert registry.accounts() == ["PLATFORM", "USER:alice"]
    assert registry.get("PLATFORM") is platform


def test_held_capital_is_kept_per_account_and_counts_buy_fees() -> None:
    registry = OrderTrackerRegistry(fee_rate=FEE)
    platform = registry.get("PLATFORM")
    alice = registry.get("USER:alice")
    platform.apply(order("p1", price=100.0, amount=2.0))  # 200 + fee
    platform.apply(order("p2", side=Side.SELL, price=50.0, amount=1.0))  # 50, no fee
    alice.apply(order("a1", account_id="USER:alice", price=10.0, amount=1.0))

    held = platform.held_capital()
    assert held.buys == pytest.approx(200.0 * (1 + FEE))
    assert held.sells == pytest.approx(50.0)
    assert held.total == pytest.approx(200.8 + 50.0)
    assert alice.held_capital().total == pytest.approx(10.0 * (1 + FEE))


def test_a_fill_releases_its_capital() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.0)
    tracker.apply(order("o1", price=100.0, amount=2.0))
    assert tracker.held_capital().total == pytest.approx(200.0)

    tracker.apply(
        order("o1", price=100.0, amount=2.0, filled=0.5, status=OrderStatus.PARTIALLY_FILLED)
    )
    assert tracker.held_capital().total == pytest.approx(150.0)

    tracker.apply(order("o1", price=100.0, amount=2.0, filled=2.0, status=OrderStatus.FILLED))
    assert tracker.held_capital().total == 0.0
    assert tracker.open_orders() == []
    assert tracker.get("o1") is not None  # still known until the retention clean-up


def test_cancelled_order_releases_capital_and_pending_entry_reserves() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.0)
    tracker.apply(order("o1", status=OrderStatus.PENDING))
    assert tracker.held_capital().total == pytest.approx(100.0)
    assert tracker.open_orders() == []
    assert [o.id for o in tracker.live_orders()] == ["o1"]

    tracker.apply(order("o1", status=OrderStatus.CANCELLED))
    assert tracker.held_capital().total == 0.0
    assert tracker.live_orders() == []


def test_market_buy_is_valued_at_last_price_and_never_guessed() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.0)
    tracker.apply(order("m1", type=OrderType.MARKET, price=None, amount=0.5))

    unknown = tracker.held_capital()
    assert unknown.total == 0.0
    assert unknown.unpriced_order_ids == ("m1",)

    assert tracker.held_capital({"BTC-USD": 40_000.0}).total == pytest.approx(20_000.0)
    tracker.set_last_price("btc-usd", 30_000.0)
    priced = tracker.held_capital()
    assert priced.total == pytest.approx(15_000.0)
    assert priced.unpriced_order_ids == ()


def test_sell_is_valued_at_limit_then_stop_then_last_price() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.01)
    tracker.apply(order("limit", side=Side.SELL, price=110.0))
    tracker.apply(stop("stop", amount=1.0, parent=None))  # stop_price 90
    tracker.apply(order("mkt", side=Side.SELL, type=OrderType.MARKET, price=None))
    tracker.set_last_price("BTC/USD", 100.0)
    held = tracker.held_capital()
    assert held.buys == 0.0
    assert held.sells == pytest.approx(110.0 + 90.0 + 100.0)


def test_bad_last_price_is_refused() -> None:
    tracker = OrderTracker("PLATFORM")
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="last price"):
            tracker.set_last_price("BTC/USD", bad)
    assert tracker.last_prices() == {}


# -- double reservation --------------------------------------------------------


def test_stop_and_target_of_one_position_are_a_double_reservation() -> None:
    tracker = OrderTracker("USER:bob")
    tracker.apply(stop("s1", amount=1.0, account_id="USER:bob"))
    tracker.apply(target("t1", amount=1.0, account_id="USER:bob"))
    tracker.apply(target("t-other", amount=1.0, parent="pos-2", account_id="USER:bob"))

    [finding] = tracker.double_reservations()
    assert finding.kind == "stop_and_target"
    assert finding.symbol == "BTC/USD"
    assert set(finding.order_ids) == {"s1", "t1"}
    assert finding.reserved == pytest.approx(2.0)
    assert finding.position is None
    assert "pos-1" in finding.message
    assert "s1" in finding.message
    assert "t1" in finding.message
    assert "2 BTC" in finding.message


def test_filled_stop_no_longer_pairs_with_its_target() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(stop("s1", amount=1.0))
    tracker.apply(target("t1", amount=1.0))
    tracker.apply(stop("s1", amount=1.0, filled=1.0, status=OrderStatus.FILLED))
    assert tracker.double_reservations() == []


def test_exits_locking_more_than_the_position_are_over_reserved() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(stop("s1", amount=0.8, parent=None))
    tracker.apply(order("x1", side=Side.SELL, role=OrderRole.EXIT, price=130.0, amount=0.7))
    tracker.apply(order("e1", side=Side.SELL, role=OrderRole.ENTRY, price=130.0, amount=5.0))

    [finding] = tracker.double_reservations({"BTC-USD": 1.0})
    assert finding.kind == "over_reserved"
    assert finding.order_ids == ("s1", "x1")
    assert finding.reserved == pytest.approx(1.5)
    assert finding.position == 1.0
    assert "1.5 BTC" in finding.message
    assert "only 1 BTC" in finding.message
    assert "0.5 BTC is reserved twice" in finding.message


def test_exits_within_the_position_are_fine_and_unknown_symbols_are_not_judged() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(stop("s1", amount=0.6, parent=None))
    tracker.apply(order("x1", side=Side.SELL, role=OrderRole.EXIT, price=130.0, amount=0.4))
    tracker.apply(stop("s-eth", amount=9.0, parent=None, symbol="ETH/USD"))
    assert tracker.double_reservations({"BTC/USD": 1.0}) == []
    assert tracker.double_reservations() == []


def test_partly_filled_exit_reserves_only_its_remaining() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(stop("s1", amount=1.0, parent=None))
    tracker.apply(
        order(
            "x1",
            side=Side.SELL,
            role=OrderRole.EXIT,
            price=130.0,
            amount=1.0,
            filled=0.9,
            status=OrderStatus.PARTIALLY_FILLED,
        )
    )
    # The position shrank to 0.1 + the stop's 1.0 would be 1.1 > 1.0 held.
    assert [d.kind for d in tracker.double_reservations({"BTC/USD": 1.0})] == ["over_reserved"]
    assert tracker.double_reservations({"BTC/USD": 1.1}) == []


# -- fragmentation -------------------------------------------------------------


def test_fifty_dollars_held_fragments_a_hundred_dollar_account_but_not_five_thousand() -> None:
    tracker = OrderTracker("USER:micro", fee_rate=0.0)
    tracker.apply(order("o1", account_id="USER:micro", price=50.0, amount=1.0))

    micro = tracker.fragmentation(100.0)
    assert micro.fragmented
    assert micro.ratio == pytest.approx(0.5)
    assert micro.held_usd == pytest.approx(50.0)
    assert "$50.00 of $100.00" in micro.message
    assert "50.0%" in micro.message
    assert "30.0%" in micro.message

    large = tracker.fragmentation(5_000.0)
    assert not large.fragmented
    assert large.ratio == pytest.approx(0.01)


def test_fragmentation_with_no_equity() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.0)
    empty = tracker.fragmentation(0.0)
    assert not empty.fragmented
    assert empty.ratio == 0.0

    tracker.apply(order("o1", price=1.0))
    broke = tracker.fragmentation(0.0)
    assert broke.fragmented
    assert broke.ratio == math.inf


def test_fragmentation_at_exactly_the_threshold_is_not_fragmented() -> None:
    tracker = OrderTracker("PLATFORM", fee_rate=0.0)
    tracker.apply(order("o1", price=25.0))
    assert not tracker.fragmentation(100.0, threshold=0.25).fragmented
    assert tracker.fragmentation(100.0, threshold=0.2499).fragmented


# -- stale orders --------------------------------------------------------------


def test_two_hour_old_entry_is_stale_but_a_two_hour_old_stop_is_not() -> None:
    tracker = OrderTracker("PLATFORM")
    two_hours_ago = T0 - timedelta(hours=2)
    tracker.apply(order("entry", created_at=two_hours_ago))
    tracker.apply(stop("stop", amount=1.0, created_at=two_hours_ago))
    tracker.apply(order("young", created_at=T0 - timedelta(minutes=30)))
    tracker.apply(order("pending", status=OrderStatus.PENDING, created_at=two_hours_ago))

    assert [o.id for o in tracker.stale_orders(T0)] == ["entry"]
    assert [o.id for o in tracker.stale_orders(T0, include_exits=True)] == ["entry", "stop"]
    assert [o.id for o in tracker.stale_orders(T0, max_age_s=20 * 60)] == ["entry", "young"]


def test_filled_entry_is_not_stale() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(order("o1", created_at=T0 - timedelta(hours=3)))
    tracker.apply(
        order("o1", created_at=T0 - timedelta(hours=3), filled=1.0, status=OrderStatus.FILLED)
    )
    assert tracker.stale_orders(T0) == []


# -- transitions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"status": OrderStatus.FILLED, "filled": 1.0}, {"status": OrderStatus.OPEN}),
        (
            {"status": OrderStatus.PARTIALLY_FILLED, "filled": 0.6},
            {"status": OrderStatus.PARTIALLY_FILLED, "filled": 0.4},
        ),
        (
            {"status": OrderStatus.FILLED, "filled": 1.0},
            {"status": OrderStatus.FILLED, "filled": 0.5},
        ),
        ({"status": OrderStatus.CANCELLED}, {"status": OrderStatus.FILLED, "filled": 1.0}),
        ({"status": OrderStatus.OPEN}, {"status": OrderStatus.PENDING}),
    ],
    ids=[
        "filled-to-open",
        "partial-fill-shrinks",
        "filled-amount-shrinks",
        "cancelled-to-filled",
        "open-to-pending",
    ],
)
def test_illegal_transition_raises_and_changes_nothing(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    tracker = OrderTracker("PLATFORM")
    stored = order("o1", **first)
    tracker.apply(stored)
    before = (tracker.orders(), tracker.held_capital(), tracker.count(include_pending=True))

    with pytest.raises(IllegalTransition, match="o1"):
        tracker.check(order("o1", **second))
    with pytest.raises(IllegalTransition, match="o1"):
        tracker.apply(order("o1", **second))

    assert tracker.get("o1") is stored
    assert (tracker.orders(), tracker.held_capital(), tracker.count(include_pending=True)) == before


def test_replaying_the_same_state_is_accepted() -> None:
    tracker = OrderTracker("PLATFORM")
    filled = order("o1", status=OrderStatus.FILLED, filled=1.0)
    tracker.apply(filled)
    replay = order("o1", status=OrderStatus.FILLED, filled=1.0)
    assert tracker.apply(replay) is filled
    assert tracker.apply(replay) is replay
    assert tracker.orders() == [filled]


def test_check_returns_the_previous_version_without_storing() -> None:
    tracker = OrderTracker("PLATFORM")
    first = order("o1")
    assert tracker.check(first) is None
    assert tracker.get("o1") is None
    tracker.apply(first)
    update = order("o1", filled=0.3, status=OrderStatus.PARTIALLY_FILLED)
    assert tracker.check(update) is first
    assert tracker.get("o1") is first
    assert tracker.apply(update) is first
    assert tracker.get("o1") is update


def test_an_order_of_another_account_is_refused() -> None:
    registry = OrderTrackerRegistry()
    platform = registry.get("PLATFORM")
    with pytest.raises(StateError, match=r"USER:alice.*PLATFORM"):
        platform.apply(order("a1", account_id="USER:alice"))
    assert platform.orders() == []
    assert registry.get("USER:alice").orders() == []


def test_order_cannot_change_symbol_side_or_client_id() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(order("o1", client_order_id="c-1"))
    for changed in (
        order("o1", client_order_id="c-1", symbol="ETH/USD"),
        order("o1", client_order_id="c-1", side=Side.SELL),
        order("o1", client_order_id="c-2"),
    ):
        with pytest.raises(StateError):
            tracker.apply(changed)
    assert tracker.by_client_id("c-1") == order("o1", client_order_id="c-1")
    assert tracker.by_client_id("c-2") is None


def test_order_is_found_by_client_id_even_when_a_later_report_omits_it() -> None:
    tracker = OrderTracker("PLATFORM")
    tracker.apply(order("o1", client_order_id="nija-1", status=OrderStatus.PENDING))
    tracker.apply(order("o1", status=OrderStatus.OPEN))
    found = tracker.by_client_id("nija-1")
    assert found is not None
    assert found.id == "o1"
    assert found.status is OrderStatus.OPEN


# -- retention clean-up ---------------------------------------------------------


def test_terminal_orders_are_dropped_after_retention_and_live_ones_never() -> None:
    tracker = OrderTracker("PLATFORM", retention_s=24 * 3600)
    tracker.apply(
        order(
            "old-fill",
            client_order_id="c-old",
            status=OrderStatus.FILLED,
            filled=1.0,
            created_at=T0 - timedelta(hours=30),
            updated_at=T0 - timedelta(hours=25),
        )
    )
    tracker.apply(
        order(
            "recent-cancel",
            status=OrderStatus.CANCELLED,
            created_at=T0 - timedelta(hours=30),
            updated_at=T0 - timedelta(hours=1),
        )
    )
    tracker.apply(order("ancient-open", created_at=T0 - timedelta(days=9)))

    assert tracker.cleanup_terminal(T0) == ["old-fill"]
    assert tracker.get("old-fill") is None
    assert tracker.by_client_id("c-old") is None
    assert {o.id for o in tracker.orders()} == {"recent-cancel", "ancient-open"}
    assert tracker.cleanup_terminal(T0, retention_s=600) == ["recent-cancel"]
    assert [o.id for o in tracker.orders()] == ["ancient-open"]


# -- stats ---------------------------------------------------------------------


def test_stats_describe_one_account() -> None:
    tracker = OrderTracker("USER:alice", fee_rate=0.0)
    tracker.apply(order("e-old", account_id="USER:alice", created_at=T0 - timedelta(hours=2)))
    tracker.apply(
        stop("s1", amount=1.0, account_id="USER:alice", created_at=T0 - timedelta(hours=3))
    )
    tracker.apply(order("p1", account_id="USER:alice", status=OrderStatus.PENDING))
    tracker.apply(order("f1", account_id="USER:alice", status=OrderStatus.FILLED, filled=1.0))

    stats = tracker.stats(T0)
    assert stats.account_id == "USER:alice"
    assert stats.open_count == 2
    assert stats.pending_count == 1
    assert stats.live_count == 3
    assert stats.terminal_count == 1
    assert stats.by_status == {
        OrderStatus.OPEN: 2,
        OrderStatus.PENDING: 1,
        OrderStatus.FILLED: 1,
    }
    assert stats.live_by_role == {OrderRole.ENTRY: 2, OrderRole.STOP: 1}
    assert stats.live_by_type == {OrderType.LIMIT: 2, OrderType.STOP: 1}
    assert stats.held_capital == pytest.approx(100.0 + 100.0 + 90.0)
    assert stats.buy_held == pytest.approx(200.0)
    assert stats.sell_held == pytest.approx(90.0)
    assert stats.oldest_open_age_s == pytest.approx(3 * 3600)
    assert stats.stale_count == 1


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="fee_rate"):
        OrderTracker("PLATFORM", fee_rate=-0.1)
    with pytest.raises(ValueError, match="retention_s"):
        OrderTrackerRegistry(retention_s=math.nan)
    with pytest.raises(ValueError, match="account_id"):
        OrderTracker("  ")


# -- threads -------------------------------------------------------------------


def test_eight_threads_writing_for_eight_accounts_lose_nothing() -> None:
    registry = OrderTrackerRegistry(fee_rate=0.0)
    accounts = ["PLATFORM", *(f"USER:u{i}" for i in range(7))]
    per_thread = 300
    start = threading.Barrier(8)
    errors: list[BaseException] = []
    prebuilt = {
        t: [
            (
                order(f"t{t}-{i}", account_id=accounts[(t + i) % 8], price=1.0 + t),
                order(
                    f"t{t}-{i}",
                    account_id=accounts[(t + i) % 8],
                    price=1.0 + t,
                    filled=1.0,
                    status=OrderStatus.FILLED,
                ),
            )
            for i in range(per_thread)
        ]
        for t in range(8)
    }

    def writer(t: int) -> None:
        try:
            start.wait()
            for i, (opened, filled) in enumerate(prebuilt[t]):
                tracker = registry.get(opened.account_id)
                tracker.apply(opened)
                if i % 3 == 0:
                    tracker.apply(filled)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert registry.accounts() == sorted(accounts)
    for account in accounts:
        tracker = registry.get(account)
        expected = {
            opened.id: (filled if i % 3 == 0 else opened)
            for t in range(8)
            for i, (opened, filled) in enumerate(prebuilt[t])
            if opened.account_id == account
        }
        assert {o.id: o for o in tracker.orders()} == expected
        open_ids = {oid for oid, o in expected.items() if o.status is OrderStatus.OPEN}
        assert {o.id for o in tracker.open_orders()} == open_ids
        assert tracker.held_capital().total == pytest.approx(
            sum(expected[oid].price or 0.0 for oid in open_ids)
        )


def test_registry_hands_every_thread_the_same_new_tracker() -> None:
    registry = OrderTrackerRegistry()
    start = threading.Barrier(8)
    seen: list[OrderTracker] = []

    def fetch() -> None:
        start.wait()
        seen.append(registry.get("USER:new"))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(tracker is seen[0] for tracker in seen)
    assert registry.accounts() == ["USER:new"]
