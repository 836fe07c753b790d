"""What the reconciler tells the rest of the world, and the small bus that carries it.

Events are frozen values. Each names exactly one account (DESIGN invariant 1)
and the time it was decided (``at``, from the injected clock). An event is
published only after the change it describes reached the store (invariant 8),
so a subscriber never learns of something a restart would forget.

Order events carry the order after the change, the version before it
(``None`` for an adopted order) and the :class:`~nija_broker.core.models.Fill` the
change booked, if the filled amount grew.

The bus is deliberately small: one bounded queue per subscriber, filled
without ever blocking the publisher. A subscriber that falls behind loses its
oldest events (counted in ``dropped``) rather than stalling every account's
reconciliation; the store stays the complete record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from nija_broker.core.health import AccountHealth
from nija_broker.core.models import Fill, Order, OrderStatus, TradeRecord

__all__ = [
    "AccountPaused",
    "AccountResumed",
    "AttentionRequired",
    "BalancesUpdated",
    "BreakerResumed",
    "BreakerTripped",
    "Event",
    "EventBus",
    "FillsBooked",
    "HealthChanged",
    "IntentReleased",
    "IntentResolved",
    "OrderAdopted",
    "OrderCancelled",
    "OrderChanged",
    "OrderEvent",
    "OrderExpired",
    "OrderFilled",
    "OrderPartiallyFilled",
    "OrderRejected",
    "OrderVanished",
    "StaleOrderFound",
    "Subscription",
    "order_event",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    account_id: str
    at: datetime


# ----------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent(Event):
    """The exchange told us something new about one order."""

    order: Order
    previous: Order | None = None
    fill: Fill | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderAdopted(OrderEvent):
    """An order we did not know (placed by anyone else); its role was inferred."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPartiallyFilled(OrderEvent):
    """Still resting, with more filled than before."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderChanged(OrderEvent):
    """Still resting; something other than the filled amount changed (e.g. amended)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderFilled(OrderEvent):
    """Confirmed filled by the exchange."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled(OrderEvent):
    """Confirmed cancelled by the exchange (possibly after partial fills)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderExpired(OrderEvent):
    """Confirmed expired by the exchange."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRejected(OrderEvent):
    """Confirmed rejected by the exchange."""


_BY_STATUS: dict[OrderStatus, type[OrderEvent]] = {
    OrderStatus.FILLED: OrderFilled,
    OrderStatus.CANCELLED: OrderCancelled,
    OrderStatus.EXPIRED: OrderExpired,
    OrderStatus.REJECTED: OrderRejected,
}


def order_event(
    previous: Order | None, order: Order, fill: Fill | None, at: datetime
) -> OrderEvent:
    """The event class that says what happened between ``previous`` and ``order``."""
    if previous is None:
        cls: type[OrderEvent] = OrderAdopted
    elif order.status.is_terminal:
        cls = _BY_STATUS[order.status]
    elif fill is not None:
        cls = OrderPartiallyFilled
    else:
        cls = OrderChanged
    return cls(account_id=order.account_id, at=at, order=order, previous=previous, fill=fill)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderVanished(Event):
    """A tracked open order is missing from a complete open-orders list.

    Not evidence of anything (invariant 2): it only asks for a confirmation
    with ``fetch_order``. The order stays open until the exchange answers.
    """

    order: Order


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleOrderFound(Event):
    """An open order older than the tier's limit, and what was done about it."""

    order: Order
    max_age_s: float
    action: Literal["cancel", "alert"]


# ----------------------------------------------------------------------------- other


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentionRequired(Event):
    """Something the reconciler will not decide on its own; a human should look."""

    reason: str
    order_id: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FillsBooked(Event):
    """Fills booked into the ledger (once each) and the trades they closed."""

    fills: tuple[Fill, ...]
    trades: tuple[TradeRecord, ...]
    unmatched: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancesUpdated(Event):
    """Fresh balances and equity (in the account's quote currency). ``unpriced`` lists held
    currencies no price values, left out of equity. Not published when equity cannot be
    established (nothing valued, something unvalued): the account reports degraded instead."""

    equity_usd: float
    tier: str
    unpriced: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthChanged(Event):
    health: AccountHealth


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentResolved(Event):
    """A journaled submission was found on the exchange and its order recorded."""

    client_order_id: str
    order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentReleased(Event):
    """A journaled submission the exchange does not have, after its visibility window."""

    client_order_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTripped(Event):
    """A circuit breaker now blocks the account's entries (``rule``), with why."""

    rule: str
    reason: str
    figures: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerResumed(Event):
    """A circuit breaker stopped blocking: its figures recovered, its time ran out, or
    the trader resumed it (``manual``)."""

    rule: str
    reason: str
    figures: dict[str, object]
    manual: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPaused(Event):
    """A trader paused the account's entries (exits still pass): who, and why."""

    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountResumed(Event):
    """A trader lifted the account's pause: entries are judged by the rules again."""

    by: str


# ----------------------------------------------------------------------------- bus


class Subscription:
    """One subscriber's bounded queue; iterate it with ``async for``, end it with ``close``."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        """Events lost because this subscriber fell more than ``maxsize`` behind."""
        self._closed = False

    def _offer(self, event: Event | None) -> None:
        if self._closed and event is not None:
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                # Drop the oldest: the newest state matters most to a late reader.
                self._queue.get_nowait()
                self.dropped += 1

    def get_nowait(self) -> Event | None:
        """The next event, or ``None`` when nothing is waiting (or the bus closed)."""
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def drain(self) -> list[Event]:
        """Every event waiting now, oldest first."""
        found: list[Event] = []
        while (event := self.get_nowait()) is not None:
            found.append(event)
        return found

    async def get(self) -> Event | None:
        """Wait for the next event; ``None`` once the subscription or the bus is closed."""
        if self._closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._unsubscribe(self)
            self._offer(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Publish/subscribe on one event loop. ``publish`` never blocks and never raises."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []
        self.published = 0

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize!r}")
        subscription = Subscription(self, maxsize)
        self._subscribers.append(subscription)
        return subscription

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            self.published += 1
            for subscription in self._subscribers:
                subscription._offer(event)

    def close(self) -> None:
        """End every subscription: iterators finish once they have read what is queued."""
        for subscription in list(self._subscribers):
            subscription.close()

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
