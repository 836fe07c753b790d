"""The reconciliation core: pure functions from what we track and what the exchange says to events.

Nothing here performs I/O, reads a clock or keeps state; the asyncio shell
(:mod:`nija_broker.sync.reconciler`) fetches, calls these, persists and publishes.

- :func:`diff` compares the tracked live orders of one account with one
  open-orders listing: unknown orders are adopted, changed ones updated,
  missing ones reported as *vanished* (never closed: absence is not evidence,
  DESIGN invariant 2). ``diff(x, snapshot_of(x), now) == []``.
- :func:`resolve` turns the exchange's answer about ONE order (``fetch_order``,
  ``cancel_order``, a closed-orders listing) into at most one event: this is
  the only way an order becomes terminal.
- :func:`fill_between` derives the :class:`Fill` implied when an order's filled
  amount grows, keyed by the cumulative filled amount: the rule for venues that
  give no trades, applied by the book under its lock (invariant 3).
- :func:`equity_of` values balances in the quote currency.

Where the exchange reports trades, fills come from the trades only (keyed by
trade id; see :mod:`nija_broker.state.book`), never also from order updates: one
execution booked under a trade id AND under a cumulative amount would count
twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from nija_broker.core.events import AttentionRequired, Event, OrderEvent, OrderVanished, order_event
from nija_broker.core.models import (
    LEGAL_TRANSITIONS,
    Balance,
    Fill,
    Order,
    OrderRole,
    OrderType,
    Side,
    Ticker,
)
from nija_broker.core.valuation import prices_of, value_balances

__all__ = [
    "Snapshot",
    "adopt",
    "diff",
    "equity_of",
    "fill_between",
    "infer_role",
    "order_events",
    "resolve",
    "snapshot_of",
]

# Relative size below which a growth of the filled amount is float dust, not a fill.
_FILL_DUST_REL = 1e-12


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One open-orders listing of one account. ``complete=False``: absence proves nothing."""

    orders: Sequence[Order]
    complete: bool = True


def snapshot_of(tracked: Iterable[Order]) -> Snapshot:
    """The listing an exchange would give if it agreed with ``tracked`` exactly."""
    return Snapshot(orders=[order for order in tracked if order.status.is_open], complete=True)


def infer_role(order: Order) -> OrderRole:
    """The role of an order someone else placed: :meth:`OrderRole.infer`."""
    return OrderRole.infer(order.side, order.type)


def adopt(order: Order, role: OrderRole | None = None) -> Order:
    """``order`` with its role set: ``role`` if known (our own intent), else inferred."""
    wanted = role if role is not None else infer_role(order)
    return order if order.role is wanted else order.model_copy(update={"role": wanted})


def _carry(previous: Order, fresh: Order) -> Order:
    """``fresh`` keeping what only we know: role, parent position, client order id, and
    what the bot declared through compat (its reservation, its way of writing the symbol);
    and the earliest placement time reported.

    Exchanges do not report our roles, and some drop the client order id from
    later reports; the tracker's knowledge must not be overwritten by silence.
    """
    update: dict[str, object] = {}
    if fresh.role is not previous.role:
        update["role"] = previous.role
    if fresh.parent_position_id is None and previous.parent_position_id is not None:
        update["parent_position_id"] = previous.parent_position_id
    if fresh.client_order_id is None and previous.client_order_id is not None:
        update["client_order_id"] = previous.client_order_id
    for name in ("declared_reserve", "caller_symbol"):
        if getattr(fresh, name) is None and getattr(previous, name) is not None:
            update[name] = getattr(previous, name)
    if fresh.filled < previous.filled:
        # Within float dust (a larger decrease is a contradiction, refused before this):
        # filled amounts only grow.
        update["filled"] = previous.filled
    if fresh.created_at > previous.created_at:
        # An order is placed once. A later report may carry another time as its
        # timestamp (Binance answers a cancel with the cancel's own transactTime, which
        # ccxt reads as the order's): the placement time known first stays.
        update["created_at"] = previous.created_at
    return fresh.model_copy(update=update) if update else fresh


def _same(a: Order, b: Order) -> bool:
    """Whether ``b`` says nothing new about ``a`` (timestamps alone are not news)."""
    return (
        a.status is b.status
        and a.filled == b.filled
        and a.amount == b.amount
        and a.price == b.price
        and a.stop_price == b.stop_price
        and a.fee == b.fee
    )


