"""The order book's figures for the guard: held capital and live entries per symbol.

The guard judges far more often than the book changes, so what each live order
contributes is kept per version of the book (:class:`BookFigures`, cached on
the account's :class:`~nija_broker.guard.state.AccountGuard`) and recounted
only for the orders that changed. Private to :mod:`nija_broker.guard`; runs on
the owner's thread, like the rest of the guard's bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass

from nija_broker.core.models import Order, OrderRole, OrderType, Side
from nija_broker.core.order_figures import held_capital
from nija_broker.core.orders import OrderTracker

__all__ = ["BookFigures", "book_figures"]


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


def book_figures(
    cached: BookFigures | None, orders: OrderTracker, last_prices: dict[str, float]
) -> BookFigures:
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
        if known is None or (
            prices_changed and (order.type is OrderType.MARKET or order.reference_price is None)
        ):
            held = held_capital((order,), fee_rate=fee_rate, last_prices=last_prices).total
            entry = (
                order.symbol
                if (
                    order.role is OrderRole.ENTRY
                    and order.side is Side.BUY
                    and not order.reduce_only
                )
                else None
            )
            known = (order, held, entry)
        per_order[key] = known
        held_usd += known[1]
        symbol = known[2]
        if symbol is not None:
            entry_symbols[symbol] = entry_symbols.get(symbol, 0) + 1
    return BookFigures(orders, version, dict(last_prices), per_order, held_usd, entry_symbols)
