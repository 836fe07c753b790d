"""What an alert says: the runtime's events and the guard's blocks as :class:`Alert` values.

Pure: an event (or a blocked decision) in, the alerts a trader would want of it out,
each with a line of text for a person and its figures (JSON values) for a program.
Which of them reach which target, and how, is :mod:`nija_broker.service.alerts`.

======================  ====================================================
``[[alerts]] events``   told when
======================  ====================================================
``fill``                a fill is booked (from the exchange's trades)
``trade``               a fill closes a round trip (net P&L)
``block``               the guard blocks an entry (reserve or dry-run check)
``stale_cancel``        a stale entry the runtime cancelled; the exchange confirms
``sync_failed``         an account's sync turns ``failed`` (entries fail closed)
``sync_recovered``      back to ``ok`` from ``degraded`` or ``failed``
``attention``           the reconciler will not decide alone: a person should look
``paused``              a trader paused or resumed the account's entries
======================  ====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nija_broker.core.events import (
    AccountPaused,
    AccountResumed,
    AttentionRequired,
    Event,
    FillsBooked,
    HealthChanged,
    OrderCancelled,
)
from nija_broker.core.health import AccountHealth, SyncState
from nija_broker.core.intent import Blocked
from nija_broker.core.models import Fill, TradeRecord
from nija_broker.service.logs import redact

__all__ = ["Alert", "block_alert", "event_alerts"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing to tell: its kind (an ``[[alerts]] events`` name), account, time, a line
    of text for a person and the figures for a program (JSON values only)."""

    event: str
    account_id: str
    at: datetime
    text: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    repeat_key: tuple[str, ...] | None = None
    """Alerts with the same key are sent once per target's ``block_repeat_s``."""


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:,.8g}"


def _fill(fill: Fill, at: datetime, quote: str | None) -> Alert:
    fee = f", fee {_num(fill.fee_cost if fill.fee_cost is not None else fill.fee)}"
    fee += f" {fill.fee_currency}" if fill.fee_currency else ""
    return Alert(
        "fill",
        fill.account_id,
        at,
        f"[{fill.account_id}] filled: {fill.side.value} {_num(fill.amount)} {fill.symbol} "
        f"at {_num(fill.price)}{fee}",
        {
            "order_id": fill.order_id,
            "trade_id": fill.trade_id,
            "symbol": fill.symbol,
            "side": fill.side.value,
            "amount": fill.amount,
            "price": fill.price,
            "fee": fill.fee_cost if fill.fee_cost is not None else fill.fee,
            "fee_currency": fill.fee_currency,
            "role": fill.role.value if fill.role is not None else None,
            "quote_currency": quote,
        },
    )


def _trade(trade: TradeRecord, at: datetime, quote: str | None) -> Alert:
    net = trade.net_pnl if trade.net_pnl is not None else trade.pnl
    pct = f" ({trade.pnl_pct:+.2f}%)" if trade.pnl_pct is not None else ""
    return Alert(
        "trade",
        trade.account_id,
        at,
        f"[{trade.account_id}] trade closed: {trade.symbol} {_num(trade.quantity)} from "
        f"{_num(trade.entry_price)} to {_num(trade.exit_price)}, net {net:+,.2f}"
        f"{' ' + quote if quote else ''}{pct}",
        {
            "trade_id": trade.trade_id,
            "symbol": trade.symbol,
            "side": trade.side.value,
            "quantity": trade.quantity,
            "entry_price": trade.entry_price,
            "exit_price": trade.exit_price,
            "pnl": trade.pnl,
            "net_pnl": net,
            "pnl_pct": trade.pnl_pct,
            "fees": trade.fees,
            "hold_time_s": trade.hold_time_seconds,
            "is_win": trade.is_win,
            "exit_role": trade.exit_role.value if trade.exit_role is not None else None,
            "quote_currency": quote,
        },
    )


