"""Balances, the tickers that value them, equity and tier; held capital and positions
cross-checked against them.

Steps of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`):
:func:`refresh_balances` on the balance cadence, :func:`refresh_holdings` (the
balance alone) on the other cycles of accounts whose tier forbids DCA. Both
compare the ledger's positions with the balances (:func:`check_positions`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.events import AttentionRequired, BalancesUpdated
from nija_broker.core.models import Balance, Ticker
from nija_broker.core.reconcile import hold_mismatches
from nija_broker.core.valuation import prices_of, tickers_to_fetch, value_balances
from nija_broker.sync.fills import check_positions

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["cross_check_holds", "refresh_balances", "refresh_holdings"]

log = logging.getLogger("nija_broker.reconciler")


async def refresh_holdings(sync: AccountSync) -> None:
    """Balances alone, between full refreshes: what an account holds, within one poll.

    For accounts whose tier forbids DCA: an entry the bot sent on its own that
    filled at once shows here as a base balance, and the guard's DCA and
    duplicate rules see it at the next decision. One ``fetch_balance`` a cycle (and
    ``fetch_tickers`` once when a currency first appears).
    """
    asked_at = sync.clock.now()
    balances = await sync.ask(sync.exchange.fetch_balance, "fetch_balance")
    # A currency that was not held at the last full refresh has no price yet: its
    # tickers, once, so the guard can tell a position from dust.
    known = sync.book.orders.last_prices()
    symbols = [s for s in tickers_to_fetch(balances, sync.live.quote_currency,
                                           sync.live.markets) if s not in known]
    if symbols:
        tickers = await sync.ask(partial(sync.exchange.fetch_tickers, symbols),
                                 "fetch_tickers")
        _remember_prices(sync, tickers)
    sync.live.balances = dict(balances)
    sync.live.balances_at = asked_at
    check_positions(sync, balances)


def cross_check_holds(sync: AccountSync, balances: Mapping[str, Balance], now: datetime) -> None:
    """Held capital against the exchange's own ``used`` balance (DESIGN: held capital).

    Orders and balances are fetched at different moments, so a single
    disagreement can be an order placed in between: only a disagreement seen
    on two balance refreshes in a row raises an attention event (once).
    """
    problems = hold_mismatches(sync.book.orders.open_orders(), balances,
                               sync.book.orders.fee_rate)
    persistent = [p for p in problems if p in sync.hold_mismatches]
    sync.hold_mismatches = set(problems)
    for problem in persistent:
        key = (None, f"holds:{problem}")
        if key in sync.attention_raised:
            continue
        sync.attention_raised.add(key)
        log.warning("account %s: held capital disagrees with the exchange: %s",
                    sync.account_id, problem)
        sync.publish([AttentionRequired(account_id=sync.account_id, at=now,
                                        reason=f"held capital check: {problem}")])


async def refresh_balances(sync: AccountSync) -> None:
    """Balances, the tickers that value them, equity and tier (DESIGN: Equity).

    Every holding is valued in the account's quote currency at the exchange's
    prices (:mod:`nija_broker.core.valuation`). Holdings no price values are listed
    on the live view and logged once per change. Equity that cannot be
    established (nothing valued, something unvalued) is never recorded as zero:
    the equity curve and the tier keep their last figures, the live equity is
    unknown and the account reports ``degraded`` until a refresh values it.
    """
    asked_at = sync.clock.now()
    balances = await sync.ask(sync.exchange.fetch_balance, "fetch_balance")
    quote = sync.live.quote_currency
    symbols = tickers_to_fetch(balances, quote, sync.live.markets)
    tickers = {}
    if symbols:
        tickers = dict(await sync.ask(partial(sync.exchange.fetch_tickers, symbols),
                                      "fetch_tickers"))
    valued = value_balances(balances, prices_of(tickers), quote)
    now = sync.clock.now()
    if valued.established:
        await sync.run_book(partial(sync.book.update_equity, valued.equity, now))
    _remember_prices(sync, tickers)
    before = (sync.live.unvalued_holdings, sync.live.valuation_problem)
    sync.live.balances = dict(balances)
    sync.live.balances_at = asked_at
    sync.live.equity_usd = valued.equity if valued.established else None
    sync.live.unvalued_holdings = valued.unvalued
    sync.live.valuation_problem = valued.problem
    if (valued.unvalued, valued.problem) != before:
        # Said once per change, not on every refresh: the holdings rarely change.
        if valued.problem is not None:
            log.warning("account %s: %s; it reports degraded, and its equity curve and "
                        "tier keep their last figures", sync.account_id, valued.problem)
        elif valued.unvalued:
            log.warning("account %s holds %s, which no ticker of the exchange values in %s "
                        "(directly, or through a stablecoin or USD leg); left out of its "
                        "equity", sync.account_id, ", ".join(valued.unvalued), quote)
        else:
            log.info("account %s: every holding is valued in %s again",
                     sync.account_id, quote)
    cross_check_holds(sync, balances, now)
    check_positions(sync, balances)
    sync.balance_due_mono = sync.clock.monotonic() + sync.balance_interval_s
    if valued.established:
        tier = sync.live.tier.update(valued.equity)
        sync.publish([BalancesUpdated(account_id=sync.account_id, at=now,
                                      equity_usd=valued.equity, tier=tier.name,
                                      unpriced=valued.unvalued)])


def _remember_prices(sync: AccountSync, tickers: Mapping[str, Ticker]) -> None:
    """Last prices for the guard and held capital (tickers without one are left out)."""
    for symbol, ticker in tickers.items():
        if ticker.last is not None:
            sync.book.orders.set_last_price(symbol, ticker.last)
