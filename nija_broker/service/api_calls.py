"""What the API's handlers read and change: each function is one call through the door.

A handler parses its request, makes one of these calls through
:func:`nija_broker.service.api._owned` (the one door to the state's owner) and
renders the value it gets back; nothing here touches aiohttp, and nothing in a
handler touches the guard, the books, the store or the status but through here.
An account nobody configured or stored raises :class:`UnknownAccount` (a JSON 404).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from nija_broker.core.breakers import Breakers
from nija_broker.core.clock import Clock
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Decision, OrderIntent
from nija_broker.core.models import EquityPoint, Order, TradeRecord
from nija_broker.core.pause import Pause
from nija_broker.guard.guard import Guard, ReservationView
from nija_broker.service.api_body import ReservationCall
from nija_broker.service.export import ExportWhat, export_rows
from nija_broker.service.positions_view import PositionView, account_positions
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.status import AccountStatus, account_status, status_rows
from nija_broker.state.books import Books
from nija_broker.state.store import DecisionRecord
from nija_broker.sync.cancel import CancelAnswer

__all__ = [
    "ApiContext",
    "UnknownAccount",
    "account_row",
    "check",
    "decide",
    "decisions",
    "equity",
    "export",
    "health",
    "orders",
    "pause",
    "positions",
    "refresh_metrics",
    "require",
    "reservations",
    "resume",
    "rows",
    "settle",
    "trades",
]


CancelOrder = Callable[[str, str], "concurrent.futures.Future[CancelAnswer]"]
"""(account id, order id) -> the cancel's answer, from another thread's loop."""


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the API reads. The runtime builds it; tests can build it by hand."""

    books: Books
    live: Mapping[str, AccountLive]
    guard: Guard
    metrics: BrokerMetrics
    clock: Clock
    token: str | None = field(default=None, repr=False)
    cancel_order: CancelOrder | None = None
    """Sends a trader's cancel to the account's exchange on the runtime's loop (``None``:
    no reconciler runs here, so no cancel can be confirmed)."""
    alerts: Callable[[], dict[str, dict[str, Any]]] | None = None
    """Each alert target's state and counts, by name (``None``: no ``[[alerts]]``); read on
    the API's thread (``AlertDispatcher.report`` is safe from any)."""


class UnknownAccount(LookupError):
    """Raised inside an owned call for an account nobody configured or stored: a JSON 404."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(account_id)


def require(ctx: ApiContext, account_id: str) -> None:
    """The account is configured (has a live view) or has books in the store."""
    if account_id not in ctx.live and account_id not in ctx.books.accounts():
        raise UnknownAccount(account_id)


def health(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    """Each account's reported health; ``syncing`` until its first sync."""
    accounts = {}
    for account_id, live in sorted(ctx.live.items()):
        # Degraded while its equity cannot be established; failed while its books cannot
        # be read back from the store (entries fail closed then).
        book = ctx.books.get(account_id) if account_id in ctx.books else None
        shown = live.reported_health(book.degraded_reason if book is not None else None)
        accounts[account_id] = {
            "state": shown.state.value,
            "last_success": shown.last_success.isoformat() if shown.last_success else None,
            "consecutive_failures": shown.consecutive_failures,
            "last_error": shown.last_error,
            "unvalued_holdings": list(live.unvalued_holdings),
            "stream": _stream_view(live),
        }
    return accounts


def _stream_view(live: AccountLive) -> dict[str, Any] | None:
    """The account's websocket stream as ``/healthz`` shows it (``None``: polling only)."""
    stream = live.stream
    if stream is None:
        return None
    return {
        "state": stream.state,
        "since": stream.since.isoformat() if stream.since else None,
        "last_message": stream.last_message.isoformat() if stream.last_message else None,
        "reconnects": stream.reconnects,
        "last_error": stream.last_error,
    }


def rows(ctx: ApiContext, now: datetime) -> list[AccountStatus]:
    """A status row per account."""
    return status_rows(ctx.books, ctx.live, now, guard=ctx.guard.facts)


