"""Kraken's private WebSocket v2 messages, as pure functions of nija_broker's models.

The installed ccxt.pro (4.5) reads Kraken's private feeds from the v2 endpoint
(``urls['api']['ws']['privateV2']``): ``watch_orders`` and ``watch_my_trades`` share one
``executions`` subscription, ``watch_balance`` subscribes to ``balances``; ``watch_*``
never connect to v1 (``openOrders``/``ownTrades``), which only names the client that
caches the REST ``GetWebSocketsToken`` answer. Shapes follow Kraken's documentation
(docs.kraken.com, "Spot WebSocket v2": executions, balances, ping, heartbeat) and the
payloads ccxt records in ``ccxt/pro/kraken.py`` (repo ccxt/ccxt: ``handle_orders``,
``parse_ws_order``, ``handle_my_trades``, ``handle_balance``):

- numbers travel as JSON numbers, times as RFC 3339 with microseconds, symbols and
  assets in v2's names (``BTC/USD``, ``BTC``; never ``XBT``);
- an order's life on spot is ``pending_new`` (every field), then ``new``; each fill an
  ``exec_type: trade`` report (``exec_id`` the trade's txid, ``fees`` in the quote,
  ``order_status`` ``partially_filled`` or ``filled``); completion a separate
  ``exec_type: filled`` update; a cancel ``exec_type: canceled`` with ``reason``. Status
  updates carry only what changed (``order_id``, status, ``cum_qty``, ``cum_cost``,
  ``avg_price``, ``fee_usd_equiv``), no symbol, as ccxt's recorded cancel shows;
- a ``balances`` update is one ledger entry per asset whose total moved (a trade's two
  legs, a deposit), with the asset's ``balance`` after it; holds move no total and send
  nothing.

Amounts, prices, costs and fees are rounded exactly as the REST dialect prints them
(:mod:`._kraken_orders`), so a fill read from the stream and the same fill read from
``TradesHistory`` carry the same numbers as well as the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nija_broker.core.models import Balance, Fill, Market, Order, OrderType

from ._kraken_names import fmt, order_txid, trade_txid
from ._kraken_orders import kraken_order_type
from ._wire import decimals_of

__all__ = [
    "API_VERSION",
    "balance_entries",
    "balances_snapshot",
    "channel_message",
    "heartbeat",
    "order_report",
    "order_update",
    "pong",
    "refused",
    "rfc3339",
    "status",
    "subscribed",
    "trade_report",
]

API_VERSION = "2.0.10"
"""What the connection's ``status`` message says (the version ccxt's recorded status shows)."""

_EXEC_TYPES = {"closed": "filled", "canceled": "canceled", "expired": "expired"}
"""REST's status of an ended order -> the exec_type (and order_status) that reports it."""


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: float | None, decimals: int) -> float:
    """``value`` rounded as the REST dialect prints it, as a JSON number."""
    return float(fmt(value, decimals))


# ------------------------------------------------------------ session messages


def status(connection_id: int) -> dict[str, Any]:
    """The first message of every connection."""
    return {
        "channel": "status",
        "type": "update",
        "data": [
            {
                "version": API_VERSION,
                "system": "online",
                "api_version": "v2",
                "connection_id": connection_id,
            }
        ],
    }


def heartbeat() -> dict[str, Any]:
    return {"channel": "heartbeat"}


def _answer(method: str, req_id: Any, time_in: datetime, time_out: datetime) -> dict[str, Any]:
    answer: dict[str, Any] = {"method": method}
    if req_id is not None:
        answer["req_id"] = req_id
    answer["time_in"] = rfc3339(time_in)
    answer["time_out"] = rfc3339(time_out)
    return answer


def pong(req_id: Any, time_in: datetime, time_out: datetime) -> dict[str, Any]:
    return _answer("pong", req_id, time_in, time_out)


def subscribed(
    method: str, result: Mapping[str, Any], req_id: Any, time_in: datetime, time_out: datetime
) -> dict[str, Any]:
    """The acknowledgement of a ``subscribe`` / ``unsubscribe``."""
    return {**_answer(method, req_id, time_in, time_out), "result": dict(result), "success": True}


def refused(
    method: str | None, error: str, req_id: Any, time_in: datetime, time_out: datetime
) -> dict[str, Any]:
    """A request refused: ``success: false`` and the reason in ``error``."""
    return {
        **_answer(method or "unknown", req_id, time_in, time_out),
        "error": error,
        "success": False,
    }


def channel_message(
    channel: str, kind: str, data: list[dict[str, Any]], sequence: int
) -> dict[str, Any]:
    """``kind``: ``snapshot`` or ``update``; ``sequence`` counts the channel's messages."""
    return {"channel": channel, "type": kind, "data": data, "sequence": sequence}


# ------------------------------------------------------------------ executions


def _fee_usd(fee: float, usd_per_quote: float | None, fee_decimals: int) -> dict[str, float]:
    """``fee_usd_equiv``, only where the quote's USD value is known (never guessed)."""
    if usd_per_quote is None:
        return {}
    return {"fee_usd_equiv": _num(fee * usd_per_quote, fee_decimals)}


def _progress(
    order: Order, market: Market, *, usd_per_quote: float | None, fee_decimals: int
) -> dict[str, Any]:
    """What an order's fills add up to: ``cum_qty``, ``cum_cost``, ``avg_price``, fees."""
    price_digits = decimals_of(market.price_step, 1)
    return {
        "cum_qty": _num(order.filled, 8),
        "cum_cost": _num(order.filled * (order.average or 0.0), 5),
        **_fee_usd(order.fee, usd_per_quote, fee_decimals),
        "avg_price": _num(order.average, price_digits),
    }


