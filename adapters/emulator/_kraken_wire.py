"""Kraken spot REST dialect: asset codes, pair names, order ids, JSON shapes and errors.

Pure functions between nija_broker models (what :class:`~adapters.sim.SimEngine`
speaks) and Kraken's wire format, after Kraken's REST documentation
(docs.kraken.com, "Spot REST API": Market Data, Account Data, Trading; the
"Spot Client Order Identifiers" guide). Numbers travel as decimal strings,
times as Unix seconds with a fraction, errors as HTTP 200 with
``{"error": ["EOrder:..."], "result": ...}``.

Names:

- assets carry Kraken's legacy codes where Kraken has them (``XXBT``,
  ``XETH``, ``ZUSD``) and their own name otherwise (``SOL``, ``USDT``);
  Bitcoin's short name is ``XBT``, never ``BTC``;
- a pair of two legacy assets is named by their codes (``XXBTZUSD``), other
  pairs by their short names (``SOLUSD``); ``altname`` is always the short
  form (``XBTUSD``) and ``wsname`` the slashed one (``XBT/USD``);
- order ids look like Kraken's (``OQCLML-BW3P3-BUCMWZ``), trade ids too
  (``T...``). They are a reversible scramble of the engine's sequence
  numbers, so a restarted server over the same engine gives the same ids.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

from adapters.base import OrderRequest
from adapters.sim.engine import FEE_DECIMALS
from nija_broker.clock import from_ms, to_ms
from nija_broker.errors import ExchangeError, InsufficientFunds, InvalidOrder, OrderNotFound
from nija_broker.models import (
    Balance,
    Fill,
    Market,
    Order,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
)

from . import _wire as wire
from ._wire import decimals_of

# Unified code -> (Kraken asset code, Kraken short name), for assets Kraken lists with an
# X (crypto) or Z (fiat) prefix. Everything else keeps its own name as code and altname.
_LEGACY_ASSETS: dict[str, tuple[str, str]] = {
    "BTC": ("XXBT", "XBT"), "ETH": ("XETH", "ETH"), "LTC": ("XLTC", "LTC"),
    "XRP": ("XXRP", "XRP"), "XLM": ("XXLM", "XLM"), "XMR": ("XXMR", "XMR"),
    "ZEC": ("XZEC", "ZEC"), "ETC": ("XETC", "ETC"), "DOGE": ("XXDG", "XDG"),
    "USD": ("ZUSD", "USD"), "EUR": ("ZEUR", "EUR"), "GBP": ("ZGBP", "GBP"),
    "CAD": ("ZCAD", "CAD"), "JPY": ("ZJPY", "JPY"), "AUD": ("ZAUD", "AUD"),
}
_FIAT = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF"})

PAGE_SIZE = 50
"""ClosedOrders and TradesHistory answer 50 results a call, newest first."""
CL_ORD_ID_FREE_TEXT_MAX = 18
_UUID_LONG = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}$")
_UUID_SHORT = re.compile(r"^[0-9a-fA-F]{32}$")
_FREE_TEXT = re.compile(rf"^[\x21-\x7e]{{1,{CL_ORD_ID_FREE_TEXT_MAX}}}$")
_INT32 = (-(2**31), 2**31 - 1)


class KrakenError(Exception):
    """An error answer: Kraken sends HTTP 200 with the error strings in a list."""

    def __init__(self, *errors: str, status: int = 200) -> None:
        super().__init__(", ".join(errors))
        self.errors = list(errors)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.errors}


def invalid_arguments(name: str | None = None) -> KrakenError:
    return KrakenError("EGeneral:Invalid arguments" + (f":{name}" if name else ""))


# ------------------------------------------------------------------ names


def asset_code(currency: str) -> str:
    return _LEGACY_ASSETS.get(currency, (currency, currency))[0]


def asset_altname(currency: str) -> str:
    return _LEGACY_ASSETS.get(currency, (currency, currency))[1]


def pair_id(market: Market) -> str:
    base, quote = market.base, market.quote
    if base in _LEGACY_ASSETS and quote in _LEGACY_ASSETS:
        return asset_code(base) + asset_code(quote)
    return asset_altname(base) + asset_altname(quote)


def pair_altname(market: Market) -> str:
    return asset_altname(market.base) + asset_altname(market.quote)


def pair_wsname(market: Market) -> str:
    return f"{asset_altname(market.base)}/{asset_altname(market.quote)}"


def pair_names(market: Market) -> tuple[str, str, str]:
    """Every name Kraken accepts for a pair in a request: id, altname, wsname."""
    return pair_id(market), pair_altname(market), pair_wsname(market)


# ---------------------------------------------------------------- order ids

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_SPACE = 36**16
# Odd and not a multiple of 3, hence invertible modulo 36**16: the scramble is a bijection.
_ID_MULTIPLIER = 0x9E3779B97F4A7C15 % _ID_SPACE
_ID_INVERSE = pow(_ID_MULTIPLIER, -1, _ID_SPACE)
_TXID = re.compile(r"^([OT])([0-9A-Z]{5})-([0-9A-Z]{5})-([0-9A-Z]{6})$")


def _scramble(prefix: str, seq: int) -> str:
    n = (seq * _ID_MULTIPLIER) % _ID_SPACE
    chars = []
    for _ in range(16):
        n, digit = divmod(n, 36)
        chars.append(_ID_ALPHABET[digit])
    text = "".join(chars)
    return f"{prefix}{text[:5]}-{text[5:10]}-{text[10:]}"


def _unscramble(prefix: str, txid: str) -> int | None:
    match = _TXID.match(txid)
    if match is None or match.group(1) != prefix:
        return None
    text = "".join(match.groups()[1:])
    n: int = sum(_ID_ALPHABET.index(c) * 36**i for i, c in enumerate(text))
    seq: int = (n * _ID_INVERSE) % _ID_SPACE
    return seq


def order_txid(engine_id: str) -> str:
    return _scramble("O", int(engine_id))


def engine_order_id(txid: str) -> str | None:
    """The engine's id behind a Kraken order id; ``None`` when ``txid`` is not one of ours."""
    seq = _unscramble("O", txid)
    return str(seq) if seq is not None else None


