"""Who pays a fill's fee, in which asset, and how much: the engine's fee modes, as pure functions.

An account's :class:`FeeMode` is set when it is opened and never changes:

``quote`` (``FeeMode()``)
    every fee in the quote currency, ``amount x price x rate`` (Kraken's
    default, ``oflags=fciq``);
``base_for_buys`` (``FeeMode(buys_in_base=True)``)
    a buy's fee is taken from the base asset received, ``amount x rate``, so
    the account is credited ``amount - fee`` and debited exactly ``amount x
    price`` of quote; a sell's fee stays in quote (Binance without BNB);
an asset code, e.g. ``"BNB"`` (``FeeMode(asset="BNB")``)
    the fee's quote value is converted at the engine's price of the
    ``ASSET/QUOTE`` market and taken in that asset, when the account has it
    free. Otherwise the fee falls back to the plain rule of the mode
    (``buys_in_base`` says which): with no ``ASSET/QUOTE`` market listed, or
    not enough of the asset free once the fill's own legs are booked, it is
    charged as ``quote`` would (as the brief asked) or, with
    ``FeeMode(asset="BNB", buys_in_base=True)``, as ``base_for_buys`` would,
    which is what Binance itself does when BNB runs out: it takes the fee
    from the asset received.

Every fee is rounded half-up to ``fee_decimals`` (8 by default, the
precision of Binance's ``commission`` strings) in decimal arithmetic, so the
amount the engine books is exactly the amount an emulator prints, without
float dust (``0.001 * 52`` is ``0.052000000000000005`` in floats). The
fee's quote value (``Fill.fee``) is the amount taken times the price that
valued it: the fill's price for a base fee, the asset's market price for a
third-asset fee. Binance's 25% discount for paying in BNB is not applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from nija_broker.core.models import Side

__all__ = [
    "BASE_FOR_BUYS",
    "FEE_DECIMALS",
    "QUOTE",
    "FeeCharge",
    "FeeMode",
    "fee_charge",
    "plain_sum",
]

FEE_DECIMALS = 8
"""Decimals fees are rounded to unless the engine says otherwise (Binance's commissions)."""
_ASSET_CODE = re.compile(r"^[A-Z0-9]{2,12}$")


@dataclass(frozen=True, slots=True)
class FeeMode:
    """How one account pays its fees (see the module docstring for the rules)."""

    asset: str | None = None
    """A third asset (``"BNB"``) that pays fees first; ``None``: none."""
    buys_in_base: bool = False
    """A buy's fee not paid in ``asset`` is taken from the base received, else from quote."""

    def __post_init__(self) -> None:
        if self.asset is not None and not _ASSET_CODE.match(self.asset):
            raise ValueError(f"a fee asset is an upper-case asset code, got {self.asset!r}")

    @classmethod
    def parse(cls, value: FeeMode | str) -> FeeMode:
        """``"quote"``, ``"base_for_buys"``, an asset code such as ``"BNB"``, or a FeeMode."""
        if isinstance(value, FeeMode):
            return value
        if value == "quote":
            return QUOTE
        if value == "base_for_buys":
            return BASE_FOR_BUYS
        if _ASSET_CODE.match(value):
            return cls(asset=value)
        raise ValueError(
            f"fee_mode is 'quote', 'base_for_buys' or an upper-case asset code such as 'BNB', "
            f"got {value!r}"
        )

    @property
    def name(self) -> str:
        plain = "base_for_buys" if self.buys_in_base else "quote"
        return plain if self.asset is None else f"{self.asset}, else {plain}"

    @property
    def is_quote(self) -> bool:
        """Every fee of every fill is charged in the quote currency."""
        return self.asset is None and not self.buys_in_base


QUOTE = FeeMode()
BASE_FOR_BUYS = FeeMode(buys_in_base=True)


@dataclass(frozen=True, slots=True)
class FeeCharge:
    """What one fill's fee takes: ``cost`` of ``currency``, worth ``value`` in the quote."""

    currency: str
    cost: float
    value: float


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _rounded(value: Decimal, decimals: int) -> float:
    return float(value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def plain_sum(a: float, b: float) -> float:
    """``a + b`` in decimal: sums of clean decimals stay clean (``0.1 + 0.2`` is ``0.3``)."""
    return float(_dec(a) + _dec(b))


def fee_charge(
    mode: FeeMode,
    *,
    side: Side,
    base: str,
    quote: str,
    amount: float,
    price: float,
    rate: float,
    asset_price: float | None,
    asset_free: float,
    fee_decimals: int = FEE_DECIMALS,
    slack: float = 0.0,
) -> FeeCharge:
    """The fee of a fill of ``amount`` at ``price`` charged at ``rate`` under ``mode``.

    ``asset_price`` is the price of ``mode.asset`` in ``quote`` (1 when it is the
    quote, ``None`` when no market prices it); ``asset_free`` is how much of it the account has free
    once the fill's own legs are booked; ``slack`` forgives float dust in that
    comparison, so exactly enough is enough.
    """
    quote_value = _dec(amount) * _dec(price) * _dec(rate)
    asset = mode.asset
    if asset is not None and asset_price is not None and asset_price > 0:
        cost = _rounded(quote_value / _dec(asset_price), fee_decimals)
        if cost <= asset_free + slack:
            return FeeCharge(asset, cost, float(_dec(cost) * _dec(asset_price)))
    if side is Side.BUY and mode.buys_in_base:
        cost = _rounded(_dec(amount) * _dec(rate), fee_decimals)
        return FeeCharge(base, cost, float(_dec(cost) * _dec(price)))
    cost = _rounded(quote_value, fee_decimals)
    return FeeCharge(quote, cost, cost)