def _health(event: HealthChanged, before: AccountHealth | None) -> Alert | None:
    now, account = event.health, event.account_id
    if now.state is SyncState.FAILED and (before is None or before.state is not SyncState.FAILED):
        return Alert(
            "sync_failed",
            account,
            event.at,
            f"[{account}] sync failed ({now.consecutive_failures} failures in a row): "
            f"{redact(now.last_error or 'no error given')}; fail-closed tiers get no entries",
            {
                "state": now.state.value,
                "last_error": redact(now.last_error) if now.last_error else None,
                "consecutive_failures": now.consecutive_failures,
                "last_success": now.last_success.isoformat() if now.last_success else None,
            },
        )
    if (
        now.state is SyncState.OK
        and before is not None
        and before.state in (SyncState.DEGRADED, SyncState.FAILED)
    ):
        return Alert(
            "sync_recovered",
            account,
            event.at,
            f"[{account}] sync recovered (was {before.state.value}: "
            f"{redact(before.last_error or 'no error given')})",
            {
                "previous_state": before.state.value,
                "previous_error": redact(before.last_error) if before.last_error else None,
            },
        )
    return None


def event_alerts(
    event: Event,
    *,
    stale: bool = False,
    before: AccountHealth | None = None,
    quote: str | None = None,
) -> list[Alert]:
    """What to tell of one runtime event: a fill and a trade per booked fill and trade, a
    stale order's cancel (``stale``: the runtime cancelled it as stale and the exchange
    confirms), a sync that failed or recovered (``before``: the health the runtime saw
    last), an attention event, a pause or resume. Pure."""
    account, at = event.account_id, event.at
    if isinstance(event, FillsBooked):
        return [_fill(f, at, quote) for f in event.fills] + [
            _trade(t, at, quote) for t in event.trades
        ]
    if isinstance(event, OrderCancelled) and stale:
        order = event.order
        # The version before the cancel: a cancel's answer may carry its own time as the
        # order's (Binance's transactTime), which is not when the order was placed.
        placed = (event.previous or order).created_at
        return [
            Alert(
                "stale_cancel",
                account,
                at,
                f"[{account}] stale {order.side.value} order {order.id} on {order.symbol} "
                f"({_num(order.amount)} at {_num(order.price)}) cancelled; the exchange confirms",
                {
                    "order_id": order.id,
                    "client_order_id": order.client_order_id,
                    "symbol": order.symbol,
                    "side": order.side.value,
                    "type": order.type.value,
                    "amount": order.amount,
                    "filled": order.filled,
                    "price": order.price,
                    "created_at": placed.isoformat(),
                    "age_s": (at - placed).total_seconds(),
                },
            )
        ]
    if isinstance(event, HealthChanged):
        alert = _health(event, before)
        return [alert] if alert is not None else []
    if isinstance(event, AttentionRequired):
        about = f" (order {event.order_id})" if event.order_id else ""
        return [
            Alert(
                "attention",
                account,
                at,
                f"[{account}] needs attention{about}: {event.reason}",
                {"reason": event.reason, "order_id": event.order_id, "attempts": event.attempts},
            )
        ]
    if isinstance(event, AccountPaused):
        why = f": {event.reason}" if event.reason else ""
        return [
            Alert(
                "paused",
                account,
                at,
                f"[{account}] entries paused by {event.by}{why} (exits still pass)",
                {"paused": True, "by": event.by, "reason": event.reason},
            )
        ]
    if isinstance(event, AccountResumed):
        return [
            Alert(
                "paused",
                account,
                at,
                f"[{account}] entries resumed by {event.by}",
                {"paused": False, "by": event.by, "reason": None},
            )
        ]
    return []


def block_alert(decision: Blocked, at: datetime) -> Alert:
    """A blocked entry, as the guard decided it."""
    intent = decision.intent
    size = (
        f" (size {_num(intent.size_usd)})"
        if intent.size_usd
        else f" (amount {_num(intent.amount)})"
        if intent.amount
        else ""
    )
    return Alert(
        "block",
        intent.account_id,
        at,
        f"[{intent.account_id}] {intent.side.value} {intent.symbol}{size} entry blocked by "
        f"{decision.rule}: {decision.reason}",
        {
            "rule": decision.rule,
            "reason": decision.reason,
            "symbol": intent.symbol,
            "side": intent.side.value,
            "type": intent.type.value,
            "amount": intent.amount,
            "size": intent.size_usd,
            "price": intent.price,
            "client_order_id": intent.client_order_id,
        },
        repeat_key=(intent.account_id, intent.symbol, intent.side.value, decision.rule),
    )
