"""The venue's rate limits, kept in the venue's own units, per IP and per key.

ccxt's own limiter lives in each exchange *instance*, so twenty accounts on
Binance would each believe they own Binance's whole limit. Binance limits
request *weight* per IP (``GET /api/v3/openOrders`` is 6 with a symbol, 80
without, against 6,000 a minute), so the sum must stay inside the limit: every
:class:`~adapters.ccxt_adapter.CcxtExchange` on one exchange id draws from the
same :class:`RateBudget`, spending each request's documented weight. Kraken
limits a counter per API key: there each account has its own budget.

:class:`AccountBudget` is one account's door to those budgets: it spends a
request's weight from the venue's budget (per IP, or per key) and from a second
one the venue counts per key beside it (Binance: new orders per account), and
remembers what this account spent in the last minute, for its status. With
``rate_budget = "off"`` (a local exchange) it waits for nothing and still counts.

The bucket reserves tokens at once and lets the balance go negative; the
caller then sleeps for its share of the deficit. That keeps callers in
arrival order without a lock (an ``asyncio.Lock`` is bound to one event loop,
and the registry outlives loops in tests and in the embedded runtime).
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import TYPE_CHECKING, ClassVar

from nija_broker.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from .profiles import RateProfile

__all__ = ["AccountBudget", "RateBudget"]


class RateBudget:
    """A token bucket on the injected clock: ``rate_per_s`` tokens a second, ``capacity`` burst.

    ``acquire(cost)`` returns once the caller may send a request costing
    ``cost`` tokens. Reserved tokens are not given back if the caller is
    cancelled while waiting: erring on the slow side is the safe side.
    """

    _registry: ClassVar[dict[str, RateBudget]] = {}

    def __init__(
        self, rate_per_s: float, *, capacity: float | None = None, clock: Clock | None = None
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s!r}")
        self.rate_per_s = float(rate_per_s)
        # One second's worth of requests as burst, and never less than one request.
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate_per_s)
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity!r}")
        self._clock: Clock = clock or SystemClock()
        self._tokens = self.capacity
        self._updated_s = self._clock.monotonic()
        self.acquired = 0.0
        """Tokens handed out so far (for tests and metrics)."""

    @classmethod
    def unlimited(cls, *, clock: Clock | None = None) -> RateBudget:
        """A budget that never waits (``rate_budget = "off"``: a local exchange); it still
        counts what was ``acquired``."""
        budget = cls(1.0, clock=clock)
        budget.rate_per_s = budget.capacity = math.inf
        budget._tokens = math.inf
        return budget

    @classmethod
    def from_rate_limit_ms(cls, rate_limit_ms: float, *, clock: Clock | None = None) -> RateBudget:
        """A budget from ccxt's ``exchange.rateLimit`` (milliseconds between requests)."""
        if rate_limit_ms <= 0:
            raise ValueError(f"rate_limit_ms must be positive, got {rate_limit_ms!r}")
        return cls(1000.0 / rate_limit_ms, clock=clock)

    @classmethod
    def for_exchange(
        cls,
        exchange_id: str,
        rate_per_s: float,
        *,
        clock: Clock | None = None,
        capacity: float | None = None,
    ) -> RateBudget:
        """The process-wide budget of ``exchange_id``; created on first use.

        Later callers get the first caller's budget whatever rate they pass:
        the limit belongs to the exchange, not to an account. (Where the limit
        is per API key, the key of the registry names the account too.)
        """
        budget = cls._registry.get(exchange_id)
        if budget is None:
            budget = cls(rate_per_s, clock=clock, capacity=capacity)
            cls._registry[exchange_id] = budget
        return budget

    @classmethod
    def forget(cls, exchange_id: str) -> None:
        """Drop ``exchange_id`` from the registry (the next ``for_exchange`` starts afresh)."""
        cls._registry.pop(exchange_id, None)

    def _refill(self) -> None:
        if math.isinf(self.rate_per_s):
            return
        now_s = self._clock.monotonic()
        elapsed_s = max(now_s - self._updated_s, 0.0)
        self._tokens = min(self.capacity, self._tokens + elapsed_s * self.rate_per_s)
        self._updated_s = now_s

    def available(self) -> float:
        """Tokens that could be spent right now without waiting (negative: a queue)."""
        self._refill()
        return self._tokens

    async def acquire(self, cost: float = 1.0) -> None:
        if cost <= 0:
            return
        if math.isinf(self.rate_per_s):
            self.acquired += cost
            return
        if cost > self.capacity:
            raise ValueError(f"cost {cost} exceeds the bucket's capacity {self.capacity}")
        self._refill()
        self._tokens -= cost
        self.acquired += cost
        if self._tokens < 0:
            await self._clock.sleep(-self._tokens / self.rate_per_s)

    def __repr__(self) -> str:
        return f"RateBudget(rate_per_s={self.rate_per_s:g}, capacity={self.capacity:g})"


