"""Reconciler scenarios against the simulated exchange, table-driven where the shape repeats.

Each scenario is what a trader relies on: an order ends only on the exchange's
word, every fill is booked exactly once, one account's trouble stays its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Capabilities
from adapters.sim import FaultKind, FaultPlan
from nija_broker.core.clock import MockClock
from nija_broker.core.events import (
    AttentionRequired,
    FillsBooked,
    IntentReleased,
    IntentResolved,
    OrderAdopted,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    StaleOrderFound,
)
from nija_broker.core.health import SyncState
from nija_broker.core.models import OrderRole, OrderStatus, OrderType, Side
from nija_broker.core.tiers import DEFAULT_TIERS, StaleAction, TierTable
from nija_broker.sync.reconciler import ReconcilerSettings

from ._mock_clock import on_mock_clock
from ._reconciler_rig import (
    ENTRY,
    EXIT,
    STOP,
    TARGET,
    Rig,
    make_rig,
    sums_by_order,
)

pytestmark = pytest.mark.asyncio
ALICE = "USER:alice"


def kinds(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


# ----------------------------------------------------------------------------- fills and ends

ENDINGS: list[Any] = [
    # (id, what happens on the exchange between two polls, final status, booked amount)
    pytest.param(
        lambda rig, oid: rig.engine.set_price("BTC/USD", 98.0),
        OrderStatus.FILLED,
        1.0,
        id="filled-between-polls",
    ),
    pytest.param(
        lambda rig, oid: (
            rig.engine.fill_partially(ALICE, oid, 0.4),
            rig.engine.cancel_order(ALICE, oid),
        ),
        OrderStatus.CANCELLED,
        0.4,
        id="partially-filled-then-cancelled",
    ),
    pytest.param(
        lambda rig, oid: rig.engine.cancel_order(ALICE, oid),
        OrderStatus.CANCELLED,
        0.0,
        id="cancelled-by-someone-else",
    ),
]


@pytest.mark.parametrize(("happen", "status", "booked"), ENDINGS)
async def test_order_ends_only_on_the_exchanges_word_and_fills_book_once(
    tmp_path: Path, happen: Callable[[Rig, str], object], status: OrderStatus, booked: float
) -> None:
    rig = make_rig(tmp_path)
    placed = rig.place(amount=1.0, price=99.0)
    assert OrderAdopted in kinds(await rig.sync())
    happen(rig, placed.id)
    events = await rig.sync(after_s=30)
    tracked = rig.book().orders.get(placed.id)
    assert tracked.status is status
    assert tracked.filled == pytest.approx(booked)
    assert rig.exchanges[ALICE].calls["fetch_order"] == 1  # one confirmation, nothing more
    assert sum(f.amount for f in rig.booked_fills()) == pytest.approx(booked)
    ended = [e for e in events if isinstance(e, OrderFilled | OrderCancelled)]
    assert [e.order.status for e in ended] == [status]
    # Replays change nothing: the next cycles book nothing and end nothing.
    assert [e for e in await rig.sync(after_s=30) if isinstance(e, FillsBooked)] == []
    assert len(rig.booked_fills()) == (1 if booked else 0)
    await rig.rec.aclose()


async def test_partial_fill_on_the_listing_is_booked_then_the_cancel_adds_nothing(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path)
    placed = rig.place(amount=1.0, price=99.0)
    await rig.sync()
    rig.engine.fill_partially(ALICE, placed.id, 0.25)
    events = await rig.sync()
    assert OrderPartiallyFilled in kinds(events)
    assert rig.book().orders.get(placed.id).status is OrderStatus.PARTIALLY_FILLED
    rig.engine.cancel_order(ALICE, placed.id)
    events = await rig.sync(after_s=30)
    assert OrderCancelled in kinds(events)
    assert sums_by_order(rig.booked_fills()) == {placed.id: pytest.approx(0.25)}
    assert rig.book().ledger.position("BTC/USD").quantity == pytest.approx(0.25)
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- no evidence


async def test_order_not_found_just_after_creation_is_not_taken_as_cancelled(
    tmp_path: Path,
) -> None:
    settings = ReconcilerSettings(visibility_window_s=10.0, attention_after=3)
    rig = make_rig(tmp_path, settings=settings, plan=FaultPlan(hidden_after_create_s=40.0))
    await rig.sync()
    placed = rig.place(amount=1.0, price=99.0, client_order_id="bot-1")
    rig.book().apply_order(placed)  # the guard recorded the exchange's answer
    for _ in range(6):
        await rig.sync(after_s=6)  # hidden for 40 s: vanished, then "does not exist"
        assert rig.book().orders.get(placed.id).status is OrderStatus.OPEN
    assert rig.exchanges[ALICE].calls["fetch_order"] >= 2
    await rig.sync(after_s=10)  # visible again
    assert rig.book().orders.get(placed.id).status is OrderStatus.OPEN
    assert not any(isinstance(e, OrderCancelled) for e in rig.seen)
    await rig.rec.aclose()


async def test_vanished_order_is_not_cancelled_when_fetch_order_times_out(
    tmp_path: Path,
) -> None:
    settings = ReconcilerSettings(attention_after=3)
    rig = make_rig(tmp_path, settings=settings)
    placed = rig.place(amount=1.0, price=99.0)
    await rig.sync()
    rig.engine.set_price("BTC/USD", 98.0)  # filled, but we cannot hear about it
    # Every way of hearing about it times out (the closed-orders sweep would be evidence too).
    rig.faults[ALICE].set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.TIMEOUT}),
            timeout_s=20.0,
            methods=frozenset({"fetch_order", "fetch_closed_orders"}),
        )
    )
    for _ in range(4):
        await rig.sync(after_s=30)
        assert rig.book().orders.get(placed.id).status is OrderStatus.OPEN
    attention = [e for e in rig.seen if isinstance(e, AttentionRequired)]
    about_order = [e.order_id for e in attention if e.order_id is not None]
    assert about_order == [placed.id]  # said once, not every cycle
    # The exchange no longer holds the order's USD: the held-capital check says so, once.
    about_holds = [e.reason for e in attention if e.order_id is None]
    assert len(about_holds) == 1
    assert about_holds[0].startswith("held capital check: USD")
    assert rig.rec.health(ALICE).state is SyncState.OK  # the listing itself works
    rig.faults[ALICE].disable()
    await rig.sync(after_s=30)
    assert rig.book().orders.get(placed.id).status is OrderStatus.FILLED
    assert sums_by_order(rig.booked_fills()) == {placed.id: pytest.approx(1.0)}
    await rig.rec.aclose()


async def test_fetch_order_that_never_answers_is_cut_by_the_deadline(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, settings=ReconcilerSettings(call_timeout_s=0.05))
    placed = rig.place(amount=1.0, price=99.0)
    await rig.sync()
    rig.engine.cancel_order(ALICE, placed.id)

    async def hang(order_id: str, symbol: str) -> Any:
        await asyncio.Event().wait()

    rig.exchanges[ALICE].fetch_order = hang  # type: ignore[method-assign]
    await rig.sync(after_s=30)
    assert rig.book().orders.get(placed.id).status is OrderStatus.OPEN
    assert rig.rec.health(ALICE).state is SyncState.OK
    await rig.rec.aclose()


async def test_truncated_page_ends_nothing_and_costs_no_confirmations(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    placed = [rig.place(amount=0.5, price=95.0 + i) for i in range(4)]
    await rig.sync()
    rig.faults[ALICE].set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.TRUNCATED_PAGE}),
            methods=frozenset({"fetch_open_orders"}),
        )
    )
    for _ in range(3):
        await rig.sync(after_s=30)
    assert {o.id for o in rig.book().orders.open_orders()} == {o.id for o in placed}
    assert rig.exchanges[ALICE].calls["fetch_order"] == 0
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- restart


async def test_fill_while_the_process_was_down_is_booked_once(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    resting = rig.place(amount=1.0, price=99.0)
    partly = rig.place(amount=2.0, price=98.0)
    await rig.sync()
    await rig.rec.aclose()
    # Down: one order fills wholly, the other in part.
    rig.engine.set_price("BTC/USD", 99.0)
    rig.engine.fill_partially(ALICE, partly.id, 0.5)
    for _ in range(2):
        rig.clock.advance(60)
        await rig.restart()
        await rig.rec.startup(ALICE)
        rig.drain()
        await rig.sync(after_s=5)
    assert rig.book().orders.get(resting.id).status is OrderStatus.FILLED
    assert rig.book().orders.get(partly.id).status is OrderStatus.PARTIALLY_FILLED
    assert sums_by_order(rig.booked_fills()) == {
        resting.id: pytest.approx(1.0),
        partly.id: pytest.approx(0.5),
    }
    assert rig.book().ledger.position("BTC/USD").quantity == pytest.approx(1.5)
    await rig.rec.aclose()


async def test_market_order_that_never_rested_is_found_by_the_closed_order_sweep(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, settings=ReconcilerSettings(balance_interval_s=60.0))
    await rig.sync()
    sold = rig.place(side=Side.SELL, type=OrderType.MARKET, amount=0.5, price=None)
    await rig.sync(after_s=5)  # the listing never shows it
    assert rig.book().orders.get(sold.id) is None
    await rig.sync(after_s=60)  # balance cadence: balances, tickers, closed orders
    tracked = rig.book().orders.get(sold.id)
    assert tracked.status is OrderStatus.FILLED
    assert tracked.role is EXIT
    assert sums_by_order(rig.booked_fills()) == {sold.id: pytest.approx(0.5)}
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- adoption

ADOPTED: list[Any] = [
    pytest.param({"side": Side.BUY, "price": 90.0}, ENTRY, id="buy-is-entry"),
    pytest.param({"side": Side.SELL, "price": 120.0}, EXIT, id="sell-limit-is-exit"),
    pytest.param(
        {"side": Side.SELL, "type": OrderType.STOP_LIMIT, "stop_price": 80.0, "price": 79.0},
        STOP,
        id="sell-stop-is-stop",
    ),
    pytest.param(
        {"side": Side.SELL, "type": OrderType.TAKE_PROFIT, "stop_price": 130.0, "price": 130.0},
        TARGET,
        id="take-profit-is-target",
    ),
]


@pytest.mark.parametrize(("request_fields", "role"), ADOPTED)
async def test_external_order_is_adopted_with_its_role_and_holds_capital(
    tmp_path: Path, request_fields: dict[str, Any], role: OrderRole
) -> None:
    rig = make_rig(tmp_path)
    await rig.sync()
    placed = rig.place(amount=1.0, **request_fields)
    events = await rig.sync()
    (adopted,) = [e for e in events if isinstance(e, OrderAdopted)]
    assert adopted.order.id == placed.id
    assert rig.book().orders.get(placed.id).role is role
    held = rig.book().orders.held_capital()
    assert (held.buys if placed.side is Side.BUY else held.sells) > 0
    # Survives a restart from the store.
    await rig.restart()
    assert rig.book().orders.get(placed.id).role is role
    await rig.rec.aclose()


async def test_adopted_entry_that_fills_opens_a_position(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    placed = rig.place(amount=1.5, price=99.0)
    await rig.sync()
    rig.engine.set_price("BTC/USD", 98.5)
    await rig.sync(after_s=30)
    position = rig.book().ledger.position("BTC/USD")
    assert position.quantity == pytest.approx(1.5)
    assert position.avg_price == pytest.approx(99.0)
    assert rig.book().orders.get(placed.id).status is OrderStatus.FILLED
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- stale orders


def _table(action: StaleAction, include_exits: bool = False) -> TierTable:
    tiers = tuple(
        t.model_copy(
            update={
                "stale_max_age_s": 3600.0,
                "stale_action": action,
                "stale_includes_exits": include_exits,
            }
        )
        for t in DEFAULT_TIERS
    )
    return TierTable(tiers)


async def test_stale_entry_is_cancelled_while_a_stale_stop_is_left_alone(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, table=_table(StaleAction.CANCEL))
    entry = rig.place(amount=1.0, price=90.0)
    stop = rig.place(
        side=Side.SELL, type=OrderType.STOP_LIMIT, amount=1.0, stop_price=80.0, price=79.0
    )
    await rig.sync()
    assert rig.exchanges[ALICE].calls["cancel_order"] == 0
    events = await rig.sync(after_s=3700)
    assert rig.exchanges[ALICE].calls["cancel_order"] == 1
    assert rig.book().orders.get(entry.id).status is OrderStatus.CANCELLED
    assert rig.engine.get_order(ALICE, entry.id).status is OrderStatus.CANCELLED
    assert rig.book().orders.get(stop.id).status is OrderStatus.OPEN
    assert rig.engine.get_order(ALICE, stop.id).status is OrderStatus.OPEN
    stale = [e for e in events if isinstance(e, StaleOrderFound)]
    assert [(e.order.id, e.action) for e in stale] == [(entry.id, "cancel")]
    await rig.rec.aclose()


async def test_stale_cancel_whose_answer_is_lost_is_marked_only_after_confirmation(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, table=_table(StaleAction.CANCEL))
    entry = rig.place(amount=1.0, price=90.0)
    await rig.sync()
    rig.faults[ALICE].set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.LOST_RESPONSE}),
            methods=frozenset({"cancel_order"}),
        )
    )
    await rig.sync(after_s=3700)
    # The exchange did cancel, but nobody heard it: the tracker still says open.
    assert rig.engine.get_order(ALICE, entry.id).status is OrderStatus.CANCELLED
    assert rig.book().orders.get(entry.id).status is OrderStatus.OPEN
    await rig.sync(after_s=5)
    assert rig.book().orders.get(entry.id).status is OrderStatus.CANCELLED
    await rig.rec.aclose()


async def test_stale_orders_under_an_alert_policy_raise_one_alert_and_stay(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, table=_table(StaleAction.ALERT, include_exits=True))
    entry = rig.place(amount=1.0, price=90.0)
    stop = rig.place(
        side=Side.SELL, type=OrderType.STOP_LIMIT, amount=1.0, stop_price=80.0, price=79.0
    )
    await rig.sync()
    await rig.sync(after_s=3700)
    await rig.sync(after_s=5)
    alerts = [e for e in rig.seen if isinstance(e, StaleOrderFound)]
    assert sorted(e.order.id for e in alerts) == sorted([entry.id, stop.id])
    assert {e.action for e in alerts} == {"alert"}
    assert rig.exchanges[ALICE].calls["cancel_order"] == 0
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- intents


async def test_startup_resolves_pending_intents_by_client_order_id(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, settings=ReconcilerSettings(visibility_window_s=10.0))
    t0 = rig.clock.now()

    def journal(client_id: str, **fields: Any) -> None:
        # The guard's journal format: the intent, and what it reserved.
        intent = {"symbol": "BTC/USD", "side": "sell", "role": "target", **fields}
        request = {"intent": intent, "reserved_usd": 0.0}
        rig.store.put_intent(ALICE, client_id, json.dumps(request), t0)

    journal("sent-1")
    placed = rig.place(side=Side.SELL, amount=1.0, price=150.0, client_order_id="sent-1")
    journal("never-sent")
    journal("unreachable", symbol="ETH/USD")
    rig.place(symbol="ETH/USD", side=Side.BUY, amount=1.0, price=5.0, client_order_id="unreachable")
    rig.clock.advance(30)
    rig.faults[ALICE].set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.SERVER_ERROR}),
            methods=frozenset({"fetch_order_by_client_id"}),
        )
    )
    await rig.rec.startup(ALICE)
    events = rig.drain()
    assert rig.book().orders.get(placed.id).role is TARGET  # the intent knows its role
    resolved = {e.client_order_id for e in events if isinstance(e, IntentResolved)}
    released = {e.client_order_id for e in events if isinstance(e, IntentReleased)}
    assert resolved == {"sent-1", "unreachable"}  # both were in the open listing
    assert released == set()  # "never-sent" could not be looked up: errors prove nothing
    assert [i.client_order_id for i in rig.store.pending_intents(ALICE)] == ["never-sent"]
    rig.faults[ALICE].disable()
    events = await rig.sync()
    assert {e.client_order_id for e in events if isinstance(e, IntentReleased)} == {"never-sent"}
    assert rig.store.pending_intents(ALICE) == []
    await rig.rec.aclose()


async def test_intent_not_found_inside_the_visibility_window_stays_pending(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, settings=ReconcilerSettings(visibility_window_s=30.0))
    rig.store.put_intent(ALICE, "young", json.dumps({"symbol": "BTC/USD"}), rig.clock.now())
    await rig.rec.startup(ALICE)
    assert [i.client_order_id for i in rig.store.pending_intents(ALICE)] == ["young"]
    await rig.sync(after_s=40)
    assert rig.store.pending_intents(ALICE) == []
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- health, isolation


async def test_revoked_keys_fail_that_account_only_and_the_others_keep_syncing(
    tmp_path: Path,
) -> None:
    clock = MockClock()

    async def main() -> None:
        accounts = ("USER:alice", "USER:bob", "USER:carol")
        settings = ReconcilerSettings(poll_interval_s=5.0, fatal_retry_s=300.0)
        rig = make_rig(tmp_path, accounts, settings=settings, clock=clock)
        task = asyncio.create_task(rig.rec.run(), name="reconciler-run")
        await clock.sleep(30)  # the pollers poll meanwhile, on virtual time
        rig.exchanges["USER:carol"].revoked = True
        placed = rig.place("USER:bob", amount=1.0, price=99.0)
        bob, carol = rig.exchanges["USER:bob"], rig.exchanges["USER:carol"]
        before = bob.calls["fetch_open_orders"]
        carol_before = sum(carol.calls.values())
        await clock.sleep(600)
        assert rig.rec.health("USER:carol").state is SyncState.FAILED
        assert "revoked" in (rig.rec.health("USER:carol").last_error or "")
        for healthy in ("USER:alice", "USER:bob"):
            assert rig.rec.health(healthy).state is SyncState.OK
        # Bob kept polling about every 5 s and adopted the new order.
        assert 100 <= bob.calls["fetch_open_orders"] - before <= 140
        assert [o.id for o in rig.book("USER:bob").orders.open_orders()] == [placed.id]
        # Refused keys are retried every ~5 minutes, not hammered.
        assert 2 <= sum(carol.calls.values()) - carol_before <= 4
        async with asyncio.timeout(5):
            await rig.rec.aclose()
            await rig.rec.aclose()  # safe twice
            await task
        assert all(ex._closed for ex in rig.exchanges.values())

    await on_mock_clock(clock, main())


async def test_transient_failures_degrade_then_fail_then_recover(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, settings=ReconcilerSettings(failed_after=3))
    await rig.sync()
    assert rig.rec.health(ALICE).state is SyncState.OK
    rig.faults[ALICE].set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.SERVER_ERROR}),
            methods=frozenset({"fetch_open_orders"}),
        )
    )
    states = []
    for _ in range(3):
        await rig.sync()
        states.append(rig.rec.health(ALICE).state)
    assert states == [SyncState.DEGRADED, SyncState.DEGRADED, SyncState.FAILED]
    assert rig.rec.health(ALICE).consecutive_failures == 3
    rig.faults[ALICE].disable()
    health = await rig.rec.sync_once(ALICE)
    assert (health.state, health.consecutive_failures) == (SyncState.OK, 0)
    await rig.rec.aclose()


async def test_balances_set_equity_tier_and_the_drawdown_curve(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    await rig.sync()
    live = rig.live[ALICE]
    assert live.equity_usd == pytest.approx(10_000.0 + 10 * 100.0)
    assert live.policy() is not None
    assert live.policy().name == "STANDARD"  # type: ignore[union-attr]
    assert [p.equity for p in rig.store.equity_points(ALICE)] == [pytest.approx(11_000.0)]
    await rig.rec.aclose()


async def test_exchange_that_lists_one_symbol_at_a_time_gets_the_symbols_it_needs(
    tmp_path: Path,
) -> None:
    per_symbol = Capabilities(
        open_orders_without_symbol=False, fetch_order_by_client_id=True, watch_orders=False
    )
    rig = make_rig(tmp_path, capabilities=per_symbol)
    placed = rig.place(amount=1.0, price=99.0)
    await rig.sync()  # BTC is held: its symbol is listed, so the order is found
    assert rig.book().orders.get(placed.id) is not None
    rig.engine.set_price("BTC/USD", 98.0)
    await rig.sync(after_s=30)
    assert rig.book().orders.get(placed.id).status is OrderStatus.FILLED
    await rig.rec.aclose()


async def test_shutdown_stops_pollers_quickly_and_is_safe_twice(tmp_path: Path) -> None:
    clock = MockClock()

    async def main() -> None:
        rig = make_rig(tmp_path, ("USER:alice", "USER:bob"), clock=clock)
        task = asyncio.create_task(rig.rec.run(), name="reconciler-run")
        await clock.sleep(20)
        assert rig.exchanges["USER:bob"].calls["fetch_open_orders"] >= 3
        started = clock.monotonic()
        async with rig.rec:
            pass
        await rig.rec.aclose()
        await task
        assert clock.monotonic() - started < 5.0
        assert task.done()
        assert not task.cancelled()
        with pytest.raises(Exception, match="closed"):
            await rig.rec.sync_once(ALICE)

    await on_mock_clock(clock, main())
