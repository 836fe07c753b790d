"""Per-account order tracker: open orders, held capital, double reservation, staleness.

One :class:`OrderTracker` holds the orders of exactly one account; an
:class:`OrderTrackerRegistry` hands them out by account id. No method takes or
returns data of two accounts (DESIGN invariant 1): a summary of many accounts
is a list of per-account summaries, built by the caller.

The tracker stores :class:`~nija_broker.core.models.Order` values as given. ``apply``
is the hot path of the reconciler, so it never rebuilds or re-validates a
model: it compares a few fields with the previous version and files the new
value in one of two indexes, live (pending / open / partially filled) or
terminal. Every figure is computed from the live index only, so a long day of
filled history does not slow them down.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime

from nija_broker.core.clock import utc
from nija_broker.core.errors import IllegalTransition, StateError
from nija_broker.core.models import LEGAL_TRANSITIONS, Order, OrderRole, OrderStatus, OrderType
from nija_broker.core.order_figures import (
    DoubleReservation,
    Fragmentation,
    HeldCapital,
    OrderStats,
    check_price,
    double_reservations,
    fragmentation,
    held_capital,
    normalize_prices,
    stale_orders,
)
from nija_broker.core.symbols import normalize_symbol

__all__ = [
    "DoubleReservation",
    "Fragmentation",
    "HeldCapital",
    "OrderStats",
    "OrderTracker",
    "OrderTrackerRegistry",
    "check_update",
]

_LIVE = frozenset({OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
_OPEN = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})


def _check_settings(fee_rate: float, retention_s: float) -> None:
    if not (math.isfinite(fee_rate) and 0.0 <= fee_rate < 1.0):
        raise ValueError(f"fee_rate must be a fraction in [0, 1), got {fee_rate!r}")
    if not (math.isfinite(retention_s) and retention_s >= 0.0):
        raise ValueError(f"retention_s must be finite seconds >= 0, got {retention_s!r}")


def check_update(previous: Order, order: Order) -> None:
    """Refuse ``previous -> order`` if it breaks an invariant; pure, changes nothing.

    :class:`IllegalTransition` for a status ``LEGAL_TRANSITIONS`` forbids or a
    filled amount that would shrink; :class:`StateError` for a changed account,
    symbol, side or client order id. Replaying the same state passes.
    """
    order_id, account_id = order.id, previous.account_id
    if order.account_id != account_id:
        raise StateError(
            f"order {order_id!r} belongs to account {account_id!r}, an update says "
            f"{order.account_id!r}"
        )
    if order.status not in LEGAL_TRANSITIONS[previous.status]:
        raise IllegalTransition(
            f"order {order_id!r} of {account_id!r} cannot go from "
            f"{previous.status.value} to {order.status.value}"
        )
    if order.filled < previous.filled:
        raise IllegalTransition(
            f"filled amount of order {order_id!r} of {account_id!r} would shrink "
            f"from {previous.filled!r} to {order.filled!r}; a fill counts once and stays"
        )
    if order.symbol != previous.symbol or order.side is not previous.side:
        raise StateError(
            f"order {order_id!r} of {account_id!r} was {previous.side.value} "
            f"{previous.symbol}, an update says {order.side.value} {order.symbol}"
        )
    if (
        order.client_order_id is not None
        and previous.client_order_id is not None
        and order.client_order_id != previous.client_order_id
    ):
        raise StateError(
            f"order {order_id!r} of {account_id!r} has client order id "
            f"{previous.client_order_id!r}, an update says {order.client_order_id!r}"
        )


class OrderTracker:
    """The orders of one account, as far as the exchange has told us.

    Thread-safe: every method runs under the tracker's own re-entrant lock, so
    the reconciler, the guard and an HTTP handler may share one tracker.
    """

    __slots__ = (
        "_by_client",
        "_last_prices",
        "_live",
        "_lock",
        "_terminal",
        "_version",
        "account_id",
        "fee_rate",
        "retention_s",
    )

    def __init__(
        self, account_id: str, *, fee_rate: float = 0.004, retention_s: float = 86_400.0
    ) -> None:
        if not isinstance(account_id, str) or not account_id.strip():
            raise ValueError(f"account_id must be a non-empty string, got {account_id!r}")
        _check_settings(fee_rate, retention_s)
        self.account_id = account_id
        self.fee_rate = fee_rate
        self.retention_s = retention_s
        self._lock = threading.RLock()
        self._live: dict[str, Order] = {}
        self._terminal: dict[str, Order] = {}
        self._by_client: dict[str, str] = {}
        self._last_prices: dict[str, float] = {}
        self._version = 0

    def __repr__(self) -> str:
        return (
            f"OrderTracker(account_id={self.account_id!r}, live={len(self._live)}, "
            f"terminal={len(self._terminal)})"
        )

    # -- updates -----------------------------------------------------------

    def check(self, order: Order) -> Order | None:
        """Validate an update without applying it; return the version it would replace.

        Raises :class:`StateError` for an order of another account or one whose
        symbol, side or client order id changed, and :class:`IllegalTransition`
        for a status change ``LEGAL_TRANSITIONS`` forbids or a filled amount that
        would shrink. Replaying the stored state is accepted.
        """
        with self._lock:
            return self._check(order)

    def apply(self, order: Order) -> Order | None:
        """Check ``order`` and store it; return the previous version (``None`` if new).

        On any error nothing is changed.
        """
        with self._lock:
            previous = self._check(order)
            order_id = order.id
            if order.status in _LIVE:
                # A live order never has a terminal previous: terminal statuses only repeat.
                self._live[order_id] = order
            else:
                self._terminal[order_id] = order
                if previous is not None and previous.status in _LIVE:
                    del self._live[order_id]
            client_id = order.client_order_id
            if client_id is not None:
                self._by_client[client_id] = order_id
            self._version += 1
            return previous

    def apply_many(self, orders: Iterable[Order]) -> list[Order | None]:
        """Apply updates in order under one lock; stops at the first refused update.

        Updates before the refused one stay applied (each is valid on its own).
        """
        with self._lock:
            return [self.apply(order) for order in orders]

    def _check(self, order: Order) -> Order | None:
        if order.account_id != self.account_id:
            raise StateError(
                f"order {order.id!r} belongs to account {order.account_id!r}, "
                f"not to {self.account_id!r}; it was not recorded"
            )
        previous = self._find(order.id)
        if previous is not None and previous is not order:
            check_update(previous, order)
        return previous

    def set_last_price(self, symbol: str, price: float) -> None:
        """Remember the last traded price of ``symbol`` (values market orders)."""
        key = normalize_symbol(symbol)
        value = check_price(symbol, price)
        with self._lock:
            self._last_prices[key] = value

    def cleanup_terminal(self, now: datetime, retention_s: float | None = None) -> list[str]:
        """Forget terminal orders whose last change is more than ``retention_s`` before ``now``.

        Returns the ids dropped, sorted. Live orders are never dropped.
        """
        keep_s = self.retention_s if retention_s is None else retention_s
        _check_settings(self.fee_rate, keep_s)
        now = utc(now)
        with self._lock:
            dropped = sorted(
                order_id
                for order_id, order in self._terminal.items()
                if (now - order.last_change).total_seconds() > keep_s
            )
            for order_id in dropped:
                order = self._terminal.pop(order_id)
                client_id = order.client_order_id
                if client_id is not None and self._by_client.get(client_id) == order_id:
                    del self._by_client[client_id]
            return dropped

    # -- queries -----------------------------------------------------------

    @property
    def version(self) -> int:
        """Grows with every applied update: an unchanged version means unchanged orders.

        Lets a frequent reader (the guard) reuse figures computed from the live
        orders instead of walking them again. Read it before the orders.
        """
        return self._version

    def get(self, order_id: str) -> Order | None:
        with self._lock:
            return self._find(order_id)

    def by_client_id(self, client_order_id: str) -> Order | None:
        with self._lock:
            order_id = self._by_client.get(client_order_id)
            return None if order_id is None else self._find(order_id)

    def _find(self, order_id: str) -> Order | None:
        order = self._live.get(order_id)
        return self._terminal.get(order_id) if order is None else order

    def orders(self) -> list[Order]:
        """Every order held in memory, live and terminal, oldest first."""
        with self._lock:
            everything = [*self._live.values(), *self._terminal.values()]
        everything.sort(key=lambda order: (order.created_at, order.id))
        return everything

    def open_orders(
        self,
        *,
        role: OrderRole | None = None,
        type: OrderType | None = None,
        symbol: str | None = None,
    ) -> list[Order]:
        """Orders resting on the exchange (open or partially filled), in the order first seen."""
        return self._select(_OPEN, role, type, symbol)

    def live_orders(
        self,
        *,
        role: OrderRole | None = None,
        type: OrderType | None = None,
        symbol: str | None = None,
    ) -> list[Order]:
        """Open orders plus pending ones (sent, not yet acknowledged: they are in flight)."""
        return self._select(_LIVE, role, type, symbol)

    def count(
        self,
        *,
        role: OrderRole | None = None,
        type: OrderType | None = None,
        symbol: str | None = None,
        include_pending: bool = False,
    ) -> int:
        """How many orders ``open_orders`` (or ``live_orders`` with ``include_pending``) holds."""
        return len(self._select(_LIVE if include_pending else _OPEN, role, type, symbol))

    def _select(
        self,
        statuses: frozenset[OrderStatus],
        role: OrderRole | None,
        type: OrderType | None,
        symbol: str | None,
    ) -> list[Order]:
        wanted_symbol = None if symbol is None else normalize_symbol(symbol)
        with self._lock:
            return [
                order
                for order in self._live.values()
                if order.status in statuses
                and (role is None or order.role is role)
                and (type is None or order.type is type)
                and (wanted_symbol is None or order.symbol == wanted_symbol)
            ]

    def last_prices(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_prices)

    def held_capital(self, last_prices: Mapping[str, float] | None = None) -> HeldCapital:
        """Quote currency reserved by live orders; ``last_prices`` override remembered ones."""
        extra = normalize_prices(last_prices) if last_prices else None
        with self._lock:
            prices = self._last_prices if extra is None else {**self._last_prices, **extra}
            return held_capital(self._live.values(), fee_rate=self.fee_rate, last_prices=prices)

    def stale_orders(
        self, now: datetime, max_age_s: float = 3600.0, *, include_exits: bool = False
    ) -> list[Order]:
        """Open entries created more than ``max_age_s`` before ``now``, oldest first."""
        with self._lock:
            live = list(self._live.values())
        return stale_orders(live, now, max_age_s, include_exits=include_exits)

    def double_reservations(
        self, positions: Mapping[str, float] | None = None
    ) -> list[DoubleReservation]:
        """Exits locking more than the position (for symbols in ``positions``), stop + target."""
        with self._lock:
            live = list(self._live.values())
        return double_reservations(live, positions)

    def fragmentation(
        self,
        equity_usd: float,
        threshold: float = 0.30,
        *,
        last_prices: Mapping[str, float] | None = None,
    ) -> Fragmentation:
        """Held capital against ``equity_usd``; fragmented when the ratio exceeds ``threshold``."""
        held = self.held_capital(last_prices)
        return fragmentation(
            held.total, equity_usd, threshold, unpriced_order_ids=held.unpriced_order_ids
        )

    def stats(self, now: datetime, max_age_s: float = 3600.0) -> OrderStats:
        """Counts and figures of this account at ``now``; staleness at ``max_age_s``."""
        now = utc(now)
        with self._lock:
            live = list(self._live.values())
            by_status = Counter(order.status for order in live)
            by_status.update(order.status for order in self._terminal.values())
            terminal_count = len(self._terminal)
            held = held_capital(live, fee_rate=self.fee_rate, last_prices=self._last_prices)
        open_orders = [order for order in live if order.status in _OPEN]
        oldest = min((order.created_at for order in open_orders), default=None)
        return OrderStats(
            account_id=self.account_id,
            open_count=len(open_orders),
            pending_count=by_status[OrderStatus.PENDING],
            live_count=len(live),
            terminal_count=terminal_count,
            by_status=dict(by_status),
            live_by_role=dict(Counter(order.role for order in live)),
            live_by_type=dict(Counter(order.type for order in live)),
            held_capital=held.total,
            buy_held=held.buys,
            sell_held=held.sells,
            unpriced_count=len(held.unpriced_order_ids),
            # A clock behind the exchange's would give a negative age; an order is never
            # younger than just placed.
            oldest_open_age_s=None if oldest is None else max((now - oldest).total_seconds(), 0.0),
            stale_count=len(stale_orders(open_orders, now, max_age_s, include_exits=False)),
            stale_max_age_s=max_age_s,
        )


class OrderTrackerRegistry:
    """Hands out one :class:`OrderTracker` per account id, created on first use.

    The registry's lock guards creation only; each tracker locks itself, so two
    accounts never wait on each other.
    """

    def __init__(self, *, fee_rate: float = 0.004, retention_s: float = 86_400.0) -> None:
        _check_settings(fee_rate, retention_s)
        self.fee_rate = fee_rate
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._trackers: dict[str, OrderTracker] = {}

    def get(self, account_id: str) -> OrderTracker:
        tracker = self._trackers.get(account_id)
        if tracker is not None:
            return tracker
        with self._lock:
            # Checked again under the lock: another thread may have created it meanwhile.
            tracker = self._trackers.get(account_id)
            if tracker is None:
                tracker = OrderTracker(
                    account_id, fee_rate=self.fee_rate, retention_s=self.retention_s
                )
                self._trackers[account_id] = tracker
            return tracker

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._trackers

    def accounts(self) -> list[str]:
        with self._lock:
            return sorted(self._trackers)