def account_row(
    ctx: ApiContext, account_id: str, now: datetime
) -> tuple[AccountStatus, Breakers | None]:
    """One account's status row and its breakers."""
    require(ctx, account_id)
    facts = ctx.guard.facts(account_id)
    return account_status(
        ctx.books.get(account_id), ctx.live.get(account_id), now, guard=facts
    ), facts.breakers


def pause(ctx: ApiContext, account_id: str, by: str, reason: str) -> Pause:
    """The account's entries paused (journaled; the pause in force kept if there is one)."""
    require(ctx, account_id)
    return ctx.guard.pause(account_id, by, reason)


def resume(ctx: ApiContext, account_id: str, by: str) -> tuple[Breakers | None, list[str], bool]:
    """The account's pause lifted and its tripped breakers cleared (both journaled): the
    breakers after it, the breakers resumed, and whether a pause was lifted."""
    require(ctx, account_id)
    unpaused = ctx.guard.unpause(account_id, by)
    breakers, resumed = ctx.guard.resume(account_id)
    return breakers, list(resumed), unpaused


def positions(ctx: ApiContext, account_id: str) -> tuple[str, list[PositionView]]:
    """The account's quote currency and positions."""
    require(ctx, account_id)
    live = ctx.live.get(account_id)
    quote = live.quote_currency if live is not None else "USD"
    return quote, account_positions(ctx.books.get(account_id), live)


def equity(ctx: ApiContext, account_id: str, limit: int) -> tuple[str, list[EquityPoint]]:
    """The account's quote currency and its latest ``limit`` equity points, oldest first."""
    require(ctx, account_id)
    live = ctx.live.get(account_id)
    quote = live.quote_currency if live is not None else "USD"
    return quote, ctx.books.get(account_id).performance.equity_points(limit)


def export(ctx: ApiContext, account_id: str, what: ExportWhat) -> list[BaseModel]:
    """The account's records of one kind from the store, oldest first."""
    require(ctx, account_id)
    return export_rows(ctx.books, account_id, what)


def orders(ctx: ApiContext, account_id: str, which: str) -> list[Order]:
    """The account's open, live or all orders."""
    require(ctx, account_id)
    tracker = ctx.books.get(account_id).orders
    return {"open": tracker.open_orders, "live": tracker.live_orders, "all": tracker.orders}[
        which
    ]()


def trades(ctx: ApiContext, account_id: str, limit: int) -> list[TradeRecord]:
    """The account's latest trades, from the store when there is one."""
    require(ctx, account_id)
    store = ctx.books.store
    return (
        store.trades(account_id, limit=limit)
        if store is not None
        else ctx.books.get(account_id).performance.trade_history(limit)
    )


def decisions(
    ctx: ApiContext, account_id: str, limit: int, blocked_only: bool
) -> list[DecisionRecord]:
    """The guard's latest decisions for the account."""
    require(ctx, account_id)
    return list(ctx.guard.decisions(account_id, limit=limit, blocked_only=blocked_only))


def refresh_metrics(ctx: ApiContext, now: datetime) -> None:
    """The per-account gauges read from the books and live views."""
    ctx.metrics.refresh(ctx.books, ctx.live, now)


def check(ctx: ApiContext, intent: OrderIntent) -> Decision:
    """The guard's dry run."""
    require(ctx, intent.account_id)
    return ctx.guard.check(intent)


def decide(ctx: ApiContext, intent: OrderIntent) -> Decision:
    """Judge and reserve (the intent journaled before an allowed answer)."""
    require(ctx, intent.account_id)
    return ctx.guard.decide(intent)


def settle(ctx: ApiContext, call: ReservationCall, confirm: bool) -> None:
    """A reservation confirmed (the exchange took the order) or released."""
    if confirm:
        ctx.guard.confirm(call.reservation_id, call.order_id)
    else:
        ctx.guard.release(call.reservation_id)


def reservations(ctx: ApiContext, account_id: str) -> list[ReservationView]:
    """What the guard holds for the account now, and why."""
    require(ctx, account_id)
    return ctx.guard.reservation_views(account_id)