def order_report(
    order: Order,
    market: Market,
    *,
    exec_type: str,
    order_status: str,
    userref: int | None,
    time_in_force: str,
    post_only: bool,
    usd_per_quote: float | None,
    fee_decimals: int,
    timestamp: datetime,
) -> dict[str, Any]:
    """An order with every field: ``pending_new``, and each open order of a snapshot."""
    price_digits = decimals_of(market.price_step, 1)
    kind = kraken_order_type(order.type, has_price=order.price is not None)
    report: dict[str, Any] = {
        "order_id": order_txid(order.id),
        "order_userref": userref or 0,
        "symbol": market.symbol,
        "order_qty": _num(order.amount, 8),
        **_progress(order, market, usd_per_quote=usd_per_quote, fee_decimals=fee_decimals),
        "time_in_force": time_in_force,
        "exec_type": exec_type,
        "side": order.side.value,
        "order_type": kind,
        "order_status": order_status,
        "fee_ccy_pref": "fciq",
        "timestamp": rfc3339(timestamp),
    }
    if order.type is not OrderType.MARKET and order.price is not None:
        report["limit_price_type"] = "static"
        report["limit_price"] = _num(order.price, price_digits)
    # ccxt's recorded pending_new of a plain limit order carries "stop_price": 0.0.
    report["stop_price"] = _num(order.stop_price or 0.0, price_digits)
    if post_only:
        report["post_only"] = True
    if order.client_order_id is not None:
        report["cl_ord_id"] = order.client_order_id
    return report


def order_update(
    order: Order,
    market: Market,
    *,
    rest_status: str | None,
    reason: str | None,
    userref: int | None,
    usd_per_quote: float | None,
    fee_decimals: int,
    timestamp: datetime,
) -> dict[str, Any]:
    """A status update: ``new`` (``rest_status`` ``None``) or the end the REST side reads
    (``closed`` -> ``filled``, ``canceled``, ``expired``) with what the fills added up to."""
    exec_type = "new" if rest_status is None else _EXEC_TYPES[rest_status]
    update: dict[str, Any] = {
        "timestamp": rfc3339(timestamp),
        "order_status": exec_type,
        "exec_type": exec_type,
        "order_userref": userref or 0,
        "order_id": order_txid(order.id),
    }
    if rest_status is not None:
        update.update(
            _progress(order, market, usd_per_quote=usd_per_quote, fee_decimals=fee_decimals)
        )
    if exec_type in ("canceled", "expired"):
        update["cancel_reason"] = reason
        update["reason"] = reason
    return update


def trade_report(
    fill: Fill,
    order: Order,
    market: Market,
    *,
    maker: bool,
    userref: int | None,
    usd_per_quote: float | None,
    fee_decimals: int,
) -> dict[str, Any]:
    """One fill: ``exec_id`` and ``trade_id`` are the REST side's ids for the same trade."""
    price_digits = decimals_of(market.price_step, 1)
    fee = fill.fee_cost if fill.fee_cost is not None else fill.fee
    done = fill.cumulative_filled if fill.cumulative_filled is not None else order.filled
    return {
        "order_id": order_txid(fill.order_id),
        "exec_id": trade_txid(fill.trade_id or "0"),
        "exec_type": "trade",
        "trade_id": int(fill.trade_id or 0),
        "symbol": market.symbol,
        "side": fill.side.value,
        "last_qty": _num(fill.amount, 8),
        "last_price": _num(fill.price, price_digits),
        "liquidity_ind": "m" if maker else "t",
        "cost": _num(fill.amount * fill.price, 5),
        "order_userref": userref or 0,
        "order_status": "filled" if done >= order.amount * (1 - 1e-9) else "partially_filled",
        "order_type": kraken_order_type(order.type, has_price=order.price is not None),
        **_fee_usd(fill.fee, usd_per_quote, fee_decimals),
        "fees": [{"asset": fill.fee_currency or market.quote, "qty": _num(fee, fee_decimals)}],
        "timestamp": rfc3339(fill.timestamp),
    }


# -------------------------------------------------------------------- balances


def _total(balance: Balance) -> float:
    return _num(balance.total, 10)


def balances_snapshot(balances: Mapping[str, Balance]) -> list[dict[str, Any]]:
    return [
        {
            "asset": b.currency,
            "asset_class": "currency",
            "balance": _total(b),
            "wallets": [{"type": "spot", "id": "main", "balance": _total(b)}],
        }
        for b in sorted(balances.values(), key=lambda b: b.currency)
    ]


def balance_entries(
    balances: Mapping[str, Balance],
    moved: Mapping[str, float],
    *,
    ledger_ids: Mapping[str, str],
    kind: str,
    ref_id: str,
    fee: tuple[str, float] | None,
    fee_decimals: int,
    timestamp: datetime,
) -> list[dict[str, Any]]:
    """One ledger entry per asset in ``moved`` (asset -> change of its total).

    ``kind``: ``trade``, ``deposit`` or ``adjustment``; ``fee``: (asset, amount) the
    trade charged, which Kraken books beside the entry's ``amount`` (so ``amount - fee``
    is what the balance moved by).
    """
    entries = []
    for asset in sorted(moved):
        fee_here = fee[1] if fee is not None and fee[0] == asset else 0.0
        entries.append(
            {
                "ledger_id": ledger_ids[asset],
                "ref_id": ref_id,
                "timestamp": rfc3339(timestamp),
                "type": kind,
                "asset": asset,
                "asset_class": "currency",
                "category": kind,
                "wallet_type": "spot",
                "wallet_id": "main",
                "amount": _num(moved[asset] + fee_here, 10),
                "fee": _num(fee_here, fee_decimals),
                "balance": _num(balances[asset].total if asset in balances else 0.0, 10),
            }
        )
    return entries
