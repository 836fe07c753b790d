"""Prometheus metrics, one labelled series per account, in a registry of their own.

Every series carries the ``account`` label and nothing is summed across
accounts (DESIGN invariant 1): a fleet total is a PromQL ``sum()`` a person
chooses to write. The registry is owned by :class:`BrokerMetrics`, not the
process-global one, so several runtimes (and tests) in one process never clash.

Gauges are set from the books by :meth:`BrokerMetrics.refresh`; counters and
the histogram are fed by the runtime as events happen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from nija_broker.core.health import AccountLive
from nija_broker.service.status import status_rows
from nija_broker.state.books import Books

__all__ = ["PREFIX", "SYNC_CYCLE_BUCKETS_S", "BrokerMetrics"]

PREFIX = "nija_broker_"

# One poll cycle is a few REST calls: tens of milliseconds on a sandbox, seconds
# behind a rate limit, tens of seconds when an exchange is struggling.
SYNC_CYCLE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class BrokerMetrics:
    """The broker's metrics. Thread-safe (prometheus-client locks each series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        by_account = ["account"]
        self.equity_usd = Gauge(
            f"{p}equity_usd",
            "Account equity in USD (absent while unknown).",
            by_account,
            registry=r,
        )
        self.open_orders = Gauge(
            f"{p}open_orders", "Open and partially filled orders.", by_account, registry=r
        )
        self.held_capital_usd = Gauge(
            f"{p}held_capital_usd",
            "Quote currency reserved by live orders.",
            by_account,
            registry=r,
        )
        self.fragmentation_ratio = Gauge(
            f"{p}fragmentation_ratio",
            "Held capital / equity (+Inf when held > 0 on zero equity; absent while unknown).",
            by_account,
            registry=r,
        )
        self.drawdown_pct = Gauge(
            f"{p}drawdown_pct",
            "Current drawdown from the equity peak, percent.",
            by_account,
            registry=r,
        )
        self.max_drawdown_pct = Gauge(
            f"{p}max_drawdown_pct",
            "Maximum drawdown of the equity curve, percent.",
            by_account,
            registry=r,
        )
        self.fills = Counter(f"{p}fills_total", "Fills booked.", by_account, registry=r)
        self.cancellations = Counter(
            f"{p}cancellations_total",
            "Orders seen cancelled (stale ones included).",
            by_account,
            registry=r,
        )
        self.stale_cancellations = Counter(
            f"{p}stale_cancellations_total",
            "Orders cancelled by nija_broker for being stale.",
            by_account,
            registry=r,
        )
        self.guard_blocks = Counter(
            f"{p}guard_blocks_total",
            "Entries the guard blocked, by rule.",
            ["account", "rule"],
            registry=r,
        )
        self.exchange_errors = Counter(
            f"{p}exchange_errors_total",
            "Exchange errors, by kind.",
            ["account", "kind"],
            registry=r,
        )
        self.sync_cycle_seconds = Histogram(
            f"{p}sync_cycle_seconds",
            "Wall time of one reconciliation cycle.",
            by_account,
            buckets=SYNC_CYCLE_BUCKETS_S,
            registry=r,
        )
        self._gauges = (
            self.equity_usd,
            self.open_orders,
            self.held_capital_usd,
            self.fragmentation_ratio,
            self.drawdown_pct,
            self.max_drawdown_pct,
        )
        self._refreshed: set[str] = set()

    # ------------------------------------------------------------------ gauges

    def refresh(self, books: Books, lives: Mapping[str, AccountLive], now: datetime) -> None:
        """Set every gauge from each account's own book; drop series of accounts gone."""
        rows = status_rows(books, lives, now)
        seen = {row.account_id for row in rows}
        for gone in self._refreshed - seen:
            for gauge in self._gauges:
                _remove(gauge, gone)
        for row in rows:
            a = row.account_id
            self.open_orders.labels(a).set(row.open_orders)
            self.held_capital_usd.labels(a).set(row.held_capital_usd)
            self.drawdown_pct.labels(a).set(row.drawdown_pct)
            self.max_drawdown_pct.labels(a).set(row.max_drawdown_pct)
            if row.equity_usd is None:
                # Unknown is an absent series, not a zero an alert would fire on.
                _remove(self.equity_usd, a)
                _remove(self.fragmentation_ratio, a)
            else:
                self.equity_usd.labels(a).set(row.equity_usd)
                self.fragmentation_ratio.labels(a).set(_ratio(row.held_capital_usd, row.equity_usd))
            # Counters start at 0 for every known account, so rate() works from the start.
            for counter in (self.fills, self.cancellations, self.stale_cancellations):
                counter.labels(a)
        self._refreshed = seen

    # ------------------------------------------------------------------ events

    def record_fill(self, account: str) -> None:
        self.fills.labels(_account(account)).inc()

    def record_cancellation(self, account: str, stale: bool) -> None:
        """A cancelled order; a stale one counts in both counters."""
        self.cancellations.labels(_account(account)).inc()
        if stale:
            self.stale_cancellations.labels(account).inc()

    def record_guard_block(self, account: str, rule: str) -> None:
        self.guard_blocks.labels(_account(account), rule).inc()

    def record_exchange_error(self, account: str, kind: str) -> None:
        self.exchange_errors.labels(_account(account), kind).inc()

    def observe_sync_cycle(self, account: str, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"sync cycle time must be finite seconds >= 0, got {seconds!r}")
        self.sync_cycle_seconds.labels(_account(account)).observe(seconds)

    # ------------------------------------------------------------------ exposition

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _ratio(held_usd: float, equity_usd: float) -> float:
    if equity_usd > 0:
        return held_usd / equity_usd
    return math.inf if held_usd > 0 else 0.0


def _account(account: str) -> str:
    if not account.strip():
        raise ValueError(f"account must not be empty, got {account!r}")
    return account


def _remove(gauge: Gauge, account: str) -> None:
    with contextlib.suppress(KeyError):  # never set for this account
        gauge.remove(account)
