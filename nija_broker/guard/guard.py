"""The pre-trade guard: every order judged, atomically, against its account's true state.

One :class:`Guard` serves every account. For each account it keeps one
``threading.Lock`` (so asyncio tasks and the bot's threads are covered alike)
and the account's reservations. :meth:`Guard.decide` takes the lock, drops
expired reservations, snapshots the account (order book, ledger, the
reconciler's :class:`~nija_broker.core.health.AccountLive`, reservations), asks the
pure rules of :mod:`nija_broker.guard.rules` and, for an allowed order,
records a reservation — all before the lock is let go, so two entries can
never both see the slot free (DESIGN invariant 5). The lock is never held
across an await, a network call or a disk write.

A reservation's life::

    decide / reserve --> in flight --confirm(order)--> settling --> gone
                             |  \\--release--> gone           (the account's state shows it,
                             \\--ttl--> expired                or settle_max_s passed, or the
                                  (stops counting; the       exchange has not known the order
                                  intent stays unresolved)   for not_found_grace_s, or release)

*In flight*: counts as an open entry on its symbol, as a claim on the free
balance and, unless it is a market order (which fills at once), as held
capital. *Settling*: the exchange accepted the order; it keeps its claim on
the free balance until the reconciler's next balance arrives, and its symbol
until the book or the balance shows the order. :meth:`Guard.reservation_views`
lists both, with why each counts.

Reserving is idempotent by client order id: the same intent again, while its
reservation is in flight, gets the same answer (nothing is held twice); another
intent with that id, or any once its reservation ended, raises
:class:`GuardConflict`.

The intent is journaled in the store with its client order id before
:meth:`decide` returns, so before any request leaves (invariant 4); every
decision, allowed or blocked, is journaled too and can be read back with
:meth:`Guard.decisions` / :meth:`Guard.why_blocked`. After a restart,
:meth:`Guard.restore_pending` makes unresolved intents count again and
:meth:`Guard.resolve_pending` settles them against the exchange by client
order id.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

from nija_broker.core.breakers import Breakers
from nija_broker.core.clock import Clock
from nija_broker.core.errors import EntryBlocked, StateError
from nija_broker.core.events import Event
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Allowed, Blocked, Decision, OrderIntent, Reservation
from nija_broker.core.models import Order, OrderRole
from nija_broker.core.settings import GuardSettings
from nija_broker.core.tiers import TierPolicy
from nija_broker.guard.answers import (
    ClientIdLookup,
    ResolveReport,
    apply_to_book,
    put_intent,
    resolve_pending,
)
from nija_broker.guard.board import BreakerBoard
from nija_broker.guard.rules import ENTRY_RULES, AccountState, Rule
from nija_broker.guard.state import (
    AccountGuard,
    GuardConflict,
    ReservationView,
    Settling,
    account_state,
    decision_record,
    expired_long_ago,
    judge,
    parse_request,
    reservation_views,
    unknown_past_grace,
    visible,
)
from nija_broker.state.book import Books, Followed
from nija_broker.state.store import DecisionRecord, IntentUpdate, Store

__all__ = ["Guard", "GuardConflict", "GuardSettings", "ReservationView", "ResolveReport"]

log = logging.getLogger("nija_broker.guard")


class Guard:
    """Judges and reserves orders for every account; see the module docstring."""

    def __init__(self, books: Books, live: Mapping[str, AccountLive], *,
                 store: Store | None = None, clock: Clock | None = None,
                 settings: GuardSettings | None = None,
                 rules: Iterable[Rule] = ENTRY_RULES) -> None:
        self.books = books
        self.live = live
        self.store = store if store is not None else books.store
        self.clock: Clock = clock if clock is not None else books.clock
        self.settings = settings or GuardSettings()
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.observers: list[Callable[[Decision], None]] = []
        """Called with every decision of :meth:`decide` and every blocked :meth:`check`
        (metrics), on the caller's thread; must not raise or block."""
        self.event_sinks: list[Callable[[Sequence[Event]], None]] = []
        """Given the events of what the guard wrote to the books (an order that filled at
        once and its fills), after the store has them; may be called from any thread."""
        self._accounts: dict[str, AccountGuard] = {}
        self._where: dict[str, str] = {}  # reservation id -> account id
        self._lock = threading.Lock()
        self.breakers = BreakerBoard(self.store)

    # ------------------------------------------------------------------ deciding

    def check(self, intent: OrderIntent) -> Decision:
        """Judge ``intent`` now without reserving anything (a dry run).

        An allowed check leaves no trace. A blocked one reaches :attr:`observers`
        every time and the journal at most once per account, symbol and rule every
        ``CHECK_JOURNAL_EVERY_S`` (60 s), its figures counting the repeats left out.
        """
        account = self._account(intent.account_id)
        with account.lock:
            state = self._state_locked(intent.account_id, account)
            decision = judge(intent, state, self.rules)
            if not isinstance(decision, Blocked):
                self._send_breaker_events(intent.account_id)
                return decision
            journal = account.check_row(decision, self.clock.monotonic())
        self._send_breaker_events(intent.account_id)
        if journal is not None and self.store is not None:
            try:
                self.store.journal_decision(decision_record(journal, self.clock.now()))
            except StateError as exc:  # the answer stands: a dry run changes nothing
                log.warning("account %s: blocked check not journaled: %s",
                            intent.account_id, exc)
        for observe in self.observers:
            observe(decision)
        return decision

    def decide(self, intent: OrderIntent) -> Decision:
        """Judge and, if allowed, reserve atomically; journal the intent and the decision.

        An :class:`Allowed` carries the reservation to :meth:`confirm` or
        :meth:`release` once the exchange answers; its intent is in the store
        as ``pending`` when this returns. The same intent again (same client order
        id, same request) while that reservation is in flight returns the same
        answer, journaling nothing new; :class:`GuardConflict` if the id is reused
        for another request or after its reservation ended.
        """
        account = self._account(intent.account_id)
        while True:
            now = self.clock.now()
            with account.lock:
                repeat = account.repeat(intent, self.clock.monotonic())
                if repeat is None:
                    state = self._state_locked(intent.account_id, account)
                    decision = judge(intent, state, self.rules)
                    held: Reservation | None = None
                    if isinstance(decision, Allowed):
                        held = self._new_reservation(intent, state, now)
                        decision = Allowed(intent=intent, warnings=decision.warnings,
                                           figures=decision.figures, reservation=held)
                        self._hold_locked(account, decision)
                        account.journaling[held.id] = threading.Event()
                    break
            answer, journaling = repeat
            if journaling is None:
                return answer
            # The first call is still journaling the intent: nothing may be sent before
            # it is stored. If that fails the reservation is gone and this one decides.
            journaling.wait()
        self._send_breaker_events(intent.account_id)
        try:
            self._journal(decision, now)
        finally:
            if held is not None:
                with account.lock:
                    stored = account.journaling.pop(held.id)
                stored.set()
        for observe in self.observers:
            observe(decision)
        return decision

    def reserve(self, intent: OrderIntent) -> Reservation:
        """:meth:`decide`, raising :class:`EntryBlocked` for a blocked entry (two-phase use)."""
        decision = self.decide(intent)
        if isinstance(decision, Blocked):
            raise EntryBlocked(decision.rule, decision.reason)
        assert decision.reservation is not None
        return decision.reservation

    def state(self, account_id: str) -> AccountState:
        """The snapshot the rules would judge ``account_id``'s next order on."""
        account = self._account(account_id)
        with account.lock:
            state = self._state_locked(account_id, account)
        self._send_breaker_events(account_id)
        return state

    # ------------------------------------------------------------------ breakers

    def breaker_report(self, account_id: str) -> Breakers | None:
        """The account's circuit breakers now (``None``: its tier arms none): the breakers
        alone, without the rest of the snapshot a decision needs."""
        account = self._account(account_id)
        with account.lock:
            breakers = self._breakers_locked(account_id)
        self._send_breaker_events(account_id)
        return breakers

    def resume(self, account_id: str) -> tuple[Breakers | None, list[str]]:
        """The trader resumes every tripped breaker of ``account_id`` (journaled); returns
        the breakers after it and the rules resumed. They trip again only when their
        figures get worse than they are now."""
        account = self._account(account_id)
        with account.lock:
            answer = self.breakers.resume(self.books.get(account_id), self._policy(account_id),
                                          self.clock.now())
        self._send_breaker_events(account_id)
        return answer

    def _policy(self, account_id: str) -> TierPolicy | None:
        live = self.live.get(account_id)
        return live.policy() if live is not None else None

    def _breakers_locked(self, account_id: str) -> Breakers | None:
        return self.breakers.evaluate(self.books.get(account_id), self._policy(account_id),
                                      self.clock.now())

    def _send_breaker_events(self, account_id: str) -> None:
        """Journal and publish the trips and resumes found under the lock (outside it)."""
        found = self.breakers.take_events(account_id)
        if not found:
            return
        events = [event for event, _ in found]
        for event, record in found:
            log.warning("account %s: breaker %s %s: %s", account_id, event.rule, record.kind,
                        record.reason)
            if self.store is not None:
                try:
                    self.store.journal_breaker(record)
                except StateError as exc:
                    log.warning("account %s: breaker event not journaled: %s", account_id, exc)
        for sink in self.event_sinks:
            sink(events)

    # ------------------------------------------------------------------ answers

    def confirm(self, reservation_id: str, order: Order | str | None = None) -> None:
        """The exchange accepted the order: apply it to the book and resolve the intent.

        ``order`` is the exchange's :class:`Order` (applied to the book at once), or
        just its id, or ``None`` when the caller got no id back; the reconciler
        then brings the order in. Either way the entry keeps counting until the
        account's state shows it.
        """
        account_id, account, reservation, settling = self._find(reservation_id, settled=True)
        order_id = order.id if isinstance(order, Order) else order
        if settling is not None:
            self._confirm_again(account_id, account, settling, order_id)
            return
        resolved = IntentUpdate(client_order_id=reservation.client_order_id, status="resolved",
                                at=self.clock.now(), order_id=order_id)
        applied = False
        if isinstance(order, Order):
            if order.account_id != account_id:
                raise StateError(
                    f"order {order.id!r} of account {order.account_id!r} confirms reservation "
                    f"{reservation_id!r} of account {account_id!r}"
                )
            applied = apply_to_book(self.books.get(account_id), self.store, order, resolved,
                                    self.event_sinks)
        if self.store is not None and not applied:
            self.store.set_intent_status(account_id, reservation.client_order_id, "resolved",
                                         resolved.at, order_id=order_id)
        if not applied:
            # Followed by id (or client id) until the book has it, even if it fills and
            # its exit fills before any listing shows it.
            self.books.get(account_id).follow(Followed(
                symbol=reservation.symbol, order_id=order_id,
                client_order_id=reservation.client_order_id,
                role=OrderRole.ENTRY if reservation.is_entry else None))
        with account.lock:
            self._settle_locked(account_id, account, reservation, order_id)

    def _confirm_again(self, account_id: str, account: AccountGuard, settling: Settling,
                       order_id: str | None) -> None:
        """A repeated confirm (a retry after a lost answer) changes nothing; one that
        brings the id a confirm without one lacked is followed by that id too."""
        reservation = settling.reservation
        if order_id is None or order_id == settling.order_id:
            return
        if settling.order_id is not None:
            raise GuardConflict(
                f"reservation {reservation.id!r} of account {account_id!r} was confirmed with "
                f"order {settling.order_id!r}, not {order_id!r}",
                field="order_id", value=order_id)
        with account.lock:
            settling.order_id = order_id
        self.books.get(account_id).follow(Followed(
            symbol=reservation.symbol, order_id=order_id,
            client_order_id=reservation.client_order_id, role=OrderRole.ENTRY))

    def settle_client_id(self, account_id: str, client_order_id: str, *, resolved: bool,
                         order_id: str | None = None) -> bool:
        """The reconciler resolved (or released) an intent in the store and the book: settle
        its reservation in memory only. Returns False when no reservation held that id.
        """
        account = self._account(account_id)
        with account.lock:
            reservation_id = account.by_client_id.get(client_order_id)
            reservation = account.unresolved.get(reservation_id) if reservation_id else None
            if reservation is None:
                return False
            if resolved:
                self._settle_locked(account_id, account, reservation, order_id)
            else:
                self._forget_locked(account, reservation, "released")
            return True

    def release(self, reservation_id: str) -> None:
        """The exchange refused the order (or it was never sent): free its place.

        A settling reservation (confirmed, not yet shown by the account) stops
        counting too; its intent stays resolved and the book keeps following the
        order, so it counts again as soon as the exchange shows it.
        """
        account_id, account, reservation, settling = self._find(reservation_id, settled=True)
        if settling is not None:
            with account.lock:
                if account.settling.pop(reservation_id, None) is not None:
                    self._where.pop(reservation_id, None)
            log.info("account %s: settling reservation %s (client order id %s, order %s) "
                     "released by request", account_id, reservation_id,
                     reservation.client_order_id, settling.order_id)
            return
        if self.store is not None:
            self.store.set_intent_status(account_id, reservation.client_order_id, "released",
                                         self.clock.now())
        with account.lock:
            self._forget_locked(account, reservation, "released")

    def mark_sent(self, reservation_id: str) -> None:
        """The request left but no answer came (timeout, lost response, cancellation).

        The order may exist: the reservation keeps counting until it expires, and
        the intent stays unresolved (``sent``) for :meth:`resolve_pending` or the
        reconciler to settle by client order id.
        """
        account_id, _, reservation, _ = self._find(reservation_id)
        if self.store is not None:
            self.store.set_intent_status(account_id, reservation.client_order_id, "sent",
                                         self.clock.now())

    def reservations(self, account_id: str) -> list[Reservation]:
        """Reservations that count now (in flight or settling), oldest first."""
        account = self._account(account_id)
        with account.lock:
            self._expire_locked(account_id, account)
            held = [*account.in_flight.values(),
                    *(s.reservation for s in account.settling.values())]
        return sorted(held, key=lambda r: (r.created_at, r.id))

    def reservation_views(self, account_id: str) -> list[ReservationView]:
        """:meth:`reservations` with their state, age and why each counts, oldest first."""
        account = self._account(account_id)
        with account.lock:
            self._expire_locked(account_id, account)
            return reservation_views(
                account, self.books.get(account_id), self.live.get(account_id),
                now=self.clock.now(), mono=self.clock.monotonic(),
                settle_max_s=self.settings.settle_max_s,
                not_found_grace_s=self.settings.not_found_grace_s)

    # ------------------------------------------------------------------ restart

    async def resolve_pending(self, exchange: ClientIdLookup, account_id: str) -> ResolveReport:
        """Settle every unresolved intent of ``account_id`` by asking the exchange by client id.

        Found: confirmed with the exchange's order. The exchange says it has no
        such order and the intent is older than ``not_found_grace_s``: released
        (it never reached the exchange). Any other error is no evidence: the
        intent stays unresolved and keeps its reservation until it expires.
        """
        return await resolve_pending(self, exchange, account_id)

    def reservation_id_of(self, account_id: str, client_order_id: str) -> str | None:
        """The unresolved reservation holding that client order id, if any."""
        account = self._account(account_id)
        with account.lock:
            return account.by_client_id.get(client_order_id)

    def restore_pending(self, account_id: str) -> list[Reservation]:
        """Make every unresolved intent in the store count again (call on startup).

        Each gets a fresh reservation of ``reservation_ttl_s``: long enough for
        :meth:`resolve_pending` (or the reconciler) to find the order by its
        client order id. Intents already reserved in memory are left alone.
        Returns the reservations created.
        """
        if self.store is None:
            return []
        pending = self.store.pending_intents(account_id)
        account = self._account(account_id)
        restored: list[Reservation] = []
        with account.lock:
            for stored in pending:
                if stored.client_order_id in account.by_client_id:
                    continue
                intent, reserved_usd = parse_request(stored)
                reservation = self._make_reservation(intent, reserved_usd, stored.created_at)
                self._hold_locked(account, Allowed(intent=intent, figures={"restored": True},
                                                   reservation=reservation))
                restored.append(reservation)
        return restored

    # ------------------------------------------------------------------ journal

    def decisions(self, account_id: str, *, limit: int = 100,
                  blocked_only: bool = False) -> list[DecisionRecord]:
        """The account's most recent journaled decisions, newest first."""
        if self.store is None:
            return []
        return self.store.decisions(account_id, limit=limit, blocked_only=blocked_only)

    def why_blocked(self, account_id: str, client_order_id: str | None = None, *,
                    search: int = 1_000) -> DecisionRecord | None:
        """The latest blocked decision of the account (of that client order id, if given)."""
        for record in self.decisions(account_id, limit=search, blocked_only=True):
            if client_order_id is None or record.client_order_id == client_order_id:
                return record
        return None

    # ------------------------------------------------------------------ internals

    def _account(self, account_id: str) -> AccountGuard:
        account = self._accounts.get(account_id)
        if account is not None:
            return account
        with self._lock:
            return self._accounts.setdefault(account_id, AccountGuard())

    def _find(self, reservation_id: str, *, settled: bool = False,
              ) -> tuple[str, AccountGuard, Reservation, Settling | None]:
        """The open reservation (``settled``: or the settling entry) of that id."""
        account_id = self._where.get(reservation_id)
        account = self._accounts.get(account_id) if account_id is not None else None
        reservation = settling = None
        if account is not None:
            with account.lock:
                reservation = account.unresolved.get(reservation_id)
                settling = account.settling.get(reservation_id) if settled else None
        if reservation is None and settling is not None:
            reservation = settling.reservation
        if account_id is None or account is None or reservation is None:
            raise StateError(
                f"no open reservation {reservation_id!r}: it was already confirmed or "
                "released, or expired long ago"
            )
        return account_id, account, reservation, settling

    def _hold_locked(self, account: AccountGuard, answer: Allowed) -> None:
        reservation = answer.reservation
        assert reservation is not None
        account.in_flight[reservation.id] = reservation
        account.unresolved[reservation.id] = reservation
        account.by_client_id[reservation.client_order_id] = reservation.id
        account.answers[reservation.id] = answer
        self._where[reservation.id] = reservation.account_id

    def _settle_locked(self, account_id: str, account: AccountGuard,
                       reservation: Reservation, order_id: str | None) -> None:
        self._forget_locked(account, reservation, "confirmed")
        if reservation.is_entry:
            live = self.live.get(account_id)
            account.settling[reservation.id] = Settling(
                reservation, order_id, self.clock.monotonic(),
                live.balances if live is not None else None,
            )
            self._where[reservation.id] = account_id

    def _forget_locked(self, account: AccountGuard, reservation: Reservation,
                       outcome: str | None = None) -> None:
        """Drop an unresolved reservation; ``outcome`` (how it ended) keeps its client
        order id from being reserved again. ``None``: never journaled, the id is free."""
        account.in_flight.pop(reservation.id, None)
        account.unresolved.pop(reservation.id, None)
        account.answers.pop(reservation.id, None)
        if account.by_client_id.get(reservation.client_order_id) == reservation.id:
            del account.by_client_id[reservation.client_order_id]
        if outcome is not None:
            account.finish(reservation.client_order_id, outcome)
        self._where.pop(reservation.id, None)

    def _new_reservation(self, intent: OrderIntent, state: AccountState,
                         now: datetime) -> Reservation:
        reserved_usd = 0.0
        if intent.is_entry:
            notional = intent.notional(state.last_prices.get(intent.symbol)) or 0.0
            reserved_usd = notional * (1.0 + state.fee_rate)
        return self._make_reservation(intent, reserved_usd, now)

    def _make_reservation(self, intent: OrderIntent, reserved_usd: float,
                          created_at: datetime) -> Reservation:
        return Reservation(
            id=f"rsv-{uuid.uuid4().hex}", account_id=intent.account_id,
            client_order_id=intent.client_order_id, symbol=intent.symbol, side=intent.side,
            type=intent.type, is_entry=intent.is_entry, reserved_usd=reserved_usd,
            created_at=created_at,
            expires_at=self.clock.monotonic() + self.settings.reservation_ttl_s,
        )

    def _expire_locked(self, account_id: str, account: AccountGuard) -> None:
        mono = self.clock.monotonic()
        for rid in [r.id for r in account.in_flight.values() if r.expires_at <= mono]:
            # Expired: it stops counting, but stays confirmable; the intent stays unresolved.
            del account.in_flight[rid]
        forget_before = mono - self.settings.settle_max_s
        for rid in [r.id for r in account.unresolved.values()
                    if expired_long_ago(r, account, forget_before)]:
            self._forget_locked(account, account.unresolved[rid], "expired")
        if not account.settling:
            return
        live = self.live.get(account_id)
        balances = live.balances if live is not None else None
        book = self.books.get(account_id)
        now = self.clock.now()
        for rid, settling in list(account.settling.items()):
            gone = settling.confirmed_at <= forget_before or (
                balances is not settling.balances_seen
                and visible(settling, book.orders, balances)
            )
            if not gone:
                gone = unknown_past_grace(account_id, settling, book, now,
                                          self.settings.not_found_grace_s)
            if gone:
                del account.settling[rid]
                self._where.pop(rid, None)

    def _state_locked(self, account_id: str, account: AccountGuard) -> AccountState:
        self._expire_locked(account_id, account)
        return account_state(account_id, account, self.books.get(account_id),
                             self.live.get(account_id), fee_rate=self.settings.fee_rate,
                             dust_usd=self.settings.dust_usd,
                             breakers=self._breakers_locked(account_id))

    def _journal(self, decision: Decision, now: datetime) -> None:
        if self.store is None:
            return
        intent = decision.intent
        reservation = decision.reservation if isinstance(decision, Allowed) else None
        try:
            if isinstance(decision, Allowed) and reservation is not None:
                put_intent(self.store, decision, reservation, now)
            else:
                self.store.journal_decision(decision_record(decision, now))
        except BaseException:
            # Not journaled means not sent: the reservation must not outlive the failure.
            if reservation is not None:
                account = self._account(intent.account_id)
                with account.lock:
                    self._forget_locked(account, reservation)
            raise
