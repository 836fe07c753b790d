"""Kraken spot REST dialect: Market Data and balance answers, and the whole dialect in one place.

Pure functions between nija_broker models (what :class:`~adapters.sim.SimEngine`
speaks) and Kraken's wire format, after Kraken's REST documentation
(docs.kraken.com, "Spot REST API": Market Data, Account Data, Trading; the
"Spot Client Order Identifiers" guide). Numbers travel as decimal strings,
times as Unix seconds with a fraction, errors as HTTP 200 with
``{"error": ["EOrder:..."], "result": ...}``.

This module holds ``Time``, ``Assets``, ``AssetPairs``, ``Ticker``, ``Balance`` and
``BalanceEx``; the rest of the dialect lives beside it and is re-exported here, so
the server reads it as one namespace (``kw.order_info``):

- :mod:`._kraken_names`: asset codes, pair names, order and trade ids, numbers, times;
- :mod:`._kraken_orders`: orders and trades as Kraken answers them;
- :mod:`._kraken_params`: request parameters (AddOrder's ``timeinforce``, ``stptype``,
  ``oflags``, ``userref``, ``cl_ord_id``);
- :mod:`._kraken_errors`: :class:`KrakenError` and the strings for engine errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import format_datetime
from typing import Any

from nija_broker.core.clock import from_ms
from nija_broker.core.models import Balance, Market

from ._kraken_errors import KrakenError, engine_error, invalid_arguments
from ._kraken_names import (
    asset_altname,
    asset_code,
    engine_order_id,
    engine_trade_id,
    fmt,
    order_txid,
    pair_altname,
    pair_id,
    pair_names,
    pair_wsname,
    seconds,
    trade_txid,
)
from ._kraken_orders import (
    SELF_TRADE_REASON,
    add_order_result,
    closing,
    description,
    kraken_order_type,
    order_info,
    trade_info,
)
from ._kraken_params import (
    CL_ORD_ID_FREE_TEXT_MAX,
    cl_ord_id,
    number,
    order_request,
    stp_mode,
    time_in_force,
    userref,
)
from ._wire import decimals_of

__all__ = [
    "CL_ORD_ID_FREE_TEXT_MAX",
    "PAGE_SIZE",
    "SELF_TRADE_REASON",
    "KrakenError",
    "add_order_result",
    "asset_altname",
    "asset_code",
    "asset_pair",
    "assets",
    "balance",
    "balance_ex",
    "cl_ord_id",
    "closing",
    "description",
    "engine_error",
    "engine_order_id",
    "engine_trade_id",
    "fmt",
    "invalid_arguments",
    "kraken_order_type",
    "number",
    "order_info",
    "order_request",
    "order_txid",
    "pair_altname",
    "pair_id",
    "pair_names",
    "pair_wsname",
    "seconds",
    "server_time",
    "stp_mode",
    "ticker",
    "time_in_force",
    "trade_info",
    "trade_txid",
    "userref",
]

_FIAT = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF"})

PAGE_SIZE = 50
"""ClosedOrders and TradesHistory answer 50 results a call, newest first."""


# ------------------------------------------------------------- public answers


def server_time(now_ms: int) -> dict[str, Any]:
    return {"unixtime": now_ms // 1000, "rfc1123": format_datetime(from_ms(now_ms), usegmt=True)}


def assets(markets: Mapping[str, Market]) -> dict[str, Any]:
    currencies = sorted({c for m in markets.values() for c in (m.base, m.quote)})
    return {
        asset_code(c): {
            "aclass": "currency",
            "altname": asset_altname(c),
            "decimals": 4 if c in _FIAT else 10,
            "display_decimals": 2 if c in _FIAT else 5,
            "status": "enabled",
        }
        for c in currencies
    }


def asset_pair(market: Market, *, maker_fee: float, taker_fee: float) -> dict[str, Any]:
    """One entry of ``AssetPairs``: lot and price decimals, ``ordermin`` and ``costmin``."""
    price_decimals = decimals_of(market.price_step, 1)
    return {
        "altname": pair_altname(market),
        "wsname": pair_wsname(market),
        "aclass_base": "currency",
        "base": asset_code(market.base),
        "aclass_quote": "currency",
        "quote": asset_code(market.quote),
        "lot": "unit",
        "cost_decimals": 5,
        "pair_decimals": price_decimals,
        "lot_decimals": decimals_of(market.amount_step),
        "lot_multiplier": 1,
        "leverage_buy": [],
        "leverage_sell": [],
        "fees": [[0, round(taker_fee * 100, 6)]],
        "fees_maker": [[0, round(maker_fee * 100, 6)]],
        "fee_volume_currency": "ZUSD",
        "margin_call": 80,
        "margin_stop": 40,
        "ordermin": fmt(
            market.min_amount or market.amount_step or 1e-8, decimals_of(market.amount_step)
        ),
        "costmin": fmt(market.min_notional or 0.0, 5),
        "tick_size": fmt(market.price_step or 10.0**-price_decimals, price_decimals),
        "status": "online",
    }


def ticker(market: Market, last: float, bid: float | None, ask: float | None) -> dict[str, Any]:
    digits = decimals_of(market.price_step, 1)
    close, bid_s, ask_s = fmt(last, digits), fmt(bid or last, digits), fmt(ask or last, digits)
    return {
        "a": [ask_s, "1", "1.000"],
        "b": [bid_s, "1", "1.000"],
        "c": [close, "0.00000000"],
        "v": ["0.00000000", "0.00000000"],
        "p": [close, close],
        "t": [0, 0],
        "l": [close, close],
        "h": [close, close],
        "o": close,
    }


# ------------------------------------------------------------ balance answers


def balance(balances: Mapping[str, Balance]) -> dict[str, str]:
    return {asset_code(b.currency): fmt(b.total, 10) for b in balances.values()}


def balance_ex(balances: Mapping[str, Balance]) -> dict[str, dict[str, str]]:
    return {
        asset_code(b.currency): {"balance": fmt(b.total, 10), "hold_trade": fmt(b.used, 10)}
        for b in balances.values()
    }
