"""A trader's cancel of one order: sent through the exchange, booked on the exchange's answer.

The order is marked cancelled only when the exchange's answer about that order says
so (DESIGN invariant 2): the answer goes through the same
:func:`~nija_broker.core.reconcile.resolve` and the same commit as a stale cancel's,
so it may also say the order filled first, and a fill it implies is booked once. An
exchange that refuses the cancel (the order is already closed or unknown there)
leaves the order as it is and owes a look-up by id on the next cycle; one that does
not answer leaves the order as it is (a lost answer shows up in the next listing).

Runs on the event loop, between two cycles of the account (the caller holds the
account's :attr:`~nija_broker.sync.cycle.AccountSync.turn`), so a listing read before
the cancel is never diffed against a book changed after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.errors import ExchangeError, OrderError
from nija_broker.core.models import Order
from nija_broker.core.reconcile import resolve
from nija_broker.state.book import AccountBook

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["CancelAnswer", "UnknownOrder", "cancel_order"]


class UnknownOrder(LookupError):
    """No order of that id is tracked for the account."""

    def __init__(self, account_id: str, order_id: str) -> None:
        self.account_id = account_id
        self.order_id = order_id
        super().__init__(f"account {account_id!r} tracks no order {order_id!r}")


@dataclass(frozen=True, slots=True)
class CancelAnswer:
    """What became of a cancel: the order as booked after the exchange's answer.

    ``confirmed``: the exchange's answer ended the order (cancelled, or filled before
    the cancel reached it; ``order.status`` says which). ``sent``: the request
    reached the exchange's API and was answered. ``message`` says it in a sentence.
    """

    order: Order
    confirmed: bool
    sent: bool
    message: str


def _tracked(book: AccountBook, order_id: str) -> Order | None:
    return book.orders.get(order_id)


async def cancel_order(sync: AccountSync, order_id: str) -> CancelAnswer:
    """Cancel ``order_id`` of the account through its exchange; see the module docstring."""
    order = await sync.in_book(_tracked, order_id)
    if order is None:
        raise UnknownOrder(sync.account_id, order_id)
    if order.status.is_terminal:
        return CancelAnswer(
            order,
            confirmed=True,
            sent=False,
            message=f"order {order_id} is already {order.status.value}; nothing was sent",
        )
    try:
        answer = await sync.ask(
            partial(sync.exchange.cancel_order, order.id, order.symbol), "cancel_order"
        )
    except OrderError as exc:
        # Already closed or unknown there: find out what happened before anything changes.
        sync.confirmations.owe(order.id)
        return CancelAnswer(
            order,
            confirmed=False,
            sent=True,
            message=(
                f"the exchange refused to cancel order {order_id} ({exc}); it stays "
                f"{order.status.value} until the exchange says what became of it "
                "(looked up on the next cycle)"
            ),
        )
    except ExchangeError as exc:
        return CancelAnswer(
            order,
            confirmed=False,
            sent=False,
            message=(
                f"the cancel of order {order_id} did not go through ({exc}); it stays "
                f"{order.status.value}: try again (the next listing shows what the exchange has)"
            ),
        )
    event = resolve(order, answer, sync.clock.now(), sync.price_step(order.symbol))
    if event is not None:
        await sync.commit([event])
    after = await sync.in_book(_tracked, order_id) or order
    if after.status.is_terminal:
        return CancelAnswer(
            after,
            confirmed=True,
            sent=True,
            message=f"order {order_id} is {after.status.value}, the exchange confirms",
        )
    # Accepted but not shown ended (some venues answer a cancel with no status): asked
    # again by id on the next cycle; marked cancelled only when the exchange says so.
    sync.confirmations.owe(order.id)
    return CancelAnswer(
        after,
        confirmed=False,
        sent=True,
        message=(
            f"the exchange took the cancel of order {order_id} but has not shown it ended; "
            f"it stays {after.status.value} until it does (looked up on the next cycle)"
        ),
    )
