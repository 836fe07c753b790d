"""Settings of the guard and the reconciler: plain values, checked on construction.

They live in the core so that the config (which builds them from TOML) and the
components (which read them) both depend on this module rather than on each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nija_broker.core.clock import DEFAULT_CALL_TIMEOUT_S

__all__ = ["GuardSettings", "ReconcilerSettings"]


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """How long reservations live, what counts as dust, when a missing order is believed."""

    reservation_ttl_s: float = 30.0
    """An in-flight reservation stops counting this long after it was made, if nobody
    confirmed or released it (a bot in another process that died mid-order)."""
    settle_max_s: float = 600.0
    """A confirmed entry counts for at most this long before the account's state shows it."""
    dust_usd: float = 1.0
    """Holdings worth less than this are not positions."""
    not_found_grace_s: float = 60.0
    """An intent the exchange does not know is released only once it is this old, and a
    confirmed entry whose order the exchange has answered "no such order" for only once
    it has done so this long: a just-placed order may not be visible yet."""
    fee_rate: float | None = None
    """Fee reserved on top of an entry's value; ``None`` uses the order book's fee rate."""

    def __post_init__(self) -> None:
        for name in ("reservation_ttl_s", "settle_max_s", "not_found_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not self.dust_usd >= 0:
            raise ValueError(f"dust_usd must be >= 0, got {self.dust_usd!r}")
        if self.fee_rate is not None and not 0 <= self.fee_rate < 1:
            raise ValueError(f"fee_rate must be in [0, 1), got {self.fee_rate!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerSettings:
    """How often and how hard the reconciler works. Per-account intervals override."""

    poll_interval_s: float = 5.0
    jitter: float = 0.1
    """Each wait is the interval times a factor in [1 - jitter, 1 + jitter]."""
    balance_interval_s: float = 60.0
    """Balances, tickers and the closed-orders sweep, on their own cadence."""
    full_listing_interval_s: float = 300.0
    """Where listing the open orders of each symbol an account has orders on is cheaper
    than one listing of every symbol (Binance: 6 weight a symbol against 80), the
    reconciler lists those symbols each cycle, and every symbol at start-up and every
    ``full_listing_interval_s``: that is what finds an order placed outside the guard on
    a symbol the account had no order on, so such an order is adopted within this long.

    Why 300 s: Binance, 5 s polls, 60 s balances, orders on two symbols. Each minute:
    12 cycles x 2 x 6 = 144 for the listings, 20 + 2 for the balance and its tickers, 2 x
    20 for the closed-orders sweep (allOrders needs a symbol): 206. A full listing
    replaces its cycle's per-symbol ones, 80 - 12 = 68 more each time: 68 x 60 / 300 =
    13.6 a minute, 220 in all: of the 250 an account may spend for one IP (6,000 a
    minute) to carry 24 accounts, 30 are left for what only changes cost (4 to confirm a
    vanished order, 5 for its trades). At 120 s it would be 240, too close to 250 to
    leave room for fills. The price: a foreign order on a new symbol waits up to five
    minutes, which no invariant needs sooner (absence is never evidence, and orders the
    guard saw are followed by id at once). Accounts whose tier forbids DCA also read
    the balance every cycle (20 each on Binance), which no listing plan can save."""
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    """The one deadline of every exchange call, its retries included (the adapter's too)."""
    startup_concurrency: int = 16
    """Accounts of one exchange whose start-up sync runs at once; the others stay
    ``syncing`` until a slot frees (each request is still paced by the exchange's budget)."""
    confirm_budget: int = 20
    """``fetch_order`` calls per cycle to confirm vanished orders (startup: unlimited)."""
    attention_after: int = 5
    """Failed confirmations of one order before an attention event."""
    visibility_window_s: float = 10.0
    """How long a new order may be invisible to queries; intents are released after it."""
    stale_cancel_budget: int = 10
    """Stale-order cancels per cycle."""
    failed_after: int = 5
    """Consecutive failed cycles before the account is ``failed`` (unknown state)."""
    max_backoff_s: float = 300.0
    fatal_retry_s: float = 300.0
    """Wait after refused keys before trying again (someone may fix them)."""
    sweep_lookback_s: float = 86_400.0
    """How far back the first closed-orders sweep after startup looks."""
    shutdown_timeout_s: float = 5.0
    seed: int = 0
    """Seeds each account's jitter, so a run is reproducible."""
    poll_interval_by_account: Mapping[str, float] = field(default_factory=dict)
    balance_interval_by_account: Mapping[str, float] = field(default_factory=dict)
    full_listing_interval_by_account: Mapping[str, float] = field(default_factory=dict)
    watch_symbols_by_account: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Symbols the closed-orders sweep always covers, besides those the account touched."""
    stream_poll_interval_s: float = 30.0
    """The open-orders poll's interval while the account's stream is up: the poll is then
    the safety net (what a stream missed), not the news."""
    stream_poll_interval_by_account: Mapping[str, float] = field(default_factory=dict)
    stream_settle_s: float = 1.0
    """A stream that has not failed this long after it subscribed counts as up."""
    stream_backoff_initial_s: float = 1.0
    stream_backoff_max_s: float = 60.0
    """Reconnects back off from the first to the second, doubling, with jitter."""

    def __post_init__(self) -> None:
        for name in (
            "poll_interval_s",
            "balance_interval_s",
            "full_listing_interval_s",
            "call_timeout_s",
            "shutdown_timeout_s",
            "max_backoff_s",
            "fatal_retry_s",
            "stream_poll_interval_s",
            "stream_settle_s",
            "stream_backoff_initial_s",
            "stream_backoff_max_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1), got {self.jitter!r}")
        for name in (
            "confirm_budget",
            "attention_after",
            "stale_cancel_budget",
            "failed_after",
            "startup_concurrency",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for account_id, value in self.full_listing_interval_by_account.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"full_listing_interval_s of {account_id!r} must be a finite number of "
                    f"seconds > 0, got {value!r}"
                )
        for name in ("visibility_window_s", "sweep_lookback_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")

    def poll_interval_for(self, account_id: str) -> float:
        return self.poll_interval_by_account.get(account_id, self.poll_interval_s)

    def balance_interval_for(self, account_id: str) -> float:
        return self.balance_interval_by_account.get(account_id, self.balance_interval_s)

    def full_listing_interval_for(self, account_id: str) -> float:
        return self.full_listing_interval_by_account.get(account_id, self.full_listing_interval_s)

    def stream_poll_interval_for(self, account_id: str) -> float:
        return self.stream_poll_interval_by_account.get(account_id, self.stream_poll_interval_s)
