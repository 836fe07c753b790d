"""What changed on the engine, pushed to subscribers: the feed the emulator's streams speak from.

Every change an account's orders or balances go through is queued here as an
:data:`EngineEvent` while the engine works, and handed to every subscriber once the
engine call that made it returns (so a callback never sees the engine half-way through
a match, and may call the engine again: what that call changes is delivered after).
Events come in the order the changes happened, each once, numbered by ``seq``.

Nothing is queued while nobody listens, so an engine without subscribers pays nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from nija_broker.core.models import Balance, Fill, Order

from ._state import OrderFlags, SimAccount, SimOrder

logger = logging.getLogger(__name__)


class OrderChange(StrEnum):
    """What happened to an order."""

    NEW = "new"
    """Accepted and listed (before anything fills)."""
    TRIGGERED = "triggered"
    """A stop or take-profit reached its trigger and now works as a limit or market order."""
    TRADE = "trade"
    """A fill was booked; :attr:`OrderChanged.fill` is it."""
    CANCEL_PENDING = "cancel_pending"
    """A cancel was accepted but has not taken effect (the order stays open)."""
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    """Time in force, liquidity or self-trade prevention ended it (see its flags)."""
    REJECTED = "rejected"
    """Accepted, then dropped by the exchange (a stop-market buy that can no longer pay)."""


@dataclass(frozen=True, slots=True)
class OrderChanged:
    """An order after one change."""

    seq: int
    timestamp: datetime
    change: OrderChange
    order: Order
    """The order's snapshot right after this change."""
    flags: OrderFlags
    fill: Fill | None = None
    """The fill booked by this change (``change`` is TRADE), with trade id and fee."""
    maker: bool | None = None
    """Whether :attr:`fill` added liquidity; ``None`` without a fill."""


@dataclass(frozen=True, slots=True)
class Deposit:
    currency: str
    amount: float


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    """An account's balances after a change that moved any of them."""

    seq: int
    timestamp: datetime
    balances: Mapping[str, Balance]
    """Every balance of the account after the change."""
    changed: tuple[str, ...]
    """The currencies whose free, used or total moved, sorted."""
    deposit: Deposit | None = None
    """Set when the change was a deposit (not an order's hold, fill or release)."""


EngineEvent = OrderChanged | BalanceChanged
Subscriber = Callable[[str, EngineEvent], None]
"""Called with ``(account_id, event)``."""


class EventHub:
    """Subscribers, the queue of what changed, and each account's balances as last told."""

    def __init__(self, *, now: Callable[[], datetime]) -> None:
        self._now = now
        self._subscribers: list[Subscriber] = []
        self._queue: deque[tuple[str, EngineEvent]] = deque()
        self._told: dict[str, dict[str, Balance]] = {}
        self._seq = 0
        self._flushing = False

    @property
    def listening(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, callback: Subscriber, accounts: Mapping[str, SimAccount]) -> None:
        if not self._subscribers:
            # Balances are compared with what subscribers were last told: start from now.
            self._told = {aid: account.balances() for aid, account in accounts.items()}
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling ``callback``; unsubscribing twice is harmless."""
        if callback in self._subscribers:
            self._subscribers.remove(callback)
        if not self._subscribers:
            self._told.clear()
            self._queue.clear()

    def order_changed(
        self,
        account: SimAccount,
        order: SimOrder,
        change: OrderChange,
        fill: Fill | None = None,
        *,
        maker: bool | None = None,
    ) -> None:
        """Queue ``order``'s change, then its account's balances if that moved them."""
        if not self._subscribers:
            return
        event = OrderChanged(
            seq=self._next_seq(),
            timestamp=self._now(),
            change=change,
            order=order.snapshot(),
            flags=order.flags,
            fill=fill,
            maker=maker,
        )
        self._queue.append((account.account_id, event))
        self.balances_moved(account)

    def balances_moved(self, account: SimAccount, deposit: Deposit | None = None) -> None:
        """Queue the account's balances if they differ from what subscribers were last told."""
        if not self._subscribers:
            return
        now = account.balances()
        before = self._told.get(account.account_id, {})
        changed = tuple(sorted(c for c in set(now) | set(before) if now.get(c) != before.get(c)))
        if not changed:
            return
        self._told[account.account_id] = now
        event = BalanceChanged(
            seq=self._next_seq(),
            timestamp=self._now(),
            balances=now,
            changed=changed,
            deposit=deposit,
        )
        self._queue.append((account.account_id, event))

    def flush(self) -> None:
        """Deliver what is queued, in order; a flush from inside a callback defers to this one."""
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._queue:
                account_id, event = self._queue.popleft()
                for callback in list(self._subscribers):
                    try:
                        callback(account_id, event)
                    except Exception:
                        # A subscriber's bug must not undo or stop the engine's change.
                        logger.exception("engine event subscriber %r failed", callback)
        finally:
            self._flushing = False

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
