"""What the book knows about each order's fills, and the pure checks on trades booked for it.

Used by :class:`nija_broker.state.book.AccountBook` on its owner's thread: how much of an
order was booked (:class:`OrderFills`), orders followed by id
(:class:`Followed`, :class:`UnknownOrders`), which trades an old cumulative fill
already covers (:func:`split_covered`), and trades that add up to more than
their order (:func:`check_trade_totals`, :class:`ImpossibleFills`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from nija_broker.core.errors import StateError
from nija_broker.core.ledger import fill_sort_key
from nija_broker.core.models import Fill, Order, OrderRole
from nija_broker.core.reconcile import AMOUNT_REL, fill_between

__all__ = [
    "AMOUNT_REL",
    "Followed",
    "ImpossibleFills",
    "OrderFills",
    "UnknownOrders",
    "check_trade_totals",
    "implied_fills",
    "same_amount",
    "split_covered",
]


# An order's filled amount and the sum of its trades agree when they differ by less
# than this fraction of the order: exchanges print amounts in decimals and the sums of
# their floats differ in the last bits only. Far below any market's amount step.
def same_amount(a: float, b: float, order: Order) -> bool:
    return abs(a - b) <= order.amount * AMOUNT_REL


class ImpossibleFills(StateError):
    """Fills no execution can produce (more than the order's amount): nothing was booked."""

    def __init__(self, message: str, *, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(message)


@dataclass(slots=True)
class OrderFills:
    """What the ledger booked for one order, in base amount."""

    booked: float = 0.0
    """Booked into positions, under any key."""
    cumulative: float = 0.0
    """Of ``booked``, under cumulative-amount keys (a venue without trades, or old data)."""
    covered: float = 0.0
    """Trades recognised as the executions an old cumulative fill already booked."""


@dataclass(frozen=True, slots=True)
class Followed:
    """An order we know exists (the guard confirmed it) but the book has not seen yet."""

    symbol: str
    order_id: str | None
    client_order_id: str | None
    role: OrderRole | None = None


class UnknownOrders:
    """Followed orders the exchange answered "no such order" for, and since when; any thread.

    The reconciler notes each not-found answer (the first one's time is kept) and
    clears an order once the exchange answers for it; the guard reads it to release
    a confirmed entry whose order has been unknown past ``not_found_grace_s``.
    Keyed by order id, or ``client:<client order id>`` when no id came back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, datetime] = {}

    @staticmethod
    def key(order_id: str | None, client_order_id: str | None) -> str:
        return order_id if order_id is not None else f"client:{client_order_id}"

    def note(self, order_id: str | None, client_order_id: str | None, at: datetime) -> None:
        with self._lock:
            self._since.setdefault(self.key(order_id, client_order_id), at)

    def clear(self, order_id: str | None, client_order_id: str | None) -> None:
        with self._lock:
            self._since.pop(self.key(order_id, client_order_id), None)

    def since(self, order_id: str | None, client_order_id: str | None) -> datetime | None:
        with self._lock:
            return self._since.get(self.key(order_id, client_order_id))

    def retain(self, followed: Iterable[Followed]) -> None:
        """Forget every order no longer followed (the book has it, or it was unfollowed)."""
        keep = {self.key(f.order_id, f.client_order_id) for f in followed}
        with self._lock:
            for key in [k for k in self._since if k not in keep]:
                del self._since[key]


def split_covered(
    fills: Sequence[Fill], order_fills: Mapping[str, OrderFills], is_booked: Callable[[Fill], bool]
) -> tuple[list[Fill], list[Fill]]:
    """Trades an old cumulative fill of the same order already booked, and the rest.

    A store written before fills were keyed by trade id holds fills keyed by the
    order's cumulative amount; when that order's trades arrive, its earliest
    trades up to that amount are the same executions (schema migration 3).
    """
    covered: list[Fill] = []
    rest: list[Fill] = []
    cover_left: dict[str, float] = {}
    for fill in sorted(fills, key=fill_sort_key):  # the earliest trades are the covered
        figures = order_fills.get(fill.order_id)
        if fill.trade_id is None or figures is None or figures.cumulative <= 0:
            rest.append(fill)
            continue
        if is_booked(fill):
            continue
        left = cover_left.setdefault(fill.order_id, figures.cumulative - figures.covered)
        if left >= fill.amount * (1 - AMOUNT_REL):
            covered.append(fill)
            cover_left[fill.order_id] = left - fill.amount
        elif left > fill.amount * AMOUNT_REL:
            raise StateError(
                f"trade {fill.trade_id} of order {fill.order_id} straddles the "
                f"{figures.cumulative!r} booked for it before trades were used; a human "
                "should reconcile this order"
            )
        else:
            rest.append(fill)
    return covered, rest


def check_trade_totals(
    orders: Sequence[Order],
    fills: Sequence[Fill],
    order_fills: Mapping[str, OrderFills],
    tracked: Callable[[str], Order | None],
    is_booked: Callable[[Fill], bool],
) -> None:
    """Refuse trades adding up to more than their order: no execution can do that."""
    adding: dict[str, float] = {}
    for fill in fills:
        if not is_booked(fill):
            adding[fill.order_id] = adding.get(fill.order_id, 0.0) + fill.amount
    updated = {o.id: o for o in orders}
    for order_id, amount in adding.items():
        order = updated.get(order_id) or tracked(order_id)
        figures = order_fills.get(order_id) or OrderFills()
        total = figures.booked + amount
        if order is not None and total > order.amount * (1 + AMOUNT_REL):
            raise ImpossibleFills(
                f"trades of order {order_id} ({order.symbol}) add up to {total!r}, more "
                f"than its amount {order.amount!r}; nothing of them is booked",
                order_id=order_id,
            )


def implied_fills(
    orders: Sequence[Order],
    staged: dict[str, float],
    tracked: Callable[[str], Order | None],
    now: datetime,
) -> list[Fill]:
    """The cumulative rule: each order's growth beyond what was booked for it.

    ``staged`` holds, per order id, what is booked so far; it is advanced as the
    batch goes (a batch may report one order twice). ``tracked`` gives the book's
    version of an order before the batch.
    """
    fills: list[Fill] = []
    previous_of: dict[str, Order | None] = {}
    for order in orders:
        previous = previous_of.get(order.id, tracked(order.id))
        previous_of[order.id] = order
        booked = staged.get(order.id, 0.0)
        if previous is not None and not same_amount(previous.filled, booked, order):
            previous = None  # filled without a booked fill: price from the order alone
        fill = fill_between(previous, order, now, booked=booked)
        if isinstance(fill, str):
            raise StateError(fill)
        if fill is not None:
            fills.append(fill)
            staged[order.id] = order.filled
    return fills