def trade_txid(engine_trade_id: str) -> str:
    return _scramble("T", int(engine_trade_id))


def engine_trade_id(txid: str) -> str | None:
    seq = _unscramble("T", txid)
    return str(seq) if seq is not None else None


# ------------------------------------------------------------------ numbers


def fmt(value: float | None, decimals: int = 8) -> str:
    """A fixed-point decimal string, as Kraken prints amounts and prices."""
    if value is None or not math.isfinite(value):
        value = 0.0
    return f"{Decimal(repr(value)):.{decimals}f}"


def seconds(ts_ms: int) -> float:
    return round(ts_ms / 1000, 4)


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
        "ordermin": fmt(market.min_amount or market.amount_step or 1e-8,
                        decimals_of(market.amount_step)),
        "costmin": fmt(market.min_notional or 0.0, 5),
        "tick_size": fmt(market.price_step or 10.0 ** -price_decimals, price_decimals),
        "status": "online",
    }


def ticker(market: Market, last: float, bid: float | None, ask: float | None) -> dict[str, Any]:
    digits = decimals_of(market.price_step, 1)
    close, bid_s, ask_s = fmt(last, digits), fmt(bid or last, digits), fmt(ask or last, digits)
    return {
        "a": [ask_s, "1", "1.000"], "b": [bid_s, "1", "1.000"], "c": [close, "0.00000000"],
        "v": ["0.00000000", "0.00000000"], "p": [close, close], "t": [0, 0],
        "l": [close, close], "h": [close, close], "o": close,
    }


# ------------------------------------------------------------ private answers


def balance(balances: Mapping[str, Balance]) -> dict[str, str]:
    return {asset_code(b.currency): fmt(b.total, 10) for b in balances.values()}


def balance_ex(balances: Mapping[str, Balance]) -> dict[str, dict[str, str]]:
    return {asset_code(b.currency): {"balance": fmt(b.total, 10), "hold_trade": fmt(b.used, 10)}
            for b in balances.values()}


_STATUS = {
    OrderStatus.PENDING: "pending",
    OrderStatus.OPEN: "open",
    OrderStatus.PARTIALLY_FILLED: "open",
    OrderStatus.FILLED: "closed",
    OrderStatus.CANCELLED: "canceled",
    OrderStatus.EXPIRED: "expired",
    # Kraken keeps no "rejected" state: an order its engine drops is cancelled with a reason.
    OrderStatus.REJECTED: "canceled",
}


