"""The seed's API, kept so the live bot's existing calls work unchanged.

Names, fields and signatures follow the seed (``bot/account_order_tracker.py``
and ``bot/account_performance_tracker.py``); behind them are the real
trackers and the SQLite store. What changed, on purpose:

- State lives in ``<data_dir>/nija_broker.sqlite3`` (WAL, transactions), not
  in JSON files rewritten without locks. ``get_order_tracker(data_dir)`` and
  ``get_performance_tracker(data_dir)`` honour ``data_dir``; both trackers of
  one directory share one store.
- Held capital is DESIGN's figure (remaining x price plus fee for buys, the
  locked base valued at price for sells); ``reserved_capital`` given by the
  caller is not trusted.
- Naive datetimes (the bot's ``datetime.now()``) are read as local time.
- ``mark_order_filled`` returns ``False`` for an order that is already
  cancelled: a status never moves backwards.
- ``cleanup_stale_orders(force_cancel=True)`` does NOT mark orders cancelled
  locally (the seed's ``force_cancel`` only changed local state, so the order
  kept resting on the exchange). It reports them; cancelling goes through the
  exchange, and an order is marked cancelled when the exchange confirms it.
- Drawdown comes from the equity curve and survives new trades and restarts;
  profit factor is infinite with no losses.
- Bad input raises ``ValueError`` naming the seed's field and the value.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._orders_figures import held_capital
from .book import AccountBook, Books
from .errors import StateError
from .models import AccountMetrics, Order, OrderRole, OrderStatus, OrderType, TradeRecord
from .orders import OrderTracker
from .store import Store

__all__ = [
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

STORE_FILE = "nija_broker.sqlite3"

# Seed field names for the errors the models raise with their own names.
_SEED_NAMES = {"id": "order_id", "amount": "quantity"}


def _aware(value: datetime) -> datetime:
    """The seed stamps times with naive ``datetime.now()``: local time."""
    return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _seed_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = ".".join(_SEED_NAMES.get(str(p), str(p)) for p in err["loc"]) or what
            problems.append(f"{field}: {err['msg']} (value: {err.get('input')!r})")
        raise ValueError(f"invalid {what}: " + "; ".join(problems)) from None


# ---------------------------------------------------------------------------- workspace


class _Workspace:
    """One data directory: its store and its books, shared by both trackers."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(data_dir / STORE_FILE)
        self.books = Books(self.store)


_workspaces: dict[Path, _Workspace] = {}
_workspaces_lock = threading.Lock()


def _workspace(data_dir: str | Path) -> _Workspace:
    key = Path(data_dir).resolve()
    with _workspaces_lock:
        found = _workspaces.get(key)
        if found is None:
            found = _workspaces[key] = _Workspace(key)
        return found


def _close_all() -> None:
    """Close every store and forget the singletons (tests, and a clean shutdown)."""
    with _workspaces_lock:
        for workspace in _workspaces.values():
            workspace.store.close()
        _workspaces.clear()
        _order_trackers.clear()
        _performance_trackers.clear()


# ---------------------------------------------------------------------------- orders

_TYPES = {
    "market": (OrderType.MARKET, None),
    "limit": (OrderType.LIMIT, None),
    "stop": (OrderType.STOP, OrderRole.STOP),
    "stop_loss": (OrderType.STOP, OrderRole.STOP),
    "stop_limit": (OrderType.STOP_LIMIT, OrderRole.STOP),
    # The seed's "target" is a resting limit exit at the take-profit price.
    "target": (OrderType.LIMIT, OrderRole.TARGET),
    "take_profit": (OrderType.TAKE_PROFIT, OrderRole.TARGET),
}
_STATUSES = {
    "open": OrderStatus.OPEN, "pending": OrderStatus.PENDING,
    "partially_filled": OrderStatus.PARTIALLY_FILLED, "filled": OrderStatus.FILLED,
    "cancelled": OrderStatus.CANCELLED, "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED,
}


