"""What the exchange's answers do to the guard: a confirmed order written to the book and
its reservation settled, a refused one released, a lost answer marked sent, and the
intents a restart left unresolved counting again.

Private to :mod:`nija_broker.guard`. Runs on the owner's thread (the guard sends
every call there), which also runs the book's changes and the store's writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from nija_broker.core.clock import Clock
from nija_broker.core.errors import StateError
from nija_broker.core.events import Event, FillsBooked, OrderFilled
from nija_broker.core.intent import Allowed, Reservation
from nija_broker.core.models import Order, OrderRole, OrderStatus
from nija_broker.guard.journal import Journal
from nija_broker.guard.reservations import Reservations
from nija_broker.guard.state import AccountGuard, GuardConflict, Settling, parse_request
from nija_broker.state.book import AccountBook, Followed
from nija_broker.state.books import Books
from nija_broker.state.store import IntentUpdate, Store

__all__ = ["Answers", "apply_to_book"]

log = logging.getLogger("nija_broker.guard")


class Answers:
    """Applies the exchange's answers to reservations, the journal and the books."""

    def __init__(
        self,
        books: Books,
        reservations: Reservations,
        journal: Journal,
        clock: Clock,
        event_sinks: list[Callable[[Sequence[Event]], None]],
    ) -> None:
        self.books = books
        self.reservations = reservations
        self.journal = journal
        self.clock = clock
        self.event_sinks = event_sinks

    def confirm(self, reservation_id: str, order: Order | str | None) -> None:
        """See :meth:`Guard.confirm`."""
        account_id, account, reservation, settling = self.reservations.find(
            reservation_id, settled=True
        )
        order_id = order.id if isinstance(order, Order) else order
        if settling is not None:
            self._confirm_again(account_id, settling, order_id)
            return
        resolved = IntentUpdate(
            client_order_id=reservation.client_order_id,
            status="resolved",
            at=self.clock.now(),
            order_id=order_id,
        )
        book = self.books.get(account_id)
        applied = False
        if isinstance(order, Order):
            if order.account_id != account_id:
                raise StateError(
                    f"order {order.id!r} of account {order.account_id!r} confirms reservation "
                    f"{reservation_id!r} of account {account_id!r}"
                )
            applied = apply_to_book(book, self.journal.store, order, resolved, self.event_sinks)
        if not applied:
            self.journal.intent_status(
                account_id, reservation.client_order_id, "resolved", resolved.at, order_id=order_id
            )
            # Followed by id (or client id) until the book has it, even if it fills and
            # its exit fills before any listing shows it.
            book.follow(
                Followed(
                    symbol=reservation.symbol,
                    order_id=order_id,
                    client_order_id=reservation.client_order_id,
                    role=OrderRole.ENTRY if reservation.is_entry else None,
                )
            )
        self.reservations.settle(account_id, account, reservation, order_id)

    def _confirm_again(self, account_id: str, settling: Settling, order_id: str | None) -> None:
        """A repeated confirm (a retry after a lost answer) changes nothing; one that
        brings the id a confirm without one lacked is followed by that id too."""
        reservation = settling.reservation
        if order_id is None or order_id == settling.order_id:
            return
        if settling.order_id is not None:
            raise GuardConflict(
                f"reservation {reservation.id!r} of account {account_id!r} was confirmed with "
                f"order {settling.order_id!r}, not {order_id!r}",
                field="order_id",
                value=order_id,
            )
        settling.order_id = order_id
        self.books.get(account_id).follow(
            Followed(
                symbol=reservation.symbol,
                order_id=order_id,
                client_order_id=reservation.client_order_id,
                role=OrderRole.ENTRY,
            )
        )

    def settle_client_id(
        self, account_id: str, client_order_id: str, *, resolved: bool, order_id: str | None = None
    ) -> bool:
        """See :meth:`Guard.settle_client_id`."""
        account = self.reservations.account(account_id)
        reservation_id = account.by_client_id.get(client_order_id)
        reservation = account.unresolved.get(reservation_id) if reservation_id else None
        if reservation is None:
            return False
        if resolved:
            self.reservations.settle(account_id, account, reservation, order_id)
        else:
            self.reservations.forget(account, reservation, "released")
        return True

    def release(self, reservation_id: str) -> None:
        """See :meth:`Guard.release`."""
        account_id, account, reservation, settling = self.reservations.find(
            reservation_id, settled=True
        )
        if settling is not None:
            self.reservations.drop_settling(account, reservation_id)
            log.info(
                "account %s: settling reservation %s (client order id %s, order %s) "
                "released by request",
                account_id,
                reservation_id,
                reservation.client_order_id,
                settling.order_id,
            )
            return
        self.journal.intent_status(
            account_id, reservation.client_order_id, "released", self.clock.now()
        )
        self.reservations.forget(account, reservation, "released")

    def mark_sent(self, reservation_id: str) -> None:
        """See :meth:`Guard.mark_sent`."""
        account_id, _, reservation, _ = self.reservations.find(reservation_id)
        self.journal.intent_status(
            account_id, reservation.client_order_id, "sent", self.clock.now()
        )

    def restore_pending(self, account_id: str) -> list[Reservation]:
        """See :meth:`Guard.restore_pending`."""
        store = self.journal.store
        if store is None:
            return []
        account: AccountGuard = self.reservations.account(account_id)
        restored: list[Reservation] = []
        for stored in store.pending_intents(account_id):
            if stored.client_order_id in account.by_client_id:
                continue
            intent, reserved_usd = parse_request(stored)
            reservation = self.reservations.make(intent, reserved_usd, stored.created_at)
            self.reservations.hold(
                account, Allowed(intent=intent, figures={"restored": True}, reservation=reservation)
            )
            restored.append(reservation)
        return restored


def apply_to_book(
    book: AccountBook,
    store: Store | None,
    order: Order,
    resolved: IntentUpdate,
    sinks: Sequence[Callable[[Sequence[Event]], None]],
) -> bool:
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
        events.append(
            OrderFilled(
                account_id=order.account_id,
                at=resolved.at,
                order=order,
                previous=None,
                fill=fresh[0] if fresh else None,
            )
        )
    if fresh:
        events.append(
            FillsBooked(
                account_id=order.account_id,
                at=resolved.at,
                fills=fresh,
                trades=booked.trades,
                unmatched=booked.unmatched,
            )
        )
    for sink in sinks:
        sink(events)
    return True