SELF_TRADE_REASON = "Cannot trade with self"
"""Kraken's ``reason`` for an order self-trade prevention cancelled (support.kraken.com,
"Self-trading prevention", article 360042529892: status "Canceled", reason "Cannot trade
with self")."""


def closing(order: Order, *, time_in_force: str,
            expired_in_match: bool) -> tuple[str, str | None] | None:
    """Kraken's ``(status, reason)`` for an order the engine EXPIRED where Kraken cancels.

    Kraken's ``expired`` is a GTD order past its ``expiretm``, nothing else; the rest of an
    IOC that could not fill is *cancelled*, as is an order self-trade prevention ends
    (docs.kraken.com, guide "Order lifecycle": expired = "GTD (Good Till Date) order whose
    expiry time was reached", partially_filled -> canceled on "Remaining quantity canceled
    (IOC residual, ...)"). What Kraken puts in ``reason`` for an IOC residual is not in the
    documentation (it only says ``reason`` is "populated on cancellation"), so the emulator
    sends ``null`` rather than make a string up. ``None``: the status table applies.
    """
    if order.status is not OrderStatus.EXPIRED:
        return None
    if expired_in_match:
        return "canceled", SELF_TRADE_REASON
    if time_in_force == "IOC":
        return "canceled", None
    return None


def kraken_order_type(order_type: OrderType, *, has_price: bool) -> str:
    return {
        OrderType.MARKET: "market",
        OrderType.LIMIT: "limit",
        OrderType.STOP: "stop-loss-limit" if has_price else "stop-loss",
        OrderType.STOP_LIMIT: "stop-loss-limit",
        OrderType.TAKE_PROFIT: "take-profit-limit" if has_price else "take-profit",
    }[order_type]


def description(order: Order, market: Market) -> dict[str, str]:
    """``descr``: for trigger orders ``price`` is the trigger and ``price2`` the limit."""
    digits = decimals_of(market.price_step, 1)
    kind = kraken_order_type(order.type, has_price=order.price is not None)
    trigger = order.stop_price if order.type is not OrderType.LIMIT else None
    price = trigger if trigger is not None else order.price
    price2 = order.price if trigger is not None else None
    text = f"{order.side.value} {fmt(order.amount)} {pair_altname(market)} @ "
    if kind == "market":
        text += "market"
    elif kind == "limit":
        text += f"limit {fmt(price, digits)}"
    else:
        text += f"{kind.replace('-limit', '').replace('-', ' ')} {fmt(price, digits)}"
        if price2 is not None:
            text += f" -> limit {fmt(price2, digits)}"
    return {
        "pair": pair_altname(market),
        "type": order.side.value,
        "ordertype": kind,
        "price": fmt(price, digits),
        "price2": fmt(price2, digits),
        "leverage": "none",
        "order": text,
        "close": "",
    }


def order_info(order: Order, market: Market, *, userref: int | None, post_only: bool,
               trade_ids: list[str] | None = None,
               fee_decimals: int = FEE_DECIMALS, pending: bool = False,
               reason: str | None = None,
               ended: tuple[str, str | None] | None = None) -> dict[str, Any]:
    """An order as ``OpenOrders``, ``ClosedOrders`` and ``QueryOrders`` give it.

    ``fee`` is the sum of its trades' fees in quote (``fciq``), printed with the
    engine's fee decimals so it is exactly what was charged (see :func:`trade_info`).
    ``pending``: an open order not yet in the book ("pending", one of the five
    statuses of Kraken's OrderInfo). ``reason`` replaces the closing reason; ``ended``
    (from :func:`closing`) replaces status and reason of an order Kraken ends otherwise
    than the engine's status says.
    """
    digits = decimals_of(market.price_step, 1)
    info: dict[str, Any] = {
        "refid": None,
        "userref": userref if userref is not None else 0,
        "status": "pending" if pending and order.status is OrderStatus.OPEN
        else _STATUS[order.status],
        "opentm": seconds(to_ms(order.created_at)),
        "starttm": 0,
        "expiretm": 0,
        "descr": description(order, market),
        "vol": fmt(order.amount),
        "vol_exec": fmt(order.filled),
        "cost": fmt(order.filled * (order.average or 0.0), 5),
        "fee": fmt(order.fee, fee_decimals),
        "price": fmt(order.average, digits),
        "stopprice": "0.00000",
        "limitprice": "0.00000",
        "misc": "",
        "oflags": "fciq,post" if post_only else "fciq",
        "reason": None,  # QueryOrders carries it on open orders too (ccxt's recorded answer)
    }
    if order.client_order_id is not None:
        info["cl_ord_id"] = order.client_order_id
    if order.is_terminal:
        info["closetm"] = seconds(to_ms(order.last_change))
        info["reason"] = {
            OrderStatus.CANCELLED: "User requested",
            OrderStatus.REJECTED: "Insufficient funds",
            OrderStatus.EXPIRED: "Insufficient funds",
        }.get(order.status) if reason is None else reason
    if ended is not None:
        info["status"], info["reason"] = ended
    if trade_ids:
        info["trades"] = trade_ids
    return info


