"""Binance spot user data events as JSON: pure functions from the engine's events.

After the Binance spot API documentation, "User Data Streams" (``executionReport``,
``outboundAccountPosition``, ``balanceUpdate``, ``eventStreamTerminated``; numbers as
8-decimal strings, times in epoch milliseconds), and what ccxt.pro 4.5 reads of them
(``ccxt/pro/binance.py``: ``parse_ws_order``, ``parse_ws_trade``, ``handle_balance``).
The WebSocket API wraps each as ``{"subscriptionId": N, "event": {...}}``; that is the
connection's business (:mod:`._binance_stream`), not this module's.
"""

from __future__ import annotations

from typing import Any

from adapters.sim._events import BalanceChanged, OrderChange, OrderChanged
from nija_broker.core.clock import to_ms
from nija_broker.core.models import OrderStatus, OrderType

from . import binance as bn

__all__ = [
    "EXECUTION_TYPES",
    "account_position",
    "balance_update",
    "execution_report",
    "terminated",
]

EXECUTION_TYPES = {
    OrderChange.NEW: "NEW",
    OrderChange.TRIGGERED: "NEW",
    OrderChange.TRADE: "TRADE",
    OrderChange.CANCELLED: "CANCELED",
    OrderChange.EXPIRED: "EXPIRED",
    OrderChange.REJECTED: "REJECTED",
}
"""Binance's execution type (``x``, ENUM "Execution types") per engine change; a change
missing here (CANCEL_PENDING: the order is still open) is not reported."""

_TRIGGER_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT})


def execution_report(
    event: OrderChanged, *, type_name: str, cancel_client_id: str | None = None
) -> dict[str, Any]:
    """An order's change: ``type_name`` is Binance's order type word (``LIMIT_MAKER`` ...),
    ``cancel_client_id`` the client id of the cancel, for a CANCELLED change.

    A fill carries ``t`` (trade id), ``l``/``L`` (its amount and price), ``Y`` (their
    product), ``n``/``N`` (the commission as charged and its asset), ``m`` (maker); ``z``
    and ``Z`` are the order's cumulative amount and quote. A cancel names the cancel's
    client id in ``c`` and the order's in ``C``. Self-trade prevention reports
    ``TRADE_PREVENTION`` / ``EXPIRED_IN_MATCH``.
    """
    order, fill, flags = event.order, event.fill, event.flags
    event_ms = to_ms(event.timestamp)
    execution = EXECUTION_TYPES[event.change]
    if event.change is OrderChange.EXPIRED and flags.expired_in_match:
        execution = "TRADE_PREVENTION"
    client_id, original = order.client_order_id or "", ""
    if event.change is OrderChange.CANCELLED:
        client_id, original = cancel_client_id or "", order.client_order_id or ""
    waiting = (
        order.type in _TRIGGER_TYPES
        and order.filled == 0
        and order.is_open
        and event.change is not OrderChange.TRIGGERED
    )
    on_book = order.is_open and not waiting
    created_ms = to_ms(order.created_at)
    commission, asset = bn.commission(fill) if fill is not None else ("0", None)
    report: dict[str, Any] = {
        "e": "executionReport",
        "E": event_ms,
        "s": bn.market_id(order.symbol),
        "c": client_id,
        "S": order.side.value.upper(),
        "o": type_name,
        "f": flags.time_in_force,
        "q": bn.fixed8(order.amount),
        "p": bn.fixed8(order.price or 0.0),
        "P": bn.fixed8(order.stop_price or 0.0),
        "F": "0.00000000",
        "g": -1,
        "C": original,
        "x": execution,
        "X": bn.status_name(order, flags),
        "r": "INSUFFICIENT_BALANCES" if order.status is OrderStatus.REJECTED else "NONE",
        "i": int(order.id),
        "l": bn.fixed8(fill.amount if fill is not None else 0.0),
        "z": bn.fixed8(order.filled),
        "L": bn.fixed8(fill.price if fill is not None else 0.0),
        "n": commission,
        "N": asset,
        "T": to_ms(fill.timestamp) if fill is not None else event_ms,
        "t": int(fill.trade_id or -1) if fill is not None else -1,
        "I": event.seq,
        "w": on_book,
        "m": bool(event.maker),
        "M": False,
        "O": created_ms,
        "Z": bn.fixed8(order.filled * (order.average or 0.0)),
        "Y": bn.fixed8(fill.amount * fill.price if fill is not None else 0.0),
        "Q": "0.00000000",
    }
    if on_book or order.filled > 0:
        report["W"] = created_ms  # "Working Time": only once the order was on the book
    report["V"] = flags.stp_mode
    return report


def account_position(event: BalanceChanged) -> dict[str, Any]:
    """``outboundAccountPosition``: free and locked of the assets the change moved."""
    event_ms = to_ms(event.timestamp)
    balances = []
    for currency in event.changed:
        balance = event.balances.get(currency)
        free, used = (balance.free, balance.used) if balance is not None else (0.0, 0.0)
        balances.append({"a": currency, "f": bn.fixed8(free), "l": bn.fixed8(used)})
    return {"e": "outboundAccountPosition", "E": event_ms, "u": event_ms, "B": balances}


def balance_update(event: BalanceChanged) -> dict[str, Any]:
    """``balanceUpdate``: a deposit's delta (Binance sends it for deposits, withdrawals
    and transfers; an ``outboundAccountPosition`` follows)."""
    deposit = event.deposit
    if deposit is None:
        raise ValueError("a balanceUpdate needs a deposit")
    event_ms = to_ms(event.timestamp)
    return {
        "e": "balanceUpdate",
        "E": event_ms,
        "a": deposit.currency,
        "d": bn.fixed8(deposit.amount),
        "T": event_ms,
    }


def terminated(subscription_id: int, now_ms: int) -> dict[str, Any]:
    """``eventStreamTerminated``, wrapped: the subscription's stream has ended."""
    return {
        "subscriptionId": subscription_id,
        "event": {"e": "eventStreamTerminated", "E": now_ms},
    }
