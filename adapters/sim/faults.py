"""Seeded fault injection: the ways a real exchange API fails, on demand and reproducibly.

Each call's fate depends only on the plan's seed, the method name and how many
times that method was called before, so concurrent calls of different methods
can interleave in any order without changing which call fails.

Pushed stream messages (the emulator's user data streams) fail their own ways
(:class:`StreamFaultKind`: dropped, stalled, duplicated, reordered, the stream
closed), under their own plan (:class:`StreamFaultPlan`, :class:`StreamFaultInjector`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

from nija_broker.core.clock import Clock


class FaultKind(StrEnum):
    TIMEOUT = "timeout"
    """No answer; the request did not reach the matching engine."""
    RATE_LIMIT = "rate_limit"
    """HTTP 429 / 418; nothing was done."""
    SERVER_ERROR = "server_error"
    """HTTP 5xx; nothing was done."""
    LOST_RESPONSE = "lost_response"
    """The request took effect, but the answer never came back: the caller sees a timeout."""
    TRUNCATED_PAGE = "truncated_page"
    """A listing answered with only part of its items."""
    LATENCY = "latency"
    """The answer is correct but late by ``FaultPlan.latency_s``."""


ALL_FAULTS = frozenset(FaultKind)
LISTING_METHODS = frozenset({"fetch_open_orders"})
"""Methods whose answer is a list the exchange can cut short; only they get TRUNCATED_PAGE."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How often and how calls fail. The default plan injects nothing."""

    rate: float = 0.0
    """Probability that one call is faulted."""
    kinds: frozenset[FaultKind] = ALL_FAULTS
    seed: int = 0
    latency_s: float = 0.0
    """Delay of a LATENCY fault, on the injected clock."""
    hidden_after_create_s: float = 0.0
    """A new order is missing from the open list (and unknown to fetch_order) this long.

    Binance documents that a freshly placed order may not yet show in queries
    ("order does not exist", code -2013) while its matching engine catches up.
    """
    methods: frozenset[str] | None = None
    """Methods that may be faulted; ``None`` means every method."""
    base_latency_s: float = 0.0
    """Delay of every call, faulted or not, on the injected clock."""
    timeout_s: float = 0.0
    """How long a TIMEOUT or LOST_RESPONSE keeps the caller waiting before it fails."""

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {self.rate!r}")
        for name in ("latency_s", "hidden_after_create_s", "base_latency_s", "timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")


class FaultInjector:
    """Decides, call by call, whether and how a call fails."""

    def __init__(self, plan: FaultPlan, clock: Clock) -> None:
        self.plan = plan
        self.clock = clock
        self.calls: Counter[str] = Counter()
        """Calls seen per method, faulted ones included."""
        self.injected: Counter[FaultKind] = Counter()
        """Faults handed out, per kind."""

    def set_plan(self, plan: FaultPlan) -> None:
        """Switch plans; call counts carry on, so decisions stay a function of the history."""
        self.plan = plan

    def disable(self) -> None:
        """No more faults (nor hidden orders or delays) from here on."""
        self.plan = FaultPlan(seed=self.plan.seed)

    def next(self, method: str) -> FaultKind | None:
        """Count a call of ``method`` and return the fault it suffers, if any."""
        self.calls[method] += 1
        plan = self.plan
        if plan.rate <= 0 or (plan.methods is not None and method not in plan.methods):
            return None
        kinds = sorted(
            kind
            for kind in plan.kinds
            if kind is not FaultKind.TRUNCATED_PAGE or method in LISTING_METHODS
        )
        if not kinds:
            return None
        # A fresh generator per (seed, method, call number): string seeds hash with
        # SHA-512, so the decision is the same in every process, whatever else ran first.
        rng = random.Random(f"{plan.seed}:{method}:{self.calls[method]}")
        if rng.random() >= plan.rate:
            return None
        kind = rng.choice(kinds)
        self.injected[kind] += 1
        return kind

    def is_hidden(self, age_s: float) -> bool:
        """Whether an order this many seconds old is still invisible to queries."""
        return age_s < self.plan.hidden_after_create_s


# ------------------------------------------------------------------ streams


class StreamFaultKind(StrEnum):
    """The ways a pushed stream message goes wrong between the exchange and the client."""

    DROP = "drop"
    """The message is never sent."""
    STALL = "stall"
    """The message, and every one after it, is held ``StreamFaultPlan.hold_s``, then all go
    out in order."""
    DUPLICATE = "duplicate"
    """The message is sent twice."""
    REORDER = "reorder"
    """The message is held until the next one has gone out (or ``hold_s`` passed)."""
    CLOSE = "close"
    """The stream ends: ``eventStreamTerminated`` is sent, then the connection closes; the
    message itself is lost with it."""
    DISCONNECT = "disconnect"
    """The connection closes without a word; the message is lost."""


ALL_STREAM_FAULTS = frozenset(StreamFaultKind)


@dataclass(frozen=True, slots=True)
class StreamFaultPlan:
    """How often and how pushed messages fail. The default plan injects nothing."""

    rate: float = 0.0
    """Probability that one pushed message is faulted."""
    kinds: frozenset[StreamFaultKind] = ALL_STREAM_FAULTS
    seed: int = 0
    hold_s: float = 1.0
    """How long a STALL holds messages, and the longest a REORDER waits for a message to
    swap with; on the injected clock."""
    accounts: frozenset[str] | None = None
    """Accounts whose messages may be faulted; ``None`` means every account."""

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {self.rate!r}")
        if self.hold_s < 0:
            raise ValueError(f"hold_s must not be negative, got {self.hold_s!r}")


class StreamFaultInjector:
    """Decides, message by message, whether and how a pushed message fails.

    A message's fate depends only on the plan's seed, its account and how many messages
    were pushed to that account before, so what one account's stream suffers does not
    depend on the traffic of the others. :meth:`force` queues faults for the very next
    messages, whatever the plan says, for tests that want one fault at one place.
    """

    def __init__(self, plan: StreamFaultPlan | None = None) -> None:
        self.plan = plan or StreamFaultPlan()
        self.messages: Counter[str] = Counter()
        """Messages pushed per account, faulted ones included."""
        self.injected: Counter[StreamFaultKind] = Counter()
        """Faults handed out, per kind."""
        self._forced: list[StreamFaultKind] = []

    def set_plan(self, plan: StreamFaultPlan) -> None:
        """Switch plans; message counts carry on, so decisions stay a function of history."""
        self.plan = plan

    def disable(self) -> None:
        """No more faults from here on (forced ones included)."""
        self.plan = StreamFaultPlan(seed=self.plan.seed, hold_s=self.plan.hold_s)
        self._forced.clear()

    def force(self, *kinds: StreamFaultKind) -> None:
        """The next ``len(kinds)`` pushed messages (of any account) suffer these, in order."""
        self._forced.extend(kinds)

    def next(self, account_id: str) -> StreamFaultKind | None:
        """Count a message pushed to ``account_id`` and return the fault it suffers, if any."""
        self.messages[account_id] += 1
        if self._forced:
            kind = self._forced.pop(0)
            self.injected[kind] += 1
            return kind
        plan = self.plan
        if plan.rate <= 0 or not plan.kinds:
            return None
        if plan.accounts is not None and account_id not in plan.accounts:
            return None
        rng = random.Random(f"{plan.seed}:stream:{account_id}:{self.messages[account_id]}")
        if rng.random() >= plan.rate:
            return None
        kind = rng.choice(sorted(plan.kinds))
        self.injected[kind] += 1
        return kind
