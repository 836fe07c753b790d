"""Kraken's JSON for orders and trades: OrderInfo, AddOrder's answer, TradeInfo.

Pure functions from nija_broker's :class:`~nija_broker.core.models.Order` and
:class:`~nija_broker.core.models.Fill` to what ``OpenOrders``, ``ClosedOrders``,
``QueryOrders``, ``AddOrder``, ``TradesHistory`` and ``QueryTrades`` answer
(docs.kraken.com, "Spot REST API": Account Data, Trading; guide "Order
lifecycle"), including the statuses and reasons Kraken gives where the
engine's status says something else.
"""

from __future__ import annotations

from typing import Any

from adapters.sim.engine import FEE_DECIMALS
from nija_broker.core.clock import to_ms
from nija_broker.core.models import Fill, Market, Order, OrderStatus, OrderType

from ._kraken_names import fmt, order_txid, pair_altname, pair_id, seconds, trade_txid
from ._wire import decimals_of

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


def closing(
    order: Order, *, time_in_force: str, expired_in_match: bool
) -> tuple[str, str | None] | None:
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


def order_info(
    order: Order,
    market: Market,
    *,
    userref: int | None,
    post_only: bool,
    trade_ids: list[str] | None = None,
    fee_decimals: int = FEE_DECIMALS,
    pending: bool = False,
    reason: str | None = None,
    ended: tuple[str, str | None] | None = None,
) -> dict[str, Any]:
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
        "status": "pending"
        if pending and order.status is OrderStatus.OPEN
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
        info["reason"] = (
            {
                OrderStatus.CANCELLED: "User requested",
                OrderStatus.REJECTED: "Insufficient funds",
                OrderStatus.EXPIRED: "Insufficient funds",
            }.get(order.status)
            if reason is None
            else reason
        )
    if ended is not None:
        info["status"], info["reason"] = ended
    if trade_ids:
        info["trades"] = trade_ids
    return info


def add_order_result(order: Order, market: Market) -> dict[str, Any]:
    """``AddOrder``'s answer: only the description and the new id (Kraken sends no status)."""
    return {"descr": {"order": description(order, market)["order"]}, "txid": [order_txid(order.id)]}


def trade_info(
    fill: Fill, market: Market, *, order_type: str, is_maker: bool, fee_decimals: int = FEE_DECIMALS
) -> dict[str, Any]:
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
