"""The pre-trade guard: every order judged, atomically, against its account's true state.

One :class:`Guard` serves every account. Every call runs on the account
state's owner (:class:`~nija_broker.state.owner.Owner`): the one thread that
also runs every change to the books and every SQLite statement. A thread
calls the guard's methods and waits for the owner's answer; asyncio code
awaits them through :meth:`Guard.acall`. On the owner, :meth:`Guard.decide`
drops expired reservations, snapshots the account (order book, ledger, the
reconciler's :class:`~nija_broker.core.health.AccountLive`, reservations),
asks the pure rules of :mod:`nija_broker.guard.rules`, records a reservation
for an allowed order and journals the intent, all as one job: no other change
to any account runs in between, so two entries can never both see the slot
free (DESIGN invariant 5), and the intent is stored before the answer leaves
(invariant 4).

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

Every decision, allowed or blocked, is journaled and can be read back with
:meth:`Guard.decisions` / :meth:`Guard.why_blocked`. After a restart,
:meth:`Guard.restore_pending` makes unresolved intents count again; the
reconciler settles them against the exchange by client order id.

The pieces: :mod:`~nija_broker.guard.state` (the snapshot the rules judge),
:mod:`~nija_broker.guard.reservations`, :mod:`~nija_broker.guard.journal` and
:mod:`~nija_broker.guard.answers` (what the exchange's answers do).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, TypeVar

from nija_broker.core.breakers import Breakers
from nija_broker.core.clock import Clock
from nija_broker.core.errors import EntryBlocked
from nija_broker.core.events import Event
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Allowed, Blocked, Decision, OrderIntent, Reservation
from nija_broker.core.models import Order
from nija_broker.core.pause import Pause
from nija_broker.core.settings import GuardSettings
from nija_broker.core.tiers import TierPolicy
from nija_broker.guard.answers import Answers
from nija_broker.guard.board import BreakerBoard
from nija_broker.guard.journal import Journal
from nija_broker.guard.pauses import Pauses
from nija_broker.guard.reservations import Reservations
from nija_broker.guard.rules import ENTRY_RULES, AccountState, Rule
from nija_broker.guard.state import (
    AccountGuard,
    GuardConflict,
    ReservationView,
    account_state,
    judge,
    reservation_views,
)
from nija_broker.state.books import Books
from nija_broker.state.owner import Owner, owned
from nija_broker.state.store import DecisionRecord, Store

__all__ = ["Guard", "GuardConflict", "GuardFacts", "GuardSettings", "Pause", "ReservationView"]

log = logging.getLogger("nija_broker.guard")

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class GuardFacts:
    """What the guard knows of one account that its status row shows: its circuit
    breakers (``None``: the tier arms none), its pause, its latest blocked entry."""

    breakers: Breakers | None = None
    pause: Pause | None = None
    last_block: DecisionRecord | None = None


class Guard:
    """Judges and reserves orders for every account; see the module docstring."""

    def __init__(
        self,
        books: Books,
        live: Mapping[str, AccountLive],
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        settings: GuardSettings | None = None,
        rules: Iterable[Rule] = ENTRY_RULES,
    ) -> None:
        self.books = books
        self.owner: Owner = books.owner
        self.live = live
        self.store = store if store is not None else books.store
        self.clock: Clock = clock if clock is not None else books.clock
        self.settings = settings or GuardSettings()
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.observers: list[Callable[[Decision], None]] = []
        """Called with every decision of :meth:`decide` and every blocked :meth:`check`
        (metrics), on the owner's thread; must not raise or block."""
        self.event_sinks: list[Callable[[Sequence[Event]], None]] = []
        """Given the events of what the guard wrote to the books (an order that filled at
        once and its fills), after the store has them; called on the owner's thread."""
        self.breakers = BreakerBoard(self.store)
        self.pauses = Pauses(self.store)
        self._last_blocks: dict[str, DecisionRecord | None] = {}
        self._reservations = Reservations(books, live, self.clock, self.settings)
        self._journal = Journal(self.store, self.breakers, self.event_sinks)
        self._answers = Answers(
            books, self._reservations, self._journal, self.clock, self.event_sinks
        )

    async def acall(self, method: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Any of this guard's methods for asyncio code: ``await guard.acall(guard.decide,
        intent)`` runs it on the owner without blocking the event loop."""
        return await self.owner.acall(method, *args, **kwargs)

    # ------------------------------------------------------------------ deciding

    @owned
    def check(self, intent: OrderIntent) -> Decision:
        """Judge ``intent`` now without reserving anything (a dry run).

        An allowed check leaves no trace. A blocked one reaches :attr:`observers`
        every time and the journal at most once per account, symbol and rule every
        ``CHECK_JOURNAL_EVERY_S`` (60 s), its figures counting the repeats left out.
        """
        account = self._reservations.account(intent.account_id)
        decision = judge(intent, self._state(intent.account_id, account), self.rules)
        self._journal.breaker_events(intent.account_id)
        if not isinstance(decision, Blocked):
            return decision
        journal = account.check_row(decision, self.clock.monotonic())
        if journal is not None:
            self._journal.blocked_check(journal, self.clock.now())
        self._note_block(decision, self.clock.now())
        for observe in self.observers:
            observe(decision)
        return decision

    @owned
    def decide(self, intent: OrderIntent) -> Decision:
        """Judge and, if allowed, reserve atomically; journal the intent and the decision.

        An :class:`Allowed` carries the reservation to :meth:`confirm` or
        :meth:`release` once the exchange answers; its intent is in the store
        as ``pending`` when this returns. The same intent again (same client order
        id, same request) while that reservation is in flight returns the same
        answer, journaling nothing new; :class:`GuardConflict` if the id is reused
        for another request or after its reservation ended.
        """
        account = self._reservations.account(intent.account_id)
        repeat = account.repeat(intent, self.clock.monotonic())
        if repeat is not None:
            return repeat
        now = self.clock.now()
        state = self._state(intent.account_id, account)
        decision = judge(intent, state, self.rules)
        held: Reservation | None = None
        if isinstance(decision, Allowed):
            held = self._reservations.new(intent, state, now)
            decision = Allowed(
                intent=intent,
                warnings=decision.warnings,
                figures=decision.figures,
                reservation=held,
            )
            self._reservations.hold(account, decision)
        self._journal.breaker_events(intent.account_id)
        try:
            self._journal.decision(decision, now)
        except BaseException:
            # Not journaled means not sent: the reservation must not outlive the failure.
            if held is not None:
                self._reservations.forget(account, held)
            raise
        if isinstance(decision, Blocked):
            self._note_block(decision, now)
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

    @owned
    def state(self, account_id: str) -> AccountState:
        """The snapshot the rules would judge ``account_id``'s next order on."""
        state = self._state(account_id, self._reservations.account(account_id))
        self._journal.breaker_events(account_id)
        return state

    # ------------------------------------------------------------------ breakers

    @owned
    def breaker_report(self, account_id: str) -> Breakers | None:
        """The account's circuit breakers now (``None``: its tier arms none): the breakers
        alone, without the rest of the snapshot a decision needs."""
        breakers = self._breakers(account_id)
        self._journal.breaker_events(account_id)
        return breakers

    @owned
    def resume(self, account_id: str) -> tuple[Breakers | None, list[str]]:
        """The trader resumes every tripped breaker of ``account_id`` (journaled); returns
        the breakers after it and the rules resumed. They trip again only when their
        figures get worse than they are now."""
        answer = self.breakers.resume(
            self.books.get(account_id), self._policy(account_id), self.clock.now()
        )
        self._journal.breaker_events(account_id)
        return answer

    # ------------------------------------------------------------------ pauses

    @owned
    def pause(self, account_id: str, by: str, reason: str = "") -> Pause:
        """The trader pauses the account's entries (rule ``paused``); exits still pass.
        Journaled before it counts, so it survives a restart. Pausing a paused account
        keeps the pause in force (who, when and why unchanged)."""
        pause, event = self.pauses.pause(account_id, by, reason, self.clock.now())
        if event is not None:
            for sink in self.event_sinks:
                sink([event])
        return pause

    @owned
    def unpause(self, account_id: str, by: str) -> bool:
        """Lift the account's pause (journaled); False when it was not paused."""
        event = self.pauses.resume(account_id, by, self.clock.now())
        if event is None:
            return False
        for sink in self.event_sinks:
            sink([event])
        return True

    @owned
    def pause_of(self, account_id: str) -> Pause | None:
        """The account's pause now (``None``: entries are judged by the rules)."""
        return self.pauses.of(account_id)

    @owned
    def facts(self, account_id: str) -> GuardFacts:
        """The account's breakers, pause and latest block, in one job."""
        return GuardFacts(
            breakers=self.breaker_report(account_id),
            pause=self.pauses.of(account_id),
            last_block=self.last_block(account_id),
        )

    @owned
    def last_block(self, account_id: str) -> DecisionRecord | None:
        """The account's latest blocked decision (a reserve's or a journaled check's)."""
        if account_id not in self._last_blocks:
            self._last_blocks[account_id] = self.why_blocked(account_id, search=1)
        return self._last_blocks[account_id]

    def _note_block(self, decision: Blocked, now: datetime) -> None:
        intent = decision.intent
        self._last_blocks[intent.account_id] = DecisionRecord(
            account_id=intent.account_id,
            ts=now,
            allowed=False,
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            rule=decision.rule,
            reason=decision.reason,
        )

    def _policy(self, account_id: str) -> TierPolicy | None:
        live = self.live.get(account_id)
        return live.policy() if live is not None else None

    def _breakers(self, account_id: str) -> Breakers | None:
        return self.breakers.evaluate(
            self.books.get(account_id), self._policy(account_id), self.clock.now()
        )

    # ------------------------------------------------------------------ answers

    @owned
    def confirm(self, reservation_id: str, order: Order | str | None = None) -> None:
        """The exchange accepted the order: apply it to the book and resolve the intent.

        ``order`` is the exchange's :class:`Order` (applied to the book at once), or
        just its id, or ``None`` when the caller got no id back; the reconciler
        then brings the order in. Either way the entry keeps counting until the
        account's state shows it.
        """
        self._answers.confirm(reservation_id, order)

    @owned
    def settle_client_id(
        self, account_id: str, client_order_id: str, *, resolved: bool, order_id: str | None = None
    ) -> bool:
        """The reconciler resolved (or released) an intent in the store and the book: settle
        its reservation in memory only. Returns False when no reservation held that id.
        """
        return self._answers.settle_client_id(
            account_id, client_order_id, resolved=resolved, order_id=order_id
        )

    @owned
    def release(self, reservation_id: str) -> None:
        """The exchange refused the order (or it was never sent): free its place.

        A settling reservation (confirmed, not yet shown by the account) stops
        counting too; its intent stays resolved and the book keeps following the
        order, so it counts again as soon as the exchange shows it.
        """
        self._answers.release(reservation_id)

    @owned
    def mark_sent(self, reservation_id: str) -> None:
        """The request left but no answer came (timeout, lost response, cancellation).

        The order may exist: the reservation keeps counting until it expires, and
        the intent stays unresolved (``sent``) for the reconciler to settle by
        client order id.
        """
        self._answers.mark_sent(reservation_id)

    @owned
    def reservations(self, account_id: str) -> list[Reservation]:
        """Reservations that count now (in flight or settling), oldest first."""
        return self._reservations.held(account_id)

    @owned
    def reservation_views(self, account_id: str) -> list[ReservationView]:
        """:meth:`reservations` with their state, age and why each counts, oldest first."""
        account = self._reservations.account(account_id)
        self._reservations.expire(account_id, account)
        return reservation_views(
            account,
            self.books.get(account_id),
            self.live.get(account_id),
            now=self.clock.now(),
            mono=self.clock.monotonic(),
            settle_max_s=self.settings.settle_max_s,
            not_found_grace_s=self.settings.not_found_grace_s,
        )

    @owned
    def reservation_id_of(self, account_id: str, client_order_id: str) -> str | None:
        """The unresolved reservation holding that client order id, if any."""
        return self._reservations.account(account_id).by_client_id.get(client_order_id)

    # ------------------------------------------------------------------ restart

    @owned
    def restore_pending(self, account_id: str) -> list[Reservation]:
        """Make every unresolved intent in the store count again (call on startup).

        Each gets a fresh reservation of ``reservation_ttl_s``: long enough for the
        reconciler to find the order by its client order id. Intents already
        reserved in memory are left alone. Returns the reservations created.
        """
        return self._answers.restore_pending(account_id)

    # ------------------------------------------------------------------ journal

    @owned
    def decisions(
        self, account_id: str, *, limit: int = 100, blocked_only: bool = False
    ) -> list[DecisionRecord]:
        """The account's most recent journaled decisions, newest first."""
        if self.store is None:
            return []
        return self.store.decisions(account_id, limit=limit, blocked_only=blocked_only)

    def why_blocked(
        self, account_id: str, client_order_id: str | None = None, *, search: int = 1_000
    ) -> DecisionRecord | None:
        """The latest blocked decision of the account (of that client order id, if given)."""
        for record in self.decisions(account_id, limit=search, blocked_only=True):
            if client_order_id is None or record.client_order_id == client_order_id:
                return record
        return None

    # ------------------------------------------------------------------ internals

    def _state(self, account_id: str, account: AccountGuard) -> AccountState:
        self._reservations.expire(account_id, account)
        return account_state(
            account_id,
            account,
            self.books.get(account_id),
            self.live.get(account_id),
            fee_rate=self.settings.fee_rate,
            dust_usd=self.settings.dust_usd,
            breakers=self._breakers(account_id),
            pause=self.pauses.of(account_id),
        )
