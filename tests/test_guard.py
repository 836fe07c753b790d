"""The Guard: decisions journaled, reservations counted until the exchange answers, restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import OrderRequest
from adapters.sim import SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import EntryBlocked, StateError
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.intent import Allowed, Blocked, Decision
from nija_broker.core.models import Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.guard.guard import Guard, GuardConflict
from nija_broker.state.store import Store

from . import _guard_support
from ._guard_support import (
    ALICE,
    PRICES,
    T0,
    account_live,
    buy,
    make_guard,
    open_store,
    sell,
    settle_at_startup,
    sim,
    usd,
)

# The guard tests' shared fixtures, bound here by name so pytest finds them.
clock = _guard_support.clock
store = _guard_support.store
guard = _guard_support.guard

BOB = "USER:bob"


@pytest.fixture
def live() -> dict[str, AccountLive]:
    return {ALICE: account_live(), BOB: account_live(BOB)}


def filled_buy(
    order_id: str,
    client_order_id: str,
    symbol: str = "BTC/USD",
    amount: float = 0.0012,
    status: OrderStatus = OrderStatus.FILLED,
) -> Order:
    return Order(
        id=order_id,
        client_order_id=client_order_id,
        account_id=ALICE,
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.MARKET,
        amount=amount,
        filled=amount if status is OrderStatus.FILLED else 0.0,
        status=status,
        created_at=T0,
    )


# --------------------------------------------------------------------------- journal


def test_allowed_entry_is_journaled_as_pending_intent_before_decide_returns(
    guard: Guard, store: Store
) -> None:
    intent = buy()
    decision = guard.decide(intent)
    assert isinstance(decision, Allowed)
    assert decision.reservation is not None
    [pending] = store.pending_intents(ALICE)
    assert pending.client_order_id == intent.client_order_id
    assert pending.status == "pending"
    assert json.loads(pending.request_json)["intent"]["symbol"] == "BTC/USD"
    [record] = store.decisions(ALICE)
    assert record.allowed
    assert record.client_order_id == intent.client_order_id


def test_second_entry_on_the_symbol_is_blocked_and_the_reason_can_be_queried(guard: Guard) -> None:
    assert guard.decide(buy()).allowed
    second = buy()
    decision = guard.decide(second)
    assert isinstance(decision, Blocked)
    assert decision.rule == "duplicate_symbol_entry"
    record = guard.why_blocked(ALICE, second.client_order_id)
    assert record is not None
    assert record.rule == "duplicate_symbol_entry"
    assert "BTC/USD" in (record.reason or "")
    assert record.figures["live_entries"] == 1
    assert [r.allowed for r in guard.decisions(ALICE)] == [False, True]


def test_reserve_raises_entry_blocked_with_rule_and_reason(guard: Guard) -> None:
    guard.reserve(buy())
    with pytest.raises(EntryBlocked) as info:
        guard.reserve(buy())
    assert info.value.rule == "duplicate_symbol_entry"
    assert "one entry per symbol" in info.value.reason


def test_check_is_a_dry_run_that_reserves_and_journals_nothing(guard: Guard, store: Store) -> None:
    assert guard.check(buy()).allowed
    assert guard.check(buy()).allowed
    assert guard.reservations(ALICE) == []
    assert store.pending_intents(ALICE) == []
    assert store.decisions(ALICE) == []


def test_an_intent_that_cannot_be_journaled_leaves_no_reservation(
    guard: Guard, store: Store
) -> None:
    guard.state(ALICE)  # the account's book is loaded while the store is open
    store.close()
    with pytest.raises(StateError):
        guard.decide(buy())
    assert guard.reservations(ALICE) == []


# --------------------------------------------------------------------------- reservations


def test_released_reservation_frees_the_symbol_and_releases_the_intent(
    guard: Guard, store: Store
) -> None:
    reservation = guard.reserve(buy())
    guard.release(reservation.id)
    assert store.pending_intents(ALICE) == []
    assert guard.decide(buy()).allowed


def test_pending_entries_take_position_slots(guard: Guard) -> None:
    for symbol in ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"):
        guard.reserve(buy(symbol))
    decision = guard.decide(buy("ADA/USD"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "max_positions"
    assert decision.figures["occupied"] == ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"]


def test_pending_market_entries_claim_the_free_balance(guard: Guard) -> None:
    guard.reserve(buy("BTC/USD", size_usd=28.0))
    guard.reserve(buy("ETH/USD", size_usd=28.0))
    guard.reserve(buy("SOL/USD", size_usd=28.0))
    decision = guard.decide(buy("XRP/USD", size_usd=28.0))
    assert isinstance(decision, Blocked)
    assert decision.rule == "insufficient_free_balance"
    assert decision.figures["reserved_usd"] == pytest.approx(3 * 28 * 1.004)


def test_pending_limit_entries_count_as_held_capital(guard: Guard) -> None:
    guard.reserve(buy("BTC/USD", type="limit", price=49_000.0, size_usd=20.0))
    guard.reserve(buy("ETH/USD", type="limit", price=2_900.0, size_usd=11.0))
    decision = guard.decide(buy("SOL/USD"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "fragmentation"
    assert decision.figures["held_usd"] == pytest.approx(31 * 1.004)


def test_pending_entries_are_subtracted_from_free_balance(store: Store, clock: FakeClock) -> None:
    live = {ALICE: account_live(equity=2_000.0, free=100.0)}  # STANDARD: no fragmentation block
    guard = make_guard(store, clock, live)
    guard.reserve(buy("BTC/USD", size_usd=60.0))
    decision = guard.decide(buy("ETH/USD", size_usd=60.0))
    assert isinstance(decision, Blocked)
    assert decision.rule == "insufficient_free_balance"
    assert decision.figures["reserved_usd"] == pytest.approx(60.24)


def test_expired_reservation_stops_counting_but_its_intent_stays_unresolved(
    guard: Guard, clock: FakeClock, store: Store
) -> None:
    first = guard.reserve(buy())
    clock.advance(29.0)
    assert not guard.decide(buy()).allowed
    clock.advance(1.5)
    assert guard.decide(buy()).allowed
    pending = {i.client_order_id for i in store.pending_intents(ALICE)}
    assert first.client_order_id in pending


def test_confirmed_order_goes_to_the_book_and_keeps_blocking_the_symbol(
    guard: Guard, store: Store, live: dict[str, AccountLive]
) -> None:
    reservation = guard.reserve(buy(type="limit", price=49_000.0, size_usd=None, amount=0.0002))
    resting = filled_buy(
        "42", reservation.client_order_id, amount=0.0002, status=OrderStatus.OPEN
    ).replace(type=OrderType.LIMIT, price=49_000.0)
    guard.confirm(reservation.id, resting)
    book = guard.books.get(ALICE)
    assert book.orders.by_client_id(reservation.client_order_id) == resting
    assert store.pending_intents(ALICE) == []
    live[ALICE].balances = usd(90.0)  # the next balance: the exchange holds the order's funds
    decision = guard.decide(buy())
    assert isinstance(decision, Blocked)
    assert decision.rule == "duplicate_symbol_entry"
    with pytest.raises(StateError):
        guard.confirm(reservation.id, resting)


def test_filled_entry_counts_until_the_next_balance_shows_the_position(
    store: Store, clock: FakeClock
) -> None:
    live = {ALICE: account_live(equity=2_000.0, free=100.0)}  # STANDARD, yet pin MICRO rules:
    live[ALICE].tier.pinned = "MICRO_CAP"
    guard = make_guard(store, clock, live)
    reservation = guard.reserve(buy("BTC/USD", size_usd=60.0))
    guard.confirm(reservation.id, filled_buy("7", reservation.client_order_id))
    # The balance still says 100 USD free, but 60 of it is gone into BTC.
    blocked = guard.decide(buy("ETH/USD", size_usd=60.0))
    assert isinstance(blocked, Blocked)
    assert blocked.rule == "insufficient_free_balance"
    assert not guard.decide(buy("BTC/USD")).allowed
    live[ALICE].balances = usd(39.76, BTC=0.0012)
    again = guard.decide(buy("BTC/USD"))
    assert isinstance(again, Blocked)
    assert again.rule == "dca"
    assert guard.decide(buy("ETH/USD", size_usd=30.0)).allowed


def test_confirm_of_an_order_of_another_account_is_refused(guard: Guard) -> None:
    reservation = guard.reserve(buy())
    foreign = filled_buy("1", reservation.client_order_id).replace(account_id=BOB)
    with pytest.raises(StateError):
        guard.confirm(reservation.id, foreign)


def test_accounts_are_judged_independently(guard: Guard) -> None:
    for symbol in ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"):
        guard.reserve(buy(symbol))
    assert not guard.decide(buy("ADA/USD")).allowed
    assert guard.decide(buy("BTC/USD", account_id=BOB)).allowed
    assert guard.decide(buy("ADA/USD", account_id=BOB)).allowed


# --------------------------------------------------------------------------- fail closed, exits


def test_entries_fail_closed_when_sync_failed_and_exits_still_pass(
    guard: Guard, live: dict[str, AccountLive], store: Store
) -> None:
    live[ALICE] = account_live(state=SyncState.FAILED)
    decision = guard.decide(buy())
    assert isinstance(decision, Blocked)
    assert decision.rule == "sync_unknown"
    exit_decision = guard.decide(sell(amount=0.0001))
    assert exit_decision.allowed
    assert [i.client_order_id for i in store.pending_intents(ALICE)] == [
        exit_decision.intent.client_order_id
    ]


def test_an_account_the_reconciler_never_saw_gets_no_entry(guard: Guard) -> None:
    decision = guard.decide(buy(account_id="USER:nobody"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "sync_unknown"


def test_exits_pass_while_every_slot_is_taken_and_an_oversell_is_journaled(
    guard: Guard, store: Store
) -> None:
    for symbol in ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD"):
        guard.reserve(buy(symbol))
    assert not guard.decide(buy("ADA/USD")).allowed
    decision = guard.decide(sell("DOGE/USD", amount=500.0, role=OrderRole.EXIT))
    assert isinstance(decision, Allowed)
    assert [w.rule for w in decision.warnings] == ["oversell"]
    [record] = guard.decisions(ALICE, limit=1)
    assert record.allowed
    assert record.figures["warnings"][0]["rule"] == "oversell"
    assert "500 DOGE" in (record.reason or "")


def test_exit_reservations_take_no_slot_and_claim_no_balance(guard: Guard) -> None:
    for _ in range(10):
        guard.reserve(sell("BTC/USD", amount=0.0001))
    assert guard.decide(buy("BTC/USD", size_usd=28.0)).allowed


def test_dust_left_from_an_old_trade_does_not_block_a_new_entry(
    guard: Guard, live: dict[str, AccountLive]
) -> None:
    live[ALICE].balances = usd(100.0, BTC=0.00001)  # 50 cents of BTC
    assert guard.decide(buy()).allowed


def test_a_standard_account_may_add_to_a_position_and_enter_twice(
    store: Store, clock: FakeClock
) -> None:
    live = {ALICE: account_live(equity=5_000.0, free=5_000.0, balances=usd(4_000.0, BTC=0.02))}
    guard = make_guard(store, clock, live)
    assert guard.reserve(buy("BTC/USD", size_usd=100.0))
    assert guard.reserve(buy("BTC/USD", size_usd=100.0))


# --------------------------------------------------------------------------- restart


@pytest.mark.asyncio
async def test_restart_after_the_order_reached_the_exchange_confirms_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    _, exchange = sim(clock)
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        reservation = guard.reserve(buy(type="limit", price=49_000.0, size_usd=None, amount=0.0002))
        await exchange.create_order(
            OrderRequest(
                symbol="BTC/USD",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0002,
                price=49_000.0,
                client_order_id=reservation.client_order_id,
            )
        )
        # The process dies here: the exchange's answer is never recorded.
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        [restored] = guard.restore_pending(ALICE)
        assert restored.client_order_id == reservation.client_order_id
        assert guard.decide(buy()).rule == "duplicate_symbol_entry"  # type: ignore[union-attr]
        resolved, _ = await settle_at_startup(guard, exchange, clock)
        assert resolved == {reservation.client_order_id}
        assert store.pending_intents(ALICE) == []
        order = guard.books.get(ALICE).orders.by_client_id(reservation.client_order_id)
        assert order is not None
        assert order.status is OrderStatus.OPEN
        assert not guard.decide(buy()).allowed
    assert exchange.calls["create_order"] == 1


@pytest.mark.asyncio
async def test_restart_before_the_order_left_releases_it_once_the_exchange_does_not_know_it(
    tmp_path: Path, clock: FakeClock
) -> None:
    engine, exchange = sim(clock)
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        reservation = guard.reserve(buy())
        # The process dies before the request is sent.
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        guard.restore_pending(ALICE)
        resolved, released = await settle_at_startup(guard, exchange, clock)
        # Too young to trust "not found": a just-placed order may not be visible yet.
        assert (resolved, released) == (set(), set())
        assert not guard.decide(buy()).allowed
        clock.advance(61.0)
        # The next start-up (the first one's reconciler closed its exchange).
        _, released = await settle_at_startup(guard, SimExchange(engine, ALICE), clock)
        assert released == {reservation.client_order_id}
        assert store.pending_intents(ALICE) == []
        assert guard.decide(buy()).allowed
    assert exchange.calls["create_order"] == 0


def test_an_order_the_reconciler_adopts_counts_at_the_next_decision(guard: Guard) -> None:
    assert guard.check(buy("ETH/USD")).allowed  # the book's figures are computed and kept
    adopted = Order(
        id="ext-1",
        account_id=ALICE,
        symbol="ETH/USD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        price=2_000.0,
        amount=0.016,
        created_at=T0,
    )
    guard.books.get(ALICE).apply_order(adopted)
    decision = guard.check(buy("ETH/USD"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "duplicate_symbol_entry"
    guard.books.get(ALICE).apply_order(adopted.replace(status=OrderStatus.CANCELLED))
    assert guard.check(buy("ETH/USD")).allowed


def test_intents_the_reconciler_settles_update_the_reservations_in_memory(
    guard: Guard, live: dict[str, AccountLive]
) -> None:
    found = guard.reserve(buy("BTC/USD"))
    missing = guard.reserve(buy("ETH/USD"))
    assert guard.settle_client_id(ALICE, missing.client_order_id, resolved=False)
    assert guard.settle_client_id(ALICE, found.client_order_id, resolved=True, order_id="9")
    assert not guard.settle_client_id(ALICE, "nb-unknown", resolved=True)
    assert guard.decide(buy("ETH/USD")).allowed
    assert not guard.decide(buy("BTC/USD")).allowed  # settling until the account shows it
    live[ALICE].balances = usd(90.0, BTC=0.0002)
    assert guard.decide(buy("BTC/USD")).rule == "dca"  # type: ignore[union-attr]


def test_a_reloaded_book_is_judged_afresh(guard: Guard, store: Store) -> None:
    book = guard.books.get(ALICE)
    old = Order(
        id="ext-2",
        account_id=ALICE,
        symbol="ETH/USD",
        side=Side.BUY,
        type=OrderType.LIMIT,
        price=2_000.0,
        amount=0.001,
        created_at=T0,
    )
    book.apply_order(old)
    book.apply_order(old.replace(status=OrderStatus.CANCELLED))
    assert guard.check(buy("ETH/USD")).allowed  # figures kept for the tracker's 2nd update
    # Another writer stores a new ETH entry; after a reload the new tracker has also
    # applied two updates (the cancelled order and this one), yet the book differs.
    store.save_orders([old.replace(id="ext-3", client_order_id="other")])
    book.reload()
    for symbol, price in PRICES.items():
        book.orders.set_last_price(symbol, price)
    assert book.orders.version == 2
    decision = guard.check(buy("ETH/USD"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "duplicate_symbol_entry"


# --------------------------------------------------------------------------- blocked checks


def test_a_blocked_check_is_observed_each_time_and_journaled_once_a_minute_per_rule(
    guard: Guard, store: Store, clock: FakeClock
) -> None:
    seen: list[Decision] = []
    guard.observers.append(seen.append)
    guard.books.get(ALICE).apply_order(
        Order(
            id="ext-9",
            account_id=ALICE,
            symbol="BTC/USD",
            side=Side.BUY,
            type=OrderType.LIMIT,
            price=49_000.0,
            amount=0.0002,
            created_at=T0,
        )
    )
    assert guard.check(buy("ETH/USD")).allowed  # an allowed dry run leaves no trace
    for _ in range(3):
        blocked = guard.check(buy("BTC/USD"))
        assert isinstance(blocked, Blocked)
        assert blocked.rule == "duplicate_symbol_entry"
    assert [d.rule for d in seen if isinstance(d, Blocked)] == ["duplicate_symbol_entry"] * 3
    assert len(seen) == 3
    [row] = store.decisions(ALICE, blocked_only=True)
    assert (row.rule, row.symbol, row.figures["dry_run"]) == (
        "duplicate_symbol_entry",
        "BTC/USD",
        True,
    )
    assert row.figures["repeats_not_journaled"] == 0
    clock.advance(61.0)
    assert not guard.check(buy("BTC/USD")).allowed
    newest, _ = store.decisions(ALICE, blocked_only=True)
    assert newest.figures["repeats_not_journaled"] == 2


# --------------------------------------------------------------------------- idempotency


def test_the_same_intent_decided_twice_holds_one_reservation(guard: Guard, store: Store) -> None:
    intent = buy("BTC/USD", client_order_id="bot-1")
    first = guard.decide(intent)
    again = guard.decide(buy("BTC/USD", client_order_id="bot-1"))
    assert isinstance(first, Allowed)
    assert first.reservation is not None
    assert again == first
    assert [r.id for r in guard.reservations(ALICE)] == [first.reservation.id]
    assert [i.client_order_id for i in store.pending_intents(ALICE)] == ["bot-1"]
    assert len(store.decisions(ALICE)) == 1


@pytest.mark.parametrize("ended", ["another request", "released", "confirmed", "expired"])
def test_a_client_order_id_is_never_reserved_twice(
    guard: Guard, clock: FakeClock, ended: str
) -> None:
    reservation = guard.reserve(buy("BTC/USD", client_order_id="bot-2"))
    repeat = buy("BTC/USD", client_order_id="bot-2")
    if ended == "another request":
        repeat = buy("BTC/USD", size_usd=12.0, client_order_id="bot-2")
    elif ended == "released":
        guard.release(reservation.id)
    elif ended == "confirmed":
        guard.confirm(reservation.id, "order-2")
    else:
        clock.advance(31.0)
    with pytest.raises(GuardConflict, match="'bot-2'") as raised:
        guard.decide(repeat)
    assert (raised.value.field, raised.value.value) == ("client_order_id", "bot-2")


def test_a_restored_intent_repeated_after_a_restart_gets_its_reservation_back(
    tmp_path: Path, clock: FakeClock
) -> None:
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        guard.reserve(buy("BTC/USD", client_order_id="bot-3"))
        guard.release(guard.reserve(buy("ETH/USD", client_order_id="bot-4")).id)
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        [restored] = guard.restore_pending(ALICE)
        again = guard.decide(buy("BTC/USD", client_order_id="bot-3"))
        assert again.reservation == restored  # type: ignore[union-attr]
        with pytest.raises(GuardConflict):
            guard.decide(buy("BTC/USD", size_usd=12.0, client_order_id="bot-3"))
        # Released before the restart: the store still refuses the id for another request.
        with pytest.raises(GuardConflict, match="'bot-4'"):
            guard.decide(buy("ETH/USD", size_usd=12.0, client_order_id="bot-4"))
        assert guard.reservations(ALICE) == [restored]


# --------------------------------------------------------------------------- settling


def test_a_settling_reservation_can_be_released_and_a_repeated_confirm_changes_nothing(
    guard: Guard, store: Store
) -> None:
    reservation = guard.reserve(buy("BTC/USD"))
    guard.confirm(reservation.id, "order-5")
    guard.confirm(reservation.id, "order-5")  # a retry after a lost answer
    with pytest.raises(GuardConflict) as raised:
        guard.confirm(reservation.id, "order-6")
    assert raised.value.field == "order_id"
    [view] = guard.reservation_views(ALICE)
    assert (view.state, view.order_id) == ("settling", "order-5")
    assert view.why.startswith("confirmed, waiting for the order to show")
    guard.release(reservation.id)
    assert guard.reservations(ALICE) == []
    assert guard.decide(buy("BTC/USD")).allowed
    with pytest.raises(StateError):
        guard.release(reservation.id)


@pytest.mark.parametrize("answered_later", [False, True])
def test_a_settling_entry_the_exchange_does_not_know_is_dropped_after_the_grace(
    store: Store,
    clock: FakeClock,
    live: dict[str, AccountLive],
    caplog: pytest.LogCaptureFixture,
    answered_later: bool,
) -> None:
    guard = make_guard(store, clock, live, not_found_grace_s=45.0)
    reservation = guard.reserve(buy("BTC/USD", client_order_id="bot-6"))
    guard.confirm(reservation.id, "404404")
    unknown = guard.books.get(ALICE).unknown_orders
    unknown.note("404404", "bot-6", clock.now())  # what the reconciler does on OrderNotFound
    clock.advance(44.0)
    unknown.note("404404", "bot-6", clock.now())  # the first answer's time is kept
    [view] = guard.reservation_views(ALICE)
    assert view.unknown_to_exchange_s == pytest.approx(44.0)
    if answered_later:
        unknown.clear("404404", "bot-6")  # the exchange answered for it after all
    clock.advance(1.0)
    with caplog.at_level("WARNING", logger="nija_broker.guard"):
        held = guard.reservations(ALICE)
    if answered_later:
        assert [r.id for r in held] == [reservation.id]
        assert caplog.records == []
    else:
        assert held == []
        [record] = caplog.records
        assert all(s in record.getMessage() for s in (ALICE, "bot-6", "404404"))
