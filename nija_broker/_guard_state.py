"""The guard's bookkeeping: per-account reservations, cached book figures, journal rows.

Private to :mod:`nija_broker.guard`, which holds every lock; nothing here locks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._orders_figures import held_capital
from .intent import Allowed, Blocked, OrderIntent, Reason, Reservation
from .models import Balance, Order, OrderRole, OrderType, Side
from .orders import OrderTracker
from .store import DecisionRecord, Intent


@dataclass(slots=True)
class Settling:
    reservation: Reservation
    order_id: str | None
    confirmed_at: float
    balances_seen: object


@dataclass(slots=True)
class AccountGuard:
    """One account's lock and reservations. Every field is read and written under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: dict[str, Reservation] = field(default_factory=dict)
    settling: dict[str, Settling] = field(default_factory=dict)
    unresolved: dict[str, Reservation] = field(default_factory=dict)
    """Reservations not yet confirmed or released, expired ones included."""
    by_client_id: dict[str, str] = field(default_factory=dict)
    book_figures: BookFigures | None = None


@dataclass(frozen=True, slots=True)
class BookFigures:
    """Held capital and live entries per symbol of one version of an account's order book.

    Orders are frozen values replaced whole on every change, so the same
    order object means the same order: ``per_order`` keeps each live order
    (alive, so its id cannot be reused) with what it holds and the symbol it
    enters, if it is an entry, keyed by ``id()``.
    """

    tracker: OrderTracker
    version: int
    last_prices: dict[str, float]
    per_order: dict[int, tuple[Order, float, str | None]]
    held_usd: float
    entry_symbols: dict[str, int]


def book_figures(cached: BookFigures | None, orders: OrderTracker,
                  last_prices: dict[str, float]) -> BookFigures:
    """The book's figures, reusing what each unchanged order contributed last time.

    The guard judges far more often than the book changes, and a change touches
    a few orders: a full valuation of every live order is what would otherwise
    dominate a decision. An order valued at the last price (a market order, or
    one without a price) is valued again whenever last prices changed.
    """
    version = orders.version  # before the orders: a change in between only costs a recount
    if cached is not None and cached.tracker is not orders:
        cached = None  # the book was reloaded: a new tracker counts versions afresh
    prices_changed = cached is None or cached.last_prices != last_prices
    if cached is not None and not prices_changed and cached.version == version:
        return cached
    live = orders.live_orders()
    previous = cached.per_order if cached is not None else {}
    fee_rate = orders.fee_rate
    per_order: dict[int, tuple[Order, float, str | None]] = {}
    held_usd = 0.0
    entry_symbols: dict[str, int] = {}
    for order in live:
        key = id(order)
        known = previous.get(key)
        if known is None or (prices_changed and (
                order.type is OrderType.MARKET or order.reference_price is None)):
            held = held_capital((order,), fee_rate=fee_rate, last_prices=last_prices).total
            entry = order.symbol if (order.role is OrderRole.ENTRY and order.side is Side.BUY
                                     and not order.reduce_only) else None
            known = (order, held, entry)
        per_order[key] = known
        held_usd += known[1]
        symbol = known[2]
        if symbol is not None:
            entry_symbols[symbol] = entry_symbols.get(symbol, 0) + 1
    return BookFigures(orders, version, dict(last_prices), per_order, held_usd, entry_symbols)


def expired_long_ago(reservation: Reservation, account: AccountGuard,
                      forget_before: float) -> bool:
    return reservation.id not in account.in_flight and reservation.expires_at <= forget_before


def reservation_held_usd(reservation: Reservation) -> float:
    """What an entry on its way adds to held capital: a resting order's value; a market
    order fills at once and becomes a position, so it fragments nothing."""
    return 0.0 if reservation.type is OrderType.MARKET else reservation.reserved_usd


def in_book(settling: Settling, orders: OrderTracker) -> Order | None:
    order = orders.by_client_id(settling.reservation.client_order_id)
    if order is None and settling.order_id is not None:
        order = orders.get(settling.order_id)
    return order


def visible(settling: Settling, orders: OrderTracker,
             balances: Mapping[str, Balance] | None) -> bool:
    """Called once a balance newer than the confirmation arrived: does the account show it?

    Yes when the book has the order (live, the book counts it; finished, that
    balance holds its fills), or when the balance holds the base it bought.
    """
    if in_book(settling, orders) is not None:
        return True
    base = settling.reservation.symbol.split("/")[0]
    balance = (balances or {}).get(base)
    return balance is not None and (balance.total or balance.free + balance.used) > 0


def request_json(intent: OrderIntent, reserved_usd: float) -> str:
    return json.dumps({"intent": intent.model_dump(mode="json"), "reserved_usd": reserved_usd},
                      sort_keys=True)


def parse_request(stored: Intent) -> tuple[OrderIntent, float]:
    data = json.loads(stored.request_json)
    return OrderIntent.model_validate(data["intent"]), float(data.get("reserved_usd", 0.0))


def _warning_dict(reason: Reason) -> dict[str, Any]:
    return {"rule": reason.rule, "message": reason.message, "figures": dict(reason.figures)}


def decision_record(decision: Allowed | Blocked, now: datetime) -> DecisionRecord:
    intent = decision.intent
    rule: str | None
    reason: str | None
    if isinstance(decision, Blocked):
        rule, reason, figures = decision.rule, decision.reason, dict(decision.figures)
    else:
        rule = None
        reason = " ".join(w.message for w in decision.warnings) or None
        figures = {**decision.figures,
                   "warnings": [_warning_dict(w) for w in decision.warnings]}
    return DecisionRecord(
        account_id=intent.account_id, ts=now, allowed=decision.allowed,
        client_order_id=intent.client_order_id, symbol=intent.symbol, side=intent.side,
        rule=rule, reason=reason, figures=figures,
    )