_WINDOW_S = 60.0
"""How far back an account's spending is remembered: its status shows the last minute."""


class AccountBudget:
    """One account's requests against its venue's limits, and what it spent of them.

    ``bucket`` is the venue's budget this account draws from: shared by every
    account of the exchange where the venue limits per IP (Binance), its own where
    per key (Kraken). ``key_bucket`` is a second, per-key limit beside it (Binance's
    orders per account), spent only by the requests it counts. Each request's
    weight comes from the account's :class:`~adapters.profiles.RateProfile`.
    Runs on the event loop only.
    """

    def __init__(
        self,
        rate: RateProfile,
        bucket: RateBudget,
        *,
        key_bucket: RateBudget | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.rate = rate
        self.bucket = bucket
        self.key_bucket = key_bucket
        self._clock: Clock = clock or SystemClock()
        self._spent: collections.deque[tuple[float, float]] = collections.deque()
        self._spent_window = 0.0  # the sum of ``_spent``'s weights, kept as they come and go
        self.spent_total = 0.0
        """Weight spent since this budget was made (every request, in the venue's units)."""

    @classmethod
    def for_account(
        cls,
        rate: RateProfile,
        exchange_id: str,
        account_id: str,
        *,
        clock: Clock | None = None,
        rate_limit_ms: float | None = None,
        bucket: RateBudget | None = None,
        mode: str = "venue",
    ) -> AccountBudget:
        """The budgets of ``account_id`` on ``exchange_id``, from the process-wide registry.

        ``mode`` is the account's ``rate_budget``: ``venue`` keeps the profile's
        limits (a profile without its own rate takes ccxt's ``rateLimit``,
        ``rate_limit_ms``, at one unit a request); ``off`` waits for nothing. A given
        ``bucket`` (tests, a caller's own) stands in for all of the venue's limits:
        nothing is taken from the registry then.
        """
        if mode not in ("venue", "off"):
            raise ValueError(f"rate_budget must be 'venue' or 'off', got {mode!r}")
        if mode == "off":
            return cls(rate, bucket or RateBudget.unlimited(clock=clock), clock=clock)
        if bucket is not None:
            return cls(rate, bucket, clock=clock)
        rate_per_s = rate.rate_per_s or 1000.0 / (rate_limit_ms or 100.0)
        key = f"{exchange_id}:{account_id}" if rate.per_account else exchange_id
        bucket = RateBudget.for_exchange(key, rate_per_s, clock=clock, capacity=rate.capacity)
        key_bucket = None
        if rate.key_limit is not None and rate.key_limit.rate_per_s is not None:
            key_bucket = RateBudget.for_exchange(
                f"{exchange_id}:{account_id}:per-key",
                rate.key_limit.rate_per_s,
                clock=clock,
                capacity=rate.key_limit.capacity,
            )
        return cls(rate, bucket, key_bucket=key_bucket, clock=clock)

    async def spend(self, cost_key: str, count: int = 1) -> float:
        """Wait until one request of ``cost_key`` naming ``count`` symbols may go; its weight.

        The weight is counted as spent at once, before the request leaves, whether
        or not it reaches the venue (the safe side: the venue counts what arrives).
        """
        weight = self.rate.cost(cost_key, count)
        await self.bucket.acquire(min(weight, self.bucket.capacity))
        limit = self.rate.key_limit
        if self.key_bucket is not None and limit is not None:
            per_key = limit.cost(cost_key, count)
            await self.key_bucket.acquire(min(per_key, self.key_bucket.capacity))
        now_s = self._clock.monotonic()
        self._spent.append((now_s, weight))
        self._spent_window += weight
        self.spent_total += weight
        self._forget(now_s)
        return weight

    def weight_spent(self, window_s: float = _WINDOW_S) -> float:
        """Weight this account spent in the last ``window_s`` seconds (at most a minute)."""
        now_s = self._clock.monotonic()
        self._forget(now_s)
        if window_s >= _WINDOW_S:
            return self._spent_window  # read every cycle: no walk over the minute's requests
        since = now_s - window_s
        newest = itertools.takewhile(lambda entry: entry[0] > since, reversed(self._spent))
        return math.fsum(w for _, w in newest)

    def _forget(self, now_s: float) -> None:
        spent = self._spent
        while spent and spent[0][0] <= now_s - _WINDOW_S:
            self._spent_window -= spent.popleft()[1]
        if not spent:
            self._spent_window = 0.0  # no rounding left over from the weights gone

    def __repr__(self) -> str:
        return f"AccountBudget(bucket={self.bucket!r}, key_bucket={self.key_bucket!r})"
