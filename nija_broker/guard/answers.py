"""What the exchange's answers do to the guard: a confirmed order written to the book, an
intent journaled (or refused as a reused client order id), intents left unresolved by a
restart settled by client order id.

Private to :mod:`nija_broker.guard.guard`: functions over the guard's store and books,
called without any of the guard's locks held (each writes to SQLite or awaits the
exchange).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from nija_broker.core.errors import ExchangeError, OrderNotFound, StateError
from nija_broker.core.events import Event, FillsBooked, OrderFilled
from nija_broker.core.intent import Allowed, Reservation
from nija_broker.core.models import Order, OrderStatus
from nija_broker.guard.state import GuardConflict, decision_record, parse_request, request_json
from nija_broker.state.book import AccountBook
from nija_broker.state.store import IntentUpdate, Store

if TYPE_CHECKING:
    from nija_broker.guard.guard import Guard


@dataclass(frozen=True, slots=True)
class ResolveReport:
    """What :meth:`Guard.resolve_pending` did, by client order id."""

    confirmed: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()


class ClientIdLookup(Protocol):
    """The part of :class:`adapters.base.Exchange` that resolving intents needs."""

    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order: ...


def put_intent(store: Store, decision: Allowed, reservation: Reservation,
               now: datetime) -> None:
    """Journal an allowed intent with its decision; :class:`GuardConflict` if the store
    holds its client order id with another request."""
    intent = decision.intent
    try:
        store.put_intent(intent.account_id, intent.client_order_id,
                         request_json(intent, reservation.reserved_usd), now,
                         decision=decision_record(decision, now))
    except StateError as exc:
        # The store refuses a client order id journaled before (before a restart, or
        # long ago) with another request; its message is the only sign of it.
        if "already journaled" not in str(exc):
            raise
        raise GuardConflict(
            f"client_order_id {intent.client_order_id!r} of account {intent.account_id!r} "
            "was already used for another request",
            field="client_order_id", value=intent.client_order_id) from exc


def apply_to_book(book: AccountBook, store: Store | None, order: Order,
                  resolved: IntentUpdate,
                  sinks: Sequence[Callable[[Sequence[Event]], None]]) -> bool:
    """Apply the exchange's order and resolve its intent in one transaction.

    Returns False when the order was not applied (the caller then resolves
    the intent on its own).
    """
    if book.orders.get(order.id) is not None or store is None:
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
    for sink in sinks:
        sink(events)
    return True


async def resolve_pending(guard: Guard, exchange: ClientIdLookup,
                          account_id: str) -> ResolveReport:
    """See :meth:`Guard.resolve_pending`."""
    store = guard.store
    if store is None:
        return ResolveReport()
    guard.restore_pending(account_id)
    confirmed: list[str] = []
    released: list[str] = []
    unresolved: list[str] = []
    for stored in store.pending_intents(account_id):
        cid = stored.client_order_id
        reservation_id = guard.reservation_id_of(account_id, cid)
        if reservation_id is None:
            unresolved.append(cid)
            continue
        intent, _ = parse_request(stored)
        try:
            order = await exchange.fetch_order_by_client_id(cid, intent.symbol)
        except OrderNotFound:
            age_s = (guard.clock.now() - stored.created_at).total_seconds()
            if age_s >= guard.settings.not_found_grace_s:
                guard.release(reservation_id)
                released.append(cid)
            else:
                unresolved.append(cid)
            continue
        except ExchangeError:
            unresolved.append(cid)
            continue
        guard.confirm(reservation_id, order)
        confirmed.append(cid)
    return ResolveReport(tuple(confirmed), tuple(released), tuple(unresolved))
