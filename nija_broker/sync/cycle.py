"""One account's reconciliation cycle: fetch, call the pure core, persist, publish.

:class:`AccountSync` wires the pieces that remember one account between cycles,
each owning its own state, and runs the steps in order:

1. balances, on their cadence (:class:`~nija_broker.sync.balances.Balances`:
   equity, tier, held capital and positions checked against the exchange);
2. the open-orders listing (:class:`~nija_broker.sync.listing.Listing`);
3. on the balance cadence, the closed-orders sweep
   (:class:`~nija_broker.sync.sweep.Sweeps`);
4. confirmations of vanished orders (:class:`~nija_broker.sync.confirm.Confirmations`);
5. orders the guard confirmed, followed by id (:class:`~nija_broker.sync.fills.Lookups`);
6. stale orders (:class:`~nija_broker.sync.stale.StaleOrders`);
7. intents journaled before the start (:class:`~nija_broker.sync.intents.Intents`);
8. the trades owed (:class:`~nija_broker.sync.fills.Lookups`);
9. on the balance cadence, terminal orders past retention dropped from memory;
10. the account's request weight a minute, planned and spent, on its live view
    (:mod:`~nija_broker.sync.weights`).

Threads: the pieces run on the event loop and never touch the book there.
Every read and change of the book runs on its owner's thread through
:meth:`AccountSync.in_book` (``run_book``); every exchange call goes through
:meth:`AccountSync.ask` (a deadline; a missed deadline is a
:class:`TransientError`); every order change through :meth:`AccountSync.commit`,
which writes via the book and only then publishes. Attention events are said
once (:class:`~nija_broker.sync.alerts.Alerts`).

Errors: :class:`AccountFatal` and the failure of the open-orders listing end
the cycle (the shell records health and backs off). A failed confirmation,
cancel or intent lookup only leaves that one item for the next cycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from nija_broker.core.clock import Clock, deadline
from nija_broker.core.errors import IllegalTransition, StateError, TransientError
from nija_broker.core.events import (
    AttentionRequired,
    Event,
    EventBus,
    FillsBooked,
    OrderEvent,
    OrderVanished,
)
from nija_broker.core.exchange import WeightMeter
from nija_broker.core.health import AccountLive, RequestWeight
from nija_broker.core.models import Order
from nija_broker.state.book import AccountBook, Followed
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.alerts import Alerts
from nija_broker.sync.balances import Balances
from nija_broker.sync.confirm import Confirmations
from nija_broker.sync.fills import Lookups, followed_orders, trades_owed
from nija_broker.sync.intents import Intents
from nija_broker.sync.listing import Listing
from nija_broker.sync.stale import StaleOrders, stale_orders
from nija_broker.sync.sweep import Sweeps
from nija_broker.sync.weights import plan_weight

if TYPE_CHECKING:
    from nija_broker.core.exchange import Exchange
    from nija_broker.core.settings import ReconcilerSettings

T = TypeVar("T")
P = ParamSpec("P")
RunBook = Callable[[Callable[[], T]], Awaitable[T]]

log = logging.getLogger("nija_broker.reconciler")


class AccountSync:
    """The reconciler's memory of one account, in pieces, and the order of its cycle."""

    def __init__(
        self,
        account_id: str,
        exchange: Exchange,
        live: AccountLive,
        *,
        books: Books,
        settings: ReconcilerSettings,
        clock: Clock,
        bus: EventBus,
        run_book: RunBook[Any],
        watch_symbols: Sequence[str] = (),
    ) -> None:
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
        self.poll_interval_s = settings.poll_interval_for(account_id)
        self.alerts = Alerts(account_id)
        self.balances = Balances(settings.balance_interval_for(account_id))
        self.listing = Listing(full_interval_s=settings.full_listing_interval_for(account_id))
        self.sweeps = Sweeps(known_symbols=set(watch_symbols))
        self.confirmations = Confirmations()
        self.lookups = Lookups()
        self.stale = StaleOrders()
        self.intents = Intents()
        self.stream_poll_interval_s = settings.stream_poll_interval_for(account_id)
        self.stream_up = False
        """The account's stream is up (:mod:`nija_broker.sync.stream`): the poll is then the
        safety net, every ``stream_poll_interval_s``."""
        self.wake = asyncio.Event()
        """Set to cut the poller's wait short: the stream dropped (poll at full rate now),
        or came up (one full poll reconciles what it never streamed)."""
        self.ready = asyncio.Event()
        """Set once the start-up sync succeeded: the book has a base for stream updates."""
        self.turn = asyncio.Lock()
        """Held through each cycle (and start-up) and through a trader's cancel: one of
        them at a time changes the account's book from the event loop."""
        self.view: CycleView | None = None
        """What the listing step read of the book, in one job; the later steps of the
        cycle use it instead of asking the owner again, until the cycle changes the book
        (any other job through :meth:`in_book`, or a commit, drops it)."""

    @property
    def book(self) -> AccountBook:
        if self.book_or_none is None:
            raise StateError(f"account {self.account_id!r} has not started")
        return self.book_or_none

    # ------------------------------------------------------------------ plumbing

    async def in_book(
        self, fn: Callable[Concatenate[AccountBook, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(book, *args, **kwargs)`` on the book's owner thread: the one door to the
        book, for reads that feed a decision as for changes."""
        self.view = None  # the book may change: the next step reads it afresh
        result: T = await self.run_book(partial(fn, self.book, *args, **kwargs))
        return result

    async def read_view(self, now: datetime) -> CycleView:
        """One job for everything an unchanged cycle needs to know of the book (each job
        is a hand-off to the owner's thread and back, the dominant cost of an idle
        cycle): the live orders, the orders followed by id, those whose trades are owed
        and the stale candidates under the tier's policy."""
        policy = self.live.policy()
        stale_rule = (
            None if policy is None else (policy.stale_max_age_s, policy.stale_includes_exits)
        )
        view: CycleView = await self.run_book(partial(_cycle_view, self.book, now, stale_rule))
        self.view = view
        return view

    async def live_orders(self) -> list[Order]:
        return await self.in_book(_live_orders)

    async def update_live(self, **changes: object) -> None:
        """Change fields of the account's live view on the owner's thread, all at once: the
        guard, which judges on the owner too, sees every field old or every field new."""
        await self.run_book(partial(self.live.update, changes))

    async def ask(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """One exchange call under its one deadline, ``call_timeout_s``; missing it is transient.

        The ccxt adapter takes this same deadline for the call's retries and sets
        none of its own (:func:`~nija_broker.core.clock.deadline`); an exchange
        that knows no deadline (the sim, a test's fake) is bounded by it alike.
        """
        timeout_s = self.settings.call_timeout_s
        try:
            async with deadline(timeout_s):
                return await call()
        except TimeoutError as exc:
            raise TransientError(
                f"{what} for {self.account_id!r}: no answer within {timeout_s}s",
                account_id=self.account_id,
            ) from exc

    def publish(self, events: Sequence[Event]) -> None:
        self.bus.publish(self.alerts.fresh(events))

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
                        log.info(
                            "account %s: update of order %s refused: %s",
                            self.account_id,
                            change.order.id,
                            exc,
                        )
                    except StateError as exc:
                        others.append(
                            AttentionRequired(
                                account_id=self.account_id,
                                at=self.clock.now(),
                                order_id=change.order.id,
                                reason=f"update of order {change.order.id} not booked: {exc}",
                            )
                        )
        self.publish([*others, *applied])
        return applied

    async def _apply(self, changes: Sequence[OrderEvent]) -> None:
        # The book computes the fills these changes imply, under its lock (invariant 3).
        orders = [change.order for change in changes]
        book = self.book
        self.view = None  # the book changes: later steps read it afresh
        booked = await self.run_book(partial(book.apply_changes, orders))
        self.sweeps.known_symbols.update(order.symbol for order in orders)
        self.listing.note_orders(orders)
        fresh = tuple(r.fill for r in booked.results if not r.duplicate)
        if fresh:
            self.bus.publish(
                [
                    FillsBooked(
                        account_id=self.account_id,
                        at=self.clock.now(),
                        fills=fresh,
                        trades=booked.trades,
                        unmatched=booked.unmatched,
                    )
                ]
            )

    def price_step(self, symbol: str) -> float | None:
        market = self.live.markets.get(symbol)
        return market.price_step if market is not None else None

    def price_steps(self, symbols: Iterable[str]) -> dict[str, float]:
        """The price ticks of ``symbols`` (only those: a venue lists thousands of markets)."""
        return {s: step for s in set(symbols) if (step := self.price_step(s))}

    # ------------------------------------------------------------------ the cycle

    async def start(self) -> None:
        """Startup: load the book, markets and pending intents, then a full cycle."""
        if self.book_or_none is None:
            # Loading reads the store: on the book's owner thread, not on the event loop.
            self.book_or_none = await self.run_book(partial(self.books.get, self.account_id))
        await self.in_book(_fills_from_trades, self.exchange.capabilities.order_trades)
        markets = await self.ask(self.exchange.load_markets, "load_markets")
        await self.update_live(markets=dict(markets))
        if self.store is not None:
            await self.intents.load(self, self.store)
            self.sweeps.known_symbols |= await self.run_book(
                partial(self.store.symbols, self.account_id)
            )
        await self.cycle(startup=True)
        self.started = True
        self.ready.set()

    async def cycle(self, *, startup: bool = False) -> None:
        self.view = None  # never a view from an earlier cycle: the guard ran in between
        balances_due = startup or self.balances.due(self.clock.monotonic())
        if balances_due:
            await self.balances.refresh(self)
        else:
            policy = self.live.policy()
            if policy is not None and not policy.allow_dca and not self.stream_up:
                # With the stream up, an entry the bot sent itself is streamed (its order
                # and trades), so the per-cycle balance is not needed to see it.
                await self.balances.refresh_holdings(self)
        now = await self.listing.run(self, self.confirmations)
        if balances_due and self.sweeps.supported:
            await self.sweeps.sweep(self, now, self.listing, self.confirmations)
        budget = None if startup else self.settings.confirm_budget
        await self.confirmations.confirm(self, now, budget=budget, startup=startup)
        await self.lookups.follow_known(self, budget=budget)
        await self.stale.handle(self, self.confirmations)
        if self.intents.pending:
            await self.intents.resolve(self)
        await self.lookups.book_trades(self, budget=budget)
        if balances_due:
            await self.in_book(AccountBook.cleanup_terminal, now)
        self.record_weight()

    def interval_s(self) -> float:
        """The poll's interval now: the safety net's while the stream is up (but balances,
        their tickers and the stale-order check keep ``balance_interval_s`` if shorter)."""
        if not self.stream_up:
            return self.poll_interval_s
        return min(self.stream_poll_interval_s, max(self.balances.interval_s, self.poll_interval_s))

    def record_weight(self) -> None:
        """The account's planned request weight a minute (its listing plan, at its
        intervals) and, where the exchange counts it, what it spent in the last minute:
        one value replaced whole on the live view, as the poller replaces ``health``."""
        capabilities = self.exchange.capabilities
        choice = self.listing.last
        symbols = len(self.listing.symbols_with_orders)
        if not capabilities.open_orders_without_symbol and choice and choice.symbols:
            symbols = len(choice.symbols)
        policy = self.live.policy()
        plan = plan_weight(
            capabilities,
            poll_interval_s=self.interval_s(),
            balance_interval_s=self.balances.interval_s,
            full_listing_interval_s=self.listing.full_interval_s,
            symbols=symbols,
            ticker_symbols=self.balances.ticker_symbols,
            sweep_requests=self.sweeps.requests_per_sweep(capabilities),
            holdings_every_cycle=policy is not None and not policy.allow_dca,
        )
        weights = capabilities.weights
        spent = self.exchange.weight_spent(60.0) if isinstance(self.exchange, WeightMeter) else None
        self.live.request_weight = RequestWeight(
            planned_per_min=plan.total,
            spent_last_min=spent,
            listing=plan.listing,
            unit=weights.unit,
            limit_per_min=weights.limit_per_min,
            per_key=weights.per_key,
        )


# Run on the book's owner thread, through AccountSync.in_book.
def _live_orders(book: AccountBook) -> list[Order]:
    return book.orders.live_orders()


def _fills_from_trades(book: AccountBook, from_trades: bool) -> None:
    # Set once, at start, from what the exchange reports (see AccountBook.fills_from_trades).
    book.fills_from_trades = from_trades


@dataclass(frozen=True, slots=True)
class CycleView:
    """The book as one cycle's listing step saw it (see :meth:`AccountSync.read_view`)."""

    at: datetime
    version: int
    """The book's order version the view was read at (:attr:`OrderTracker.version`)."""
    live: list[Order]
    followed: list[Followed]
    owed: list[Order]
    stale: list[Order] | None
    """``None`` while the account's tier is unknown (no basis for a stale decision)."""


def _cycle_view(
    book: AccountBook, now: datetime, stale_rule: tuple[float, bool] | None
) -> CycleView:
    # The same reads the steps make when the view is gone, in one job.
    version = book.orders.version  # before the orders (see OrderTracker.version)
    stale = None if stale_rule is None else stale_orders(book, now, *stale_rule)
    live = _live_orders(book)
    return CycleView(now, version, live, followed_orders(book), trades_owed(book), stale)
