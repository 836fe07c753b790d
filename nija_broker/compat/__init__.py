"""The seed's API, kept so the live bot's existing calls work unchanged.

Names, fields, attributes and signatures follow the seed
(``bot/account_order_tracker.py`` and ``bot/account_performance_tracker.py``);
behind them are the real per-account trackers and the SQLite store. Importing
this module loads no aiohttp, no ccxt and no runtime: it runs inside the bot's
own process. What changed, on purpose (README "The seed API" lists the same):

- State lives in ``<data_dir>/nija_broker.sqlite3`` (WAL, transactions), not
  in JSON files rewritten without locks (``nija-broker import-seed-state DIR``
  takes the seed's files in once). ``get_order_tracker(data_dir)`` and
  ``get_performance_tracker(data_dir)`` honour ``data_dir`` on every call; both
  trackers of one directory share one store, and ``AccountOrderTracker(dir)``
  twice is the same state.
- An order's held capital is the ``reserved_capital`` its caller declared, as
  in the seed, released pro rata as it fills; an order declared without one
  (``None``) holds DESIGN's figure (remaining x price + fee for buys, the
  locked base for sells). ``check_double_reservation`` is the seed's rule on
  declared reservations; what the exchange itself locks twice (exits above
  the position, a resting stop and target) is ``check_exit_reservations``.
- The seed's attributes (``orders_by_account``, ``reserved_capital_by_account``,
  ``trade_history_by_account``, ``metrics_by_account``,
  ``balance_history_by_account``, ``cleanup_stats``) are live views of the
  trackers, not second copies: setting ``reserved_capital`` on an order read
  from them changes the tracked order; a total written into
  ``reserved_capital_by_account`` that disagrees with the orders is logged and
  not kept.
- Symbols: ``BTC-USD``, ``BTC/USD`` and exchange pair codes (``XXBTZUSD``,
  ``XBTUSD``, ``XDGUSD``, ``BTCUSDT``) are accepted, resolved through the
  account's markets (``use_markets``) or built-in aliases; the caller's form is
  echoed back.
- Times read back are timezone-aware UTC; naive datetimes given (the bot's
  ``datetime.now()``) are read as local time.
- ``mark_order_filled`` returns ``False`` for an order that is already
  cancelled: a status never moves backwards.
- ``cleanup_stale_orders(force_cancel=True)`` does NOT mark orders cancelled
  locally (the seed's ``force_cancel`` only changed local state, so the order
  kept resting on the exchange). It reports them; cancelling goes through the
  exchange, and an order is marked cancelled when the exchange confirms it.
- ``detect_order_fragmentation`` with a balance of 0 or less and capital held
  is fragmented (the seed said it could not tell).
- Drawdown comes from the equity curve and survives new trades and restarts;
  profit factor is infinite with no losses.
- Bad input raises ``ValueError`` naming the seed's field and the value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nija_broker.compat.performance import AccountPerformanceTracker
from nija_broker.compat.records import (
    AccountOrderStats,
    AccountPerformanceMetrics,
    Binding,
    OrderInfo,
    TradeRecord,
    check_reserve,
    info_from_order,
    now,
    reserved_now,
    seed_type,
)
from nija_broker.compat.views import AccountView, ReservedView
from nija_broker.compat.workspace import STORE_FILE
from nija_broker.compat.workspace import workspace as _workspace
from nija_broker.compat.workspace import workspaces as _workspaces
from nija_broker.compat.workspace import workspaces_lock as _workspaces_lock
from nija_broker.core.errors import StateError
from nija_broker.core.models import Order, OrderStatus
from nija_broker.core.order_figures import fragmentation
from nija_broker.state.book import AccountBook
from nija_broker.state.owner import Owner, owned

__all__ = [
    "STORE_FILE",
    "AccountOrderStats",
    "AccountOrderTracker",
    "AccountPerformanceMetrics",
    "AccountPerformanceTracker",
    "OrderInfo",
    "TradeRecord",
    "get_order_tracker",
    "get_performance_tracker",
]

logger = logging.getLogger("nija_broker.compat")


def _close_all() -> None:
    """Close every store and forget the singletons (tests, and a clean shutdown)."""
    global _global_order_tracker, _global_performance_tracker
    with _workspaces_lock:
        for workspace in _workspaces.values():
            workspace.store.close()
        _workspaces.clear()
        _order_trackers.clear()
        _performance_trackers.clear()
        _global_order_tracker = None
        _global_performance_tracker = None


# ---------------------------------------------------------------------------- orders


class AccountOrderTracker:
    """The seed's order tracker over the real per-account trackers and the store."""

    def __init__(self, data_dir: str = "./data") -> None:
        self.data_dir = Path(data_dir)
        self._workspace = _workspace(data_dir)
        self.max_order_age_minutes = 60
        self.auto_cleanup_stale_orders = True
        self.state_file = self.data_dir / "account_orders_state.json"
        """Where the seed kept its state; read once by ``nija-broker import-seed-state``."""
        self.orders_by_account: AccountView[list[OrderInfo]] = AccountView(
            self._order_accounts, self._all_infos, list, "orders_by_account"
        )
        """Every order of each account held in memory (open, and finished ones until
        ``cleanup_filled_orders``), oldest first."""
        self.reserved_capital_by_account: ReservedView = ReservedView(
            self._order_accounts, self.get_held_capital, float, "reserved_capital_by_account"
        )
        self.cleanup_stats: dict[str, Any] = self._workspace.cleanup_stats
        """Orders removed by ``cleanup_filled_orders`` since this process opened ``data_dir``."""

    @property
    def owner(self) -> Owner:
        """Every public method runs on this thread (the data directory's one owner)."""
        return self._workspace.owner

    def _book(self, account_id: str) -> AccountBook:
        return self._workspace.book(account_id)

    @owned
    def use_markets(self, account_id: str, markets: Mapping[str, Any]) -> None:
        """Resolve this account's exchange pair codes through ``markets`` (ccxt's
        ``exchange.markets``, or ``{"XXBTZUSD": "BTC/USD"}``) before the built-in aliases."""
        self._workspace.set_markets(account_id, markets)

    # -- views

    def _order_accounts(self) -> list[str]:
        return [a for a in self._workspace.books.accounts() if self._book(a).orders.orders()]

    def _info(self, order: Order, book: AccountBook) -> OrderInfo:
        reserved = reserved_now(order, book.orders.fee_rate, book.orders.last_prices())
        info = info_from_order(order, reserved)
        account_id = order.account_id
        return info.bind(Binding(lambda oid, v: self._declare(account_id, oid, v)))

    def _all_infos(self, account_id: str) -> list[OrderInfo]:
        book = self._book(account_id)
        return [self._info(o, book) for o in book.orders.orders()]

    def _declare(self, account_id: str, order_id: str, value: float | None) -> None:
        """An order's declared reservation changed (``info.reserved_capital = x``)."""
        book = self._book(account_id)
        current = book.orders.get(order_id)
        if current is None:
            raise ValueError(f"order {order_id!r} of {account_id!r} is no longer tracked")
        book.apply_order(current.replace(declared_reserve=value))

    # -- the seed's methods

    @owned
    def add_order(self, order: OrderInfo) -> None:
        check_reserve(order.order_id, order.reserved_capital)
        value = order.to_order(self._workspace.markets.get(order.account_id))
        book = self._book(value.account_id)
        if book.orders.get(value.id) is not None:
            logger.warning("order %s already tracked for account %s", value.id, value.account_id)
            return
        book.apply_order(value)

    def _mark(self, order_id: str, account_id: str, status: OrderStatus) -> bool:
        book = self._book(account_id)
        current = book.orders.get(order_id)
        if current is None:
            logger.warning("order %s not found for account %s", order_id, account_id)
            return False
        filled = current.amount if status is OrderStatus.FILLED else current.filled
        try:
            book.apply_order(current.replace(status=status, filled=filled, updated_at=now()))
        except StateError as exc:
            logger.warning("order %s of %s not marked %s: %s", order_id, account_id, status, exc)
            return False
        return True

    @owned
    def mark_order_filled(self, order_id: str, account_id: str) -> bool:
        return self._mark(order_id, account_id, OrderStatus.FILLED)

    @owned
    def mark_order_cancelled(self, order_id: str, account_id: str) -> bool:
        return self._mark(order_id, account_id, OrderStatus.CANCELLED)

    @owned
    def get_open_orders(self, account_id: str, order_type: str | None = None) -> list[OrderInfo]:
        book = self._book(account_id)
        infos = [self._info(o, book) for o in book.orders.open_orders()]
        return [i for i in infos if order_type is None or i.order_type == order_type]

    @owned
    def get_order_count(self, account_id: str, order_type: str | None = None) -> int:
        return len(self.get_open_orders(account_id, order_type))

    @owned
    def get_held_capital(self, account_id: str) -> float:
        """The sum of what the account's open orders hold (declared, else computed)."""
        orders = self._book(account_id).orders
        prices = orders.last_prices()
        return math.fsum(reserved_now(o, orders.fee_rate, prices) for o in orders.open_orders())

    @owned
    def get_account_stats(self, account_id: str) -> AccountOrderStats:
        book = self._book(account_id)
        stats = book.orders.stats(now(), max_age_s=self.max_order_age_minutes * 60.0)
        kinds = [seed_type(o) for o in book.orders.open_orders()]
        return AccountOrderStats(
            account_id=account_id,
            total_open_orders=stats.open_count,
            market_orders=kinds.count("market"),
            stop_orders=kinds.count("stop"),
            target_orders=kinds.count("target"),
            total_held_capital=self.get_held_capital(account_id),
            oldest_order_age_minutes=(stats.oldest_open_age_s or 0.0) / 60.0,
            stale_orders_count=stats.stale_count,
        )

    @owned
    def check_double_reservation(self, position_id: str, account_id: str) -> tuple[bool, str]:
        """The seed's rule: a stop and a target of ``position_id`` that both reserve capital."""
        infos = [i for i in self.get_open_orders(account_id) if i.parent_position_id == position_id]
        if not infos:
            return False, "No orders found for position"
        total = math.fsum(i.reserved_capital or 0.0 for i in infos)
        stop = math.fsum(i.reserved_capital or 0.0 for i in infos if i.order_type == "stop")
        target = math.fsum(i.reserved_capital or 0.0 for i in infos if i.order_type == "target")
        if stop > 0 and target > 0:
            return True, (
                f"DOUBLE RESERVATION: Stop reserved ${stop:.2f}, Target reserved "
                f"${target:.2f} (total ${total:.2f})"
            )
        return False, (
            f"No double reservation detected (${total:.2f} reserved for {len(infos)} orders)"
        )

    @owned
    def check_exit_reservations(
        self, account_id: str, positions: Mapping[str, float] | None = None
    ) -> tuple[bool, str]:
        """What the exchange itself locks twice: resting exits of a symbol above the position
        (``positions``: ``{symbol: quantity}``, default the positions booked from fills), and
        a stop and a target of one position both resting (each locks the base)."""
        book = self._book(account_id)
        held = (
            positions if positions is not None else {p.symbol: p.quantity for p in book.positions()}
        )
        findings = book.orders.double_reservations(held)
        if not findings:
            return False, "No exit locks more than the position"
        return True, " ".join(f.message for f in findings)

    def _accounts(self, account_id: str | None) -> list[str]:
        return [account_id] if account_id else self._workspace.books.accounts()

    @owned
    def cleanup_filled_orders(self, account_id: str | None = None, max_age_hours: int = 24) -> int:
        at = now()
        per_account = self.cleanup_stats["orders_cleaned_per_account"]
        count = 0
        for account in self._accounts(account_id):
            removed = len(
                self._book(account).orders.cleanup_terminal(at, retention_s=max_age_hours * 3600.0)
            )
            if removed:
                per_account[account] += removed
                logger.info("cleaned up %d old orders for %s", removed, account)
            count += removed
        if count:
            self.cleanup_stats["total_cleaned"] += count
            self.cleanup_stats["last_cleanup"] = at.isoformat()
        return count

    @owned
    def cleanup_stale_orders(
        self, account_id: str | None = None, force_cancel: bool = False
    ) -> int:
        at = now()
        count = 0
        for account in self._accounts(account_id):
            stale = self._book(account).orders.stale_orders(at, self.max_order_age_minutes * 60.0)
            for order in stale:
                logger.warning(
                    "stale order on %s: %s %s %s, age %.1f min",
                    account,
                    order.id,
                    order.symbol,
                    order.side,
                    (at - order.created_at).total_seconds() / 60,
                )
            if force_cancel and stale:
                logger.warning(
                    "%d stale orders on %s NOT marked cancelled: they rest on the exchange until "
                    "cancelled there; nija_broker's reconciler cancels stale entries through the "
                    "exchange and marks them when the exchange confirms",
                    len(stale),
                    account,
                )
            count += len(stale)
        return count

    @owned
    def detect_order_fragmentation(
        self, account_id: str, account_balance: float, warn_threshold: float = 0.30
    ) -> tuple[bool, str]:
        result = fragmentation(self.get_held_capital(account_id), account_balance, warn_threshold)
        return result.fragmented, result.message

    @owned
    def get_all_accounts_summary(self) -> dict[str, AccountOrderStats]:
        return {a: self.get_account_stats(a) for a in self._order_accounts()}


