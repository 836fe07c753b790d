"""The seed's records (``OrderInfo``, ``TradeRecord`` and the stats the trackers return),
and their conversion to and from the project's models.

The seed's records are plain mutable dataclasses with the seed's fields; the bot
builds them with naive local times and its own symbols (``BTC-USD``,
``XXBTZUSD``, ``BTCUSDT``). Converting one to a model resolves the symbol to
the unified ``BASE/QUOTE`` and keeps the caller's form, so it is echoed back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from nija_broker.core import models
from nija_broker.core.models import AccountMetrics, Order, OrderRole, OrderStatus, OrderType
from nija_broker.core.order_figures import held_capital
from nija_broker.core.symbols import resolve_symbol, to_dash

# Seed field names for the errors the models raise with their own names.
_SEED_NAMES = {"id": "order_id", "amount": "quantity", "declared_reserve": "reserved_capital"}

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
    "open": OrderStatus.OPEN,
    "pending": OrderStatus.PENDING,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "cancelled": OrderStatus.CANCELLED,
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


def aware(value: datetime) -> datetime:
    """The seed stamps times with naive ``datetime.now()``: local time."""
    return value.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def seed_errors(what: str) -> Iterator[None]:
    """Turn a model's ``ValidationError`` into a ``ValueError`` naming the seed's fields."""
    try:
        yield
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            field = ".".join(_SEED_NAMES.get(str(p), str(p)) for p in err["loc"]) or what
            problems.append(f"{field}: {err['msg']} (value: {err.get('input')!r})")
        raise ValueError(f"invalid {what}: " + "; ".join(problems)) from None


def check_reserve(order_id: str, value: object) -> float | None:
    """A declared reservation: ``None`` (computed) or finite money >= 0."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(
            f"invalid OrderInfo: reserved_capital: must be money >= 0 or None "
            f"(order {order_id!r}, value: {value!r})"
        )
    return float(value)


def resolve(symbol: object, markets: Mapping[str, str] | None, what: str) -> str:
    try:
        return resolve_symbol(symbol, markets)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"invalid {what}: symbol: {exc}") from None


# ---------------------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a record read from a tracker writes what the seed's callers write to it."""

    declare: Callable[[str, float | None], None]


@dataclass
class OrderInfo:
    """The seed's order record.

    ``reserved_capital`` is the capital the caller declares the order holds
    (``None``: computed, DESIGN's remaining x price + fee). Records read from a
    tracker (``get_open_orders``, ``orders_by_account``) are views: setting
    ``reserved_capital`` on one changes the tracked order; other fields change
    only through the tracker's methods.
    """

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
    reserved_capital: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        binding: Binding | None = self.__dict__.get("_binding")
        if binding is not None:
            if name != "reserved_capital":
                raise AttributeError(
                    f"order {self.order_id!r} of {self.account_id!r} was read from the tracker: "
                    f"its {name} changes through mark_order_filled / mark_order_cancelled or "
                    "the exchange, not by assignment"
                )
            value = check_reserve(self.order_id, value)
            binding.declare(self.order_id, value)
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # A copy (copy.deepcopy, pickle) is a plain record, not a view of the tracker.
        return {k: v for k, v in self.__dict__.items() if k != "_binding"}

    def bind(self, binding: Binding) -> OrderInfo:
        object.__setattr__(self, "_binding", binding)
        return self

    def age_seconds(self) -> float:
        return (now() - aware(self.created_at)).total_seconds()

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

    def to_order(self, markets: Mapping[str, str] | None = None) -> Order:
        """The model of this order; the symbol resolved through ``markets`` or the aliases."""
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
        symbol = resolve(self.symbol, markets, "OrderInfo")
        order_type, role = kind
        if role is None:
            role = OrderRole.ENTRY if str(self.side).lower() == "buy" else OrderRole.EXIT
        stop = order_type in (OrderType.STOP, OrderType.TAKE_PROFIT)
        changed = self.filled_at or self.cancelled_at
        with seed_errors("OrderInfo"):
            amount = self.quantity
            return Order(
                id=self.order_id,
                account_id=self.account_id,
                symbol=symbol,
                side=str(self.side).lower(),
                type=order_type,
                role=role,
                price=None if stop else self.price,
                stop_price=self.price if stop else None,
                amount=amount,
                filled=amount if status is OrderStatus.FILLED else 0.0,
                status=status,
                created_at=aware(self.created_at),
                updated_at=aware(changed) if changed else None,
                parent_position_id=self.parent_position_id,
                declared_reserve=self.reserved_capital,
                caller_symbol=self.symbol,
            )


def reserved_now(order: Order, fee_rate: float, last_prices: Mapping[str, float]) -> float:
    """What one order holds now: its declared reservation, pro rata to what is left to
    fill, else DESIGN's figure; nothing once it is terminal."""
    if order.status.is_terminal:
        return 0.0
    if order.declared_reserve is not None:
        return order.declared_reserve * (order.remaining / order.amount)
    return held_capital([order], fee_rate=fee_rate, last_prices=last_prices).total


