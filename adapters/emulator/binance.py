"""Binance spot REST dialect: the JSON shapes, order parameters and error codes.

Pure functions between nija_broker models (what :class:`~adapters.sim.SimEngine`
speaks) and Binance's wire format, after the Binance spot API documentation
(developers.binance.com, "Spot API": General Info / Errors, Market Data and
Trading endpoints). Numbers travel as decimal strings, times as epoch
milliseconds, symbols as ``BTCUSDT``.

This module holds the answers (exchange info, tickers, account, orders, trades);
the rest of the dialect lives beside it and is re-exported here, so the server
reads it as one namespace (``bn.order_json``):

- :mod:`._binance_params`: request parameters (``POST /api/v3/order``'s, numbers,
  ``startTime``..``endTime`` spans) and the order types and default STP mode;
- :mod:`._binance_errors`: :class:`BinanceError` and the codes for engine errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.sim._state import STP_MODES, OrderFlags
from nija_broker.core.clock import to_ms
from nija_broker.core.models import (
    Balance,
    Fill,
    Market,
    Order,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
)

from ._binance_errors import (
    BinanceError,
    bad_api_key_format,
    bad_signature,
    engine_error,
    illegal,
    invalid_api_key,
    invalid_symbol,
    mandatory,
    outside_recv_window,
)
from ._binance_params import (
    DEFAULT_STP_MODE,
    ORDER_TYPES,
    history_window,
    number,
    order_request,
    stp_mode,
    time_in_force,
)
from ._wire import decimals_of

__all__ = [
    "DEFAULT_STP_MODE",
    "ORDER_TYPES",
    "BinanceError",
    "account_json",
    "bad_api_key_format",
    "bad_signature",
    "binance_type",
    "book_ticker",
    "cancel_response",
    "commission",
    "engine_error",
    "exchange_info",
    "fixed8",
    "fmt",
    "history_window",
    "illegal",
    "invalid_api_key",
    "invalid_symbol",
    "mandatory",
    "market_id",
    "new_order_response",
    "number",
    "order_json",
    "order_request",
    "outside_recv_window",
    "status_name",
    "stp_mode",
    "symbol_info",
    "ticker_24hr",
    "ticker_price",
    "time_in_force",
    "trade_json",
]

# Binance's order statuses (ENUM "Order status").
_STATUS = {
    OrderStatus.PENDING: "NEW",
    OrderStatus.OPEN: "NEW",
    OrderStatus.PARTIALLY_FILLED: "PARTIALLY_FILLED",
    OrderStatus.FILLED: "FILLED",
    OrderStatus.CANCELLED: "CANCELED",
    OrderStatus.EXPIRED: "EXPIRED",
    OrderStatus.REJECTED: "REJECTED",
}
# "MARKET and LIMIT order types default to FULL, all other orders default to ACK."
_FULL_BY_DEFAULT = frozenset({"MARKET", "LIMIT"})


def fmt(value: float | None) -> str:
    """A decimal string as Binance prints it (no exponent); ``None`` is zero."""
    if value is None or not math.isfinite(value):
        return "0.00000000"
    text = format(Decimal(repr(value)), "f")
    return text if "." in text else text + ".0"


_EIGHT = Decimal("0.00000001")


def fixed8(value: float) -> str:
    """A trade figure as Binance prints one: always 8 decimals (``"0.00010000"``), no dust.

    ccxt's recorded ``myTrades`` answer (repo ccxt/ccxt,
    ``ts/src/test/static/response/binance.json``, fetchMyTrades "Spot private trade")
    has ``"price": "69.63000000"``, ``"qty": "0.20000000"``, ``"commission": "0.01392600"``.
    """
    return format(Decimal(repr(value)).quantize(_EIGHT), "f")


def _product8(a: float, b: float) -> str:
    """``a x b`` to 8 decimals, computed in decimal (``quoteQty`` without float dust)."""
    return format((Decimal(repr(a)) * Decimal(repr(b))).quantize(_EIGHT), "f")


def commission(fill: Fill) -> tuple[str, str]:
    """``(commission, commissionAsset)``: what the fill's fee took, in the asset it took."""
    cost = fill.fee_cost if fill.fee_cost is not None else fill.fee
    return fixed8(cost), fill.fee_currency or fill.symbol.split("/")[1]


def market_id(symbol: str) -> str:
    return symbol.replace("/", "")


