"""The order tracker's figures, as pure functions over plain orders.

Each function takes the orders of ONE account (the tracker passes its own live
index) and returns a value; nothing here holds state or reads a clock. The exact
meaning of every figure is in DESIGN.md ("Words and formulas").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nija_broker.core.clock import utc
from nija_broker.core.models import Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.core.symbols import normalize_symbol, split_symbol

# Roles whose sell orders protect (and lock) a position's base currency.
_EXIT_ROLES = frozenset({OrderRole.EXIT, OrderRole.STOP, OrderRole.TARGET})

# Exchanges round amounts in their own way; a sum of exits that exceeds the
# position by float dust alone is not a double reservation.
_DUST_REL = 1e-9


@dataclass(frozen=True, slots=True)
class HeldCapital:
    """Quote currency reserved by one account's live orders.

    ``unpriced_order_ids`` lists live orders with remaining amount that had no
    price at all (a market order with no last price known): they are left out of
    the total rather than guessed.
    """

    total: float
    buys: float
    sells: float
    unpriced_order_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DoubleReservation:
    """One place where an account reserves the same base currency more than once."""

    symbol: str
    kind: Literal["over_reserved", "stop_and_target"]
    order_ids: tuple[str, ...]
    reserved: float
    position: float | None
    message: str


@dataclass(frozen=True, slots=True)
class Fragmentation:
    """Held capital against equity. ``ratio`` is ``inf`` when held > 0 and equity <= 0."""

    held_usd: float
    equity_usd: float
    ratio: float
    threshold: float
    fragmented: bool
    message: str


@dataclass(frozen=True, slots=True)
class OrderStats:
    """A snapshot of one account's order book as the tracker sees it.

    ``by_status`` counts every order held in memory (terminal ones until the
    retention clean-up drops them); ``live_by_role`` and ``live_by_type`` count
    live orders only (pending, open, partially filled): those are what reserve
    capital. ``oldest_open_age_s`` is ``None`` when nothing is open.
    """

    account_id: str
    open_count: int
    pending_count: int
    live_count: int
    terminal_count: int
    by_status: dict[OrderStatus, int]
    live_by_role: dict[OrderRole, int]
    live_by_type: dict[OrderType, int]
    held_capital: float
    buy_held: float
    sell_held: float
    unpriced_count: int
    oldest_open_age_s: float | None
    stale_count: int
    stale_max_age_s: float


def normalize_prices(last_prices: Mapping[str, float]) -> dict[str, float]:
    """Check and key last prices by ``BASE/QUOTE``; a bad price is a caller's bug, not a zero."""
    result: dict[str, float] = {}
    for symbol, price in last_prices.items():
        result[normalize_symbol(symbol)] = check_price(symbol, price)
    return result


def check_price(symbol: str, price: float) -> float:
    if not (isinstance(price, int | float) and math.isfinite(price) and price > 0):
        raise ValueError(f"last price of {symbol} must be a finite number > 0, got {price!r}")
    return float(price)


def held_capital(
    orders: Iterable[Order], *, fee_rate: float, last_prices: Mapping[str, float]
) -> HeldCapital:
    """Sum what each live order reserves (DESIGN "Held capital").

    Buys reserve remaining x price x (1 + fee_rate): the exchange holds the fee
    too. A market buy is valued at the last price (its own price, if it carries
    one, only when no last price is known). Sells reserve the base they lock,
    valued at limit price, else trigger price, else last price, with no fee:
    the fee of a sell comes out of its proceeds, not out of held funds.
    """
    buys = 0.0
    sells = 0.0
    unpriced: list[str] = []
    for order in orders:
        if order.status.is_terminal:
            continue
        # Same as ``order.remaining``, without the computed-field call on this hot loop.
        remaining = order.amount - order.filled
        if remaining <= 0.0:
            continue
        if order.side is Side.BUY:
            if order.type is OrderType.MARKET:
                price = last_prices.get(order.symbol) or order.reference_price
            else:
                price = order.reference_price or last_prices.get(order.symbol)
            if price is None:
                unpriced.append(order.id)
            else:
                buys += remaining * price * (1.0 + fee_rate)
        else:
            price = order.reference_price or last_prices.get(order.symbol)
            if price is None:
                unpriced.append(order.id)
            else:
                sells += remaining * price
    return HeldCapital(
        total=buys + sells, buys=buys, sells=sells, unpriced_order_ids=tuple(unpriced)
    )


def stale_orders(
    orders: Iterable[Order], now: datetime, max_age_s: float, *, include_exits: bool
) -> list[Order]:
    """Open orders created more than ``max_age_s`` before ``now``, oldest first.

    Only entries unless ``include_exits``: a resting stop-loss is old by design
    and cancelling it would leave a position unprotected (DESIGN invariant 6).
    Pending orders are not stale: they are not on the exchange yet.
    """
    if not (math.isfinite(max_age_s) and max_age_s >= 0):
        raise ValueError(f"max_age_s must be a finite number >= 0, got {max_age_s!r}")
    cutoff = utc(now) - timedelta(seconds=max_age_s)
    found = [
        order
        for order in orders
        if order.status.is_open
        and (include_exits or order.role is OrderRole.ENTRY)
        and order.created_at < cutoff
    ]
    found.sort(key=lambda order: (order.created_at, order.id))
    return found


