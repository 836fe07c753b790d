"""The reconciler: keeps every account's books true to its exchange, continuously and on restart.

Usage::

    async with Reconciler(books, exchanges, live, clock=SystemClock()) as reconciler:
        with reconciler.subscribe() as events:
            ...                      # read events in another task
        await reconciler.run()       # until cancelled or aclose()

One poller per account runs under one :class:`asyncio.TaskGroup`, each on its
own interval with a seeded jitter. A poller starts its account
(:meth:`Reconciler.startup`: markets, balances, every order the store thinks
open confirmed, pending intents resolved) and then repeats
:meth:`Reconciler.sync_once`. The cycle itself lives in
:mod:`nija_broker.sync.cycle`; the decisions in the pure
:mod:`nija_broker.core.reconcile`.

Every read and change of a book (and every SQLite statement) runs on the
books' :class:`~nija_broker.state.owner.Owner`, awaited through ``run_book``:
the owner's one thread serialises the reconciler's commits with the guard's
decisions and the bot's threads, in the order they were asked for, and the
event loop never waits on the disk. Closing waits for the book writes already
queued: that is the store flush.

Health: a good cycle sets ``ok``; a failed one counts a consecutive failure
(``degraded`` once the account had synced, ``syncing`` before) and backs that
account off exponentially; ``failed`` past ``failed_after`` failures, or at
once on :class:`AccountFatal` (refused keys). Other accounts are not touched.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Self, TypeVar

from nija_broker.core.clock import Clock
from nija_broker.core.errors import AccountFatal, NijaBrokerError, StateError
from nija_broker.core.events import EventBus, HealthChanged, Subscription
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.settings import ReconcilerSettings
from nija_broker.state.books import Books
from nija_broker.sync.cancel import CancelAnswer, cancel_order
from nija_broker.sync.cycle import AccountSync
from nija_broker.sync.stream import AccountStream, streams

if TYPE_CHECKING:
    from nija_broker.core.exchange import Exchange

__all__ = ["Reconciler", "ReconcilerSettings"]

T = TypeVar("T")
log = logging.getLogger("nija_broker.reconciler")

_ERROR_TEXT_MAX = 300


class Reconciler:
    """Pollers for many accounts; each account's failures stay its own."""

    def __init__(
        self,
        books: Books,
        exchanges: Mapping[str, Exchange],
        live: Mapping[str, AccountLive],
        *,
        clock: Clock,
        settings: ReconcilerSettings | None = None,
        bus: EventBus | None = None,
    ) -> None:
        if set(exchanges) != set(live):
            raise ValueError(
                f"exchanges and live views must name the same accounts; exchanges only: "
                f"{sorted(set(exchanges) - set(live))}, live only: "
                f"{sorted(set(live) - set(exchanges))}"
            )
        for account_id, exchange in exchanges.items():
            if exchange.account_id != account_id or live[account_id].account_id != account_id:
                raise ValueError(
                    f"exchange or live view under {account_id!r} is for another "
                    f"account ({exchange.account_id!r})"
                )
        self.settings = settings or ReconcilerSettings()
        self.clock = clock
        self.bus = bus or EventBus()
        self.cycle_observers: list[Callable[[str, float, Exception | None], None]] = []
        """Called after every cycle with (account id, seconds, the error or None): metrics."""
        self._owner = books.owner
        self._accounts = {
            account_id: AccountSync(
                account_id,
                exchange,
                live[account_id],
                books=books,
                settings=self.settings,
                clock=clock,
                bus=self.bus,
                run_book=self._run_book,
                watch_symbols=self.settings.watch_symbols_by_account.get(account_id, ()),
            )
            for account_id, exchange in exchanges.items()
        }
        self._pollers: list[asyncio.Task[None]] = []
        self._running = False
        self._run_finished = asyncio.Event()
        self._closed = False

    # ------------------------------------------------------------------ public API

    @property
    def accounts(self) -> list[str]:
        return sorted(self._accounts)

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        """A queue of every event from now on; ``async for event in subscription``."""
        return self.bus.subscribe(maxsize)

    def health(self, account_id: str) -> AccountHealth:
        return self._sync(account_id).live.health

    async def startup(self, account_id: str) -> AccountHealth:
        """Load the account, reconcile it fully against the exchange, resolve its intents."""
        sync = self._sync(account_id)
        return await self._guarded(sync, sync.start)

    async def startup_all(self) -> None:
        """Every account's start-up sync, at most ``startup_concurrency`` at a time per
        exchange; the others stay ``syncing`` meanwhile.

        A thousand start-ups at once would each wait behind all the others, every
        request under its deadline: a few at a time, each finishes in its own
        fraction of a second and the fleet is synced sooner. The exchange's request
        budget still paces every request within.
        """
        slots: dict[str, asyncio.Semaphore] = {}
        width = self.settings.startup_concurrency

        async def one(sync: AccountSync) -> None:
            gate = slots.setdefault(sync.exchange.exchange_id, asyncio.Semaphore(width))
            async with gate:
                await self.startup(sync.account_id)

        await asyncio.gather(*(one(self._accounts[a]) for a in self.accounts))

    async def sync_once(self, account_id: str) -> AccountHealth:
        """One full cycle of one account (its startup first, if it has not started)."""
        sync = self._sync(account_id)
        if not sync.started:
            return await self.startup(account_id)
        return await self._guarded(sync, sync.cycle)

    async def cancel_order(self, account_id: str, order_id: str) -> CancelAnswer:
        """A trader's cancel of one order, between two cycles of its account; booked on
        the exchange's answer (:mod:`nija_broker.sync.cancel`). :class:`UnknownOrder`
        for an order the account does not track; ``KeyError`` for an unknown account."""
        sync = self._sync(account_id)
        if not sync.started:
            raise StateError(f"account {account_id!r} has not synced yet: its orders are not known")
        async with sync.turn:
            return await cancel_order(sync, order_id)

    async def run(self) -> None:
        """Poll every account until cancelled or closed."""
        if self._closed:
            raise StateError("the reconciler is closed")
        if self._running:
            raise StateError("the reconciler is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as group:
                for account_id in sorted(self._accounts):
                    sync = self._accounts[account_id]
                    if streams(sync):
                        stream = AccountStream(sync, self.settings, self.settings.seed)
                        self._pollers.append(
                            group.create_task(stream.run(), name=f"stream:{account_id}")
                        )
                    self._pollers.append(
                        group.create_task(
                            self._poll(self._accounts[account_id]), name=f"reconcile:{account_id}"
                        )
                    )
        finally:
            self._pollers.clear()
            self._running = False
            self._run_finished.set()

    async def aclose(self) -> None:
        """Stop the pollers, flush the book thread, close the exchanges. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        budget_s = self.settings.shutdown_timeout_s
        for task in self._pollers:
            task.cancel()
        if self._running:
            try:
                async with asyncio.timeout(budget_s / 2):
                    await self._run_finished.wait()
            except TimeoutError:
                log.error("reconciler pollers did not stop within %.1fs", budget_s / 2)
        results = await asyncio.gather(
            *(self._close_exchange(sync, budget_s / 4) for sync in self._accounts.values()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, Exception):
                log.warning("closing an exchange failed: %s", result)
        # Book writes queued on the owner before this point finish here (it runs its jobs
        # in order); nothing is lost on a clean shutdown. The owner itself is not ours.
        await self._owner.acall(_barrier)
        self.bus.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ internals

    def _sync(self, account_id: str) -> AccountSync:
        try:
            return self._accounts[account_id]
        except KeyError:
            raise KeyError(f"no account {account_id!r} in this reconciler") from None

    async def _run_book(self, fn: Callable[[], T]) -> T:
        return await self._owner.acall(fn)

    @staticmethod
    async def _close_exchange(sync: AccountSync, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await sync.exchange.aclose()

    async def _guarded(
        self, sync: AccountSync, step: Callable[[], Awaitable[None]]
    ) -> AccountHealth:
        """Run one step of an account and record its health. Never raises but cancellation."""
        if self._closed:
            raise StateError("the reconciler is closed")
        before = sync.live.health
        sync.fatal = False
        started = self.clock.monotonic()
        error: Exception | None = None
        try:
            async with sync.turn:
                await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
            after = _failed(before, exc, self.settings.failed_after)
            sync.fatal = isinstance(exc, AccountFatal)
            if isinstance(exc, NijaBrokerError):
                log.warning("account %s: cycle failed: %s", sync.account_id, after.last_error)
            else:
                # A bug, not the exchange: this account backs off, the others keep going.
                log.exception("account %s: unexpected error in a cycle", sync.account_id)
        else:
            after = AccountHealth(state=SyncState.OK, last_success=self.clock.now())
        sync.live.health = after
        elapsed_s = self.clock.monotonic() - started
        for observe in self.cycle_observers:
            observe(sync.account_id, elapsed_s, error)
        if after.state is not before.state or after.last_error != before.last_error:
            self.bus.publish(
                [HealthChanged(account_id=sync.account_id, at=self.clock.now(), health=after)]
            )
        return after

    async def _poll(self, sync: AccountSync) -> None:
        rng = random.Random(f"{self.settings.seed}:{sync.account_id}")
        interval_s = sync.poll_interval_s
        # Spread the accounts' first cycles so a thousand accounts do not poll in one burst.
        spread_s = rng.uniform(0.0, interval_s * self.settings.jitter)
        if streams(sync):
            await self._rest(sync, spread_s)
        else:
            await self.clock.sleep(spread_s)
        while True:
            started = self.clock.monotonic()
            health = await self._guarded(sync, sync.cycle if sync.started else sync.start)
            delay_s = self._delay_s(sync, health, rng)
            wait_s = max(0.0, started + delay_s - self.clock.monotonic())
            if streams(sync):
                await self._rest(sync, wait_s)
            else:
                await self.clock.sleep(wait_s)

    async def _rest(self, sync: AccountSync, wait_s: float) -> None:
        """The poller's wait, cut short when the account's stream drops or comes up."""
        if not sync.wake.is_set():
            sleeper = asyncio.ensure_future(self.clock.sleep(wait_s))
            woken = asyncio.ensure_future(sync.wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sleeper, woken):
                    task.cancel()
                await asyncio.gather(sleeper, woken, return_exceptions=True)
        sync.wake.clear()

    def _delay_s(self, sync: AccountSync, health: AccountHealth, rng: random.Random) -> float:
        settings = self.settings
        base_s = sync.interval_s()
        if sync.fatal:
            base_s = settings.fatal_retry_s
        elif health.consecutive_failures:
            base_s = min(base_s * 2 ** (health.consecutive_failures - 1), settings.max_backoff_s)
        return base_s * rng.uniform(1 - settings.jitter, 1 + settings.jitter)


def _failed(before: AccountHealth, exc: Exception, failed_after: int) -> AccountHealth:
    failures = before.consecutive_failures + 1
    text = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_MAX]
    if isinstance(exc, AccountFatal) or failures >= failed_after:
        state = SyncState.FAILED
    elif before.last_success is not None:
        state = SyncState.DEGRADED
    else:
        state = SyncState.SYNCING
    return AccountHealth(
        state=state,
        last_success=before.last_success,
        consecutive_failures=failures,
        last_error=text,
    )


def _barrier() -> None:
    """A job that does nothing: once it ran, every job queued before it has."""
