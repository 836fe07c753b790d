"""What the runtime says about what happened: one INFO line per fill, trade, stale order,
adoption or recovery, its figures as key=value fields (``logs.fields``; ``event`` names the
kind, for grep and log queries), and the metrics label of a failed cycle.

The lines are the runtime's (logger ``nija_broker.runtime``): traders' log filters name it.
"""

from __future__ import annotations

import logging

from nija_broker.core.errors import AccountFatal, OrderError, RateLimited, TransientError
from nija_broker.core.events import StaleOrderFound
from nija_broker.core.health import AccountHealth
from nija_broker.core.models import Fill, Order, TradeRecord
from nija_broker.service.logs import fields

__all__ = [
    "error_kind",
    "log_adopted",
    "log_fill",
    "log_recovery",
    "log_stale",
    "log_trade",
    "order_fields",
]

log = logging.getLogger("nija_broker.runtime")


def error_kind(error: Exception) -> str:
    """The metrics label of a failed cycle: the error-tree branch it belongs to."""
    for kind, classes in (
        ("rate_limited", RateLimited),
        ("transient", TransientError),
        ("auth", AccountFatal),
        ("order", OrderError),
    ):
        if isinstance(error, classes):
            return kind
    return "other"


def order_fields(kind: str, order: Order, **more: object) -> dict[str, object]:
    return fields(
        order.account_id,
        event=kind,
        order_id=order.id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        amount=order.amount,
        price=order.price,
        filled=order.filled,
        role=order.role,
        **more,
    )


def log_fill(fill: Fill) -> None:
    fee = (
        f"{fill.fee_cost:g} {fill.fee_currency}"
        if fill.fee_currency is not None and fill.fee_cost is not None
        else f"{fill.fee:g}"
    )
    log.info(
        "account %s: fill booked: %s %g %s at %g, fee %s (order %s)",
        fill.account_id,
        fill.side.value,
        fill.amount,
        fill.symbol,
        fill.price,
        fee,
        fill.order_id,
        extra=fields(
            fill.account_id,
            event="fill_booked",
            order_id=fill.order_id,
            trade_id=fill.trade_id,
            symbol=fill.symbol,
            side=fill.side,
            amount=fill.amount,
            price=fill.price,
            fee=fill.fee,
            fee_currency=fill.fee_currency,
            fee_cost=fill.fee_cost,
        ),
    )


def log_trade(trade: TradeRecord) -> None:
    net = trade.net_pnl if trade.net_pnl is not None else trade.pnl - trade.fees
    log.info(
        "account %s: trade closed: %s %g, %g -> %g, net %+.2f after %.2f fees",
        trade.account_id,
        trade.symbol,
        trade.quantity,
        trade.entry_price,
        trade.exit_price,
        net,
        trade.fees,
        extra=fields(
            trade.account_id,
            event="trade_closed",
            trade_id=trade.trade_id,
            symbol=trade.symbol,
            side=trade.side,
            quantity=trade.quantity,
            entry_price=trade.entry_price,
            exit_price=trade.exit_price,
            pnl=trade.pnl,
            fees=trade.fees,
            net_pnl=net,
        ),
    )


def log_stale(event: StaleOrderFound) -> None:
    order = event.order
    age_s = (event.at - order.created_at).total_seconds()
    doing = "cancelling it" if event.action == "cancel" else "alert only"
    log.info(
        "account %s: order %s on %s is stale (%.0f s old, limit %g s): %s",
        order.account_id,
        order.id,
        order.symbol,
        age_s,
        event.max_age_s,
        doing,
        extra=order_fields(
            "stale_order",
            order,
            age_s=round(age_s, 1),
            max_age_s=event.max_age_s,
            action=event.action,
        ),
    )


def log_adopted(order: Order) -> None:
    log.info(
        "account %s: order %s adopted from the exchange's listing: %s %g %s at %s",
        order.account_id,
        order.id,
        order.side.value,
        order.amount,
        order.symbol,
        "market" if order.price is None else f"{order.price:g}",
        extra=order_fields("order_adopted", order),
    )


def log_recovery(account_id: str, before: AccountHealth) -> None:
    log.info(
        "account %s: sync ok again after %d failed cycles (last error: %s)",
        account_id,
        before.consecutive_failures,
        before.last_error or "none",
        extra=fields(
            account_id,
            event="account_recovered",
            was=before.state,
            failures=before.consecutive_failures,
            last_error=before.last_error,
        ),
    )
