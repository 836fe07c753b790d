"""One request budget per exchange, shared by every account that trades there.

ccxt's own limiter lives in each exchange *instance*, so twenty accounts on
Binance would each believe they own Binance's whole limit. Exchanges limit
per IP as well as per key, so the sum must stay inside the limit: every
:class:`~adapters.ccxt_adapter.CcxtExchange` on one exchange id draws from the
same :class:`RateBudget`.

The bucket reserves tokens at once and lets the balance go negative; the
caller then sleeps for its share of the deficit. That keeps callers in
arrival order without a lock (an ``asyncio.Lock`` is bound to one event loop,
and the registry outlives loops in tests and in the embedded runtime).
"""

from __future__ import annotations

from typing import ClassVar

from nija_broker.core.clock import Clock, SystemClock


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
        if rate_per_s <= 0:
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
        if cost > self.capacity:
            raise ValueError(f"cost {cost} exceeds the bucket's capacity {self.capacity}")
        self._refill()
        self._tokens -= cost
        self.acquired += cost
        if self._tokens < 0:
            await self._clock.sleep(-self._tokens / self.rate_per_s)

    def __repr__(self) -> str:
        return f"RateBudget(rate_per_s={self.rate_per_s:g}, capacity={self.capacity:g})"
