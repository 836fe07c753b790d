"""The guard's bookkeeping: per-account reservations, journal rows, the snapshot the rules
judge, and what the reservations endpoint shows. The snapshot starts from the book's
cached figures (:mod:`nija_broker.guard.figures`).

Private to :mod:`nija_broker.guard`; runs on the owner's thread, so nothing here locks
except :class:`~nija_broker.state.book.UnknownOrders`, which locks itself.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from nija_broker.core.breakers import Breakers
from nija_broker.core.errors import StateError
from nija_broker.core.health import AccountHealth, AccountLive
from nija_broker.core.intent import Allowed, Blocked, Decision, OrderIntent, Reason, Reservation
from nija_broker.core.models import Balance, Order, OrderType, Position
from nija_broker.core.orders import OrderTracker
from nija_broker.core.pause import Pause
from nija_broker.core.symbols import base_of, quote_of
from nija_broker.guard.figures import BookFigures, book_figures
from nija_broker.guard.positions import holdings_of, positions_of
from nija_broker.guard.rules import AccountState, Rule, exit_warnings, first_objection
from nija_broker.state.book import AccountBook
from nija_broker.state.store import DecisionRecord, Intent

log = logging.getLogger("nija_broker.guard")

# Client order ids whose reservation ended (confirmed, released, expired) kept per
# account, so a reserve that reuses one is refused (409) instead of holding twice.
# Older ones (or from before a restart) the store still refuses with another request.
FINISHED_KEPT = 4_096

# A blocked dry-run check is journaled at most once per account, symbol and rule in
# this many seconds: a bot that asks before every tick must not fill the journal.
CHECK_JOURNAL_EVERY_S = 60.0


class GuardConflict(StateError):
    """A request contradicts what the guard holds: a client order id reused for another
    request (or after its reservation ended), a reservation confirmed with another order.

    ``field`` names the request field at fault and ``value`` its value (the API
    answers 409 with both).
    """

    def __init__(self, message: str, *, field: str, value: str) -> None:
        self.field = field
        self.value = value
        super().__init__(message)


@dataclass(slots=True)
class Settling:
    reservation: Reservation
    order_id: str | None
    confirmed_at: float
    balances_seen: object


@dataclass(slots=True)
class CheckJournal:
    """When a blocked check of one symbol and rule was last journaled, and repeats since."""

    at: float
    repeats: int = 0


@dataclass(slots=True)
class AccountGuard:
    """One account's reservations; read and written on the owner's thread only."""

    in_flight: dict[str, Reservation] = field(default_factory=dict)
    settling: dict[str, Settling] = field(default_factory=dict)
    unresolved: dict[str, Reservation] = field(default_factory=dict)
    """Reservations not yet confirmed or released, expired ones included."""
    by_client_id: dict[str, str] = field(default_factory=dict)
    answers: dict[str, Allowed] = field(default_factory=dict)
    """Per unresolved reservation id, the answer given: a repeated reserve gets it again."""
    finished: OrderedDict[str, str] = field(default_factory=OrderedDict)
    """Client order id -> how its reservation ended, the latest :data:`FINISHED_KEPT`."""
    checks: dict[tuple[str, str], CheckJournal] = field(default_factory=dict)
    book_figures: BookFigures | None = None

    def finish(self, client_order_id: str, outcome: str) -> None:
        self.finished[client_order_id] = outcome
        self.finished.move_to_end(client_order_id)
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def repeat(self, intent: OrderIntent, mono: float) -> Allowed | None:
        """The answer already given to this intent; ``None`` if its client order id is new here.
        :class:`GuardConflict` if the id holds another request or its reservation ended.
        """
        cid = intent.client_order_id
        used = f"client_order_id {cid!r} of account {intent.account_id!r}"
        rid = self.by_client_id.get(cid)
        if rid is None:
            outcome = self.finished.get(cid)
            if outcome is None:
                return None
            raise GuardConflict(
                f"{used} was already used: its reservation was {outcome}; "
                "send a new order with a new client order id",
                field="client_order_id",
                value=cid,
            )
        answer = self.answers.get(rid)
        if answer is None or answer.intent != intent:
            raise GuardConflict(
                f"{used} already holds reservation {rid!r} for another request",
                field="client_order_id",
                value=cid,
            )
        reservation = self.in_flight.get(rid)
        if reservation is None or reservation.expires_at <= mono:
            raise GuardConflict(
                f"{used} was already used: its reservation {rid!r} expired "
                "unconfirmed; send a new order with a new client order id",
                field="client_order_id",
                value=cid,
            )
        return answer

    def check_row(self, decision: Blocked, mono: float) -> Blocked | None:
        """The journal row of a blocked check, or ``None`` if one of the same symbol and
        rule was journaled less than :data:`CHECK_JOURNAL_EVERY_S` ago (counted instead)."""
        key = (decision.intent.symbol, decision.rule)
        last = self.checks.get(key)
        if last is not None and mono - last.at < CHECK_JOURNAL_EVERY_S:
            last.repeats += 1
            return None
        self.checks[key] = CheckJournal(mono)
        return Blocked(
            intent=decision.intent,
            rule=decision.rule,
            reason=decision.reason,
            figures={
                **decision.figures,
                "dry_run": True,
                "repeats_not_journaled": last.repeats if last else 0,
            },
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationView:
    """One reservation that counts now, and why (``GET /v1/accounts/{id}/reservations``)."""

    reservation: Reservation
    state: Literal["in_flight", "settling"]
    why: str
    age_s: float
    order_id: str | None = None
    expires_in_s: float
    """In flight: until it stops counting unconfirmed. Settling: until ``settle_max_s``."""
    unknown_to_exchange_s: float | None = None
    """Settling: how long the exchange has answered that it does not know the order."""


def expired_long_ago(reservation: Reservation, account: AccountGuard, forget_before: float) -> bool:
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


def visible(
    settling: Settling, orders: OrderTracker, balances: Mapping[str, Balance] | None
) -> bool:
    """Called once a balance newer than the confirmation arrived: does the account show it?

    Yes when the book has the order (live, the book counts it; finished, that
    balance holds its fills), or when the balance holds the base it bought.
    """
    if in_book(settling, orders) is not None:
        return True
    base = base_of(settling.reservation.symbol)
    balance = (balances or {}).get(base)
    return balance is not None and (balance.total or balance.free + balance.used) > 0


def request_json(intent: OrderIntent, reserved_usd: float) -> str:
    return json.dumps(
        {"intent": intent.model_dump(mode="json"), "reserved_usd": reserved_usd}, sort_keys=True
    )


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
        figures = {**decision.figures, "warnings": [_warning_dict(w) for w in decision.warnings]}
    return DecisionRecord(
        account_id=intent.account_id,
        ts=now,
        allowed=decision.allowed,
        client_order_id=intent.client_order_id,
        symbol=intent.symbol,
        side=intent.side,
        rule=rule,
        reason=reason,
        figures=figures,
    )


# ---------------------------------------------------------------------------- snapshot


def account_state(
    account_id: str,
    account: AccountGuard,
    book: AccountBook,
    live: AccountLive | None,
    *,
    fee_rate: float | None,
    dust_usd: float,
    breakers: Breakers | None = None,
    pause: Pause | None = None,
) -> AccountState:
    """What the rules judge the account's next order on; called under ``account.lock``
    after the expiry pass. ``fee_rate`` ``None`` takes the order book's."""
    orders = book.orders
    last_prices = orders.last_prices()
    figures = book_figures(account.book_figures, orders, last_prices)
    account.book_figures = figures
    held_usd = figures.held_usd
    entry_symbols = dict(figures.entry_symbols)
    # What reservations claim of each quote currency (the order's own: USDT for BTC/USDT).
    reserved: dict[str, float] = {}

    def claim(reservation: Reservation) -> None:
        currency = quote_of(reservation.symbol)
        reserved[currency] = reserved.get(currency, 0.0) + reservation.reserved_usd

    for reservation in account.in_flight.values():
        if reservation.is_entry:
            entry_symbols[reservation.symbol] = entry_symbols.get(reservation.symbol, 0) + 1
            held_usd += reservation_held_usd(reservation)
            claim(reservation)
    balances = live.balances if live is not None else {}
    for settling in account.settling.values():
        reservation = settling.reservation
        booked = in_book(settling, orders)
        if booked is None:
            held_usd += reservation_held_usd(reservation)
        if booked is None or booked.is_terminal:
            # Filled but not yet in a balance or the ledger: the position exists already.
            entry_symbols[reservation.symbol] = entry_symbols.get(reservation.symbol, 0) + 1
        if balances is settling.balances_seen:
            claim(reservation)
    ledger = book.ledger.positions()
    quote = live.quote_currency if live is not None else "USD"
    holdings = holdings_of(balances, ledger, quote, believe_balance=_stale_ledger(live, ledger))
    positions, unpriced = positions_of(
        holdings,
        last_prices,
        {p.symbol: p.avg_price for p in ledger},
        quote_currency=quote,
        dust_usd=dust_usd,
    )
    return AccountState(
        account_id=account_id,
        policy=live.policy() if live is not None else None,
        health=live.reported_health(book.degraded_reason) if live is not None else AccountHealth(),
        equity_usd=live.equity_usd if live is not None else None,
        quote_currency=quote,
        balances_known=bool(balances),
        free_by_currency={currency: b.free for currency, b in balances.items()},
        reserved_by_currency=reserved,
        held_usd=held_usd,
        entry_symbols=entry_symbols,
        positions=positions,
        holdings=holdings,
        unpriced_holdings=unpriced,
        markets=live.markets if live is not None else {},
        last_prices=last_prices,
        fee_rate=fee_rate if fee_rate is not None else orders.fee_rate,
        breakers=breakers,
        pause=pause,
    )


