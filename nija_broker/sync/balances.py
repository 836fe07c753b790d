"""Balances, the tickers that value them, equity and tier; held capital and positions
cross-checked against them.

Step 1 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`):
:meth:`Balances.refresh` on the balance cadence, :meth:`Balances.refresh_holdings`
(the balance alone) on the other cycles of accounts whose tier forbids DCA.
Both compare the ledger's positions with the balances: a disagreement above
the market's amount step, seen twice in a row, raises one attention event
naming both figures, and the guard then believes the exchange.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from nija_broker.core.events import AttentionRequired, BalancesUpdated
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Balance, Order, Position, Ticker
from nija_broker.core.reconcile import hold_mismatches
from nija_broker.core.symbols import base_of
from nija_broker.core.valuation import prices_of, tickers_to_fetch, value_balances
from nija_broker.state.book import AccountBook

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Balances", "position_mismatches"]

log = logging.getLogger("nija_broker.reconciler")


@dataclass(slots=True)
class Balances:
    """When balances are next due, and the disagreements found at the last refresh.
    Runs on the event loop only."""

    interval_s: float
    """Seconds between full refreshes (``balance_interval_s``)."""
    due_mono: float = float("-inf")
    """Monotonic time of the next full refresh."""
    hold_mismatches: set[str] = field(default_factory=set)
    """Disagreements with the exchange's ``used`` balance at the last refresh."""
    position_mismatches: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Ledger vs balance disagreements at the last refresh, by base currency."""
    ticker_symbols: int = 0
    """Tickers the last full refresh asked for (one request): for the account's planned
    request weight."""

    def due(self, monotonic: float) -> bool:
        return monotonic >= self.due_mono

    async def refresh_holdings(self, sync: AccountSync) -> None:
        """Balances alone, between full refreshes: what an account holds, within one poll.

        For accounts whose tier forbids DCA: an entry the bot sent on its own that
        filled at once shows here as a base balance, and the guard's DCA and
        duplicate rules see it at the next decision. One ``fetch_balance`` a cycle
        (and ``fetch_tickers`` once when a currency first appears).
        """
        asked_at = sync.clock.now()
        balances = await sync.ask(sync.exchange.fetch_balance, "fetch_balance")
        # A currency that was not held at the last full refresh has no price yet: its
        # tickers, once, so the guard can tell a position from dust.
        known = await sync.in_book(_last_prices)
        symbols = [
            s
            for s in tickers_to_fetch(balances, sync.live.quote_currency, sync.live.markets)
            if s not in known
        ]
        tickers: Mapping[str, Ticker] = {}
        if symbols:
            tickers = await sync.ask(partial(sync.exchange.fetch_tickers, symbols), "fetch_tickers")
        # One job: the book's record and the live view's balances change together.
        figures = await sync.in_book(
            _record,
            None,
            asked_at,
            tickers,
            sync.live,
            {"balances": dict(balances), "balances_at": asked_at},
        )
        await self._check_positions(sync, figures.positions, balances)

    async def refresh(self, sync: AccountSync) -> None:
        """Balances, the tickers that value them, equity and tier (DESIGN: Equity).

        Every holding is valued in the account's quote currency at the exchange's
        prices (:mod:`nija_broker.core.valuation`). Holdings no price values are
        listed on the live view and logged once per change. Equity that cannot be
        established (nothing valued, something unvalued) is never recorded as zero:
        the equity curve and the tier keep their last figures, the live equity is
        unknown and the account reports ``degraded`` until a refresh values it.
        """
        asked_at = sync.clock.now()
        balances = await sync.ask(sync.exchange.fetch_balance, "fetch_balance")
        quote = sync.live.quote_currency
        symbols = tickers_to_fetch(balances, quote, sync.live.markets)
        self.ticker_symbols = len(symbols)
        tickers = {}
        if symbols:
            tickers = dict(
                await sync.ask(partial(sync.exchange.fetch_tickers, symbols), "fetch_tickers")
            )
        valued = value_balances(balances, prices_of(tickers), quote)
        now = sync.clock.now()
        before = (sync.live.unvalued_holdings, sync.live.valuation_problem)
        # One job: the equity point, the prices and the live view's figures change together.
        figures = await sync.in_book(
            _record,
            valued.equity if valued.established else None,
            now,
            tickers,
            sync.live,
            {
                "balances": dict(balances),
                "balances_at": asked_at,
                "equity_usd": valued.equity if valued.established else None,
                "unvalued_holdings": valued.unvalued,
                "valuation_problem": valued.problem,
            },
        )
        if (valued.unvalued, valued.problem) != before:
            # Said once per change, not on every refresh: the holdings rarely change.
            if valued.problem is not None:
                log.warning(
                    "account %s: %s; it reports degraded, and its equity curve and "
                    "tier keep their last figures",
                    sync.account_id,
                    valued.problem,
                )
            elif valued.unvalued:
                log.warning(
                    "account %s holds %s, which no ticker of the exchange values in "
                    "%s (directly, or through a stablecoin or USD leg); left out of "
                    "its equity",
                    sync.account_id,
                    ", ".join(valued.unvalued),
                    quote,
                )
            else:
                log.info("account %s: every holding is valued in %s again", sync.account_id, quote)
        self._cross_check_holds(sync, figures, balances, now)
        await self._check_positions(sync, figures.positions, balances)
        self.due_mono = sync.clock.monotonic() + self.interval_s
        if valued.established:
            tier = await sync.run_book(partial(sync.live.tier.update, valued.equity))
            sync.publish(
                [
                    BalancesUpdated(
                        account_id=sync.account_id,
                        at=now,
                        equity_usd=valued.equity,
                        tier=tier.name,
                        unpriced=valued.unvalued,
                    )
                ]
            )

    def _cross_check_holds(
        self, sync: AccountSync, figures: _Figures, balances: Mapping[str, Balance], now: datetime
    ) -> None:
        """Held capital against the exchange's own ``used`` balance (DESIGN: held capital).

        Orders and balances are fetched at different moments, so a single
        disagreement can be an order placed in between: only a disagreement seen
        on two balance refreshes in a row raises an attention event (once).
        """
        problems = hold_mismatches(figures.open_orders, balances, figures.fee_rate)
        persistent = [p for p in problems if p in self.hold_mismatches]
        self.hold_mismatches = set(problems)
        for problem in persistent:
            if not sync.alerts.once((None, f"holds:{problem}")):
                continue
            log.warning(
                "account %s: held capital disagrees with the exchange: %s", sync.account_id, problem
            )
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id, at=now, reason=f"held capital check: {problem}"
                    )
                ]
            )

    async def _check_positions(
        self, sync: AccountSync, positions: Sequence[Position], balances: Mapping[str, Balance]
    ) -> None:
        """Compare ledger positions with balances; warn once on a disagreement seen twice."""
        markets = sync.live.markets
        steps = {
            p.symbol: step
            for p in positions
            if p.symbol in markets and (step := markets[p.symbol].amount_step)
        }
        found = position_mismatches(positions, balances, steps)
        persistent = {b: figures for b, figures in found.items() if b in self.position_mismatches}
        # Said once per disagreement, again only after ledger and balance agreed in between.
        sync.alerts.forget(
            {(None, f"position:{b}") for b in set(self.position_mismatches) - set(found)}
        )
        self.position_mismatches = found
        if persistent != sync.live.position_mismatches:  # this poller is its only writer
            await sync.update_live(position_mismatches=persistent)
        for base, (quantity, total) in persistent.items():
            if not sync.alerts.once((None, f"position:{base}")):
                continue
            reason = (
                f"ledger position {quantity:.8g} {base} disagrees with the exchange's "
                f"balance {total:.8g} {base} on two refreshes in a row; the guard judges "
                "positions from the exchange's balance until they agree"
            )
            log.warning("account %s: %s", sync.account_id, reason)
            # Straight to the bus: the alert key above already said it once.
            sync.bus.publish(
                [AttentionRequired(account_id=sync.account_id, at=sync.clock.now(), reason=reason)]
            )


def position_mismatches(
    positions: Sequence[Position],
    balances: Mapping[str, Balance],
    amount_steps: Mapping[str, float],
) -> dict[str, tuple[float, float]]:
    """Base currency -> (ledger quantity, exchange total) where they differ beyond a step.

    Pure. The ledger's positions of one base currency (``BTC/USD`` and ``BTC/USDT``)
    add up; the tolerance is the coarsest amount step of their markets (a sell is
    rounded to it, leaving dust the ledger also keeps), else a relative 1e-6.
    """
    ledger: dict[str, float] = {}
    step: dict[str, float] = {}
    for position in positions:
        base = base_of(position.symbol)
        ledger[base] = ledger.get(base, 0.0) + position.quantity
        step[base] = max(step.get(base, 0.0), amount_steps.get(position.symbol, 0.0))
    problems: dict[str, tuple[float, float]] = {}
    for base, quantity in sorted(ledger.items()):
        balance = balances.get(base)
        total = balance.total if balance is not None else 0.0
        slack = max(step[base], 1e-6 * max(quantity, total))
        if abs(quantity - total) > slack:
            problems[base] = (quantity, total)
    return problems


# Run on the book's owner thread, through AccountSync.in_book.
class _Figures(NamedTuple):
    """What a refresh reads from the book, in the same call that records it."""

    open_orders: list[Order]
    fee_rate: float
    positions: list[Position]


def _last_prices(book: AccountBook) -> dict[str, float]:
    return book.orders.last_prices()


def _record(
    book: AccountBook,
    equity: float | None,
    at: datetime,
    tickers: Mapping[str, Ticker],
    live: AccountLive,
    live_changes: Mapping[str, object],
) -> _Figures:
    """Record a refresh (the equity point when established, the tickers' last prices for
    the guard and held capital, the live view's new figures) and read what the checks
    compare with the balances."""
    live.update(live_changes)
    if equity is not None:
        book.update_equity(equity, at)
    for symbol, ticker in tickers.items():
        if ticker.last is not None:  # tickers without a price are left out
            book.orders.set_last_price(symbol, ticker.last)
    return _Figures(book.orders.open_orders(), book.orders.fee_rate, book.ledger.positions())
