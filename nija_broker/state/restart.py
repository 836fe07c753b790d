"""What a restart reads back of one account: bounded by its retention windows, not its age.

:func:`load_books` builds the trackers of an :class:`~nija_broker.state.book.AccountBook`
from the store, reading (DESIGN invariant 8: the store is the truth):

- the open orders, and the terminal ones changed within ``retention_s`` (what the
  order tracker would still hold: :meth:`OrderTracker.cleanup_terminal`);
- the fill keys of fills stamped within ``retention_s`` and of the orders loaded,
  with the per-order fill figures of those orders; older keys and figures are read
  from the store on first use (:class:`~nija_broker.core.ledger.StoredKeys`,
  :class:`StoredOrderFills`), so a fill reported again long after still counts once;
- the last ``history_size`` trades and equity points (what the tracker keeps in
  memory, which is all the breakers read), with the accumulators of the whole
  history (``performance_totals``), so every figure is the one a full replay gives;
- positions, and per symbol the latest fill booked (late-fill detection).

Each part is one or two index ranges of the store, so the time and memory of a
restart do not grow with the trades, orders and fills an account ever had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, overload

from nija_broker.core.book_fills import OrderFills
from nija_broker.core.ledger import Ledger, StoredKeys, fill_sort_key
from nija_broker.core.orders import OrderTracker
from nija_broker.core.performance import PerformanceTracker
from nija_broker.state.store import Store

if TYPE_CHECKING:
    from nija_broker.state.book import BookSettings

__all__ = ["LoadedBooks", "StoredOrderFills", "load_books"]


class StoredOrderFills(dict[str, OrderFills]):
    """Per order id, what was booked for it: the orders loaded held, any other read from
    the store the first time it is asked for (an old order reported again).

    ``absent``: orders known to have no fill stored (loaded without figures), never asked.
    """

    def __init__(
        self,
        loaded: Mapping[str, OrderFills],
        fetch: Callable[[Sequence[str]], Mapping[str, tuple[float, float, float]]],
        absent: Iterable[str] = (),
    ) -> None:
        super().__init__(loaded)
        self._fetch = fetch
        """Figures of these orders, in one read; an order without a fill is left out."""
        self._absent = set(absent) - set(loaded)

    def recall(self, order_ids: Iterable[str]) -> None:
        """Read the figures of every order here not yet known, in one read of the store
        (a start-up adopts an account's orders in one batch: one query, not one each)."""
        unknown = [
            i
            for i in dict.fromkeys(order_ids)
            if i not in self._absent and not dict.__contains__(self, i)
        ]
        if not unknown:
            return
        found = self._fetch(unknown)
        for order_id in unknown:
            figures = found.get(order_id)
            if figures is None:
                self._absent.add(order_id)
            else:
                self[order_id] = OrderFills(*figures)

    def _recall(self, order_id: str) -> OrderFills | None:
        found = dict.get(self, order_id)
        if found is not None or order_id in self._absent:
            return found
        self.recall((order_id,))
        return dict.get(self, order_id)

    @overload  # type: ignore[override]
    def get(self, key: str, default: None = None, /) -> OrderFills | None: ...
    @overload
    def get(self, key: str, default: OrderFills, /) -> OrderFills: ...

    def get(self, key: str, default: OrderFills | None = None, /) -> OrderFills | None:
        found = self._recall(key)
        return default if found is None else found

    def forget(self, order_ids: Iterable[str]) -> None:
        """Drop these orders' figures from memory (their orders left the tracker); the
        store keeps them, and :meth:`get` reads them back if an order is reported again."""
        for order_id in order_ids:
            dict.pop(self, order_id, None)
            self._absent.discard(order_id)

    def setdefault(self, key: str, default: OrderFills, /) -> OrderFills:
        found = self._recall(key)
        if found is None:
            self[key] = found = default
        return found


@dataclass(frozen=True, slots=True)
class LoadedBooks:
    orders: OrderTracker
    ledger: Ledger
    performance: PerformanceTracker
    order_fills: dict[str, OrderFills]
    head: dict[str, tuple[object, ...]]
    """Per symbol, the exchange-time sort key of the latest fill booked."""


def load_books(
    account_id: str, store: Store | None, settings: BookSettings, now: datetime
) -> LoadedBooks:
    """The trackers of one account, read from ``store`` as of ``now`` (empty without one)."""
    s = settings
    orders = OrderTracker(account_id, fee_rate=s.fee_rate, retention_s=s.retention_s)
    if store is None:
        return LoadedBooks(
            orders,
            Ledger(account_id),
            PerformanceTracker(account_id, history_size=s.history_size),
            {},
            {},
        )
    horizon = now - timedelta(seconds=s.retention_s)
    snapshot = store.load_account(account_id, since=horizon, recent=s.history_size)
    last_fills = store.last_fills(account_id)
    for order in snapshot.orders:
        orders.apply(order)
    order_fills = StoredOrderFills(
        {order_id: OrderFills(*figures) for order_id, figures in snapshot.order_fills.items()},
        partial(store.order_fills_of, account_id),
        (o.id for o in snapshot.orders),
    )
    head: dict[str, tuple[object, ...]] = {}
    for fill in last_fills:
        key = fill_sort_key(fill)
        if fill.symbol not in head or key > head[fill.symbol]:
            head[fill.symbol] = key
    stored = StoredKeys(
        booked=partial(store.has_fill_key, account_id), retention_s=s.retention_s, horizon=horizon
    )
    ledger = Ledger(account_id, snapshot.positions, snapshot.fill_key_times, stored=stored)
    performance = PerformanceTracker.restore(
        account_id,
        snapshot.trades,
        snapshot.equity_points,
        history_size=s.history_size,
        totals=snapshot.totals,
        known_trade=partial(store.has_trade, account_id),
    )
    return LoadedBooks(orders, ledger, performance, order_fills, head)