def _stale_ledger(live: AccountLive | None, ledger: Sequence[Position]) -> set[str]:
    """Assets where the exchange's balance wins: a persistent disagreement with a ledger
    that has not changed since the balance that shows it was fetched."""
    if live is None or not live.position_mismatches or live.balances_at is None:
        return set()
    changed = {base_of(p.symbol) for p in ledger if p.updated_at > live.balances_at}
    return set(live.position_mismatches) - changed


# ---------------------------------------------------------------------------- views


def reservation_views(
    account: AccountGuard,
    book: AccountBook,
    live: AccountLive | None,
    *,
    now: datetime,
    mono: float,
    settle_max_s: float,
    not_found_grace_s: float,
) -> list[ReservationView]:
    """Every reservation that counts, oldest first; called under ``account.lock``."""
    views = [
        ReservationView(
            reservation=r,
            state="in_flight",
            age_s=_age_s(r, now),
            expires_in_s=max(r.expires_at - mono, 0.0),
            why=(
                "in flight: reserved, not yet confirmed or released; it counts as an open "
                "entry on its symbol and claims its quote's free balance"
                if r.is_entry
                else "in flight: an exit, reserved until the exchange answers; it takes no slot"
            ),
        )
        for r in account.in_flight.values()
    ]
    balances = live.balances if live is not None else None
    for settling in account.settling.values():
        r = settling.reservation
        unknown = book.unknown_orders.since(settling.order_id, r.client_order_id)
        unknown_s = (now - unknown).total_seconds() if unknown is not None else None
        booked = in_book(settling, book.orders)
        if unknown_s is not None:
            why = (
                f"confirmed, but the exchange does not know order "
                f"{settling.order_id or r.client_order_id} (for {unknown_s:.0f} s); "
                f"released once unknown for {not_found_grace_s:.0f} s"
            )
        elif booked is None:
            why = "confirmed, waiting for the order to show"
        elif booked.is_terminal:
            why = (
                "confirmed and finished in the book, waiting for a balance newer than "
                "the confirmation to show the position"
            )
        else:
            why = "confirmed and resting in the book, waiting for a balance newer than it"
        if balances is settling.balances_seen:
            why += "; it still claims its quote's free balance"
        views.append(
            ReservationView(
                reservation=r,
                state="settling",
                age_s=_age_s(r, now),
                why=why,
                order_id=settling.order_id if booked is None else booked.id,
                expires_in_s=max(settling.confirmed_at + settle_max_s - mono, 0.0),
                unknown_to_exchange_s=unknown_s,
            )
        )
    return sorted(views, key=lambda v: (v.reservation.created_at, v.reservation.id))


