"""The open-orders listing: the cheapest plan per account, the pure diff, the changes committed.

Step 2 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`).
Venues limit by weight, not by calls: on Binance one listing of every symbol
weighs 80 and one of a single symbol 6 (``Capabilities.open_orders_weight`` and
``open_orders_symbol_weight``). :func:`choose_listing` picks, each cycle, the
cheaper of

- one listing of every symbol, at start-up, every ``full_listing_interval_s``
  (what finds an order placed outside the guard on a symbol the account had
  no order on), and whenever listing the symbols one by one would cost more;
- one listing per symbol the account has live orders on, otherwise (the symbols
  as the last listing left the book; a live order on another symbol, which the
  guard placed since, is listed in the same cycle once the book is read).

Where the exchange reports no per-symbol weight (Kraken lists every symbol in
one call whatever is asked) every cycle lists every symbol, as before; where it
lists open orders one symbol at a time only, the symbols asked about are those
of the live orders and the markets of held currencies (:func:`listing_symbols`).

A listing of some symbols is complete for those symbols only: the tracked orders
on other symbols are left out of the diff, never marked vanished
(``OpenOrdersPage.symbols``). Orders missing from a listing are handed to the
confirmations (:class:`~nija_broker.sync.confirm.Confirmations`): absence is never
evidence.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.events import AttentionRequired, Event, OrderVanished
from nija_broker.core.exchange import Capabilities, OpenOrdersPage
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Market, Order
from nija_broker.core.reconcile import Snapshot, diff
from nija_broker.core.symbols import normalize_symbol
from nija_broker.core.valuation import order_symbols

if TYPE_CHECKING:
    from nija_broker.sync.confirm import Confirmations
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Listing", "ListingChoice", "choose_listing", "listing_symbols", "scoped"]


def listing_symbols(live_orders: Iterable[Order], live: AccountLive) -> list[str]:
    """Symbols to ask about where an exchange lists open orders one symbol at a time:
    those of live orders, and the markets of held currencies (:func:`order_symbols`).
    Pure."""
    markets = live.markets
    wanted = {order.symbol for order in live_orders}
    wanted.update(order_symbols(live.balances, live.quote_currency, markets))
    return sorted(s for s in wanted if not markets or s in markets)


@dataclass(frozen=True, slots=True)
class ListingChoice:
    """One cycle's open-orders listing."""

    symbols: tuple[str, ...] | None
    """``None``: one listing of every symbol; else one listing per symbol (none: no request)."""
    weight: float
    """What it costs against the exchange's limit, in the exchange's units."""

    @property
    def every_symbol(self) -> bool:
        return self.symbols is None


def choose_listing(
    capabilities: Capabilities,
    symbols_with_orders: Collection[str],
    *,
    full_due: bool,
    markets: Collection[str] = (),
) -> ListingChoice:
    """The cheapest listing this cycle for an exchange that can list every symbol at once.

    Pure. Every symbol when ``full_due`` (start-up, every ``full_listing_interval_s``),
    when the exchange offers no per-symbol weight, when the symbols one by one would
    weigh as much, or when an order rests on a symbol the exchange's ``markets`` (where
    known) do not list (a delisted market cannot be asked about by name); else one
    listing per symbol with orders.
    """
    every = ListingChoice(None, capabilities.open_orders_weight)
    one = capabilities.open_orders_symbol_weight
    if one is None or full_due:
        return every
    if markets and any(s not in markets for s in symbols_with_orders):
        return every
    symbols = tuple(sorted(set(symbols_with_orders)))
    weight = len(symbols) * one
    return every if weight >= every.weight else ListingChoice(symbols, weight)


def scoped(tracked: dict[str, Order], symbols: tuple[str, ...] | None) -> dict[str, Order]:
    """The tracked orders a listing of ``symbols`` speaks for (``None``: all of them). Pure.

    A listing of BTC/USDT says nothing of an order on ETH/USDT: diffed against it,
    that order would look vanished.
    """
    if symbols is None:
        return tracked
    scope = {normalize_symbol(s) for s in symbols}
    return {i: o for i, o in tracked.items() if normalize_symbol(o.symbol) in scope}


