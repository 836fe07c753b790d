"""The Broker runtime: config, store, books, exchanges, reconciler, guard and API, wired together.

Asyncio code::

    async with Broker(config) as broker:
        exchange = broker.guarded_exchange("USER:alice")   # create_order passes the guard
        ...

A synchronous, thread-based bot (the live NIJA bot) runs it in a background
thread::

    broker = BrokerThread(config)
    broker.start()                          # returns once every account has started
    decision = broker.check(intent)         # thread-safe guard call
    rows = broker.status()                  # thread-safe status rows
    broker.stop()

Lifecycle (STYLE 7): start takes the store's :class:`~nija_broker.state.store.StoreLock`
(a second process on the same store is refused at once with a
:class:`~nija_broker.state.store.StoreLocked`), builds the exchanges (checking their
keys), starts the alerts' thread (with ``[[alerts]]``; their tokens checked too),
opens the store, loads every account, restores in-flight guard
reservations, starts the API (on its own thread and loop, answering at once)
and then the reconciler (every account's start-up sync, then its poller).
``aclose`` stops intake (API first, its thread joined), stops the pollers,
flushes the store writer, closes the exchanges, gives queued alerts a short
flush, closes the store, and gives the store's lock up; it is safe to call twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import (
    ConfigError,
    StateError,
)
from nija_broker.core.events import (
    Event,
    FillsBooked,
    HealthChanged,
    IntentReleased,
    IntentResolved,
    OrderAdopted,
    OrderCancelled,
    StaleOrderFound,
)
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.intent import Blocked, Decision, OrderIntent
from nija_broker.guard.guard import Guard, GuardSettings
from nija_broker.guard.guarded import GuardedExchange
from nija_broker.service import event_log
from nija_broker.service.alerts import AlertDispatcher, block_alert, event_alerts
from nija_broker.service.api import ApiContext, ApiServer, check_binding
from nija_broker.service.config import Config
from nija_broker.service.exchanges import build_exchanges, exchange_specs
from nija_broker.service.logs import fields, register_secret
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.status import AccountStatus, status_rows
from nija_broker.state.book import BookSettings
from nija_broker.state.books import Books
from nija_broker.state.owner import Owner
from nija_broker.state.store import Store, StoreLock
from nija_broker.sync.cancel import CancelAnswer
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

if TYPE_CHECKING:
    from nija_broker.core.exchange import Exchange

__all__ = ["Broker"]


class _Stopping(Exception):
    """Ends the broker's task group on purpose (aclose, or a member that ended)."""


log = logging.getLogger("nija_broker.runtime")


