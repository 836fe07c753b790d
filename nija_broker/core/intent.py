"""What the guard judges and what it answers: an order intent in, a decision value out.

An :class:`OrderIntent` is an order a bot wants to place, before it has an
exchange id. A decision is a plain value: :class:`Allowed` (with any warnings
and the reservation that now holds the entry's place) or :class:`Blocked`
(the rule id, a sentence a trader understands, and the figures behind it).
Only the outer edge turns a :class:`Blocked` into
:class:`~nija_broker.core.errors.EntryBlocked`.

Spot, long only (as the ledger): a BUY with role ``entry`` and no
``reduce_only`` is an *entry*; everything else — any SELL, any order with an
exit / stop / target role, any reduce-only order — is an *exit*, and exits
always pass (DESIGN invariant 6).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nija_broker.core.models import NonBlank, OrderRole, OrderType, PositiveFloat, Side
from nija_broker.core.symbols import normalize_symbol

__all__ = [
    "CLIENT_ORDER_ID_MAX_LEN",
    "Allowed",
    "Blocked",
    "Decision",
    "OrderIntent",
    "Reason",
    "Reservation",
    "new_client_order_id",
]

# Binance's newClientOrderId is ``^[.A-Z:/a-z0-9_-]{1,36}$``, the strictest of the
# exchanges we run on (Kraken's cl_ord_id and Coinbase's client_order_id accept it too).
CLIENT_ORDER_ID_MAX_LEN = 36
_CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


def new_client_order_id() -> str:
    """``"nb-"`` and 32 hex digits: 35 characters, unique, safe on every supported exchange."""
    return f"nb-{uuid.uuid4().hex}"


class OrderIntent(BaseModel):
    """An order one account wants to place. Invalid input raises pydantic's ``ValidationError``.

    Give the size as ``amount`` (base currency) or ``size_usd`` (quote
    currency; the tiers are in USD and quote currencies are taken at par), or
    both. ``price`` is the limit price; a market order may carry it as the
    price the bot expects, which the guard then values the order at.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    account_id: NonBlank
    symbol: str
    side: Side
    type: OrderType = OrderType.MARKET
    amount: PositiveFloat | None = None
    size_usd: PositiveFloat | None = None
    price: PositiveFloat | None = None
    stop_price: PositiveFloat | None = None
    role: OrderRole = OrderRole.ENTRY
    reduce_only: bool = False
    client_order_id: str = Field(default_factory=new_client_order_id)

    @field_validator("symbol")
    @classmethod
    def _normalize_symbol(cls, value: str) -> str:
        return normalize_symbol(value)

    @field_validator("client_order_id")
    @classmethod
    def _check_client_order_id(cls, value: str) -> str:
        if not _CLIENT_ORDER_ID.match(value):
            raise ValueError(
                f"must be 1 to {CLIENT_ORDER_ID_MAX_LEN} characters of letters, digits and "
                f"'.:/_-' (Binance's rule, the strictest supported), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_size(self) -> Self:
        if self.amount is None and self.size_usd is None:
            raise ValueError("give the order size as amount (base) or size_usd (quote)")
        if self.type is OrderType.LIMIT and self.price is None:
            raise ValueError("price is required for a limit order")
        if self.type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT) and (
            self.stop_price is None and self.price is None
        ):
            raise ValueError(f"stop_price is required for a {self.type} order")
        return self

    @property
    def is_entry(self) -> bool:
        """A BUY that opens or grows a position; the only kind of order the guard may block."""
        return self.side is Side.BUY and self.role is OrderRole.ENTRY and not self.reduce_only

    @property
    def reference_price(self) -> float | None:
        """The price the order is valued at when it carries one: limit, else trigger."""
        return self.price if self.price is not None else self.stop_price

    def valuation_price(self, last_price: float | None) -> float | None:
        """The price the order is valued at: a market order at ``last_price`` first (its own
        ``price``, if any, is only the bot's expectation), any other at its own price first.
        """
        own = self.reference_price
        if self.type is OrderType.MARKET:
            return last_price if last_price is not None else own
        return own if own is not None else last_price

    def notional(self, last_price: float | None) -> float | None:
        """Quote value: ``size_usd``, else amount x price (``None`` when no price is known)."""
        if self.size_usd is not None:
            return self.size_usd
        price = self.valuation_price(last_price)
        assert self.amount is not None  # the validator requires one of the two
        return None if price is None else self.amount * price

    def base_amount(self, last_price: float | None) -> float | None:
        """Size in base currency: ``amount``, else ``size_usd`` / price (``None`` if unpriced)."""
        if self.amount is not None:
            return self.amount
        price = self.valuation_price(last_price)
        assert self.size_usd is not None
        return None if price is None else self.size_usd / price


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a rule objects (or warns): a stable rule id, a sentence, and the figures behind it."""

    rule: str
    message: str
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """The place an allowed order holds until the exchange answers (or the reservation expires).

    ``reserved_usd`` is the quote currency the order will tie up (notional plus
    fee for an entry, 0 for an exit); it is counted against the free balance.
    ``expires_at`` is on the guard's monotonic clock.
    """

    id: str
    account_id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    is_entry: bool
    reserved_usd: float
    created_at: datetime
    expires_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Allowed:
    """The order may go. ``reservation`` holds its place (``None`` for a dry-run check)."""

    intent: OrderIntent
    warnings: tuple[Reason, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)
    reservation: Reservation | None = None

    allowed: Literal[True] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Blocked:
    """The entry may not go: ``rule`` id, ``reason`` sentence, and the ``figures`` behind it."""

    intent: OrderIntent
    rule: str
    reason: str
    figures: Mapping[str, Any] = field(default_factory=dict)

    allowed: Literal[False] = False


Decision = Allowed | Blocked
