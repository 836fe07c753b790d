"""What one account's polling costs a minute against its venue's rate limit. Pure.

Venues limit by weight, per IP (Binance: 6,000 request weight a minute, shared
by every account this machine runs there) or per key (Kraken's API counter).
:func:`plan_weight` adds up what the reconciler sends in a minute at an
account's intervals, from the weights its exchange reports
(``Capabilities.weights``): the open-orders listings as :mod:`.listing` plans
them, the balance and the tickers that value it, the closed-orders sweep, and,
for tiers that forbid DCA, the balance read on every other cycle. Only changes
cost more (a vanished order's confirmation, a fill's trades); those are not
planned, and show in what the account measurably spent.

``check-config`` prints the figure for each account, and the account's status
shows it beside what was spent in the last minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nija_broker.core.exchange import Capabilities

__all__ = ["WeightPlan", "describe_listing", "plan_weight"]


@dataclass(frozen=True, slots=True)
class WeightPlan:
    """One account's planned weight a minute, by what spends it (the venue's units)."""

    listings: float
    balances: float
    """The balance refresh and its tickers, on the balance cadence."""
    sweep: float
    holdings: float
    """The balance alone on the other cycles (tiers without DCA)."""
    listing: str
    """The listing plan in words."""

    @property
    def total(self) -> float:
        return self.listings + self.balances + self.sweep + self.holdings

    def accounts_per_limit(self, limit_per_min: float | None) -> int | None:
        """How many accounts like this one the limit carries (``None``: no limit known)."""
        if limit_per_min is None or self.total <= 0:
            return None
        return math.floor(limit_per_min / self.total)


def describe_listing(capabilities: Capabilities, symbols: int, full_interval_s: float) -> str:
    """The listing plan in words, for ``symbols`` symbols with orders."""
    every = capabilities.open_orders_weight
    one = capabilities.open_orders_symbol_weight
    if not capabilities.open_orders_without_symbol:
        return f"per symbol, the exchange needs one ({one or every:g} each)"
    if one is None:
        return f"all symbols each cycle ({every:g})"
    if symbols * one >= every:
        return f"all symbols each cycle ({every:g}; {symbols} x {one:g} would weigh more)"
    return (
        f"per symbol with orders ({one:g} each), all symbols ({every:g}) at start-up "
        f"and every {full_interval_s:g}s"
    )


def plan_weight(
    capabilities: Capabilities,
    *,
    poll_interval_s: float,
    balance_interval_s: float,
    full_listing_interval_s: float,
    symbols: int,
    ticker_symbols: int,
    sweep_requests: int,
    holdings_every_cycle: bool,
) -> WeightPlan:
    """The weight a minute of an account at these intervals. Pure.

    ``symbols``: the symbols its listing asks about (those with live orders; where
    the exchange lists one symbol at a time only, with the held currencies' markets
    too). ``ticker_symbols``: the tickers one balance refresh asks for (one request).
    ``sweep_requests``: the requests of one closed-orders sweep (one per symbol where
    the exchange needs a symbol). A listing of every symbol, when due, replaces its
    cycle's per-symbol listings.
    """
    weights = capabilities.weights
    cycles = 60.0 / poll_interval_s
    refreshes = min(cycles, 60.0 / balance_interval_s)
    every = capabilities.open_orders_weight
    one = capabilities.open_orders_symbol_weight
    if not capabilities.open_orders_without_symbol:
        listings = cycles * symbols * (one or every)
    elif one is None or symbols * one >= every:
        listings = cycles * every
    else:
        fulls = min(cycles, 60.0 / full_listing_interval_s)
        listings = (cycles - fulls) * symbols * one + fulls * every
    balance = weights.weight("fetch_balance")
    tickers = weights.weight("fetch_tickers", ticker_symbols) if ticker_symbols else 0.0
    return WeightPlan(
        listings=listings,
        balances=refreshes * (balance + tickers),
        sweep=refreshes * sweep_requests * weights.weight("fetch_closed_orders"),
        holdings=(cycles - refreshes) * balance if holdings_every_cycle else 0.0,
        listing=describe_listing(capabilities, symbols, full_listing_interval_s),
    )
