"""Domain values. Frozen pydantic models: a change is a new value, never an edit in place.

Money is ``float`` (ccxt speaks floats); every price and amount is checked to be
finite, and amounts to be positive, at the boundary. Datetimes are aware UTC.
Symbols are stored as ``BASE/QUOTE``.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    computed_field,
    field_validator,
    model_validator,
)

from nija_broker.core.clock import utc
from nija_broker.core.symbols import base_of, normalize_symbol, quote_of


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TAKE_PROFIT = "take_profit"


class OrderRole(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    STOP = "stop"
    TARGET = "target"

    @property
    def is_entry(self) -> bool:
        return self is OrderRole.ENTRY

    @classmethod
    def infer(cls, side: Side, order_type: OrderType) -> OrderRole:
        """The role of an order nobody labelled (spot, long only).

        A buy opens or grows a position: an entry. A sell closes one: a stop if
        it triggers on a falling price, a target if it is a take-profit, else a
        plain exit.
        """
        if side is Side.BUY:
            return cls.ENTRY
        if order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            return cls.STOP
        return cls.TARGET if order_type is OrderType.TAKE_PROFIT else cls.EXIT


class OrderStatus(StrEnum):
    PENDING = "pending"
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def is_open(self) -> bool:
        return self in _OPEN_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self not in _LIVE_STATUSES


_OPEN_STATUSES = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})
_LIVE_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED})

# Which status may follow which. A status may always repeat (a replayed report).
LEGAL_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(OrderStatus),
    OrderStatus.OPEN: frozenset(OrderStatus) - {OrderStatus.PENDING},
    OrderStatus.PARTIALLY_FILLED: frozenset(OrderStatus)
    - {OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.REJECTED},
    OrderStatus.FILLED: frozenset({OrderStatus.FILLED}),
    OrderStatus.CANCELLED: frozenset({OrderStatus.CANCELLED}),
    OrderStatus.EXPIRED: frozenset({OrderStatus.EXPIRED}),
    OrderStatus.REJECTED: frozenset({OrderStatus.REJECTED}),
}


def _aware(value: datetime) -> datetime:
    return utc(value)


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError(f"must not be empty, got {value!r}")
    return value


UTCDateTime = Annotated[datetime, AfterValidator(_aware)]
NonBlank = Annotated[str, AfterValidator(_nonblank)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, use_enum_values=False)


# Frozen values never change which fields were set, so instances with the same
# set can share one: pydantic only copies this set before editing it. This
# halves the memory of each tracked order (thousands per account).
_FIELDS_SET_CACHE: dict[frozenset[str], set[str]] = {}


class _Model(BaseModel):
    model_config = _FROZEN

    def model_post_init(self, context: Any, /) -> None:
        fields_set = self.__pydantic_fields_set__
        key = frozenset(fields_set)
        shared = _FIELDS_SET_CACHE.get(key)
        if shared is None:
            shared = _FIELDS_SET_CACHE.setdefault(key, fields_set)
        object.__setattr__(self, "__pydantic_fields_set__", shared)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied."""
        data = self.model_dump(exclude=set(type(self).model_computed_fields))
        return type(self).model_validate({**data, **changes})


