"""Readers of Binance's request parameters: numbers, ``POST /api/v3/order``'s, history spans.

Each turns a query or form field into what :class:`~adapters.sim.SimEngine`
takes, or refuses it with Binance's code (developers.binance.com, "Spot API":
Trading endpoints, "New order"; Account endpoints, "All orders", "Account trade
list"). Re-exported by :mod:`~adapters.emulator.binance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from adapters.sim._state import STP_MODES
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import OrderRole, OrderType, Side

from . import _wire as wire
from ._binance_errors import BinanceError, illegal, mandatory

__all__ = [
    "DEFAULT_STP_MODE",
    "ORDER_TYPES",
    "history_window",
    "number",
    "order_request",
    "stp_mode",
    "time_in_force",
]

# Binance's order types (ENUM "Order types"), as exchangeInfo lists them.
ORDER_TYPES = (
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
)
DEFAULT_STP_MODE = "EXPIRE_MAKER"
"""What live spot symbols list as ``defaultSelfTradePreventionMode``: the recorded
createOrder and openOrders answers (repo ccxt/ccxt, ts/src/test/static/response/binance.json)
carry ``"selfTradePreventionMode": "EXPIRE_MAKER"``."""
_DAY_MS = 86_400_000


def number(params: Mapping[str, str], name: str, *, required: bool = False) -> float | None:
    """A numeric parameter; absent-but-required is -1102, malformed or negative -1100."""
    return wire.number(params, name, required=required, missing=mandatory, malformed=illegal)


def order_request(
    params: Mapping[str, str],
    symbol: str,
    client_order_id: str,
    last_price: float,
    amount_step: float | None,
) -> OrderRequest:
    """``POST /api/v3/order`` parameters -> the engine's :class:`OrderRequest`.

    ``quoteOrderQty`` (a market order sized in quote) is turned into a base
    amount at ``last_price``, rounded down to the lot step.
    """
    side_raw = params.get("side", "")
    if side_raw not in ("BUY", "SELL"):
        raise BinanceError(400, -1117, "Invalid side.") if side_raw else mandatory("side")
    side = Side(side_raw.lower())
    kind = params.get("type", "")
    if not kind:
        raise mandatory("type")
    if kind not in ORDER_TYPES:
        raise BinanceError(400, -1116, "Invalid orderType.")
    tif = params.get("timeInForce")
    if kind in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        if tif is None:
            raise mandatory("timeInForce")
        # IOC and FOK are emulated on plain limit orders only (the engine's trigger
        # orders rest until triggered, then work as GTC).
        if tif not in ("GTC", "IOC", "FOK") or (tif != "GTC" and kind != "LIMIT"):
            raise BinanceError(400, -1115, "Invalid timeInForce.")
    elif tif is not None:
        raise BinanceError(400, -1106, "Parameter 'timeInForce' sent when not required.")
    amount = number(params, "quantity")
    quote_qty = number(params, "quoteOrderQty")
    if amount is None and kind == "MARKET" and quote_qty is not None:
        amount = quote_qty / last_price
        if amount_step is not None:
            amount = float(
                Decimal(repr(amount)) // Decimal(repr(amount_step)) * Decimal(repr(amount_step))
            )
    if amount is None:
        raise mandatory("quantity")
    price = number(
        params,
        "price",
        required=kind in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"),
    )
    stop = number(params, "stopPrice", required=kind.startswith(("STOP", "TAKE")))
    order_type = {
        "MARKET": OrderType.MARKET,
        "LIMIT": OrderType.LIMIT,
        "LIMIT_MAKER": OrderType.LIMIT,
        "STOP_LOSS": OrderType.STOP,
        "STOP_LOSS_LIMIT": OrderType.STOP_LIMIT,
        "TAKE_PROFIT": OrderType.TAKE_PROFIT,
        "TAKE_PROFIT_LIMIT": OrderType.TAKE_PROFIT,
    }[kind]
    return OrderRequest(
        symbol=symbol,
        side=side,
        type=order_type,
        amount=amount,
        price=None if kind == "MARKET" else price,
        stop_price=stop,
        client_order_id=client_order_id,
        post_only=kind == "LIMIT_MAKER",
        role=OrderRole.infer(side, order_type),
    )


def time_in_force(params: Mapping[str, str]) -> str:
    """The order's time in force as the engine takes it (``order_request`` checked it)."""
    return params.get("timeInForce") or "GTC"


def stp_mode(params: Mapping[str, str]) -> str:
    """``selfTradePreventionMode``, the symbol's default when absent."""
    mode = params.get("selfTradePreventionMode") or DEFAULT_STP_MODE
    if mode not in STP_MODES:
        raise BinanceError(
            400, -1013, "This symbol does not allow the specified self-trade prevention mode."
        )
    return mode


def history_window(params: Mapping[str, str]) -> None:
    """``startTime``..``endTime`` may span 24 hours at most (allOrders, myTrades)."""
    start = number(params, "startTime")
    end = number(params, "endTime")
    if start is not None and end is not None and end - start > _DAY_MS:
        raise BinanceError(400, -1127, "More than 24 hours between startTime and endTime.")