def _age_s(reservation: Reservation, now: datetime) -> float:
    return max((now - reservation.created_at).total_seconds(), 0.0)


def unknown_past_grace(
    account_id: str, settling: Settling, book: AccountBook, now: datetime, grace_s: float
) -> bool:
    """Has the exchange answered "no such order" for this confirmed entry's order for
    ``grace_s``? (The reconciler, following the order by id, notes its answers.)"""
    reservation = settling.reservation
    since = book.unknown_orders.since(settling.order_id, reservation.client_order_id)
    if since is None:
        return False
    unknown_s = (now - since).total_seconds()
    if unknown_s < grace_s:
        return False
    log.warning(
        "account %s: the exchange has not known order %s (client order id %s) for "
        "%.0f s since it was confirmed; its reservation %s is released",
        account_id,
        settling.order_id or "(no id)",
        reservation.client_order_id,
        unknown_s,
        reservation.id,
    )
    return True


# ---------------------------------------------------------------------------- judging


def judge(intent: OrderIntent, state: AccountState, rules: Iterable[Rule]) -> Decision:
    objection = first_objection(intent, state, rules)
    if objection is not None:
        return Blocked(
            intent=intent,
            rule=objection.rule,
            reason=objection.message,
            figures=dict(objection.figures),
        )
    notional = intent.notional(state.last_prices.get(intent.symbol))
    figures: dict[str, Any] = {
        "kind": "entry" if intent.is_entry else "exit",
        "tier": state.policy.name if state.policy is not None else None,
        "notional_usd": notional,
    }
    return Allowed(intent=intent, warnings=exit_warnings(intent, state), figures=figures)