def symbol_info(market: Market) -> dict[str, Any]:
    """One entry of ``GET /api/v3/exchangeInfo``'s ``symbols``."""
    filters: list[dict[str, Any]] = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": fmt(market.price_step or 1e-8),
            "maxPrice": "10000000.00000000",
            "tickSize": fmt(market.price_step or 1e-8),
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": fmt(market.min_amount or market.amount_step or 1e-8),
            "maxQty": "9000000.00000000",
            "stepSize": fmt(market.amount_step or 1e-8),
        },
    ]
    if market.min_notional is not None:
        filters.append(
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(market.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            }
        )
    return {
        "symbol": market_id(market.symbol),
        "status": "TRADING",
        "baseAsset": market.base,
        "baseAssetPrecision": 8,
        "quoteAsset": market.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": decimals_of(market.amount_step),
        "quoteCommissionPrecision": decimals_of(market.price_step),
        "orderTypes": list(ORDER_TYPES),
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": filters,
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": DEFAULT_STP_MODE,
        "allowedSelfTradePreventionModes": list(STP_MODES),
    }


def exchange_info(markets: Mapping[str, Market], server_time_ms: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(m) for m in markets.values()],
    }


def binance_type(order_type: OrderType, *, has_price: bool, post_only: bool = False) -> str:
    if order_type is OrderType.MARKET:
        return "MARKET"
    if order_type is OrderType.LIMIT:
        return "LIMIT_MAKER" if post_only else "LIMIT"
    if order_type is OrderType.STOP:
        return "STOP_LOSS"
    if order_type is OrderType.STOP_LIMIT:
        return "STOP_LOSS_LIMIT"
    return "TAKE_PROFIT_LIMIT" if has_price else "TAKE_PROFIT"


def status_name(order: Order, flags: OrderFlags) -> str:
    """Binance's status word: ``PENDING_CANCEL`` while a cancel is pending, and
    ``EXPIRED_IN_MATCH`` for an order self-trade prevention ended."""
    if flags.cancel_pending and order.is_open:
        return "PENDING_CANCEL"
    if flags.expired_in_match and order.status is OrderStatus.EXPIRED:
        return "EXPIRED_IN_MATCH"
    return _STATUS[order.status]