def fill_between(
    previous: Order | None, order: Order, at: datetime, *, booked: float | None = None
) -> Fill | str | None:
    """The fill booked by ``previous -> order``; ``None`` if nothing more was filled.

    The cumulative rule, for venues that report no trades: the fill's amount is
    the growth of the filled amount beyond ``booked`` (what was already booked
    for the order; default ``previous.filled``) and its key the new cumulative
    amount, so a replay of the same report yields the same key. Its price is
    taken from the change of the order's average price; without an average,
    the order's own price. Returns a message (``str``) when the fill cannot be
    priced: the caller must then not apply the update, or the execution would
    be lost. Only the book calls this, under its lock (DESIGN invariant 3).
    """
    before = booked if booked is not None else (previous.filled if previous is not None else 0.0)
    delta = order.filled - before
    if delta <= order.amount * _FILL_DUST_REL:
        return None
    price: float | None = None
    if order.average is not None:
        price = order.average
        if previous is not None and previous.average is not None and before > 0:
            marginal = (order.average * order.filled - previous.average * before) / delta
            # Rounded averages can make the marginal price meaningless on tiny deltas.
            if math.isfinite(marginal) and marginal > 0:
                price = marginal
    if price is None:
        price = order.reference_price
    if price is None:
        return (
            f"order {order.id} on {order.symbol} filled {delta!r} more but the exchange gave "
            "no average price and the order has none; the fill is not booked until it does"
        )
    if previous is not None:
        fee = max(order.fee - previous.fee, 0.0)
    else:
        # Part of the order was booked without a version to compare with: its share.
        fee = order.fee * (delta / order.filled) if before > 0 else order.fee
    return Fill(
        account_id=order.account_id,
        order_id=order.id,
        symbol=order.symbol,
        side=order.side,
        amount=delta,
        price=price,
        fee=fee,
        timestamp=order.updated_at or at,
        cumulative_filled=order.filled,
        role=order.role,
    )


def _change(
    previous: Order | None, fresh: Order, at: datetime, price_step: float | None = None
) -> Event | None:
    """The event for ``previous -> fresh`` (with roles carried over), or ``None`` if nothing new.

    The event's ``fill`` only classifies the change (more filled or not); the fill
    booked is computed by the book, under its lock, from what it holds then.
    """
    problem = _impossible(fresh, price_step)
    if problem is not None:
        return AttentionRequired(
            account_id=fresh.account_id, at=at, reason=problem, order_id=fresh.id
        )
    if previous is None:
        order = adopt(fresh)
    else:
        if previous is fresh or _same(previous, fresh):
            return None
        problem = _contradiction(previous, fresh)
        if problem is not None:
            return AttentionRequired(
                account_id=fresh.account_id, at=at, reason=problem, order_id=fresh.id
            )
        order = _carry(previous, fresh)
    fill = fill_between(previous, order, at)
    return order_event(previous, order, fill if isinstance(fill, Fill) else None, at)


# An average is the exchange's quotient of two rounded figures; without the market's
# tick it may differ from the limit in the last digits only.
_PRICE_REL = 1e-9


def _impossible(order: Order, price_step: float | None) -> str | None:
    """A report no execution can give: a limit buy filled above its limit, a sell below."""
    if order.type is not OrderType.LIMIT or order.price is None or order.average is None:
        return None
    if order.filled <= 0:
        return None
    slack = price_step / 2 if price_step else order.price * _PRICE_REL
    if order.side is Side.BUY and order.average > order.price + slack:
        return (
            f"exchange reports limit buy {order.id} on {order.symbol} filled at an average "
            f"{order.average!r}, above its limit {order.price!r} (field: average); nothing "
            "is booked from this report"
        )
    if order.side is Side.SELL and order.average < order.price - slack:
        return (
            f"exchange reports limit sell {order.id} on {order.symbol} filled at an "
            f"average {order.average!r}, below its limit {order.price!r} (field: average); "
            "nothing is booked from this report"
        )
    return None


AMOUNT_REL = 1e-9
"""Amounts of one order closer than this fraction of its amount are the same amount: a
float sum of fills and the exchange's decimal figure may differ in the last digit."""


def less_filled(fresh: Order, previous: Order) -> bool:
    """``fresh`` reports less filled than ``previous``, beyond float dust."""
    return fresh.filled < previous.filled - previous.amount * AMOUNT_REL


def _contradiction(previous: Order, fresh: Order) -> str | None:
    if less_filled(fresh, previous):
        return (
            f"exchange reports order {fresh.id} filled {fresh.filled!r}, less than the "
            f"{previous.filled!r} already booked (field: filled); the tracker keeps its version"
        )
    if fresh.status not in LEGAL_TRANSITIONS[previous.status]:
        return (
            f"exchange reports order {fresh.id} {fresh.status.value} after "
            f"{previous.status.value} (field: status); the tracker keeps its version"
        )
    if fresh.symbol != previous.symbol or fresh.side is not previous.side:
        return (
            f"exchange reports order {fresh.id} as {fresh.side.value} {fresh.symbol}, tracked "
            f"as {previous.side.value} {previous.symbol}"
        )
    return None