def add_order_result(order: Order, market: Market) -> dict[str, Any]:
    """``AddOrder``'s answer: only the description and the new id (Kraken sends no status)."""
    return {"descr": {"order": description(order, market)["order"]},
            "txid": [order_txid(order.id)]}


def trade_info(fill: Fill, market: Market, *, order_type: str, is_maker: bool,
               fee_decimals: int = FEE_DECIMALS) -> dict[str, Any]:
    """One entry of ``TradesHistory`` / ``QueryTrades``; fees in quote (Kraken's default).

    Kraken sends ``fee`` as a fixed-point string in the quote, with as many
    decimals as it books for the pair: ``"0.01873"`` on XXBTZUSD,
    ``"0.04433784"`` on USDCUSDT (the payloads quoted in ccxt's kraken parser,
    repo ccxt/ccxt; ccxt's ``ts/src/test/static/response/kraken.json`` records
    QueryOrders' ``"fee": "0.018475"``). The emulator prints the engine's fee
    decimals, the precision the engine charged at, so the string is the charge.
    """
    digits = decimals_of(market.price_step, 1)
    fee = fill.fee_cost if fill.fee_cost is not None else fill.fee
    return {
        "ordertxid": order_txid(fill.order_id),
        "postxid": trade_txid(fill.trade_id or "0"),
        "pair": pair_id(market),
        "time": seconds(to_ms(fill.timestamp)),
        "type": fill.side.value,
        "ordertype": order_type,
        "price": fmt(fill.price, digits),
        "cost": fmt(fill.amount * fill.price, 5),
        "fee": fmt(fee, fee_decimals),
        "vol": fmt(fill.amount),
        "margin": "0.00000",
        "leverage": "0",
        "misc": "",
        "trade_id": int(fill.trade_id or 0),
        "maker": is_maker,
    }


# ------------------------------------------------------------------ requests


def number(params: Mapping[str, str], name: str, *, required: bool = False) -> float | None:
    """A numeric parameter; absent-but-required, malformed or negative: invalid arguments."""
    return wire.number(params, name, required=required, missing=invalid_arguments,
                       malformed=invalid_arguments)


def userref(params: Mapping[str, str]) -> int | None:
    raw = params.get("userref")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise invalid_arguments("userref") from None
    if not _INT32[0] <= value <= _INT32[1]:
        raise invalid_arguments("userref")  # Kraken's userref is a signed 32-bit integer
    return value


def cl_ord_id(params: Mapping[str, str]) -> str | None:
    """``cl_ord_id`` as Kraken accepts it: a UUID (36 or 32 characters) or free text up to 18."""
    raw = params.get("cl_ord_id")
    if raw is None or raw == "":
        return None
    if _UUID_LONG.match(raw) or _UUID_SHORT.match(raw) or _FREE_TEXT.match(raw):
        return raw
    raise invalid_arguments("cl_ord_id")


_ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop-loss": OrderType.STOP,
    "stop-loss-limit": OrderType.STOP_LIMIT,
    "take-profit": OrderType.TAKE_PROFIT,
    "take-profit-limit": OrderType.TAKE_PROFIT,
}


# AddOrder's ``stptype`` -> the engine's self-trade prevention mode. Kraken's three:
# "cancel-newest" (the default: the arriving order is cancelled), "cancel-oldest" (the
# resting one is), "cancel-both" (docs.kraken.com, Spot REST AddOrder, ``stptype``).
_STP_TYPES = {
    "cancel-newest": "EXPIRE_TAKER",
    "cancel-oldest": "EXPIRE_MAKER",
    "cancel-both": "EXPIRE_BOTH",
}


