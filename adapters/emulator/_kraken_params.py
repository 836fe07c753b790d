"""Readers of Kraken's request parameters: numbers, ``userref``, ``cl_ord_id``, AddOrder's.

Each turns a form field into what :class:`~adapters.sim.SimEngine` takes, or
refuses it with ``EGeneral:Invalid arguments:<name>`` as Kraken does
(docs.kraken.com, "Spot REST API": Trading, AddOrder; the "Spot Client Order
Identifiers" guide). What the emulator cannot honour (GTD, ``viqc``, ``fcib``)
is refused rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import OrderRole, OrderType, Side

from . import _wire as wire
from ._kraken_errors import invalid_arguments

CL_ORD_ID_FREE_TEXT_MAX = 18
_UUID_LONG = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}$"
)
_UUID_SHORT = re.compile(r"^[0-9a-fA-F]{32}$")
_FREE_TEXT = re.compile(rf"^[\x21-\x7e]{{1,{CL_ORD_ID_FREE_TEXT_MAX}}}$")
_INT32 = (-(2**31), 2**31 - 1)


def number(params: Mapping[str, str], name: str, *, required: bool = False) -> float | None:
    """A numeric parameter; absent-but-required, malformed or negative: invalid arguments."""
    return wire.number(
        params, name, required=required, missing=invalid_arguments, malformed=invalid_arguments
    )


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
        symbol=symbol,
        side=side,
        type=order_type,
        amount=amount,
        price=limit,
        stop_price=trigger,
        client_order_id=client_id,
        post_only="post" in flags,
        role=OrderRole.infer(side, order_type),
    )