def diff(
    tracked: Mapping[str, Order],
    snapshot: Snapshot,
    now: datetime,
    price_steps: Mapping[str, float] | None = None,
) -> list[Event]:
    """Events that bring ``tracked`` (one account's live orders, by id) in line with ``snapshot``.

    - an order listed but not tracked: :class:`OrderAdopted` (role inferred);
    - an order listed with news: :class:`OrderPartiallyFilled`, :class:`OrderChanged`
      or, if the listing itself says so, a terminal event;
    - a tracked open order missing from a *complete* listing: :class:`OrderVanished`,
      which asks for a confirmation and changes nothing. A pending order (sent,
      not yet acknowledged) is not expected in the listing and never vanishes;
    - a report that contradicts what was booked: :class:`AttentionRequired`.
    """
    events: list[Event] = []
    listed: set[str] = set()
    for fresh in snapshot.orders:
        listed.add(fresh.id)
        step = price_steps.get(fresh.symbol) if price_steps else None
        event = _change(tracked.get(fresh.id), fresh, now, step)
        if event is not None:
            events.append(event)
    if snapshot.complete:
        for order_id, order in tracked.items():
            if order_id not in listed and order.status.is_open:
                events.append(OrderVanished(account_id=order.account_id, at=now, order=order))
    return events


def resolve(
    tracked: Order | None, answer: Order, now: datetime, price_step: float | None = None
) -> Event | None:
    """What the exchange's own answer about ONE order means for the tracker.

    This is the only evidence that ends an order (DESIGN invariant 2). An
    answer equal to what is tracked gives ``None``; an unknown order is adopted.
    """
    return _change(tracked, answer, now, price_step)


def order_events(events: Iterable[Event]) -> list[OrderEvent]:
    return [event for event in events if isinstance(event, OrderEvent)]


def equity_of(
    balances: Mapping[str, Balance], tickers: Mapping[str, Ticker], quote: str
) -> tuple[float, tuple[str, ...]]:
    """Every currency held, valued in ``quote`` at these tickers: :func:`valuation.value_balances`.

    Returns the equity and the currencies held but left out for want of a
    route to ``quote`` (listed, never guessed at zero silently).
    """
    valued = value_balances(balances, prices_of(tickers), quote)
    return valued.equity, valued.unvalued


# A difference below this (money, or fraction of the exchange's figure) is
# rounding and fees, not a missing order.
HOLD_MISMATCH_ABS = 1.0
HOLD_MISMATCH_REL = 0.02
_MONEY = frozenset({"USD", "USDT", "USDC", "EUR", "GBP"})


def hold_mismatches(
    open_orders: Iterable[Order], balances: Mapping[str, Balance], fee_rate: float
) -> list[str]:
    """Where the exchange's ``used`` balance disagrees with what our open orders lock.

    Each open buy locks quote (remaining x price, plus the fee on exchanges that
    hold it); each open sell locks base. Exchanges differ on whether resting
    stops hold anything, so the expected figure is a range: no fee and no
    stops at the low end, fee and stops at the high end. Only currencies with
    an open order or a ``used`` balance are compared. Pure; returns sentences.
    """
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for order in open_orders:
        base, quote = order.symbol.split("/")
        price = order.reference_price
        if order.side is Side.BUY:
            if price is None:
                continue  # a resting market buy cannot be valued; nothing to compare
            currency, amount = quote, order.remaining * price
            fee = amount * fee_rate
        else:
            currency, amount, fee = base, order.remaining, 0.0
        is_trigger = order.type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT)
        if not is_trigger:
            low[currency] = low.get(currency, 0.0) + amount
        high[currency] = high.get(currency, 0.0) + amount + fee
    problems = []
    for currency in sorted(set(high) | {c for c, b in balances.items() if b.used > 0}):
        used = balances[currency].used if currency in balances else 0.0
        lo, hi = low.get(currency, 0.0), high.get(currency, 0.0)
        # Money gets an absolute slack for fees and rounding; base amounts only a relative one.
        absolute = HOLD_MISMATCH_ABS if currency in _MONEY else 0.0
        slack = max(absolute, HOLD_MISMATCH_REL * max(used, hi))
        if lo - slack <= used <= hi + slack:
            continue
        problems.append(
            f"{currency}: the exchange holds {used:.8g} in orders, our open orders lock "
            f"{lo:.8g} to {hi:.8g}; an order may be missing from the books or closed without "
            "our knowing"
        )
    return problems
