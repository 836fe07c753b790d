"""One account's reconciliation cycle: fetch, call the pure core, persist, publish.

:class:`AccountSync` holds what the reconciler remembers about one account
between cycles (orders awaiting confirmation, stale alerts already raised,
intents still to resolve, when balances are next due) and runs its steps.
Every exchange call goes through :meth:`AccountSync.ask` (a deadline; a
missed deadline is a :class:`TransientError`); every state change goes
through :meth:`AccountSync.commit`, which writes via the book on the
reconciler's book thread and only then publishes.

Steps live beside it: balances and equity in :mod:`nija_broker.sync.balances`;
trades owed, orders followed by id and positions against balances in
:mod:`nija_broker.sync.fills`; journaled intents in
:mod:`nija_broker.sync.intents`.

Errors: :class:`AccountFatal` and the failure of the open-orders listing end
the cycle (the shell records health and backs off). A failed confirmation,
cancel or intent lookup only leaves that one item for the next cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from nija_broker.core.clock import Clock
from nija_broker.core.errors import (
    AccountFatal,
    ExchangeError,
    IllegalTransition,
    ImpossibleAnswer,
    OrderError,
    StateError,
    TransientError,
)
from nija_broker.core.events import (
    AttentionRequired,
    Event,
    EventBus,
    FillsBooked,
    OrderEvent,
    OrderVanished,
    StaleOrderFound,
)
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Order
from nija_broker.core.reconcile import Snapshot, diff, resolve
from nija_broker.core.tiers import StaleAction
from nija_broker.core.valuation import order_symbols
from nija_broker.state.book import AccountBook, Books
from nija_broker.state.store import Intent, Store
from nija_broker.sync.balances import refresh_balances, refresh_holdings
from nija_broker.sync.fills import Owed, book_trades, follow_known
from nija_broker.sync.intents import followed_of, resolve_intents

if TYPE_CHECKING:
    from adapters.base import Exchange
    from nija_broker.sync.reconciler import ReconcilerSettings

T = TypeVar("T")
RunBook = Callable[[Callable[[], T]], Awaitable[T]]

log = logging.getLogger("nija_broker.reconciler")


class AccountSync:
    """The reconciler's memory of one account, and the steps of its cycle."""

    def __init__(self, account_id: str, exchange: Exchange, live: AccountLive, *,
                 books: Books, settings: ReconcilerSettings, clock: Clock,
                 bus: EventBus, run_book: RunBook[Any],
                 watch_symbols: Sequence[str] = ()) -> None:
        self.account_id = account_id
        self.exchange = exchange
        self.live = live
        self.books = books
        self.store: Store | None = books.store
        self.settings = settings
        self.clock = clock
        self.bus = bus
        self.run_book = run_book
        self.book_or_none: AccountBook | None = None
        self.started = False
        self.fatal = False
        """The last cycle failed on refused keys: retry slowly."""
        self.unconfirmed: dict[str, Owed] = {}
        self.ever_listed: set[str] = set()
        """Live orders seen in a listing: visible on the exchange, so no lag to wait out."""
        self.stale_alerted: set[str] = set()
        self.hold_mismatches: set[str] = set()
        """Disagreements with the exchange's ``used`` balance at the last refresh."""
        self.attention_raised: set[tuple[str | None, str]] = set()
        self.intents: list[Intent] = []
        self.balance_due_mono = float("-inf")
        self.last_complete_listing: datetime | None = None
        """When the last complete open-orders listing was requested."""
        self.sweep_anchor: datetime | None = None
        """The last complete listing before the last successful closed-orders sweep."""
        self.sweep_supported = True
        self.sweep_per_symbol = False
        self.owed: dict[str, Owed] = {}
        """Orders (or followed ids) whose trades or look-ups failed: attempts, alerted."""
        self.position_mismatches: dict[str, tuple[float, float]] = {}
        """Ledger vs balance disagreements at the last refresh, by base currency."""
        self.known_symbols: set[str] = set(watch_symbols)
        """Every symbol the account ever ordered, filled, held or reserved, and its
        ``watch_symbols``: where the closed-orders sweep looks."""
        self.poll_interval_s = settings.poll_interval_for(account_id)
        self.balance_interval_s = settings.balance_interval_for(account_id)

    @property
    def book(self) -> AccountBook:
        if self.book_or_none is None:
            raise StateError(f"account {self.account_id!r} has not started")
        return self.book_or_none

    # ------------------------------------------------------------------ plumbing

    async def ask(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """One exchange call under the deadline; a missed deadline is transient."""
        timeout_s = self.settings.call_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                return await call()
        except TimeoutError as exc:
            raise TransientError(
                f"{what} for {self.account_id!r}: no answer within {timeout_s}s",
                account_id=self.account_id,
            ) from exc

    def publish(self, events: Sequence[Event]) -> None:
        fresh: list[Event] = []
        for event in events:
            if isinstance(event, AttentionRequired):
                # The same contradiction is seen every cycle until a human acts: say it once.
                key = (event.order_id, event.reason)
                if key in self.attention_raised:
                    continue
                self.attention_raised.add(key)
                log.warning("account %s needs attention: %s", self.account_id, event.reason)
            fresh.append(event)
        self.bus.publish(fresh)

    async def commit(self, events: Sequence[Event]) -> list[OrderEvent]:
        """Persist the order changes among ``events`` with their fills, then publish all.

        Returns the order events applied. If the book refuses the batch (the guard
        changed an order meanwhile), each change is tried alone and a refused one
        waits for the next cycle's fresh listing.
        """
        changes = [e for e in events if isinstance(e, OrderEvent)]
        others = [e for e in events if not isinstance(e, OrderEvent | OrderVanished)]
        applied: list[OrderEvent] = []
        if changes:
            try:
                await self._apply(changes)
                applied = changes
            except StateError:
                for change in changes:
                    try:
                        await self._apply([change])
                        applied.append(change)
                    except IllegalTransition as exc:
                        # The guard applied a newer version meanwhile: the next listing wins.
                        log.info("account %s: update of order %s refused: %s",
                                 self.account_id, change.order.id, exc)
                    except StateError as exc:
                        others.append(AttentionRequired(
                            account_id=self.account_id, at=self.clock.now(),
                            order_id=change.order.id,
                            reason=f"update of order {change.order.id} not booked: {exc}"))
        self.publish([*others, *applied])
        return applied

    async def _apply(self, changes: Sequence[OrderEvent]) -> None:
        # The book computes the fills these changes imply, under its lock (invariant 3).
        orders = [change.order for change in changes]
        book = self.book
        booked = await self.run_book(partial(book.apply_changes, orders))
        self.known_symbols.update(order.symbol for order in orders)
        fresh = tuple(r.fill for r in booked.results if not r.duplicate)
        if fresh:
            self.bus.publish([FillsBooked(account_id=self.account_id, at=self.clock.now(),
                                          fills=fresh, trades=booked.trades,
                                          unmatched=booked.unmatched)])

    def symbols_to_list(self) -> list[str]:
        """Symbols to ask about where an exchange lists open orders one symbol at a time:
        those of live orders, and the markets of held currencies (:func:`order_symbols`)."""
        markets = self.live.markets
        wanted = {order.symbol for order in self.book.orders.live_orders()}
        wanted.update(order_symbols(self.live.balances, self.live.quote_currency, markets))
        return sorted(s for s in wanted if not markets or s in markets)

    # ------------------------------------------------------------------ the cycle

    async def start(self) -> None:
        """Startup: load the book, markets and pending intents, then a full cycle."""
        if self.book_or_none is None:
            # Loading reads the store: on the book thread, not on the event loop.
            self.book_or_none = await self.run_book(partial(self.books.get, self.account_id))
        self.book.fills_from_trades = self.exchange.capabilities.order_trades
        markets = await self.ask(self.exchange.load_markets, "load_markets")
        self.live.markets = dict(markets)
        if self.store is not None:
            store = self.store
            self.intents = await self.run_book(partial(store.pending_intents, self.account_id))
            self.known_symbols |= await self.run_book(partial(store.symbols, self.account_id))
            for intent in await self.run_book(partial(store.unfollowed_intents,
                                                      self.account_id)):
                self.book.follow(followed_of(intent))
        await self.cycle(startup=True)
        self.started = True

    def price_step(self, symbol: str) -> float | None:
        market = self.live.markets.get(symbol)
        return market.price_step if market is not None else None

    def price_steps(self, symbols: Iterable[str]) -> dict[str, float]:
        """The price ticks of ``symbols`` (only those: a venue lists thousands of markets)."""
        return {s: step for s in set(symbols) if (step := self.price_step(s))}

    async def cycle(self, *, startup: bool = False) -> None:
        balances_due = startup or self.clock.monotonic() >= self.balance_due_mono
        if balances_due:
            await refresh_balances(self)
        else:
            policy = self.live.policy()
            if policy is not None and not policy.allow_dca:
                await refresh_holdings(self)
        symbols = None
        if not self.exchange.capabilities.open_orders_without_symbol:
            symbols = self.symbols_to_list()
        asked_at = self.clock.now()
        page = await self.ask(partial(self.exchange.fetch_open_orders, symbols),
                              "fetch_open_orders")
        now = self.clock.now()
        if page.complete:
            self.last_complete_listing = asked_at
        tracked = {order.id: order for order in self.book.orders.live_orders()}
        events = diff(tracked, Snapshot(page.orders, page.complete), now,
                      self.price_steps(o.symbol for o in page.orders))
        events.extend(AttentionRequired(account_id=self.account_id, at=now,
                                        order_id=problem.order_id, reason=str(problem))
                      for problem in page.problems)
        listed = {order.id for order in page.orders}
        self.ever_listed |= listed
        for order_id in self.unconfirmed.keys() & listed:
            del self.unconfirmed[order_id]
        await self.commit(events)
        for event in events:
            if isinstance(event, OrderVanished):
                self.unconfirmed.setdefault(event.order.id, Owed())
        if balances_due and self.sweep_supported:
            await self.sweep_closed(now)
        budget = None if startup else self.settings.confirm_budget
        await self.confirm(now, budget=budget, startup=startup)
        await follow_known(self, budget=budget)
        await self.handle_stale()
        if self.intents:
            await resolve_intents(self)
        await book_trades(self, budget=budget)
        if balances_due:
            self.book.cleanup_terminal(now)

    # ------------------------------------------------------------------ confirmation

    async def confirm(self, now: datetime, *, budget: int | None, startup: bool) -> None:
        """Ask the exchange about vanished orders, oldest first, within ``budget`` calls."""
        live = {order.id: order for order in self.book.orders.live_orders()}
        for order_id in [i for i in self.unconfirmed if i not in live]:
            del self.unconfirmed[order_id]
        self.ever_listed &= live.keys()
        window_s = self.settings.visibility_window_s
        limit = self.settings.attention_after
        candidates = [
            live[order_id] for order_id in self.unconfirmed
            # A just-placed order may be missing from listings for a while (Binance
            # -2013 "order does not exist"); unless a listing already showed it,
            # asking before the window is over would only waste a call.
            if startup or order_id in self.ever_listed
            or (now - live[order_id].created_at).total_seconds() >= window_s
        ]
        # Oldest first; orders already past the attention limit go last so they cannot
        # starve the others of the budget.
        candidates.sort(key=lambda o: (self.unconfirmed[o.id].attempts >= limit,
                                       o.created_at, o.id))
        if budget is not None:
            candidates = candidates[:budget]
        for order in candidates:
            entry = self.unconfirmed[order.id]
            try:
                answer = await self.ask(partial(self.exchange.fetch_order, order.id,
                                                order.symbol), "fetch_order")
            except AccountFatal:
                raise
            except ImpossibleAnswer as exc:
                # Nothing is booked from it; the order keeps its last good state, and a
                # later truthful answer (a cancel) still ends it.
                entry.attempts += 1
                self.publish([AttentionRequired(account_id=self.account_id,
                                                at=self.clock.now(), order_id=order.id,
                                                reason=str(exc))])
                continue
            except ExchangeError as exc:
                # Not found, timed out, rate limited: none of it says the order ended.
                if entry.failed(limit):
                    self.publish([AttentionRequired(
                        account_id=self.account_id, at=self.clock.now(), order_id=order.id,
                        attempts=entry.attempts,
                        reason=(f"order {order.id} ({order.symbol}) is missing from the open "
                                f"orders and {entry.attempts} confirmations failed, the last "
                                f"with {type(exc).__name__}: {exc}; it stays open"),
                    )])
                continue
            event = resolve(order, answer, self.clock.now(), self.price_step(order.symbol))
            applied = await self.commit([event]) if event is not None else []
            if event is None or applied or answer.is_open:
                # The exchange spoke: ended (applied), or still open and due in the next listing.
                self.unconfirmed.pop(order.id, None)

    async def sweep_closed(self, now: datetime) -> None:
        """Closed orders created since the last sweep's anchor: evidence for vanished orders,
        and the fills of orders that opened and closed between two listings.

        Why the anchor: an order created more than the visibility window before a
        complete listing and still open then was in that listing, so it is tracked.
        Any order never tracked was therefore created after (anchor - window), or
        closed before the previous sweep, which covered it. Anchoring on the last
        sweep's own time instead would miss an order that outlived a sweep while
        listings were failing.
        """
        margin = timedelta(seconds=self.settings.visibility_window_s + self.poll_interval_s)
        since = (self.sweep_anchor - margin if self.sweep_anchor is not None
                 else now - timedelta(seconds=self.settings.sweep_lookback_s))
        anchor = self.last_complete_listing
        per_symbol = (self.sweep_per_symbol
                      or not self.exchange.capabilities.open_orders_without_symbol)
        try:
            answers = await self._closed_orders(since, per_symbol)
        except AccountFatal:
            raise
        except TransientError:
            return  # the next sweep covers the same window again
        except ExchangeError as exc:
            if per_symbol:
                self.sweep_supported = False
                log.warning("account %s: closed orders cannot be listed (%s); orders that "
                            "open and close between two polls will be missed",
                            self.account_id, exc)
                return
            # Binance lists open orders without a symbol but closed ones only by symbol.
            self.sweep_per_symbol = True
            return await self.sweep_closed(now)
        if anchor is not None:
            self.sweep_anchor = anchor
        events: list[Event] = []
        for answer in answers:
            tracked = self.book.orders.get(answer.id)
            if tracked is not None and tracked.is_terminal:
                continue
            if tracked is None and answer.filled <= 0:
                continue  # never seen, nothing executed: nothing to book
            event = resolve(tracked, answer, now)
            if event is not None:
                events.append(event)
        for applied in await self.commit(events):
            if applied.order.is_terminal:
                self.unconfirmed.pop(applied.order.id, None)

    async def _closed_orders(self, since: datetime, per_symbol: bool) -> list[Order]:
        scopes: list[str | None] = [None]
        if per_symbol:
            # Every symbol ever held, traded, ordered or reserved, and the watch list:
            # where an order nobody saw open can be.
            wanted = set(self.symbols_to_list()) | self.known_symbols
            wanted.update(order.symbol for order in self.book.orders.orders())
            wanted.update(position.symbol for position in self.book.positions())
            markets = self.live.markets
            scopes = [s for s in sorted(wanted) if not markets or s in markets]
        answers: list[Order] = []
        for scope in scopes:
            answers.extend(await self.ask(
                partial(self.exchange.fetch_closed_orders, scope, since), "fetch_closed_orders"))
        return answers

    # ------------------------------------------------------------------ stale orders

    async def handle_stale(self) -> None:
        policy = self.live.policy()
        if policy is None:
            return  # tier unknown until the first balance: no basis for a decision
        now = self.clock.now()
        stale = [
            order for order in self.book.orders.stale_orders(
                now, policy.stale_max_age_s, include_exits=policy.stale_includes_exits)
            if order.id not in self.unconfirmed
        ]
        if policy.stale_action is StaleAction.ALERT:
            live_ids = {order.id for order in stale}
            self.stale_alerted &= live_ids
            fresh = [order for order in stale if order.id not in self.stale_alerted]
            self.stale_alerted.update(order.id for order in fresh)
            self.publish([StaleOrderFound(account_id=self.account_id, at=now, order=order,
                                          max_age_s=policy.stale_max_age_s, action="alert")
                          for order in fresh])
            return
        for order in stale[: self.settings.stale_cancel_budget]:
            try:
                answer = await self.ask(partial(self.exchange.cancel_order, order.id,
                                                order.symbol), "cancel_order")
            except AccountFatal:
                raise
            except OrderError:
                # Already closed or unknown: find out what happened before anything changes.
                self.unconfirmed.setdefault(order.id, Owed())
                continue
            except ExchangeError:
                continue  # transient; a lost answer shows up as a vanished order next cycle
            self.publish([StaleOrderFound(account_id=self.account_id, at=now, order=order,
                                          max_age_s=policy.stale_max_age_s, action="cancel")])
            # Cancelled only on the exchange's answer (which may also say it filled first).
            event = resolve(order, answer, self.clock.now())
            if event is not None:
                await self.commit([event])