class Broker:
    """Everything nija_broker runs, for the accounts of one configuration."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        exchanges: Mapping[str, Exchange] | None = None,
        environ: Mapping[str, str] | None = None,
        serve_api: bool = True,
        api_token: str | None = None,
        reconciler_settings: ReconcilerSettings | None = None,
        guard_settings: GuardSettings | None = None,
        store_path: str | Path | None = None,
    ) -> None:
        if not config.accounts:
            raise ConfigError("the configuration has no [[accounts]]", key="accounts")
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._given_exchanges = exchanges
        self._environ = environ
        self.serve_api = serve_api
        self._token = api_token
        self._reconciler_settings = reconciler_settings or config.reconciler.settings(
            config.accounts
        )
        self._guard_settings = guard_settings or config.guard.settings()
        self._store_path = store_path if store_path is not None else config.store.path
        self.metrics = BrokerMetrics()
        self.store: Store | None = None
        self._store_lock: StoreLock | None = None
        self.books: Books | None = None
        self.live: dict[str, AccountLive] = {}
        self.exchanges: dict[str, Exchange] = {}
        self._early_lock = threading.Lock()
        self._early_events: list[list[Event]] | None = []
        self.guard: Guard | None = None
        self.reconciler: Reconciler | None = None
        self.api: ApiServer | None = None
        self.alerts: AlertDispatcher | None = None
        self.owner: Owner | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._failed_by: str | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stale_cancelling: set[tuple[str, str]] = set()
        self._health_seen: dict[str, AccountHealth] = {}  # by the event consumer, for recovery
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            raise StateError("the broker is already started")
        self._started = True
        self._loop = asyncio.get_running_loop()
        config = self.config
        if self.serve_api:
            check_binding(config.api.host, self._api_token())
        # The one writer of this store for as long as the broker runs: a second process
        # on it is refused here, at once, before anything is built, read or written.
        if str(self._store_path) != ":memory:":
            self._store_lock = StoreLock.acquire(self._store_path)
        # Whatever can fail without the store is checked before it is opened (the keys,
        # here), so a run that fails its checks leaves no store file behind. The exchanges
        # themselves are built once the API listens: ccxt's import and a thousand
        # accounts' instances take seconds, during which /healthz already answers.
        specs = exchange_specs(config, self._environ) if self._given_exchanges is None else None
        if config.alerts:
            # The targets' tokens are read here too; their thread starts at once, so a
            # start-up sync that fails is told. Delivery never waits on this loop.
            self.alerts = AlertDispatcher(config.alerts, environ=self._environ, clock=self.clock)
            await self.alerts.start()
        # The one thread that changes account state and runs SQLite: the store is opened
        # (and migrated) there too, so the event loop never waits on the disk.
        owner = self.owner = Owner()
        self.store = await owner.acall(Store, self._store_path)
        # Each account holds capital at its own fee rate (accounts[].fee_rate).
        self.books = Books(
            self.store,
            clock=self.clock,
            owner=owner,
            account_settings={a.id: BookSettings(fee_rate=a.fee_rate) for a in config.accounts},
        )
        table = config.tier_table()
        for account in config.accounts:
            pinned = None if account.tier == "auto" else account.tier
            self.live[account.id] = AccountLive.create(
                account.id,
                table,
                pinned,
                quote_currency=account.quote_currency,
                exchange=account.exchange,
            )
        self.guard = Guard(
            self.books, self.live, store=self.store, clock=self.clock, settings=self._guard_settings
        )
        await owner.acall(self._load_accounts)
        self.guard.observers.append(self._on_decision)
        self.guard.event_sinks.append(self._publish_threadsafe)
        if self.serve_api:
            # Listening before any account's start-up sync begins, on its own thread and
            # loop (ApiServer): /healthz shows each account ``syncing`` until its first
            # sync, and guard calls answer at once (unsynced MICRO_CAP entries fail closed).
            self.api = ApiServer(
                ApiContext(
                    books=self.books,
                    live=self.live,
                    guard=self.guard,
                    metrics=self.metrics,
                    clock=self.clock,
                    token=self._api_token(),
                    alerts=self.alerts.report if self.alerts is not None else None,
                    cancel_order=self._cancel_threadsafe,
                ),
                config.api.host,
                config.api.port,
            )
            await self.api.start()
            log.info("API listening on %s", self.api.url)
        self.exchanges = (
            build_exchanges(specs, self.clock)
            if specs is not None
            else dict(self._given_exchanges or {})
        )
        self.reconciler = Reconciler(
            self.books,
            self.exchanges,
            self.live,
            clock=self.clock,
            settings=self._reconciler_settings,
        )
        self.reconciler.cycle_observers.append(self._on_cycle)
        events = self.reconciler.subscribe()
        with self._early_lock:  # what the guard said before the bus existed, in order
            early, self._early_events = self._early_events, None
        for batch in early or ():
            self.reconciler.bus.publish(batch)
        self._stopping = asyncio.Event()
        started = self._loop.create_future()
        self._supervisor = asyncio.create_task(
            self._supervise(events, started), name="broker:supervisor"
        )
        # Every account reconciles fully once before polling starts; a failing account
        # only records its health here (the guard then fails closed for it).
        await started

    def _load_accounts(self) -> None:
        """On the owner: every account's book read from the store now (not on the first
        poll), and the intents a restart left unresolved counting again."""
        assert self.books is not None
        assert self.guard is not None
        for account in self.config.accounts:
            self.books.get(account.id)
            self.guard.restore_pending(account.id)

    async def _supervise(self, events: Any, started: asyncio.Future[None]) -> None:
        """The broker's one task group: the event consumer and the reconciler (every
        account's start-up sync, then its poller) run in it until :meth:`aclose`.

        A member that ends while the broker runs (crashed, killed or returned) ends the
        group: no account is synced any more, so every account turns ``failed`` at once
        with the member's error logged (traceback included), and the guard fails closed
        for the tiers that do (DESIGN invariant 7). The API keeps answering.
        """
        assert self.reconciler is not None
        assert self._stopping is not None
        reconciler = self.reconciler
        try:
            async with asyncio.TaskGroup() as group:
                self._start_member(group, partial(self._consume, events), "broker:events")
                # Every account reconciles fully once before polling starts; a failing
                # account only records its health here (the guard then fails closed for it).
                try:
                    await reconciler.startup_all()
                finally:
                    if not started.done():
                        started.set_result(None)
                self._start_member(group, reconciler.run, "broker:reconciler")
                await self._stopping.wait()
                raise _Stopping
        except* _Stopping:
            pass  # closing, or a member that returned (already reported)
        except* Exception:
            pass  # a member that crashed: logged with its traceback, accounts failed

    def _start_member(
        self, group: asyncio.TaskGroup, work: Callable[[], Coroutine[Any, Any, None]], name: str
    ) -> None:
        """A task that must run as long as the broker; its end, unless asked for, fails
        every account (see :meth:`_supervise`) and stops the group."""
        group.create_task(self._member(work), name=name).add_done_callback(self._member_done)

    async def _member(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await work()  # made here: a member cancelled before it starts leaves no coroutine
        if not self._closed:
            raise _Stopping  # it returned while the broker runs: that ends the group

    def _member_done(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        if task.cancelled():
            self._ended(task.get_name(), "was cancelled", None)
        elif isinstance(error, _Stopping):
            self._ended(task.get_name(), "returned", None)
        elif error is not None:
            self._ended(task.get_name(), f"crashed: {type(error).__name__}: {error}", error)

    def _ended(self, name: str, what: str, error: BaseException | None) -> None:
        """Every account turns ``failed``: nothing syncs them any more. The first member
        to end is the cause; the others, cancelled by the group after it, are not."""
        if self._closed or self._failed_by is not None:
            return
        self._failed_by = name
        log.error(
            "%s %s; every account is marked failed until the broker restarts",
            name,
            what,
            exc_info=error,
        )
        now = self.clock.now()
        changed: list[Event] = []
        for account_id, live in self.live.items():
            before = live.health
            live.health = AccountHealth(
                state=SyncState.FAILED,
                last_success=before.last_success,
                consecutive_failures=before.consecutive_failures + 1,
                last_error=f"{name} {what}",
            )
            changed.append(HealthChanged(account_id=account_id, at=now, health=live.health))
            self._offer_alerts(changed[-1], before=before)  # the event consumer may be gone
        if self.reconciler is not None:
            self.reconciler.bus.publish(changed)  # never raises; nobody may be listening

    def _api_token(self) -> str | None:
        if self._token is not None:
            return self._token
        name = self.config.api.token_env
        if name is None:
            return None
        import os

        env = self._environ if self._environ is not None else os.environ
        token = env.get(name)
        if not token:
            raise ConfigError(f"api.token_env names {name}, which is not set", key="api.token_env")
        register_secret(token)
        return token

    async def aclose(self) -> None:
        """Stop intake, stop the pollers, flush the store, close the exchanges. Safe twice."""
        if self._closed:
            return
        self._closed = True
        if self.api is not None:
            await self.api.aclose()
        if self.reconciler is not None:
            await self.reconciler.aclose()
        elif self.exchanges:
            await asyncio.gather(
                *(ex.aclose() for ex in self.exchanges.values()), return_exceptions=True
            )
        if self._stopping is not None:
            self._stopping.set()
        if self._supervisor is not None:
            # The group's own end (asked for, or a crash :meth:`_ended` already logged) is
            # collected; a cancellation of this close itself still propagates.
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self.alerts is not None:
            await self.alerts.aclose()  # what the consumer offered last: a short, bounded flush
        if self.owner is not None:
            if self.store is not None:
                await self.owner.acall(self.store.close)
            await self.owner.aclose()
        elif self.store is not None:
            self.store.close()
        if self._store_lock is not None:
            self._store_lock.release()  # last: the store is closed, another may open it

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ events

    async def _consume(self, events: Any) -> None:
        async for event in events:
            try:
                if (
                    isinstance(event, OrderCancelled)
                    and (event.account_id, event.order.id) in self._stale_cancelling
                    and self.owner is not None
                ):
                    # A stale order's cancel, confirmed: counted on the account's live
                    # view, on the owner (where the status row reads it).
                    await self.owner.acall(self.live[event.account_id].note_stale_cancel)
                self._on_event(event)
                guard = self.guard
                if isinstance(event, IntentResolved | IntentReleased) and guard is not None:
                    # The reconciler settled the intent in the store (on the owner): the
                    # guard's reservation follows, on the owner too.
                    await guard.acall(
                        guard.settle_client_id,
                        event.account_id,
                        event.client_order_id,
                        resolved=isinstance(event, IntentResolved),
                        order_id=getattr(event, "order_id", None),
                    )
            except Exception:  # a bad event must not stop the runtime
                log.exception("handling %s failed", type(event).__name__)

    def _on_event(self, event: Event) -> None:
        """Count it, log at INFO what a trader would want to read of it, and alert it."""
        account = event.account_id
        stale, before = False, None
        if isinstance(event, FillsBooked):
            for fill in event.fills:
                self.metrics.record_fill(account)
                event_log.log_fill(fill)
            for trade in event.trades:
                event_log.log_trade(trade)
        elif isinstance(event, StaleOrderFound):
            event_log.log_stale(event)
            if event.action == "cancel":
                # Counted when the exchange confirms the cancel (it may say "filled" instead).
                self._stale_cancelling.add((account, event.order.id))
        elif isinstance(event, OrderCancelled):
            key = (account, event.order.id)
            stale = key in self._stale_cancelling
            self._stale_cancelling.discard(key)
            self.metrics.record_cancellation(account, stale=stale)
            if stale:
                log.info(
                    "account %s: stale order %s on %s cancelled, the exchange confirms",
                    account,
                    event.order.id,
                    event.order.symbol,
                    extra=event_log.order_fields("stale_cancelled", event.order),
                )
        elif isinstance(event, OrderAdopted):
            event_log.log_adopted(event.order)
        elif isinstance(event, HealthChanged):
            before = self._health_seen.get(account)
            self._health_seen[account] = event.health
            if (
                event.health.state is SyncState.OK
                and before is not None
                and (before.state in (SyncState.DEGRADED, SyncState.FAILED))
            ):
                event_log.log_recovery(account, before)
        self._offer_alerts(event, stale=stale, before=before)

    def _offer_alerts(
        self, event: Event, *, stale: bool = False, before: AccountHealth | None = None
    ) -> None:
        """The alerts of ``event`` queued for their targets (never waits, never raises)."""
        if self.alerts is None:
            return
        live = self.live.get(event.account_id)
        quote = live.quote_currency if live is not None else None
        for alert in event_alerts(event, stale=stale, before=before, quote=quote):
            self.alerts.offer(alert)

    def _publish_threadsafe(self, events: Sequence[Event]) -> None:
        """The bus lives on the runtime's loop; the guard may be called from a bot thread.
        Before the bus exists (the API answers while the exchanges are built), events
        wait in order and are published first."""
        if self.reconciler is None:
            with self._early_lock:
                if self._early_events is not None:
                    self._early_events.append(list(events))
                    return
        if self.reconciler is None or self._loop is None:
            return
        bus = self.reconciler.bus
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            bus.publish(events)
        else:
            self._loop.call_soon_threadsafe(bus.publish, events)

    def _on_cycle(self, account_id: str, seconds: float, error: Exception | None) -> None:
        self.metrics.observe_sync_cycle(account_id, seconds)
        if error is not None:
            self.metrics.record_exchange_error(account_id, event_log.error_kind(error))

    def _on_decision(self, decision: Decision) -> None:
        """Every blocked decision the guard reports, once each: a reserve's (``decide``)
        and a dry run's (``check``) alike, whichever thread made it."""
        if isinstance(decision, Blocked):
            intent = decision.intent
            self.metrics.record_guard_block(intent.account_id, decision.rule)
            if self.alerts is not None:
                self.alerts.offer(block_alert(decision, self.clock.now()))
            log.info(
                "account %s: %s %s entry blocked by %s: %s",
                intent.account_id,
                intent.side.value,
                intent.symbol,
                decision.rule,
                decision.reason,
                extra=fields(
                    intent.account_id,
                    event="entry_blocked",
                    rule=decision.rule,
                    symbol=intent.symbol,
                    side=intent.side,
                    amount=intent.amount,
                    size_usd=intent.size_usd,
                    price=intent.price,
                    client_order_id=intent.client_order_id,
                ),
            )

    # ------------------------------------------------------------------ using it

    def _require_guard(self) -> Guard:
        if self.guard is None:
            raise StateError("the broker is not started")
        return self.guard

    def check(self, intent: OrderIntent) -> Decision:
        """Would this order pass the guard now? Reserves nothing. Thread-safe."""
        return self._require_guard().check(intent)

    async def cancel_order(self, account_id: str, order_id: str) -> CancelAnswer:
        """Cancel one of the account's orders through its exchange, between two of its
        cycles; booked cancelled only on the exchange's answer about that order."""
        if self.reconciler is None:
            raise StateError("the broker is not started")
        return await self.reconciler.cancel_order(account_id, order_id)

    def _cancel_threadsafe(
        self, account_id: str, order_id: str
    ) -> concurrent.futures.Future[CancelAnswer]:
        """:meth:`cancel_order` from another thread (the API's): run on the runtime's
        loop, where the account's exchange and its cycle live."""
        if self._loop is None or self.reconciler is None:
            failed: concurrent.futures.Future[CancelAnswer] = concurrent.futures.Future()
            failed.set_exception(
                StateError("the exchanges are still being built: try again in a moment")
            )
            return failed
        return asyncio.run_coroutine_threadsafe(self.cancel_order(account_id, order_id), self._loop)

    def guarded_exchange(self, account_id: str) -> GuardedExchange:
        """The account's exchange behind the guard: ``create_order`` is judged first."""
        return GuardedExchange(self.exchanges[account_id], self._require_guard(), account_id)

    def status(self, account_id: str | None = None) -> list[AccountStatus]:
        """A row per account (never a total across accounts). Thread-safe."""
        if self.books is None:
            raise StateError("the broker is not started")
        guard = self.guard
        return self.books.owner.call(
            status_rows,
            self.books,
            self.live,
            self.clock.now(),
            account_id,
            guard=guard.facts if guard is not None else None,
        )
