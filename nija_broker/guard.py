"""The pre-trade guard: every order judged, atomically, against its account's true state.

One :class:`Guard` serves every account. For each account it keeps one
``threading.Lock`` (so asyncio tasks and the bot's threads are covered alike)
and the account's reservations. :meth:`Guard.decide` takes the lock, drops
expired reservations, snapshots the account (order book, ledger, the
reconciler's :class:`~nija_broker.health.AccountLive`, reservations), asks the
pure rules of :mod:`nija_broker._guard_rules` and, for an allowed order,
records a reservation — all before the lock is let go, so two entries can
never both see the slot free (DESIGN invariant 5). The lock is never held
across an await, a network call or a disk write.

A reservation's life::

    decide / reserve --> in flight --confirm(order)--> settling --> gone
                             |  \\--release--> gone           (the account's state shows it)
                             \\--ttl--> expired (stops counting; the intent stays unresolved)

*In flight*: counts as an open entry on its symbol, as a claim on the free
balance and, unless it is a market order (which fills at once), as held
capital. *Settling*: the exchange accepted the order; it keeps its claim on
the free balance until the reconciler's next balance arrives, and its symbol
until the book or the balance shows the order.

The intent is journaled in the store with its client order id before
:meth:`decide` returns, so before any request leaves (invariant 4); every
decision, allowed or blocked, is journaled too and can be read back with
:meth:`Guard.decisions` / :meth:`Guard.why_blocked`. After a restart,
:meth:`Guard.restore_pending` makes unresolved intents count again and
:meth:`Guard.resolve_pending` settles them against the exchange by client
order id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from ._guard_rules import (
    ENTRY_RULES,
    AccountState,
    Rule,
    exit_warnings,
    first_objection,
    holdings_of,
    positions_of,
)
from ._guard_state import (
    AccountGuard,
    Settling,
    book_figures,
    decision_record,
    expired_long_ago,
    in_book,
    parse_request,
    request_json,
    reservation_held_usd,
    visible,
)
from .book import AccountBook, Books, Followed
from .clock import Clock
from .errors import EntryBlocked, ExchangeError, OrderNotFound, StateError
from .events import Event, FillsBooked, OrderFilled
from .health import AccountHealth, AccountLive
from .intent import Allowed, Blocked, Decision, OrderIntent, Reservation
from .models import Order, OrderRole, OrderStatus, Position
from .store import DecisionRecord, IntentUpdate, Store

__all__ = ["Guard", "GuardSettings", "ResolveReport"]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """How long reservations live, what counts as dust, when a missing order is believed."""

    reservation_ttl_s: float = 30.0
    """An in-flight reservation stops counting this long after it was made, if nobody
    confirmed or released it (a bot in another process that died mid-order)."""
    settle_max_s: float = 600.0
    """A confirmed entry counts for at most this long before the account's state shows it."""
    dust_usd: float = 1.0
    """Holdings worth less than this are not positions."""
    not_found_grace_s: float = 60.0
    """An intent the exchange does not know is released only once it is this old: a
    just-placed order may not be visible yet."""
    fee_rate: float | None = None
    """Fee reserved on top of an entry's value; ``None`` uses the order book's fee rate."""

    def __post_init__(self) -> None:
        for name in ("reservation_ttl_s", "settle_max_s", "not_found_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not self.dust_usd >= 0:
            raise ValueError(f"dust_usd must be >= 0, got {self.dust_usd!r}")
        if self.fee_rate is not None and not 0 <= self.fee_rate < 1:
            raise ValueError(f"fee_rate must be in [0, 1), got {self.fee_rate!r}")


@dataclass(frozen=True, slots=True)
class ResolveReport:
    """What :meth:`Guard.resolve_pending` did, by client order id."""

    confirmed: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


class ClientIdLookup(Protocol):
    """The part of :class:`adapters.base.Exchange` that resolving intents needs."""

    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order: ...


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
        """Called with every journaled decision (metrics); must not raise or block."""
        self.event_sinks: list[Callable[[Sequence[Event]], None]] = []
        """Given the events of what the guard wrote to the books (an order that filled at
        once and its fills), after the store has them; may be called from any thread."""
        self._accounts: dict[str, AccountGuard] = {}
        self._where: dict[str, str] = {}  # reservation id -> account id
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ deciding

    def check(self, intent: OrderIntent) -> Decision:
        """Judge ``intent`` now without reserving or journaling anything (a dry run)."""
        account = self._account(intent.account_id)
        with account.lock:
            state = self._state_locked(intent.account_id, account)
        return _judge(intent, state, self.rules)

    def decide(self, intent: OrderIntent) -> Decision:
        """Judge and, if allowed, reserve atomically; journal the intent and the decision.

        An :class:`Allowed` carries the reservation to :meth:`confirm` or
        :meth:`release` once the exchange answers; its intent is in the store
        as ``pending`` when this returns.
        """
        account = self._account(intent.account_id)
        now = self.clock.now()
        with account.lock:
            state = self._state_locked(intent.account_id, account)
            decision = _judge(intent, state, self.rules)
            if isinstance(decision, Allowed):
                reservation = self._new_reservation(intent, state, now)
                decision = Allowed(intent=intent, warnings=decision.warnings,
                                   figures=decision.figures, reservation=reservation)
                self._hold_locked(account, reservation)
        self._journal(decision, now)
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
            return self._state_locked(account_id, account)

    # ------------------------------------------------------------------ answers

    def confirm(self, reservation_id: str, order: Order | str | None = None) -> None:
        """The exchange accepted the order: apply it to the book and resolve the intent.

        ``order`` is the exchange's :class:`Order` (applied to the book at once), or
        just its id, or ``None`` when the caller got no id back; the reconciler
        then brings the order in. Either way the entry keeps counting until the
        account's state shows it.
        """
        account_id, account, reservation = self._find(reservation_id)
        order_id = order.id if isinstance(order, Order) else order
        resolved = IntentUpdate(client_order_id=reservation.client_order_id, status="resolved",
                                at=self.clock.now(), order_id=order_id)
        applied = False
        if isinstance(order, Order):
            if order.account_id != account_id:
                raise StateError(
                    f"order {order.id!r} of account {order.account_id!r} confirms reservation "
                    f"{reservation_id!r} of account {account_id!r}"
                )
            applied = self._apply_to_book(self.books.get(account_id), order, resolved)
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
                self._forget_locked(account, reservation)
            return True

    def release(self, reservation_id: str) -> None:
        """The exchange refused the order (or it was never sent): free its place."""
        account_id, account, reservation = self._find(reservation_id)
        if self.store is not None:
            self.store.set_intent_status(account_id, reservation.client_order_id, "released",
                                         self.clock.now())
        with account.lock:
            self._forget_locked(account, reservation)

    def mark_sent(self, reservation_id: str) -> None:
        """The request left but no answer came (timeout, lost response, cancellation).

        The order may exist: the reservation keeps counting until it expires, and
        the intent stays unresolved (``sent``) for :meth:`resolve_pending` or the
        reconciler to settle by client order id.
        """
        account_id, _, reservation = self._find(reservation_id)
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

    # ------------------------------------------------------------------ restart

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
                self._hold_locked(account, reservation)
                restored.append(reservation)
        return restored

    async def resolve_pending(self, exchange: ClientIdLookup, account_id: str) -> ResolveReport:
        """Settle every unresolved intent of ``account_id`` by asking the exchange by client id.

        Found: confirmed with the exchange's order. The exchange says it has no
        such order and the intent is older than ``not_found_grace_s``: released
        (it never reached the exchange). Any other error is no evidence: the
        intent stays unresolved and keeps its reservation until it expires.
        """
        if self.store is None:
            return ResolveReport()
        self.restore_pending(account_id)
        account = self._account(account_id)
        confirmed: list[str] = []
        released: list[str] = []
        unresolved: list[str] = []
        for stored in self.store.pending_intents(account_id):
            cid = stored.client_order_id
            with account.lock:
                reservation_id = account.by_client_id.get(cid)
            if reservation_id is None:
                unresolved.append(cid)
                continue
            intent, _ = parse_request(stored)
            try:
                order = await exchange.fetch_order_by_client_id(cid, intent.symbol)
            except OrderNotFound:
                age_s = (self.clock.now() - stored.created_at).total_seconds()
                if age_s >= self.settings.not_found_grace_s:
                    self.release(reservation_id)
                    released.append(cid)
                else:
                    unresolved.append(cid)
                continue
            except ExchangeError:
                unresolved.append(cid)
                continue
            self.confirm(reservation_id, order)
            confirmed.append(cid)
        return ResolveReport(tuple(confirmed), tuple(released), tuple(unresolved))

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

    def _find(self, reservation_id: str) -> tuple[str, AccountGuard, Reservation]:
        account_id = self._where.get(reservation_id)
        account = self._accounts.get(account_id) if account_id is not None else None
        reservation = None
        if account is not None:
            with account.lock:
                reservation = account.unresolved.get(reservation_id)
        if account_id is None or account is None or reservation is None:
            raise StateError(
                f"no open reservation {reservation_id!r}: it was already confirmed or "
                "released, or expired long ago"
            )
        return account_id, account, reservation

    def _hold_locked(self, account: AccountGuard, reservation: Reservation) -> None:
        account.in_flight[reservation.id] = reservation
        account.unresolved[reservation.id] = reservation
        account.by_client_id[reservation.client_order_id] = reservation.id
        self._where[reservation.id] = reservation.account_id

    def _settle_locked(self, account_id: str, account: AccountGuard,
                       reservation: Reservation, order_id: str | None) -> None:
        self._forget_locked(account, reservation)
        if reservation.is_entry:
            live = self.live.get(account_id)
            account.settling[reservation.id] = Settling(
                reservation, order_id, self.clock.monotonic(),
                live.balances if live is not None else None,
            )
            self._where[reservation.id] = account_id

    def _forget_locked(self, account: AccountGuard, reservation: Reservation) -> None:
        account.in_flight.pop(reservation.id, None)
        account.unresolved.pop(reservation.id, None)
        account.by_client_id.pop(reservation.client_order_id, None)
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
            self._forget_locked(account, account.unresolved[rid])
        if not account.settling:
            return
        live = self.live.get(account_id)
        balances = live.balances if live is not None else None
        orders = self.books.get(account_id).orders
        for rid, settling in list(account.settling.items()):
            if settling.confirmed_at <= forget_before or (
                balances is not settling.balances_seen
                and visible(settling, orders, balances)
            ):
                del account.settling[rid]
                self._where.pop(rid, None)

    def _state_locked(self, account_id: str, account: AccountGuard) -> AccountState:
        self._expire_locked(account_id, account)
        book = self.books.get(account_id)
        live = self.live.get(account_id)
        orders = book.orders
        last_prices = orders.last_prices()
        fee_rate = self.settings.fee_rate if self.settings.fee_rate is not None else (
            orders.fee_rate)
        figures = book_figures(account.book_figures, orders, last_prices)
        account.book_figures = figures
        held_usd = figures.held_usd
        entry_symbols = dict(figures.entry_symbols)
        # What reservations claim of each quote currency (the order's own: USDT for BTC/USDT).
        reserved: dict[str, float] = {}

        def claim(reservation: Reservation) -> None:
            currency = reservation.symbol.split("/")[1]
            reserved[currency] = reserved.get(currency, 0.0) + reservation.reserved_usd

        for reservation in account.in_flight.values():
            if reservation.is_entry:
                entry_symbols[reservation.symbol] = entry_symbols.get(reservation.symbol, 0) + 1
                held_usd += reservation_held_usd(reservation)
                claim(reservation)
        balances = live.balances if live is not None else {}
        for settling in account.settling.values():
            reservation = settling.reservation
            booked = in_book(settling, orders)
            if booked is None:
                held_usd += reservation_held_usd(reservation)
            if booked is None or booked.is_terminal:
                # Filled but not yet in a balance or the ledger: the position exists already.
                entry_symbols[reservation.symbol] = entry_symbols.get(reservation.symbol, 0) + 1
            if balances is settling.balances_seen:
                claim(reservation)
        ledger = book.ledger.positions()
        quote = live.quote_currency if live is not None else "USD"
        holdings = holdings_of(balances, ledger, quote,
                               believe_balance=_stale_ledger(live, ledger))
        positions, unpriced = positions_of(
            holdings, last_prices, {p.symbol: p.avg_price for p in ledger},
            quote_currency=quote, dust_usd=self.settings.dust_usd,
        )
        return AccountState(
            account_id=account_id,
            policy=live.policy() if live is not None else None,
            health=live.reported_health() if live is not None else AccountHealth(),
            equity_usd=live.equity_usd if live is not None else None,
            quote_currency=quote,
            balances_known=bool(balances),
            free_by_currency={currency: b.free for currency, b in balances.items()},
            reserved_by_currency=reserved,
            held_usd=held_usd,
            entry_symbols=entry_symbols,
            positions=positions,
            holdings=holdings,
            unpriced_holdings=unpriced,
            markets=live.markets if live is not None else {},
            last_prices=last_prices,
            fee_rate=fee_rate,
        )

    def _apply_to_book(self, book: AccountBook, order: Order, resolved: IntentUpdate) -> bool:
        """Apply the exchange's order and resolve its intent in one transaction.

        Returns False when the order was not applied (the caller then resolves
        the intent on its own).
        """
        if book.orders.get(order.id) is not None or self.store is None:
            return False  # the reconciler got there first, with news at least as fresh
        # The book computes the fill the order implies, under its lock, from what it
        # holds (or, where fills come from trades, the reconciler books its trades).
        try:
            booked = book.apply_changes([order], intents=[resolved])
        except StateError:
            # The reconciler applied a later version in between (it wins), or the order
            # cannot be priced yet: the reconciler brings it in from the exchange.
            return False
        fresh = tuple(r.fill for r in booked.results if not r.duplicate)
        events: list[Event] = []
        if order.status is OrderStatus.FILLED:
            events.append(OrderFilled(account_id=order.account_id, at=resolved.at, order=order,
                                      previous=None, fill=fresh[0] if fresh else None))
        if fresh:
            events.append(FillsBooked(account_id=order.account_id, at=resolved.at, fills=fresh,
                                      trades=booked.trades, unmatched=booked.unmatched))
        for sink in self.event_sinks:
            sink(events)
        return True

    def _journal(self, decision: Decision, now: datetime) -> None:
        if self.store is None:
            return
        intent = decision.intent
        reservation = decision.reservation if isinstance(decision, Allowed) else None
        try:
            if reservation is not None:
                self.store.put_intent(intent.account_id, intent.client_order_id,
                                      request_json(intent, reservation.reserved_usd), now,
                                      decision=decision_record(decision, now))
            else:
                self.store.journal_decision(decision_record(decision, now))
        except BaseException:
            # Not journaled means not sent: the reservation must not outlive the failure.
            if reservation is not None:
                account = self._account(intent.account_id)
                with account.lock:
                    self._forget_locked(account, reservation)
            raise


def _stale_ledger(live: AccountLive | None, ledger: Sequence[Position]) -> set[str]:
    """Assets where the exchange's balance wins: a persistent disagreement with a ledger
    that has not changed since the balance that shows it was fetched."""
    if live is None or not live.position_mismatches or live.balances_at is None:
        return set()
    changed = {p.symbol.split("/")[0] for p in ledger if p.updated_at > live.balances_at}
    return set(live.position_mismatches) - changed


def _judge(intent: OrderIntent, state: AccountState, rules: Iterable[Rule]) -> Decision:
    objection = first_objection(intent, state, rules)
    if objection is not None:
        return Blocked(intent=intent, rule=objection.rule, reason=objection.message,
                       figures=dict(objection.figures))
    notional = intent.notional(state.last_prices.get(intent.symbol))
    figures: dict[str, Any] = {
        "kind": "entry" if intent.is_entry else "exit",
        "tier": state.policy.name if state.policy is not None else None,
        "notional_usd": notional,
    }
    return Allowed(intent=intent, warnings=exit_warnings(intent, state), figures=figures)