class Order(_Model):
    """One order on one account, as far as the exchange has told us."""

    id: NonBlank
    client_order_id: str | None = None
    account_id: NonBlank
    symbol: str
    side: Side
    type: OrderType = OrderType.LIMIT
    role: OrderRole = OrderRole.ENTRY
    price: PositiveFloat | None = None
    stop_price: PositiveFloat | None = None
    amount: PositiveFloat
    filled: NonNegativeFloat = 0.0
    average: PositiveFloat | None = None
    status: OrderStatus = OrderStatus.OPEN
    created_at: UTCDateTime
    updated_at: UTCDateTime | None = None
    parent_position_id: str | None = None
    fee: NonNegativeFloat = 0.0
    reduce_only: bool = False
    declared_reserve: NonNegativeFloat | None = None
    """Capital the caller said this order holds (the seed's ``reserved_capital``).
    Only :mod:`nija_broker.compat` reads it; DESIGN's held capital is always computed."""
    caller_symbol: str | None = None
    """The symbol as the caller wrote it (``XXBTZUSD``, ``BTC-USD``), echoed back by
    :mod:`nija_broker.compat`; ``symbol`` is always the unified ``BASE/QUOTE``."""

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))

    @model_validator(mode="after")
    def _check_amounts(self) -> Self:
        # A small tolerance absorbs float dust from exchanges' own rounding.
        if self.filled > self.amount * (1 + 1e-9):
            raise ValueError(
                f"filled ({self.filled}) must not exceed amount ({self.amount}) "
                f"for order {self.id!r}"
            )
        if self.type is OrderType.LIMIT and self.price is None:
            raise ValueError(f"price is required for a limit order (order {self.id!r})")
        if self.type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT) and (
            self.stop_price is None and self.price is None
        ):
            raise ValueError(f"stop_price is required for a {self.type} order (order {self.id!r})")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def remaining(self) -> float:
        return max(self.amount - self.filled, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def reference_price(self) -> float | None:
        """The price at which this order reserves funds: limit price, else trigger price."""
        return self.price if self.price is not None else self.stop_price

    @property
    def last_change(self) -> datetime:
        return self.updated_at or self.created_at


class Fill(_Model):
    """One execution, with the fee the exchange charged for it.

    ``fee`` is the fee valued in the quote currency. ``fee_currency`` and
    ``fee_cost`` say what the exchange actually took (``None``: the quote, and
    ``fee_cost == fee``). A fee in the base currency also changes what the
    account received or gave (:attr:`base_fee`); a fee in a third currency
    (BNB, KFEE) is valued at the fill, and when no price values it
    ``fee_valued`` is False: ``fee`` is then 0 and the fee stays in
    ``fee_cost`` / ``fee_currency``, never dropped.

    A fill is identified by (account, order id, trade id); exchanges that do
    not report trade ids are keyed by the order's cumulative filled amount.
    """

    account_id: NonBlank
    order_id: NonBlank
    trade_id: str | None = None
    symbol: str
    side: Side
    amount: PositiveFloat
    price: PositiveFloat
    fee: NonNegativeFloat = 0.0
    fee_currency: str | None = None
    fee_cost: NonNegativeFloat | None = None
    fee_valued: bool = True
    timestamp: UTCDateTime
    cumulative_filled: NonNegativeFloat | None = None
    role: OrderRole | None = None
    risk_usd: PositiveFloat | None = None

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))

    @model_validator(mode="after")
    def _check_key(self) -> Self:
        if self.trade_id is None and self.cumulative_filled is None:
            raise ValueError(
                f"fill of order {self.order_id!r} needs a trade_id or a cumulative_filled"
            )
        if self.fee_currency is not None and self.fee_currency != self.fee_currency.upper():
            object.__setattr__(self, "fee_currency", self.fee_currency.upper())
        if not self.fee_valued and (
            self.fee != 0.0 or not self.fee_cost or self.fee_currency is None
        ):
            raise ValueError(
                f"fill of order {self.order_id!r}: an unvalued fee is kept as fee_cost and "
                f"fee_currency with fee 0, got fee={self.fee!r} fee_cost={self.fee_cost!r} "
                f"fee_currency={self.fee_currency!r}"
            )
        return self

    @property
    def key(self) -> str:
        if self.trade_id is not None:
            return f"{self.order_id}:t:{self.trade_id}"
        return f"{self.order_id}:c:{self.cumulative_filled!r}"

    @property
    def notional(self) -> float:
        return self.amount * self.price

    @property
    def base_fee(self) -> float:
        """The fee taken in the base currency: a buy received ``amount - base_fee``,
        a sell gave ``amount + base_fee``."""
        if self.fee_currency is None or self.fee_cost is None:
            return 0.0
        return self.fee_cost if self.fee_currency == base_of(self.symbol) else 0.0

    @property
    def fee_text(self) -> str:
        """The fee as the exchange charged it, e.g. ``0.00012 BNB``."""
        currency = self.fee_currency or quote_of(self.symbol)
        cost = self.fee_cost if self.fee_cost is not None else self.fee
        return f"{cost:.8g} {currency}"


