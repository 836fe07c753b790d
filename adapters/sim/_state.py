"""The engine's mutable bookkeeping. The outside world only ever sees frozen snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from nija_broker.core.models import Balance, Fill, Order, OrderRole, OrderStatus, OrderType, Side

from ._fees import QUOTE, FeeMode, plain_sum

TRIGGER_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT})

TIME_IN_FORCE = ("GTC", "IOC", "FOK")
"""Good till cancelled; immediate or cancel (fill what crosses, expire the rest); fill or
kill (all at once or expire with nothing)."""
STP_MODES = ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH")
"""Self-trade prevention: what expires when an order would trade with the same account's
resting order on the other side (Binance's ``selfTradePreventionMode``)."""


@dataclass(frozen=True, slots=True)
class OrderFlags:
    """What an order carries beyond :class:`~nija_broker.core.models.Order`, for the dialects."""

    time_in_force: str = "GTC"
    stp_mode: str = "NONE"
    expired_in_match: bool = False
    """Ended by self-trade prevention (Binance ``EXPIRED_IN_MATCH``); status EXPIRED."""
    cancel_pending: bool = False
    """A cancel was accepted but has not taken effect (Binance ``PENDING_CANCEL``): the
    order is still open and still holds its funds."""


@dataclass(slots=True)
class SimOrder:
    """One order as the engine keeps it; :meth:`snapshot` is what callers get."""

    seq: int
    account_id: str
    symbol: str
    base: str
    quote: str
    side: Side
    type: OrderType
    role: OrderRole
    amount: float
    price: float | None
    stop_price: float | None
    client_order_id: str | None
    reduce_only: bool
    created_at: datetime
    updated_at: datetime
    filled: float = 0.0
    cost: float = 0.0
    """Sum of amount x price over this order's fills, quote currency, fees excluded."""
    fee: float = 0.0
    """Sum of this order's fees valued in quote, whatever asset paid them."""
    status: OrderStatus = OrderStatus.OPEN
    triggered: bool = False
    time_in_force: str = "GTC"
    stp_mode: str = "NONE"
    expired_in_match: bool = False
    cancel_pending: bool = False
    _snapshot: Order | None = None

    @property
    def flags(self) -> OrderFlags:
        return OrderFlags(
            time_in_force=self.time_in_force,
            stp_mode=self.stp_mode,
            expired_in_match=self.expired_in_match,
            cancel_pending=self.cancel_pending,
        )

    @property
    def id(self) -> str:
        return str(self.seq)

    @property
    def remaining(self) -> float:
        return max(self.amount - self.filled, 0.0)

    @property
    def waits_for_trigger(self) -> bool:
        return self.type in TRIGGER_TYPES and not self.triggered

    @property
    def trigger_price(self) -> float:
        trigger = self.stop_price if self.stop_price is not None else self.price
        assert trigger is not None  # place_order refuses trigger orders without one
        return trigger

    @property
    def rest_price(self) -> float | None:
        """The limit price the order works at once live; ``None`` means it acts as market."""
        return None if self.type in (OrderType.MARKET, OrderType.STOP) else self.price

    def lock(self, fee_rate: float) -> tuple[str, float]:
        """The currency and amount this order holds while it is open.

        A buy holds ``reference price x remaining x (1 + fee_rate)`` of quote, so a
        fee charged in quote on the fill is always covered (``fee_rate`` is 0 for an
        account whose buys never pay fees in quote); a sell holds its remaining
        base. A terminal order holds nothing.
        """
        if not self.status.is_open:
            return (self.quote if self.side is Side.BUY else self.base, 0.0)
        if self.side is Side.SELL:
            return self.base, self.remaining
        reference = self.price if self.price is not None else self.stop_price
        if reference is None:
            # A market order: it fills (or fails) within the call that placed it, never rests.
            return self.quote, 0.0
        return self.quote, reference * self.remaining * (1 + fee_rate)

    @staticmethod
    def notional(amount: float, price: float) -> float:
        """``amount x price`` in decimal, so a fill's quote leg carries no float dust."""
        return float(Decimal(repr(amount)) * Decimal(repr(price)))

    def touch(self, now: datetime) -> None:
        """Record a change: the cached snapshot is stale from here on."""
        self.updated_at = now
        self._snapshot = None

    def snapshot(self) -> Order:
        if self._snapshot is None:
            self._snapshot = Order(
                id=self.id,
                client_order_id=self.client_order_id,
                account_id=self.account_id,
                symbol=self.symbol,
                side=self.side,
                type=self.type,
                role=self.role,
                price=self.price,
                stop_price=self.stop_price,
                amount=self.amount,
                filled=self.filled,
                average=self.cost / self.filled if self.filled > 0 else None,
                status=self.status,
                created_at=self.created_at,
                updated_at=self.updated_at,
                fee=self.fee,
                reduce_only=self.reduce_only,
            )
        return self._snapshot


@dataclass(slots=True)
class SimAccount:
    """Balances and orders of one account. ``totals`` move only on deposits and fills.

    ``hold_fee_rate`` is the fee share a resting buy holds on top of its cost,
    ``fee_mode`` says what pays the fees (:mod:`adapters.sim._fees`).
    ``totals`` are summed in decimal, so balances of clean decimal amounts
    stay clean. ``held`` is kept incrementally (a full recount per order placed would make
    placement quadratic in the number of open orders); it is reset to exact
    zeros whenever the account has no open order, so float dust cannot build up.
    """

    account_id: str
    hold_fee_rate: float
    fee_mode: FeeMode = QUOTE
    totals: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    orders: dict[int, SimOrder] = field(default_factory=dict)
    open: dict[int, SimOrder] = field(default_factory=dict)
    by_client_id: dict[str, SimOrder] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)

    def add(self, currency: str, amount: float) -> None:
        self.totals[currency] = plain_sum(self.totals.get(currency, 0.0), amount)

    def hold(self, order: SimOrder, sign: float = 1.0) -> None:
        """Add (``sign=-1``: take away) what ``order`` holds in its present state."""
        currency, amount = order.lock(self.hold_fee_rate)
        if amount:
            self.held[currency] = self.held.get(currency, 0.0) + sign * amount

    def list_open(self, order: SimOrder) -> None:
        self.orders[order.seq] = order
        self.open[order.seq] = order
        if order.client_order_id is not None:
            self.by_client_id[order.client_order_id] = order
        self.hold(order)

    def unlist(self, order: SimOrder) -> None:
        self.open.pop(order.seq, None)
        if not self.open:
            self.held.clear()

    def free_after(
        self, order: SimOrder, amount: float, price: float, currency: str, *, holding: bool
    ) -> float:
        """Free ``currency`` once a fill of ``amount`` at ``price`` of ``order`` is booked
        (fee aside) and the order's own hold let go; ``holding``: the order holds now."""
        free = self.free(currency)
        held_currency, held = order.lock(self.hold_fee_rate)
        if holding and held_currency == currency:
            free += held
        sign = 1.0 if order.side is Side.BUY else -1.0
        if currency == order.base:
            free += sign * amount
        elif currency == order.quote:
            free -= sign * order.notional(amount, price)
        return free

    def free(self, currency: str) -> float:
        """Unheld amount of ``currency``; may be a hair below zero from float dust."""
        return self.totals.get(currency, 0.0) - self.held.get(currency, 0.0)

    def balances(self) -> dict[str, Balance]:
        result: dict[str, Balance] = {}
        for currency in sorted(set(self.totals) | set(self.held)):
            # Clamp float dust (a fill that spends exactly the held amount can leave -1e-15).
            total = max(self.totals.get(currency, 0.0), 0.0)
            used = min(max(self.held.get(currency, 0.0), 0.0), total)
            result[currency] = Balance(
                currency=currency, free=max(total - used, 0.0), used=used, total=total
            )
        return result


@dataclass(frozen=True, slots=True)
class AccountTruth:
    """What one account really has on the simulated exchange, for tests to compare against."""

    account_id: str
    orders: tuple[Order, ...]
    """Every order ever accepted, oldest first."""
    open_orders: tuple[Order, ...]
    filled: dict[str, float]
    """Order id -> filled amount, for every order."""
    fills: tuple[Fill, ...]
    balances: dict[str, Balance]

    @property
    def open_ids(self) -> frozenset[str]:
        return frozenset(order.id for order in self.open_orders)
