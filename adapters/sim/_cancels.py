"""The cancel path: an order is cancelled at once, or its cancel is accepted and left pending.

A pending cancel is Binance's ``PENDING_CANCEL``: the order stays open, keeps holding its
funds and does not fill (:meth:`~adapters.sim._matching.Matcher.price_moved` skips it)
until the cancel completes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from nija_broker.core.models import Order, OrderStatus

from ._books import Books
from ._events import OrderChange
from ._state import SimOrder


class Cancels:
    """Cancels of one engine's :class:`Books`. Not thread-safe; the engine's loop only."""

    def __init__(self, books: Books, *, now: Callable[[], datetime]) -> None:
        self._books = books
        self._now = now
        self._to_delay = 0

    def delay(self, count: int) -> None:
        """The next ``count`` cancels are left pending (replacing any count still unused)."""
        if count < 0:
            raise ValueError(f"count must not be negative, got {count!r}")
        self._to_delay = count

    def cancel(self, order: SimOrder) -> Order:
        """Cancel the open ``order``, or leave its cancel pending; cancelling an order whose
        cancel is already pending changes nothing."""
        if order.cancel_pending:
            return order.snapshot()
        if self._to_delay > 0:
            self._to_delay -= 1
            order.cancel_pending = True
            order.touch(self._now())
            account = self._books.accounts[order.account_id]
            self._books.events.order_changed(account, order, OrderChange.CANCEL_PENDING)
            return order.snapshot()
        self._books.close(order, OrderStatus.CANCELLED)
        return order.snapshot()

    def complete(self, account_id: str | None = None) -> list[Order]:
        """Cancel every order whose cancel is pending (of ``account_id``, else of all)."""
        done = []
        for account in self._books.accounts.values():
            if account_id is not None and account.account_id != account_id:
                continue
            for order in [o for o in account.open.values() if o.cancel_pending]:
                order.cancel_pending = False
                self._books.close(order, OrderStatus.CANCELLED)
                done.append(order.snapshot())
        return done