def double_reservations(
    orders: Iterable[Order], positions: Mapping[str, float] | None = None
) -> list[DoubleReservation]:
    """Exits that lock more base than the position holds, and stop + target pairs.

    A pending exit counts like an open one: it is in flight and will lock the
    base as soon as the exchange accepts it.
    """
    reserving = [o for o in orders if not o.status.is_terminal and o.remaining > 0.0]
    held = {normalize_symbol(s): float(q) for s, q in (positions or {}).items()}
    findings: list[DoubleReservation] = []

    exits_by_symbol: dict[str, list[Order]] = {}
    for order in reserving:
        if order.side is Side.SELL and order.role in _EXIT_ROLES:
            exits_by_symbol.setdefault(order.symbol, []).append(order)
    for symbol in sorted(held.keys() & exits_by_symbol.keys()):
        exits = exits_by_symbol[symbol]
        position = held[symbol]
        reserved = math.fsum(o.remaining for o in exits)
        if reserved > max(position, 0.0) * (1.0 + _DUST_REL):
            findings.append(_over_reserved(symbol, exits, reserved, position))

    pairs: dict[tuple[str, str], tuple[list[Order], list[Order]]] = {}
    for order in reserving:
        if order.parent_position_id is None or order.role not in (
            OrderRole.STOP,
            OrderRole.TARGET,
        ):
            continue
        stops, targets = pairs.setdefault((order.symbol, order.parent_position_id), ([], []))
        (stops if order.role is OrderRole.STOP else targets).append(order)
    for (symbol, parent), (stops, targets) in sorted(pairs.items()):
        if stops and targets:
            findings.append(_stop_and_target(symbol, parent, stops, targets, held.get(symbol)))
    return findings


def fragmentation(
    held_usd: float,
    equity_usd: float,
    threshold: float = 0.30,
    *,
    unpriced_order_ids: tuple[str, ...] = (),
) -> Fragmentation:
    """Held capital / equity above ``threshold`` (a fraction: 0.30 is 30%)."""
    for name, value in (("held_usd", held_usd), ("equity_usd", equity_usd)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite fraction >= 0, got {threshold!r}")
    held_usd = max(held_usd, 0.0)
    limit = _pct(threshold)
    if equity_usd <= 0.0:
        ratio = math.inf if held_usd > 0.0 else 0.0
        if held_usd > 0.0:
            message = (
                f"${held_usd:,.2f} is held in open orders while the account's equity is "
                f"${equity_usd:,.2f}: any held capital is over the {limit} limit."
            )
        else:
            message = f"Nothing is held in open orders (equity ${equity_usd:,.2f})."
    else:
        ratio = held_usd / equity_usd
        where = "above" if ratio > threshold else "within"
        message = (
            f"${held_usd:,.2f} of ${equity_usd:,.2f} equity ({_pct(ratio)}) is held in "
            f"open orders, {where} the {limit} limit."
        )
        if ratio > threshold:
            message += " Cancel stale orders or wait for fills before a new entry."
    if unpriced_order_ids:
        message += (
            f" {len(unpriced_order_ids)} order(s) without a known price are not counted: "
            f"{', '.join(unpriced_order_ids)}."
        )
    return Fragmentation(
        held_usd=held_usd,
        equity_usd=equity_usd,
        ratio=ratio,
        threshold=threshold,
        fragmented=ratio > threshold,
        message=message,
    )


def _over_reserved(
    symbol: str, exits: list[Order], reserved: float, position: float
) -> DoubleReservation:
    base = split_symbol(symbol)[0]
    ids = tuple(o.id for o in exits)
    if position > 0.0:
        excess = reserved - position
        message = (
            f"{symbol}: {len(exits)} exit order(s) ({', '.join(ids)}) would sell "
            f"{_qty(reserved)} {base} but the position is only {_qty(position)} {base}; "
            f"{_qty(excess)} {base} is reserved twice. Cancel or resize an exit so the "
            f"exits cover the position once."
        )
    else:
        message = (
            f"{symbol}: {len(exits)} exit order(s) ({', '.join(ids)}) would sell "
            f"{_qty(reserved)} {base} but the account holds no {base} position. "
            f"Cancel the exits or check the position."
        )
    return DoubleReservation(
        symbol=symbol,
        kind="over_reserved",
        order_ids=ids,
        reserved=reserved,
        position=position,
        message=message,
    )


def _stop_and_target(
    symbol: str, parent: str, stops: list[Order], targets: list[Order], position: float | None
) -> DoubleReservation:
    base = split_symbol(symbol)[0]
    stop_qty = math.fsum(o.remaining for o in stops)
    target_qty = math.fsum(o.remaining for o in targets)
    reserved = stop_qty + target_qty
    message = (
        f"{symbol}: position {parent} has a stop ({', '.join(o.id for o in stops)}, "
        f"{_qty(stop_qty)} {base}) and a target ({', '.join(o.id for o in targets)}, "
        f"{_qty(target_qty)} {base}) reserving at the same time, {_qty(reserved)} {base} "
        f"in all, though only one of them can fill."
    )
    if position is not None:
        message += f" The position holds {_qty(position)} {base}."
    message += " Use a one-cancels-the-other pair or keep only one resting."
    return DoubleReservation(
        symbol=symbol,
        kind="stop_and_target",
        order_ids=tuple(o.id for o in [*stops, *targets]),
        reserved=reserved,
        position=position,
        message=message,
    )


def _qty(value: float) -> str:
    return f"{value:.8g}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"