def order_json(
    order: Order,
    *,
    type_name: str | None = None,
    is_working: bool = True,
    flags: OrderFlags | None = None,
) -> dict[str, Any]:
    """An order as ``GET /api/v3/order`` answers it."""
    flags = flags or OrderFlags(stp_mode=DEFAULT_STP_MODE)
    created_ms = to_ms(order.created_at)
    updated_ms = to_ms(order.last_change)
    kind = type_name or binance_type(order.type, has_price=order.price is not None)
    return {
        "symbol": market_id(order.symbol),
        "orderId": int(order.id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id or "",
        "price": fmt(order.price),
        "origQty": fmt(order.amount),
        "executedQty": fmt(order.filled),
        "cummulativeQuoteQty": fmt(order.filled * (order.average or 0.0)),
        "status": status_name(order, flags),
        "timeInForce": flags.time_in_force,
        "type": kind,
        "side": order.side.value.upper(),
        "stopPrice": fmt(order.stop_price),
        "icebergQty": "0.00000000",
        "time": created_ms,
        "updateTime": updated_ms,
        "isWorking": is_working,
        "workingTime": created_ms if is_working else -1,
        "origQuoteOrderQty": "0.00000000",
        "selfTradePreventionMode": flags.stp_mode,
    }


def new_order_response(
    order: Order,
    fills: list[Fill],
    resp_type: str,
    *,
    type_name: str,
    transact_ms: int,
    flags: OrderFlags | None = None,
) -> dict[str, Any]:
    """``POST /api/v3/order``'s answer in the ACK, RESULT or FULL shape."""
    ack = {
        "symbol": market_id(order.symbol),
        "orderId": int(order.id),
        "orderListId": -1,
        "clientOrderId": order.client_order_id or "",
        "transactTime": transact_ms,
    }
    if resp_type == "ACK":
        return ack
    full = order_json(order, type_name=type_name, flags=flags)
    result = {
        **ack,
        **{
            k: full[k]
            for k in (
                "price",
                "origQty",
                "executedQty",
                "cummulativeQuoteQty",
                "status",
                "timeInForce",
                "type",
                "side",
                "workingTime",
                "selfTradePreventionMode",
            )
        },
        "origQuoteOrderQty": "0.0",
    }
    if order.stop_price is not None:  # a conditional field: only trigger orders carry it
        result["stopPrice"] = full["stopPrice"]
    if resp_type == "RESULT":
        return result
    result["fills"] = [_full_fill(f) for f in fills]
    return result


def _full_fill(fill: Fill) -> dict[str, Any]:
    """One of a FULL answer's ``fills``: the commission in the asset it was taken in."""
    fee, fee_asset = commission(fill)
    return {
        "price": fixed8(fill.price),
        "qty": fixed8(fill.amount),
        "commission": fee,
        "commissionAsset": fee_asset,
        "tradeId": int(fill.trade_id or 0),
    }


def cancel_response(
    order: Order,
    *,
    type_name: str,
    cancel_client_id: str,
    transact_ms: int,
    flags: OrderFlags | None = None,
) -> dict[str, Any]:
    """``DELETE /api/v3/order``: ``clientOrderId`` is the cancel's own id and
    ``origClientOrderId`` the order's (spot API docs, Trading endpoints, "Cancel order");
    ``status`` is ``PENDING_CANCEL`` when the cancel has not taken effect yet."""
    full = order_json(order, type_name=type_name, flags=flags)
    return {
        "symbol": full["symbol"],
        "origClientOrderId": order.client_order_id or "",
        "orderId": full["orderId"],
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": transact_ms,
        **{
            k: full[k]
            for k in (
                "price",
                "origQty",
                "executedQty",
                "cummulativeQuoteQty",
                "status",
                "timeInForce",
                "type",
                "side",
                "selfTradePreventionMode",
            )
        },
        "origQuoteOrderQty": "0.00000000",
        **({"stopPrice": full["stopPrice"]} if order.stop_price is not None else {}),
    }


def trade_json(fill: Fill, *, is_maker: bool) -> dict[str, Any]:
    """One entry of ``GET /api/v3/myTrades``, the commission as the engine charged it.

    Quote for a sell or a quote-fee account, the base received for a buy of a
    ``base_for_buys`` account, the third asset (BNB) when that paid it.
    """
    fee, fee_asset = commission(fill)
    return {
        "symbol": market_id(fill.symbol),
        "id": int(fill.trade_id or 0),
        "orderId": int(fill.order_id),
        "orderListId": -1,
        "price": fixed8(fill.price),
        "qty": fixed8(fill.amount),
        "quoteQty": _product8(fill.amount, fill.price),
        "commission": fee,
        "commissionAsset": fee_asset,
        "time": to_ms(fill.timestamp),
        "isBuyer": fill.side is Side.BUY,
        "isMaker": is_maker,
        "isBestMatch": True,
    }


def account_json(
    balances: Mapping[str, Balance], *, update_ms: int, maker_fee: float, taker_fee: float
) -> dict[str, Any]:
    return {
        "makerCommission": round(maker_fee * 10_000),
        "takerCommission": round(taker_fee * 10_000),
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": fmt(maker_fee),
            "taker": fmt(taker_fee),
            "buyer": "0.00000000",
            "seller": "0.00000000",
        },
        "canTrade": True,
        "canWithdraw": False,
        "canDeposit": False,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": update_ms,
        "accountType": "SPOT",
        "balances": [
            {"asset": b.currency, "free": fmt(b.free), "locked": fmt(b.used)}
            for b in balances.values()
        ],
        "permissions": ["SPOT"],
    }


def ticker_24hr(ticker: Ticker, *, now_ms: int) -> dict[str, Any]:
    last = fmt(ticker.last)
    return {
        "symbol": market_id(ticker.symbol),
        "priceChange": "0.00000000",
        "priceChangePercent": "0.000",
        "weightedAvgPrice": last,
        "prevClosePrice": last,
        "lastPrice": last,
        "lastQty": "0.00000000",
        "bidPrice": fmt(ticker.bid),
        "bidQty": "1.00000000",
        "askPrice": fmt(ticker.ask),
        "askQty": "1.00000000",
        "openPrice": last,
        "highPrice": last,
        "lowPrice": last,
        "volume": "0.00000000",
        "quoteVolume": "0.00000000",
        "openTime": now_ms - 86_400_000,
        "closeTime": now_ms,
        "firstId": -1,
        "lastId": -1,
        "count": 0,
    }


def ticker_price(ticker: Ticker) -> dict[str, Any]:
    return {"symbol": market_id(ticker.symbol), "price": fmt(ticker.last)}


def book_ticker(ticker: Ticker) -> dict[str, Any]:
    return {
        "symbol": market_id(ticker.symbol),
        "bidPrice": fmt(ticker.bid),
        "bidQty": "1.0",
        "askPrice": fmt(ticker.ask),
        "askQty": "1.0",
    }