@dataclass(slots=True)
class Listing:
    """The listing's memory between cycles. Runs on the event loop only."""

    full_interval_s: float = 300.0
    """``full_listing_interval_s``: the longest between two listings of every symbol."""
    last_complete_at: datetime | None = None
    """When the last complete listing of every symbol was requested: the closed-orders
    sweep's anchor (:class:`~nija_broker.sync.sweep.Sweeps`). A listing of some symbols
    never sets it: an order on another symbol was not in it. (Where the exchange lists
    one symbol at a time only, its complete per-symbol listing does, as the best there is.)"""
    full_due_mono: float = -math.inf
    """Loop time at which every symbol is to be listed again (at once, at start-up)."""
    symbols_with_orders: set[str] = field(default_factory=set)
    """The symbols of the live orders as the last listing left them, and of every order
    the cycle applied since: where a per-symbol listing looks."""
    last: ListingChoice | None = None
    """This cycle's (or the last) choice: the plan shown in the account's status."""
    quiet: _Quiet | None = None
    """The last listing, when its diff found nothing: the same answer against the same
    book next cycle finds nothing again, and is not diffed."""

    def note_orders(self, orders: Iterable[Order]) -> None:
        """Orders the cycle applied after its listing (followed, swept, resolved)."""
        self.symbols_with_orders.update(o.symbol for o in orders if not o.is_terminal)

    def choose(
        self,
        capabilities: Capabilities,
        live: list[Order] | None,
        sync_live: AccountLive,
        monotonic: float,
    ) -> ListingChoice:
        """This cycle's listing; ``live`` is read only where the exchange needs symbols."""
        if not capabilities.open_orders_without_symbol:
            symbols = listing_symbols(live or (), sync_live)
            one = capabilities.open_orders_symbol_weight or capabilities.open_orders_weight
            return ListingChoice(tuple(symbols), len(symbols) * one)
        return choose_listing(
            capabilities,
            self.symbols_with_orders,
            full_due=monotonic >= self.full_due_mono,
            markets=sync_live.markets,
        )

    async def run(self, sync: AccountSync, confirmations: Confirmations) -> datetime:
        """List the open orders and commit what changed; returns the time of the answer."""
        capabilities = sync.exchange.capabilities
        needs_symbols = not capabilities.open_orders_without_symbol
        live = await sync.live_orders() if needs_symbols else None
        choice = self.choose(capabilities, live, sync.live, sync.clock.monotonic())
        self.last = choice
        asked_at, asked_mono = sync.clock.now(), sync.clock.monotonic()
        page: OpenOrdersPage | None = None
        if needs_symbols or choice.symbols != ():
            page = await self._list(sync, choice.symbols)
        now = sync.clock.now()
        # Read after the answer: the guard may have changed an order while it was asked.
        view = await sync.read_view(now)
        tracked = {order.id: order for order in view.live}
        scope = choice.symbols if page is None or page.symbols is None else page.symbols
        diffed_in_full = False  # a cycle that listed extra symbols (rare)
        if scope is not None and not needs_symbols:
            # Live orders on symbols this cycle did not list (the guard placed one since
            # the last listing): listed now, not a cycle late. Rare, so the second read
            # of the book it needs is too.
            markets = sync.live.markets
            missing = tuple(
                sorted(
                    s
                    for s in {o.symbol for o in tracked.values()} - set(scope)
                    if not markets or s in markets  # else listed with every symbol next
                )
            )
            if missing:
                extra = await self._list(sync, missing)
                page = extra if page is None else _joined(page, extra)
                scope = (*scope, *(missing if extra.symbols is None else extra.symbols))
                now = sync.clock.now()
                tracked = {order.id: order for order in (await sync.read_view(now)).live}
                diffed_in_full = True
        self.symbols_with_orders = {o.symbol for o in tracked.values()}
        if page is None:  # orders on no symbol: nothing to list until the next full listing
            return now
        # A listing of every symbol puts off the next by the interval; one with impossible
        # rows too (they stay so), but a truncated one is asked again next cycle.
        if scope is None and (page.complete or page.problems):
            self.full_due_mono = asked_mono + self.full_interval_s
        if page.complete and (scope is None or needs_symbols):
            self.last_complete_at = asked_at
        self.symbols_with_orders.update(o.symbol for o in page.orders if not o.is_terminal)
        markets = sync.live.markets
        quiet = self.quiet
        if (
            not diffed_in_full
            and quiet is not None
            and quiet.holds(page, scope, view.version, markets)
        ):
            events: list[Event] = []  # the same answer, the same book: nothing to change
        else:
            events = diff(
                scoped(tracked, scope),
                Snapshot(page.orders, page.complete),
                now,
                sync.price_steps(o.symbol for o in page.orders),
            )
            quiet_now = not events and not page.problems and not diffed_in_full
            self.quiet = (
                _Quiet(tuple(page.orders), page.complete, scope, view.version, markets)
                if quiet_now
                else None
            )
        events.extend(
            AttentionRequired(
                account_id=sync.account_id, at=now, order_id=problem.order_id, reason=str(problem)
            )
            for problem in page.problems
        )
        confirmations.listed({order.id for order in page.orders}, tracked)
        await sync.commit(events)
        for event in events:
            if isinstance(event, OrderVanished):
                confirmations.owe(event.order.id)
        return now

    @staticmethod
    async def _list(sync: AccountSync, symbols: tuple[str, ...] | None) -> OpenOrdersPage:
        asked = None if symbols is None else list(symbols)
        page: OpenOrdersPage = await sync.ask(
            partial(sync.exchange.fetch_open_orders, asked), "fetch_open_orders"
        )
        return page


@dataclass(frozen=True, slots=True)
class _Quiet:
    """A listing whose diff found nothing, with what the diff depended on: the orders
    (the same objects: the adapter's listing memo hands back the very order a row gave
    while the row is unchanged), completeness, scope, the book's order version and the
    markets (their price ticks). The diff is a pure function of these."""

    orders: tuple[Order, ...]
    complete: bool
    scope: tuple[str, ...] | None
    version: int
    markets: Mapping[str, Market]

    def holds(
        self,
        page: OpenOrdersPage,
        scope: tuple[str, ...] | None,
        version: int,
        markets: Mapping[str, Market],
    ) -> bool:
        orders = page.orders
        return (
            version == self.version
            and markets is self.markets
            and scope == self.scope
            and page.complete == self.complete
            and not page.problems
            and len(orders) == len(self.orders)
            and all(a is b for a, b in zip(orders, self.orders, strict=True))
        )


def _joined(first: OpenOrdersPage, second: OpenOrdersPage) -> OpenOrdersPage:
    """Two listings of different symbols as one page of both."""
    return OpenOrdersPage(
        orders=[*first.orders, *second.orders],
        calls=first.calls + second.calls,
        complete=first.complete and second.complete,
        problems=[*first.problems, *second.problems],
        symbols=None
        if first.symbols is None or second.symbols is None
        else (*first.symbols, *second.symbols),
    )