def stp_mode(params: Mapping[str, str]) -> str:
    """The engine's STP mode for AddOrder's ``stptype``; Kraken always applies one."""
    mode = _STP_TYPES.get(params.get("stptype") or "cancel-newest")
    if mode is None:
        raise invalid_arguments("stptype")
    return mode


def time_in_force(params: Mapping[str, str], order_type: OrderType) -> str:
    """The engine's time in force for AddOrder's ``timeinforce`` (GTC, IOC or GTD).

    GTD needs an expiry clock the engine does not keep: refused, not ignored. A market
    order never rests, so IOC changes nothing for it (ccxt reads Kraken market orders as
    IOC); the engine takes IOC on limit orders only, so triggers with IOC are refused.
    """
    raw = params.get("timeinforce") or "GTC"
    if raw == "GTC" or (raw == "IOC" and order_type is OrderType.MARKET):
        return "GTC"
    if raw == "IOC" and order_type is OrderType.LIMIT:
        return "IOC"
    raise invalid_arguments("timeinforce")


def order_request(params: Mapping[str, str], symbol: str) -> OrderRequest:
    """``AddOrder`` parameters -> the engine's :class:`OrderRequest`.

    For trigger types ``price`` is the trigger and ``price2`` the limit, as
    Kraken documents. ``cl_ord_id`` and ``userref`` exclude each other.
    """
    side_raw = params.get("type", "")
    if side_raw not in ("buy", "sell"):
        raise invalid_arguments("type")
    side = Side(side_raw)
    kind = params.get("ordertype", "")
    order_type = _ORDER_TYPES.get(kind)
    if order_type is None:
        raise invalid_arguments("ordertype")
    flags = {f for f in params.get("oflags", "").split(",") if f}
    if flags - {"post", "fciq", "nompp"}:
        # Not emulated: viqc (volume in quote) and fcib (fee in base). Refused rather than
        # ignored, so no order claims a fee currency it was not charged in.
        raise invalid_arguments("oflags")
    if "post" in flags and kind != "limit":
        raise invalid_arguments("oflags")
    client_id = cl_ord_id(params)
    if client_id is not None and params.get("userref"):
        raise invalid_arguments("cl_ord_id")
    amount = number(params, "volume", required=True)
    assert amount is not None
    price = number(params, "price", required=kind != "market")
    price2 = number(params, "price2", required=kind.endswith("-limit"))
    if order_type in (OrderType.MARKET, OrderType.LIMIT):
        limit, trigger = (price if order_type is OrderType.LIMIT else None), None
    else:
        limit, trigger = price2, price
    return OrderRequest(
        symbol=symbol, side=side, type=order_type, amount=amount, price=limit,
        stop_price=trigger, client_order_id=client_id, post_only="post" in flags,
        role=OrderRole.infer(side, order_type),
    )


def engine_error(exc: ExchangeError) -> KrakenError:
    """Kraken's answer to an error the engine raised (the strings ccxt matches on)."""
    text = str(exc)
    if isinstance(exc, InsufficientFunds):
        return KrakenError("EOrder:Insufficient funds")
    if isinstance(exc, OrderNotFound):
        return KrakenError("EOrder:Unknown order")
    if isinstance(exc, InvalidOrder):
        if "unknown symbol" in text:
            return KrakenError("EQuery:Unknown asset pair")
        if "duplicate client order id" in text:
            return KrakenError("EOrder:Duplicate cl_ord_id")
        if "post_only" in text:
            return KrakenError("EOrder:Post only order")
        if "would trigger immediately" in text or "tick size" in text:
            return invalid_arguments("price")
        if "lot step" in text:
            return invalid_arguments("volume")
        if "minimum amount" in text:
            return KrakenError("EOrder:Order minimum not met")
        if "minimum notional" in text:
            return KrakenError("EOrder:Cost minimum not met")
        if "already" in text:  # cancelling a closed order: Kraken knows no such open order
            return KrakenError("EOrder:Unknown order")
        return KrakenError("EOrder:Invalid order")
    return KrakenError("EGeneral:Internal error")