def seed_type(order: Order) -> str:
    if order.role is OrderRole.TARGET:
        return "target"
    if order.role is OrderRole.STOP:
        return "stop"
    return "market" if order.type is OrderType.MARKET else "limit"


def info_from_order(order: Order, reserved: float) -> OrderInfo:
    """The seed's record of ``order``; ``reserved``: what it holds now (0 once terminal)."""
    price = order.reference_price or order.average or 0.0
    status = order.status.value if order.status is not OrderStatus.PARTIALLY_FILLED else "open"
    return OrderInfo(
        order_id=order.id,
        account_id=order.account_id,
        symbol=order.caller_symbol or to_dash(order.symbol),
        side=order.side.value,
        price=price,
        quantity=order.amount,
        size_usd=order.amount * price,
        status=status,
        created_at=order.created_at,
        filled_at=order.updated_at if order.status is OrderStatus.FILLED else None,
        cancelled_at=order.updated_at if order.status is OrderStatus.CANCELLED else None,
        order_type=seed_type(order),
        parent_position_id=order.parent_position_id,
        reserved_capital=reserved,
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


# ---------------------------------------------------------------------------- trades


@dataclass
class TradeRecord:
    """The seed's round trip. ``risk_usd`` (money at risk at entry) is optional and ours:
    with it, ``expectancy_per_dollar_risked`` is known."""

    trade_id: str
    account_id: str
    symbol: str
    side: str
    entry_price: float
    exit_price: float
    quantity: float
    size_usd: float
    pnl: float
    pnl_pct: float
    fees: float
    net_pnl: float
    entry_time: datetime
    exit_time: datetime
    hold_time_seconds: float
    is_win: bool
    risk_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["entry_time"] = self.entry_time.isoformat()
        data["exit_time"] = self.exit_time.isoformat()
        if data["risk_usd"] is None:
            del data["risk_usd"]  # the seed's dict has exactly the seed's keys
        return data

    def to_model(self, markets: Mapping[str, str] | None = None) -> models.TradeRecord:
        symbol = resolve(self.symbol, markets, "TradeRecord")
        with seed_errors("TradeRecord"):
            return models.TradeRecord(
                trade_id=self.trade_id,
                account_id=self.account_id,
                symbol=symbol,
                side=str(self.side).lower(),
                entry_price=self.entry_price,
                exit_price=self.exit_price,
                quantity=self.quantity,
                size_usd=self.size_usd,
                pnl=self.pnl,
                pnl_pct=self.pnl_pct,
                fees=self.fees,
                net_pnl=self.net_pnl,
                entry_time=aware(self.entry_time),
                exit_time=aware(self.exit_time),
                hold_time_seconds=self.hold_time_seconds,
                is_win=self.is_win,
                risk_usd=self.risk_usd,
                caller_symbol=self.symbol,
            )

    @classmethod
    def from_model(cls, trade: models.TradeRecord) -> TradeRecord:
        return cls(
            trade_id=trade.trade_id,
            account_id=trade.account_id,
            symbol=trade.caller_symbol or to_dash(trade.symbol),
            side=trade.side.value,
            entry_price=trade.entry_price,
            exit_price=trade.exit_price,
            quantity=trade.quantity,
            size_usd=trade.size_usd or 0.0,
            pnl=trade.pnl,
            pnl_pct=trade.pnl_pct or 0.0,
            fees=trade.fees,
            net_pnl=trade.net,
            entry_time=trade.entry_time,
            exit_time=trade.exit_time,
            hold_time_seconds=trade.hold_time_seconds or 0.0,
            is_win=bool(trade.is_win),
            risk_usd=trade.risk_usd,
        )


@dataclass
class AccountPerformanceMetrics:
    """The seed's metrics record, filled from :class:`~nija_broker.core.models.AccountMetrics`.

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
            account_id=m.account_id,
            total_trades=m.total_trades,
            winning_trades=m.winning_trades,
            losing_trades=m.losing_trades,
            win_rate=m.win_rate,
            total_pnl=m.total_pnl + m.total_fees,
            total_fees=m.total_fees,
            net_pnl=m.total_pnl,
            average_win=m.average_win,
            average_loss=m.average_loss,
            largest_win=m.largest_win,
            largest_loss=m.largest_loss,
            expectancy=m.expectancy,
            expectancy_per_trade=m.expectancy,
            expectancy_per_dollar_risked=m.expectancy_per_dollar_risked,
            peak_balance=m.peak_balance,
            current_balance=m.current_balance,
            current_drawdown=m.current_drawdown,
            current_drawdown_pct=m.current_drawdown_pct,
            max_drawdown=m.max_drawdown,
            max_drawdown_pct=m.max_drawdown_pct,
            current_streak=m.current_win_streak or -m.current_loss_streak,
            max_win_streak=m.max_win_streak,
            max_loss_streak=m.max_loss_streak,
            profit_factor=m.profit_factor,
            sharpe_ratio=m.sharpe_ratio or 0.0,
            sharpe_annualized=m.sharpe_annualized,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
