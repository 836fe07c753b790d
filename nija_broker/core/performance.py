"""Per-account performance: trades, expectancy, drawdown, streaks, Sharpe.

One :class:`PerformanceTracker` per account, never a figure mixed from two
accounts (DESIGN invariant 1). The figures are accumulated as trades and
balance updates arrive (:mod:`._perf_stats`), so :meth:`PerformanceTracker.metrics`
is O(1) and covers every trade ever recorded, while the in-memory history
kept for display is bounded. :func:`compute_metrics` is the same fold over a
list, and :meth:`PerformanceTracker.restore` rebuilds a tracker with identical
figures, either from every stored trade and equity point or, bounded, from the
accumulators the store kept (:class:`Totals`) plus the recent history only.

Drawdown comes from the equity curve only; recording a trade never touches it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

from nija_broker.core.clock import utc
from nija_broker.core.errors import StateError
from nija_broker.core.models import AccountMetrics, EquityPoint, TradeRecord
from nija_broker.core.perf_stats import (
    EquityCurve,
    Totals,
    TradeStats,
    Welford,
    build_metrics,
    check_equity,
)

__all__ = [
    "EquityCurve",
    "PerformanceRegistry",
    "PerformanceTracker",
    "Totals",
    "TradeStats",
    "Welford",
    "compute_metrics",
]

DEFAULT_HISTORY_SIZE = 1000

_T = TypeVar("_T")

EquityInput = EquityPoint | tuple[datetime, float]


def compute_metrics(
    account_id: str,
    trades: Iterable[TradeRecord],
    equity_points: Iterable[EquityInput] = (),
) -> AccountMetrics:
    """The figures of ``account_id`` from its trades and equity points, in order.

    Pure. Trades repeating an earlier ``trade_id`` are skipped, as the tracker
    skips them. A trade or point of another account raises :class:`StateError`.
    """
    stats, curve = TradeStats(), EquityCurve()
    seen: set[str] = set()
    for trade in trades:
        _check_trade_account(account_id, trade)
        if trade.trade_id not in seen:
            seen.add(trade.trade_id)
            stats.add(trade)
    for point in equity_points:
        timestamp, equity = _unpack_point(account_id, point)
        curve.add(timestamp, equity)
    return build_metrics(account_id, stats, curve)


def _check_trade_account(account_id: str, trade: TradeRecord) -> None:
    if trade.account_id != account_id:
        raise StateError(
            f"trade {trade.trade_id!r} of account {trade.account_id!r} "
            f"given to the performance of {account_id!r}"
        )


def _unpack_point(account_id: str, point: EquityInput) -> tuple[datetime, float]:
    if isinstance(point, EquityPoint):
        if point.account_id != account_id:
            raise StateError(
                f"equity point of account {point.account_id!r} "
                f"given to the performance of {account_id!r}"
            )
        return point.timestamp, point.equity
    timestamp, equity = point
    return timestamp, equity


class PerformanceTracker:
    """Trades and equity of one account. Thread-safe (one lock per tracker)."""

    def __init__(
        self,
        account_id: str,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        equity_history_size: int | None = None,
        known_trade: Callable[[str], bool] | None = None,
    ) -> None:
        if not account_id.strip():
            raise ValueError(f"account_id must not be empty, got {account_id!r}")
        if history_size < 1:
            raise ValueError(f"history_size must be at least 1, got {history_size!r}")
        equity_size = history_size if equity_history_size is None else equity_history_size
        if equity_size < 1:
            raise ValueError(f"equity_history_size must be at least 1, got {equity_size!r}")
        self._account_id = account_id
        self._lock = threading.Lock()
        self._stats = TradeStats()
        self._curve = EquityCurve()
        # Without ``known_trade``: every trade id ever recorded, not only those still
        # in the bounded history, so a replay of an old trade cannot count twice. With
        # it (a tracker backed by the store, which keeps every id under a UNIQUE key):
        # only the ids of the history kept, and :meth:`has_trade` asks the store about
        # the others, so memory does not grow with the age of the account.
        self._known_trade = known_trade
        self._trade_ids: set[str] = set()
        self._history: deque[TradeRecord] = deque(maxlen=history_size)
        self._points: deque[EquityPoint] = deque(maxlen=equity_size)
        self._cached: AccountMetrics | None = None

    @classmethod
    def restore(
        cls,
        account_id: str,
        trades: Iterable[TradeRecord],
        equity_points: Iterable[EquityInput],
        history_size: int = DEFAULT_HISTORY_SIZE,
        *,
        totals: Totals | None = None,
        known_trade: Callable[[str], bool] | None = None,
    ) -> PerformanceTracker:
        """A tracker rebuilt from the store, oldest first.

        Without ``totals``: ``trades`` and ``equity_points`` are the whole history
        and are folded again. With ``totals`` (the accumulators of that whole
        history, as the store kept them), they are only the most recent trades and
        points, which fill the bounded history; the figures come from ``totals``.
        """
        tracker = cls(account_id, history_size=history_size, known_trade=known_trade)
        if totals is None:
            for trade in trades:
                tracker.record_trade(trade)
            for point in equity_points:
                timestamp, equity = _unpack_point(account_id, point)
                tracker.update_balance(equity, timestamp)
            return tracker
        tracker._stats = TradeStats.from_dict(totals.stats.to_dict())
        tracker._curve = EquityCurve.from_dict(totals.curve.to_dict())
        for trade in trades:
            _check_trade_account(account_id, trade)
            tracker._keep(trade)
        for point in equity_points:
            timestamp, equity = _unpack_point(account_id, point)
            tracker._points.append(
                EquityPoint(account_id=account_id, timestamp=utc(timestamp), equity=equity)
            )
        return tracker

    def _keep(self, trade: TradeRecord) -> None:
        """Append to the bounded history; its ids follow it when the store knows the rest."""
        if self._known_trade is not None and len(self._history) == self._history.maxlen:
            self._trade_ids.discard(self._history[0].trade_id)
        self._trade_ids.add(trade.trade_id)
        self._history.append(trade)

    @property
    def account_id(self) -> str:
        return self._account_id

    def record_trade(self, trade: TradeRecord) -> bool:
        """Count ``trade``; ``False`` (and nothing changes) if its ``trade_id`` was seen.

        With ``known_trade``, "seen" means among the trades kept in memory: the caller
        (the account's book) asks :meth:`has_trade` before it stores a trade, and
        records only what the store took as new.
        """
        _check_trade_account(self._account_id, trade)
        with self._lock:
            if trade.trade_id in self._trade_ids:
                return False
            self._stats.add(trade)
            self._keep(trade)
            self._cached = None
            return True

    def has_trade(self, trade_id: str) -> bool:
        """Whether ``trade_id`` was ever recorded (also beyond the bounded history)."""
        with self._lock:
            if trade_id in self._trade_ids:
                return True
        return self._known_trade is not None and self._known_trade(trade_id)

    def update_balance(self, equity_usd: float, timestamp: datetime) -> None:
        """Add a point to the equity curve. NaN, infinite or negative equity: ``ValueError``."""
        equity = check_equity(equity_usd)
        point = EquityPoint(account_id=self._account_id, timestamp=utc(timestamp), equity=equity)
        with self._lock:
            self._curve.add(point.timestamp, equity)
            self._points.append(point)
            self._cached = None

    def metrics(self) -> AccountMetrics:
        """All figures over every trade ever recorded. O(1): built from the accumulators."""
        with self._lock:
            if self._cached is None:
                self._cached = build_metrics(self._account_id, self._stats, self._curve)
            return self._cached

    def trade_history(self, limit: int | None = None) -> list[TradeRecord]:
        """The most recent trades kept in memory, newest last."""
        with self._lock:
            return _tail(self._history, limit)

    def equity_points(self, limit: int | None = None) -> list[EquityPoint]:
        """The most recent equity points kept in memory, newest last."""
        with self._lock:
            return _tail(self._points, limit)

    @property
    def equity_count(self) -> int:
        """Equity points ever added (the memory keeps fewer)."""
        with self._lock:
            return self._curve.points

    @property
    def trade_count(self) -> int:
        """Trades ever recorded (the history may hold fewer)."""
        with self._lock:
            return self._stats.total_trades


def _tail(items: deque[_T], limit: int | None) -> list[_T]:
    if limit is None:
        return list(items)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit!r}")
    if limit == 0:
        return []
    return list(items)[-limit:]


class PerformanceRegistry:
    """One tracker per account, created on first use. Thread-safe."""

    def __init__(self, *, history_size: int = DEFAULT_HISTORY_SIZE) -> None:
        self._history_size = history_size
        self._lock = threading.Lock()
        self._trackers: dict[str, PerformanceTracker] = {}

    def get(self, account_id: str) -> PerformanceTracker:
        with self._lock:
            tracker = self._trackers.get(account_id)
            if tracker is None:
                tracker = PerformanceTracker(account_id, history_size=self._history_size)
                self._trackers[account_id] = tracker
            return tracker

    def register(self, tracker: PerformanceTracker) -> None:
        """Install a restored tracker. An account that already has one: ``StateError``."""
        with self._lock:
            existing = self._trackers.get(tracker.account_id)
            if existing is not None and existing is not tracker:
                raise StateError(f"account {tracker.account_id!r} already has a tracker")
            self._trackers[tracker.account_id] = tracker

    def accounts(self) -> list[str]:
        with self._lock:
            return sorted(self._trackers)

    def all_metrics(self) -> list[AccountMetrics]:
        """One entry per account, sorted by account id; never a sum across accounts."""
        with self._lock:
            trackers = [self._trackers[a] for a in sorted(self._trackers)]
        return [tracker.metrics() for tracker in trackers]
