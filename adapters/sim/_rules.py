"""Pure order rules: market limits (lot, tick, minimums), request shape, crossing, triggers.

Checks return a reason string, or ``None`` when the order passes.
"""

from __future__ import annotations

import math
from decimal import Decimal

from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import Market, OrderType, Side

# Relative slack for "is a multiple of the step": 0.3 / 0.1 is 2.9999999999999996 in floats.
_STEP_TOLERANCE = 1e-9


def is_multiple(value: float, step: float) -> bool:
    """True when ``value`` is a whole number of ``step`` (within float dust)."""
    quotient = value / step
    return abs(quotient - round(quotient)) <= _STEP_TOLERANCE * max(1.0, abs(quotient))


def snap(value: float, step: float | None) -> float:
    """``value`` rounded to the nearest multiple of ``step``, computed in decimal.

    Decimal arithmetic keeps snapped prices free of binary dust (0.1 * 3 gives
    0.30000000000000004 in floats), so they pass :func:`is_multiple` and print cleanly.
    """
    if step is None:
        return value
    multiples = max(round(value / step), 1)
    return float(Decimal(multiples) * Decimal(repr(step)))


def snap_down(value: float, step: float | None) -> float:
    """``value`` rounded down to a multiple of ``step`` (0 when below one step): what a
    limited liquidity can fill, never more than it offers."""
    if step is None:
        return max(value, 0.0)
    multiples = math.floor(value / step * (1 + _STEP_TOLERANCE))
    return float(Decimal(max(multiples, 0)) * Decimal(repr(step)))


def rule_violation(
    market: Market,
    *,
    amount: float,
    price: float | None,
    stop_price: float | None,
    notional_price: float,
) -> str | None:
    """Why this order breaks ``market``'s rules, or ``None`` when it passes.

    ``notional_price`` is the price the minimum notional is judged at: the limit
    price, the trigger price, or for a market order the current price.
    """
    for name, value in (("amount", amount), ("price", price), ("stop_price", stop_price)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            return f"{name} must be a positive finite number, got {value!r}"
    if market.amount_step is not None and not is_multiple(amount, market.amount_step):
        return f"amount {amount!r} is not a multiple of the lot step {market.amount_step!r}"
    for name, value in (("price", price), ("stop_price", stop_price)):
        if (
            value is not None
            and market.price_step is not None
            and not is_multiple(value, market.price_step)
        ):
            return f"{name} {value!r} is not a multiple of the tick size {market.price_step!r}"
    if market.min_amount is not None and amount < market.min_amount * (1 - _STEP_TOLERANCE):
        return f"amount {amount!r} is below the minimum amount {market.min_amount!r}"
    notional = amount * notional_price
    if market.min_notional is not None and notional < market.min_notional * (1 - _STEP_TOLERANCE):
        return f"notional {notional!r} is below the minimum notional {market.min_notional!r}"
    return None


def crosses(side: Side, limit: float | None, price: float) -> bool:
    """Whether a limit at ``limit`` is marketable against ``price``."""
    assert limit is not None
    return price <= limit if side is Side.BUY else price >= limit


def triggers(kind: OrderType, side: Side, trigger: float, price: float) -> bool:
    """Whether ``price`` sets off a trigger order; touching the trigger counts."""
    # A stop fires on an adverse move (a buy stop as the price rises), a take-profit on a
    # favourable one (a buy take-profit as the price falls).
    rises_to_fire = (side is Side.BUY) == (kind is not OrderType.TAKE_PROFIT)
    return price >= trigger if rises_to_fire else price <= trigger


def request_problem(request: OrderRequest, now_price: float) -> str | None:
    """Why the request's shape is wrong for its type, before any market rule is looked at."""
    kind = request.type
    if kind is OrderType.LIMIT and request.price is None:
        return "a limit order needs a price"
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and request.stop_price is None:
        return f"a {kind} order needs a stop_price"
    if kind is OrderType.STOP_LIMIT and request.price is None:
        return "a stop_limit order needs a price"
    if kind is OrderType.TAKE_PROFIT and request.stop_price is None and request.price is None:
        return "a take_profit order needs a stop_price or a price"
    if request.post_only and kind is not OrderType.LIMIT:
        return f"post_only applies to limit orders, not {kind}"
    if (
        request.post_only
        and request.price is not None
        and (crosses(request.side, request.price, now_price))
    ):
        return f"post_only {request.side} at {request.price} would cross the price {now_price}"
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT):
        trigger = request.stop_price if request.stop_price is not None else request.price
        assert trigger is not None
        if triggers(kind, request.side, trigger, now_price):
            return f"{kind} {request.side} at {trigger} would trigger immediately at {now_price}"
    return None


def order_problem(
    market: Market, request: OrderRequest, now_price: float, *, duplicate_client_id: bool
) -> str | None:
    """Why the engine refuses ``request`` on ``market`` at ``now_price``, or ``None``.

    The request's shape first, then a reused client order id, then the market's rules,
    with the minimum notional judged at the limit or trigger price (market: ``now_price``).
    """
    reason = request_problem(request, now_price)
    if reason is None and request.client_order_id is not None and duplicate_client_id:
        reason = f"duplicate client order id {request.client_order_id!r}"
    if reason is not None:
        return reason
    reference = now_price
    if request.type is not OrderType.MARKET:
        reference = (
            request.price
            if request.price is not None
            else (request.stop_price if request.stop_price is not None else now_price)
        )
    return rule_violation(
        market,
        amount=request.amount,
        price=None if request.type is OrderType.MARKET else request.price,
        stop_price=request.stop_price,
        notional_price=reference,
    )