@dataclass
class OrderInfo:
    """The seed's order record."""

    order_id: str
    account_id: str
    symbol: str
    side: str
    price: float
    quantity: float
    size_usd: float
    status: str
    created_at: datetime
    filled_at: datetime | None = None
    cancelled_at: datetime | None = None
    order_type: str = "market"
    parent_position_id: str | None = None
    reserved_capital: float = 0.0

    def age_seconds(self) -> float:
        return (_now() - _aware(self.created_at)).total_seconds()

    def age_minutes(self) -> float:
        return self.age_seconds() / 60.0

    def is_stale(self, max_age_minutes: int = 60) -> bool:
        return self.age_minutes() > max_age_minutes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("created_at", "filled_at", "cancelled_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data

    def to_order(self) -> Order:
        kind = _TYPES.get(str(self.order_type).lower())
        if kind is None:
            raise ValueError(
                f"invalid OrderInfo: order_type: must be one of {sorted(_TYPES)} "
                f"(value: {self.order_type!r})"
            )
        status = _STATUSES.get(str(self.status).lower())
        if status is None:
            raise ValueError(
                f"invalid OrderInfo: status: must be one of {sorted(_STATUSES)} "
                f"(value: {self.status!r})"
            )
        order_type, role = kind
        if role is None:
            role = OrderRole.ENTRY if str(self.side).lower() == "buy" else OrderRole.EXIT
        stop = order_type in (OrderType.STOP, OrderType.TAKE_PROFIT)
        changed = self.filled_at or self.cancelled_at
        with _seed_errors("OrderInfo"):
            amount = self.quantity
            return Order(
                id=self.order_id, account_id=self.account_id, symbol=self.symbol,
                side=str(self.side).lower(), type=order_type, role=role,
                price=None if stop else self.price, stop_price=self.price if stop else None,
                amount=amount, filled=amount if status is OrderStatus.FILLED else 0.0,
                status=status, created_at=_aware(self.created_at),
                updated_at=_aware(changed) if changed else None,
                parent_position_id=self.parent_position_id,
            )


def _seed_type(order: Order) -> str:
    if order.role is OrderRole.TARGET:
        return "target"
    if order.role is OrderRole.STOP:
        return "stop"
    return "market" if order.type is OrderType.MARKET else "limit"


def _to_info(order: Order, orders: OrderTracker) -> OrderInfo:
    price = order.reference_price or order.average or 0.0
    status = order.status.value if order.status is not OrderStatus.PARTIALLY_FILLED else "open"
    return OrderInfo(
        order_id=order.id, account_id=order.account_id, symbol=order.symbol.replace("/", "-"),
        side=order.side.value, price=price, quantity=order.amount, size_usd=order.amount * price,
        status=status, created_at=order.created_at,
        filled_at=order.updated_at if order.status is OrderStatus.FILLED else None,
        cancelled_at=order.updated_at if order.status is OrderStatus.CANCELLED else None,
        order_type=_seed_type(order), parent_position_id=order.parent_position_id,
        # DESIGN's held capital of this one order, as the tracker computes it.
        reserved_capital=held_capital([order], fee_rate=orders.fee_rate,
                                      last_prices=orders.last_prices()).total,
    )


@dataclass
class AccountOrderStats:
    account_id: str
    total_open_orders: int = 0
    market_orders: int = 0
    stop_orders: int = 0
    target_orders: int = 0
    total_held_capital: float = 0.0
    oldest_order_age_minutes: float = 0.0
    stale_orders_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AccountOrderTracker:
    """The seed's order tracker over the real per-account trackers and the store."""

    def __init__(self, data_dir: str = "./data") -> None:
        self.data_dir = Path(data_dir)
        self._workspace = _workspace(data_dir)
        self.max_order_age_minutes = 60

    def _book(self, account_id: str) -> AccountBook:
        return self._workspace.books.get(account_id)

    def add_order(self, order: OrderInfo) -> None:
        value = order.to_order()
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
            book.apply_order(current.replace(status=status, filled=filled, updated_at=_now()))
        except StateError as exc:
            logger.warning("order %s of %s not marked %s: %s", order_id, account_id, status, exc)
            return False
        return True

    def mark_order_filled(self, order_id: str, account_id: str) -> bool:
        return self._mark(order_id, account_id, OrderStatus.FILLED)

    def mark_order_cancelled(self, order_id: str, account_id: str) -> bool:
        return self._mark(order_id, account_id, OrderStatus.CANCELLED)

    def get_open_orders(self, account_id: str, order_type: str | None = None) -> list[OrderInfo]:
        book = self._book(account_id)
        infos = [_to_info(o, book.orders) for o in book.orders.open_orders()]
        return [i for i in infos if order_type is None or i.order_type == order_type]

    def get_order_count(self, account_id: str, order_type: str | None = None) -> int:
        return len(self.get_open_orders(account_id, order_type))

    def get_held_capital(self, account_id: str) -> float:
        return self._book(account_id).orders.held_capital().total

    def get_account_stats(self, account_id: str) -> AccountOrderStats:
        book = self._book(account_id)
        now = _now()
        stats = book.orders.stats(now, max_age_s=self.max_order_age_minutes * 60.0)
        kinds = [i.order_type for i in self.get_open_orders(account_id)]
        return AccountOrderStats(
            account_id=account_id, total_open_orders=stats.open_count,
            market_orders=kinds.count("market"), stop_orders=kinds.count("stop"),
            target_orders=kinds.count("target"), total_held_capital=stats.held_capital,
            oldest_order_age_minutes=(stats.oldest_open_age_s or 0.0) / 60.0,
            stale_orders_count=stats.stale_count,
        )

    def check_double_reservation(self, position_id: str, account_id: str) -> tuple[bool, str]:
        book = self._book(account_id)
        for found in book.orders.double_reservations():
            if found.kind == "stop_and_target" and all(
                (o := book.orders.get(i)) is not None and o.parent_position_id == position_id
                for i in found.order_ids
            ):
                return True, f"DOUBLE RESERVATION: {found.message}"
        orders = [o for o in book.orders.open_orders() if o.parent_position_id == position_id]
        if not orders:
            return False, "No orders found for position"
        return False, f"No double reservation detected ({len(orders)} orders for the position)"

    def _accounts(self, account_id: str | None) -> list[str]:
        return [account_id] if account_id else self._workspace.books.accounts()

    def cleanup_filled_orders(self, account_id: str | None = None, max_age_hours: int = 24) -> int:
        now = _now()
        return sum(
            len(self._book(a).orders.cleanup_terminal(now, retention_s=max_age_hours * 3600.0))
            for a in self._accounts(account_id)
        )

    def cleanup_stale_orders(self, account_id: str | None = None,
                             force_cancel: bool = False) -> int:
        now = _now()
        count = 0
        for account in self._accounts(account_id):
            stale = self._book(account).orders.stale_orders(now, self.max_order_age_minutes * 60.0)
            for order in stale:
                logger.warning("stale order on %s: %s %s %s, age %.1f min", account, order.id,
                               order.symbol, order.side, (now - order.created_at).total_seconds()
                               / 60)
            if force_cancel and stale:
                logger.warning(
                    "%d stale orders on %s NOT marked cancelled: they rest on the exchange until "
                    "cancelled there; nija_broker's reconciler cancels stale entries through the "
                    "exchange and marks them when the exchange confirms", len(stale), account)
            count += len(stale)
        return count

    def detect_order_fragmentation(self, account_id: str, account_balance: float,
                                   warn_threshold: float = 0.30) -> tuple[bool, str]:
        result = self._book(account_id).orders.fragmentation(account_balance, warn_threshold)
        return result.fragmented, result.message

    def get_all_accounts_summary(self) -> dict[str, AccountOrderStats]:
        return {a: self.get_account_stats(a) for a in self._workspace.books.accounts()}


# ---------------------------------------------------------------------------- performance


@dataclass
class AccountPerformanceMetrics:
    """The seed's metrics record, filled from :class:`~nija_broker.models.AccountMetrics`.

    ``expectancy`` and ``expectancy_per_trade`` are both money per trade (DESIGN's
    expectancy); ``expectancy_per_dollar_risked`` is ``None`` when no trade
    recorded its risk. ``total_pnl`` is gross, ``net_pnl`` is after fees.
    """

    account_id: str
    total_trades: int = 0
    winning_trades: int = 0
    losing_trades: int = 0
    win_rate: float = 0.0
    total_pnl: float = 0.0
    total_fees: float = 0.0
    net_pnl: float = 0.0
    average_win: float = 0.0
    average_loss: float = 0.0
    largest_win: float = 0.0
    largest_loss: float = 0.0
    expectancy: float = 0.0
    expectancy_per_trade: float = 0.0
    expectancy_per_dollar_risked: float | None = None
    peak_balance: float = 0.0
    current_balance: float = 0.0
    current_drawdown: float = 0.0
    current_drawdown_pct: float = 0.0
    max_drawdown: float = 0.0
    max_drawdown_pct: float = 0.0
    current_streak: int = 0
    max_win_streak: int = 0
    max_loss_streak: int = 0
    profit_factor: float = 0.0
    sharpe_ratio: float = 0.0
    sharpe_annualized: float | None = None

    @classmethod
    def from_metrics(cls, m: AccountMetrics) -> AccountPerformanceMetrics:
        return cls(
            account_id=m.account_id, total_trades=m.total_trades,
            winning_trades=m.winning_trades, losing_trades=m.losing_trades,
            win_rate=m.win_rate, total_pnl=m.total_pnl + m.total_fees, total_fees=m.total_fees,
            net_pnl=m.total_pnl, average_win=m.average_win, average_loss=m.average_loss,
            largest_win=m.largest_win, largest_loss=m.largest_loss, expectancy=m.expectancy,
            expectancy_per_trade=m.expectancy,
            expectancy_per_dollar_risked=m.expectancy_per_dollar_risked,
            peak_balance=m.peak_balance, current_balance=m.current_balance,
            current_drawdown=m.current_drawdown, current_drawdown_pct=m.current_drawdown_pct,
            max_drawdown=m.max_drawdown, max_drawdown_pct=m.max_drawdown_pct,
            current_streak=m.current_win_streak or -m.current_loss_streak,
            max_win_streak=m.max_win_streak, max_loss_streak=m.max_loss_streak,
            profit_factor=m.profit_factor, sharpe_ratio=m.sharpe_ratio or 0.0,
            sharpe_annualized=m.sharpe_annualized,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AccountPerformanceTracker:
    """The seed's performance tracker over the real per-account trackers and the store."""

    def __init__(self, data_dir: str = "./data") -> None:
        self.data_dir = Path(data_dir)
        self._workspace = _workspace(data_dir)
        self.max_trade_history_per_account = self._workspace.books.settings.history_size

    def _book(self, account_id: str) -> AccountBook:
        return self._workspace.books.get(account_id)

    def record_trade(self, trade: TradeRecord) -> None:
        if not self._book(trade.account_id).record_trade(trade):
            logger.info("trade %s of %s already recorded", trade.trade_id, trade.account_id)

    def update_balance(self, account_id: str, balance: float) -> None:
        try:
            self._book(account_id).update_equity(balance, _now())
        except ValidationError:
            raise ValueError(f"invalid balance for {account_id!r}: {balance!r}") from None

    def get_metrics(self, account_id: str) -> AccountPerformanceMetrics:
        return AccountPerformanceMetrics.from_metrics(self._book(account_id).metrics())

    def get_trade_history(self, account_id: str, limit: int | None = None) -> list[TradeRecord]:
        return self._book(account_id).performance.trade_history(limit)

    def get_all_accounts(self) -> list[str]:
        return self._workspace.books.accounts()

    def get_all_metrics(self) -> dict[str, AccountPerformanceMetrics]:
        """One entry per account. Never add these up: each is its own account's."""
        return {a: self.get_metrics(a) for a in self.get_all_accounts()}

    get_all_accounts_summary = get_all_metrics

    def verify_no_aggregation(self) -> dict[str, str]:
        """Check every account's stored and in-memory trades belong to it alone."""
        results = {}
        for account in self.get_all_accounts():
            trades = self._workspace.store.trades(account)
            foreign = [t for t in trades if t.account_id != account]
            mem = self._book(account).metrics()
            if foreign or mem.account_id != account:
                results[account] = (
                    f"CONTAMINATION: {len(foreign)} trades belong to other accounts"
                )
            else:
                results[account] = f"Clean: all {len(trades)} trades belong to {account}"
        return results

    def print_account_summary(self, account_id: str) -> None:
        m = self.get_metrics(account_id)
        risk = ("n/a (no trade recorded its risk)" if m.expectancy_per_dollar_risked is None
                else f"{m.expectancy_per_dollar_risked:.3f}")
        pf = "inf (no losses)" if m.profit_factor == float("inf") else f"{m.profit_factor:.2f}"
        streak = f"{abs(m.current_streak)} {'wins' if m.current_streak > 0 else 'losses'}"
        lines = [
            "=" * 70, f"PERFORMANCE SUMMARY: {account_id}", "=" * 70,
            f"  Total Trades:      {m.total_trades}",
            f"  Winning / Losing:  {m.winning_trades} / {m.losing_trades}",
            f"  Win Rate:          {m.win_rate:.1f}%",
            f"  Gross P&L:         ${m.total_pnl:.2f}",
            f"  Fees:              ${m.total_fees:.2f}",
            f"  Net P&L:           ${m.net_pnl:.2f}",
            f"  Average Win/Loss:  ${m.average_win:.2f} / ${m.average_loss:.2f}",
            f"  Largest Win/Loss:  ${m.largest_win:.2f} / ${m.largest_loss:.2f}",
            f"  Expectancy:        ${m.expectancy:.2f} per trade; per dollar risked: {risk}",
            f"  Profit Factor:     {pf}",
            f"  Sharpe (per trade): {m.sharpe_ratio:.2f}",
            f"  Peak / Current:    ${m.peak_balance:.2f} / ${m.current_balance:.2f}",
            f"  Current Drawdown:  ${m.current_drawdown:.2f} ({m.current_drawdown_pct:.1f}%)",
            f"  Max Drawdown:      ${m.max_drawdown:.2f} ({m.max_drawdown_pct:.1f}%)",
            f"  Current Streak:    {streak}",
            f"  Max Win / Loss Streak: {m.max_win_streak} / {m.max_loss_streak}",
            "=" * 70,
        ]
        print("\n".join(lines))


# ---------------------------------------------------------------------------- singletons

_order_trackers: dict[Path, AccountOrderTracker] = {}
_performance_trackers: dict[Path, AccountPerformanceTracker] = {}


def get_order_tracker(data_dir: str = "./data") -> AccountOrderTracker:
    """The order tracker of ``data_dir`` (one per directory, created on first use)."""
    key = Path(data_dir).resolve()
    with _workspaces_lock:
        tracker = _order_trackers.get(key)
    if tracker is None:
        tracker = AccountOrderTracker(str(data_dir))
        with _workspaces_lock:
            tracker = _order_trackers.setdefault(key, tracker)
    return tracker


def get_performance_tracker(data_dir: str = "./data") -> AccountPerformanceTracker:
    """The performance tracker of ``data_dir`` (one per directory, created on first use)."""
    key = Path(data_dir).resolve()
    with _workspaces_lock:
        tracker = _performance_trackers.get(key)
    if tracker is None:
        tracker = AccountPerformanceTracker(str(data_dir))
        with _workspaces_lock:
            tracker = _performance_trackers.setdefault(key, tracker)
    return tracker