# ---------------------------------------------------------------------------- singletons

_order_trackers: dict[Path, AccountOrderTracker] = {}
_performance_trackers: dict[Path, AccountPerformanceTracker] = {}

_global_order_tracker: AccountOrderTracker | None = None
"""The seed's module global: the tracker the first ``get_order_tracker`` call made.
Setting it to ``None`` (as the seed's callers do to start afresh) makes the next call
build new tracker objects over the same stored state."""
_global_performance_tracker: AccountPerformanceTracker | None = None
"""As ``_global_order_tracker``, for ``get_performance_tracker``."""


def get_order_tracker(data_dir: str = "./data") -> AccountOrderTracker:
    """The order tracker of ``data_dir`` (one per directory, created on first use)."""
    global _global_order_tracker
    key = Path(data_dir).resolve()
    with _workspaces_lock:
        if _global_order_tracker is None:
            _order_trackers.clear()  # never set, or reset by the caller
        tracker = _order_trackers.get(key)
    if tracker is None:
        tracker = AccountOrderTracker(str(data_dir))
        with _workspaces_lock:
            tracker = _order_trackers.setdefault(key, tracker)
            if _global_order_tracker is None:
                _global_order_tracker = tracker
    return tracker


def get_performance_tracker(data_dir: str = "./data") -> AccountPerformanceTracker:
    """The performance tracker of ``data_dir`` (one per directory, created on first use)."""
    global _global_performance_tracker
    key = Path(data_dir).resolve()
    with _workspaces_lock:
        if _global_performance_tracker is None:
            _performance_trackers.clear()
        tracker = _performance_trackers.get(key)
    if tracker is None:
        tracker = AccountPerformanceTracker(str(data_dir))
        with _workspaces_lock:
            tracker = _performance_trackers.setdefault(key, tracker)
            if _global_performance_tracker is None:
                _global_performance_tracker = tracker
    return tracker