class TradeRecord(_Model):
    """One round trip (or the reduced part of a position), with the seed's field names.

    ``side`` is the side of the position that was closed (``buy`` for a long).
    ``pnl`` is gross; ``fees`` are in quote currency; ``net_pnl = pnl - fees``.
    ``risk_usd`` is the money at risk when the trade was opened, if known.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    trade_id: NonBlank
    account_id: NonBlank
    symbol: str
    side: Side
    entry_price: PositiveFloat
    exit_price: PositiveFloat
    quantity: PositiveFloat
    size_usd: NonNegativeFloat | None = None
    pnl: float
    pnl_pct: float | None = None
    fees: NonNegativeFloat = 0.0
    net_pnl: float | None = None
    entry_time: UTCDateTime
    exit_time: UTCDateTime
    hold_time_seconds: NonNegativeFloat | None = None
    is_win: bool | None = None
    risk_usd: PositiveFloat | None = None
    unvalued_fees: tuple[str, ...] = ()
    """Fees the exchange charged in a currency no price valued (``"0.05 KFEE"``): not in
    ``fees`` nor ``net_pnl``, listed so nobody reads the net as complete."""
    caller_symbol: str | None = None
    """The symbol as the caller wrote it (``BTC-USD``), echoed back by :mod:`nija_broker.compat`."""
    exit_role: OrderRole | None = None
    """The role of the order that closed it: ``stop`` for a stop-loss exit (the breakers'
    ``stoploss_cooldown``); ``None`` when not known (a trade the bot recorded itself)."""

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))

    @model_validator(mode="after")
    def _derive(self) -> Self:
        expected_net = self.pnl - self.fees
        if self.net_pnl is None:
            object.__setattr__(self, "net_pnl", expected_net)
        elif not math.isclose(self.net_pnl, expected_net, rel_tol=1e-6, abs_tol=0.01):
            raise ValueError(
                f"net_pnl ({self.net_pnl}) must equal pnl ({self.pnl}) - fees ({self.fees}) "
                f"for trade {self.trade_id!r}"
            )
        if self.exit_time < self.entry_time:
            raise ValueError(
                f"exit_time ({self.exit_time.isoformat()}) is before entry_time "
                f"({self.entry_time.isoformat()}) for trade {self.trade_id!r}"
            )
        net = self.net
        if self.is_win is None:
            object.__setattr__(self, "is_win", net > 0)
        elif self.is_win != (net > 0):
            raise ValueError(
                f"is_win ({self.is_win}) contradicts net_pnl ({net}) for trade {self.trade_id!r}"
            )
        if self.size_usd is None:
            object.__setattr__(self, "size_usd", self.entry_price * self.quantity)
        if self.pnl_pct is None:
            size = self.size_usd or 0.0
            object.__setattr__(self, "pnl_pct", self.pnl / size * 100 if size else 0.0)
        if self.hold_time_seconds is None:
            held = (self.exit_time - self.entry_time).total_seconds()
            object.__setattr__(self, "hold_time_seconds", held)
        return self

    @property
    def net(self) -> float:
        """``net_pnl`` with the type narrowed (it is always set after validation)."""
        assert self.net_pnl is not None
        return self.net_pnl

    @property
    def net_return(self) -> float:
        """Net P&L as a fraction of the money put in."""
        size = self.size_usd or 0.0
        return self.net / size if size else 0.0


class Balance(_Model):
    """One currency's balance on one account."""

    currency: NonBlank
    free: NonNegativeFloat = 0.0
    used: NonNegativeFloat = 0.0
    total: NonNegativeFloat = 0.0


class EquityPoint(_Model):
    account_id: NonBlank
    timestamp: UTCDateTime
    equity: NonNegativeFloat


class Market(_Model):
    """Trading rules of one symbol on one exchange."""

    symbol: str
    base: str
    quote: str
    amount_step: PositiveFloat | None = None
    price_step: PositiveFloat | None = None
    min_amount: NonNegativeFloat | None = None
    min_notional: NonNegativeFloat | None = None

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))


class Ticker(_Model):
    symbol: str
    last: PositiveFloat | None = None
    bid: PositiveFloat | None = None
    ask: PositiveFloat | None = None
    timestamp: UTCDateTime | None = None

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))


class AccountMetrics(_Model):
    """Performance of one account. Never a figure computed from two accounts' data.

    ``win_rate`` is a percentage. ``profit_factor`` is ``inf`` with wins and no
    losses, 0 with no wins. ``total_pnl``, ``gross_profit`` and ``gross_loss``
    are net of fees (gross P&L is ``total_pnl + total_fees``). Drawdowns are
    positive numbers (money and percent of the peak).
    ``expectancy_per_dollar_risked`` is ``None`` when no trade recorded its
    risk; ``risk_note`` then says so.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=True)

    account_id: str
    total_trades: int = 0
    winning_trades: int = 0
    losing_trades: int = 0
    breakeven_trades: int = 0
    win_rate: float = 0.0
    total_pnl: float = 0.0
    gross_profit: float = 0.0
    gross_loss: float = 0.0
    total_fees: float = 0.0
    average_win: float = 0.0
    average_loss: float = 0.0
    largest_win: float = 0.0
    largest_loss: float = 0.0
    expectancy: float = 0.0
    expectancy_per_dollar_risked: float | None = None
    trades_with_risk: int = 0
    risk_note: str | None = None
    profit_factor: float = 0.0
    peak_balance: float = 0.0
    current_balance: float = 0.0
    current_drawdown: float = 0.0
    current_drawdown_pct: float = 0.0
    max_drawdown: float = 0.0
    max_drawdown_pct: float = 0.0
    current_win_streak: int = 0
    current_loss_streak: int = 0
    max_win_streak: int = 0
    max_loss_streak: int = 0
    sharpe_ratio: float | None = None
    sharpe_annualized: float | None = None


class Position(_Model):
    """An average-cost long position of one account in one symbol (spot).

    ``avg_price`` excludes fees; ``entry_fees`` are the fees (quote currency)
    paid to build the part of the position still held, released pro rata as
    the position is reduced.
    """

    account_id: NonBlank
    symbol: str
    quantity: NonNegativeFloat
    avg_price: NonNegativeFloat
    entry_fees: NonNegativeFloat = 0.0
    opened_at: UTCDateTime
    updated_at: UTCDateTime
    risk_usd: PositiveFloat | None = None
    unvalued_fees: tuple[str, ...] = ()
    """Entry fees charged in a currency no price valued (see :attr:`Fill.fee_valued`)."""

    _normalize_symbol = field_validator("symbol")(classmethod(lambda cls, v: normalize_symbol(v)))

    @property
    def cost_basis(self) -> float:
        return self.quantity * self.avg_price
