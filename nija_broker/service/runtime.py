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
keys), opens the store, loads every account, restores in-flight guard
reservations, starts the reconciler and the API. ``aclose`` stops intake (API
first), stops the pollers, flushes the store writer, closes the exchanges and
the store, and gives the store's lock up; it is safe to call twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import (
    AccountFatal,
    ConfigError,
    OrderError,
    RateLimited,
    StateError,
    TransientError,
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
from nija_broker.core.models import Fill, Order, TradeRecord
from nija_broker.guard.guard import Guard, GuardSettings
from nija_broker.guard.guarded import GuardedExchange
from nija_broker.service.api import ApiContext, ApiServer, check_binding
from nija_broker.service.config import Config
from nija_broker.service.logs import fields, register_secret
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.status import AccountStatus, status_rows
from nija_broker.state.book import Books, BookSettings
from nija_broker.state.store import Store, StoreLock
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

if TYPE_CHECKING:
    from adapters.base import Exchange

__all__ = ["Broker", "BrokerThread"]

log = logging.getLogger("nija_broker.runtime")

ExchangeFactory = Callable[..., "Exchange"]


def _ccxt_exchanges(config: Config, clock: Clock,
                    environ: Mapping[str, str] | None) -> dict[str, Exchange]:
    from adapters.ccxt_adapter import CcxtExchange  # only adapters/ imports ccxt

    return {a.id: CcxtExchange.from_config(a, clock=clock, environ=environ)
            for a in config.accounts}


class Broker:
    """Everything nija_broker runs, for the accounts of one configuration."""

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 exchanges: Mapping[str, Exchange] | None = None,
                 environ: Mapping[str, str] | None = None, serve_api: bool = True,
                 api_token: str | None = None,
                 reconciler_settings: ReconcilerSettings | None = None,
                 guard_settings: GuardSettings | None = None,
                 store_path: str | Path | None = None) -> None:
        if not config.accounts:
            raise ConfigError("the configuration has no [[accounts]]", key="accounts")
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._given_exchanges = exchanges
        self._environ = environ
        self.serve_api = serve_api
        self._token = api_token
        self._reconciler_settings = reconciler_settings or config.reconciler.settings(
            config.accounts)
        self._guard_settings = guard_settings or config.guard.settings()
        self._store_path = store_path if store_path is not None else config.store.path
        self.metrics = BrokerMetrics()
        self.store: Store | None = None
        self._store_lock: StoreLock | None = None
        self.books: Books | None = None
        self.live: dict[str, AccountLive] = {}
        self.exchanges: dict[str, Exchange] = {}
        self.guard: Guard | None = None
        self.reconciler: Reconciler | None = None
        self.api: ApiServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
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
        # here), so a run that fails its checks leaves no store file behind.
        self.exchanges = dict(self._given_exchanges) if self._given_exchanges is not None \
            else _ccxt_exchanges(config, self.clock, self._environ)
        self.store = Store(self._store_path)
        # Each account holds capital at its own fee rate (accounts[].fee_rate).
        self.books = Books(self.store, clock=self.clock, account_settings={
            a.id: BookSettings(fee_rate=a.fee_rate) for a in config.accounts})
        table = config.tier_table()
        for account in config.accounts:
            pinned = None if account.tier == "auto" else account.tier
            self.live[account.id] = AccountLive.create(account.id, table, pinned,
                                                       quote_currency=account.quote_currency)
        self.guard = Guard(self.books, self.live, store=self.store, clock=self.clock,
                           settings=self._guard_settings)
        for account in config.accounts:
            self.books.get(account.id)  # load from the store now, not on the first poll
            self.guard.restore_pending(account.id)
        self.reconciler = Reconciler(self.books, self.exchanges, self.live, clock=self.clock,
                                     settings=self._reconciler_settings)
        self.reconciler.cycle_observers.append(self._on_cycle)
        self.guard.observers.append(self._on_decision)
        self.guard.event_sinks.append(self._publish_threadsafe)
        events = self.reconciler.subscribe()
        self._tasks.append(self._supervised(self._consume(events), "broker:events"))
        if self.serve_api:
            self.api = ApiServer(
                ApiContext(books=self.books, live=self.live, guard=self.guard,
                           metrics=self.metrics, clock=self.clock, token=self._api_token()),
                config.api.host, config.api.port)
            await self.api.start()
            log.info("API listening on %s", self.api.url)
        # Every account reconciles fully once before polling starts; a failing account
        # only records its health here (the guard then fails closed for it).
        reconciler = self.reconciler
        await asyncio.gather(*(reconciler.startup(a) for a in reconciler.accounts))
        self._tasks.append(self._supervised(reconciler.run(), "broker:reconciler"))

    def _supervised(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A task that must run as long as the broker: its end is watched (:meth:`_ended`)."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A broker task ended while the broker runs (crashed, killed or returned): no account
        is synced any more, so every account turns ``failed`` at once, with the task's error,
        and the guard fails closed for the tiers that do (DESIGN invariant 7)."""
        if self._closed:
            return
        error: BaseException | None = None if task.cancelled() else task.exception()
        what = "was cancelled" if task.cancelled() else (
            f"crashed: {type(error).__name__}: {error}" if error is not None else "returned")
        log.error("%s %s; every account is marked failed until the broker restarts",
                  task.get_name(), what, exc_info=error)
        now = self.clock.now()
        changed: list[Event] = []
        for account_id, live in self.live.items():
            before = live.health
            live.health = AccountHealth(
                state=SyncState.FAILED, last_success=before.last_success,
                consecutive_failures=before.consecutive_failures + 1,
                last_error=f"{task.get_name()} {what}")
            changed.append(HealthChanged(account_id=account_id, at=now, health=live.health))
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
            await asyncio.gather(*(ex.aclose() for ex in self.exchanges.values()),
                                 return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        # Their own ends (cancelled, or a crash :meth:`_ended` already logged) are collected;
        # a cancellation of this close itself still propagates.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.store is not None:
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
                self._on_event(event)
            except Exception:  # a bad event must not stop the runtime
                log.exception("handling %s failed", type(event).__name__)

    def _on_event(self, event: Event) -> None:
        """Count it, and log at INFO what a trader would want to read of it."""
        account = event.account_id
        if isinstance(event, FillsBooked):
            for fill in event.fills:
                self.metrics.record_fill(account)
                _log_fill(fill)
            for trade in event.trades:
                _log_trade(trade)
        elif isinstance(event, StaleOrderFound):
            _log_stale(event)
            if event.action == "cancel":
                # Counted when the exchange confirms the cancel (it may say "filled" instead).
                self._stale_cancelling.add((account, event.order.id))
        elif isinstance(event, OrderCancelled):
            key = (account, event.order.id)
            stale = key in self._stale_cancelling
            self._stale_cancelling.discard(key)
            self.metrics.record_cancellation(account, stale=stale)
            if stale:
                log.info("account %s: stale order %s on %s cancelled, the exchange confirms",
                         account, event.order.id, event.order.symbol,
                         extra=_order_fields("stale_cancelled", event.order))
        elif isinstance(event, OrderAdopted):
            _log_adopted(event.order)
        elif isinstance(event, HealthChanged):
            before = self._health_seen.get(account)
            self._health_seen[account] = event.health
            if event.health.state is SyncState.OK and before is not None and (
                    before.state in (SyncState.DEGRADED, SyncState.FAILED)):
                _log_recovery(account, before)
        elif isinstance(event, IntentResolved | IntentReleased) and self.guard is not None:
            self.guard.settle_client_id(account, event.client_order_id,
                                        resolved=isinstance(event, IntentResolved),
                                        order_id=getattr(event, "order_id", None))

    def _publish_threadsafe(self, events: Sequence[Event]) -> None:
        """The bus lives on the runtime's loop; the guard may be called from a bot thread."""
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
            self.metrics.record_exchange_error(account_id, _error_kind(error))

    def _on_decision(self, decision: Decision) -> None:
        """Every blocked decision the guard reports, once each: a reserve's (``decide``)
        and a dry run's (``check``) alike, whichever thread made it."""
        if isinstance(decision, Blocked):
            intent = decision.intent
            self.metrics.record_guard_block(intent.account_id, decision.rule)
            log.info("account %s: %s %s entry blocked by %s: %s", intent.account_id,
                     intent.side.value, intent.symbol, decision.rule, decision.reason,
                     extra=fields(intent.account_id, event="entry_blocked", rule=decision.rule,
                                  symbol=intent.symbol, side=intent.side,
                                  amount=intent.amount, size_usd=intent.size_usd,
                                  price=intent.price, client_order_id=intent.client_order_id))

    # ------------------------------------------------------------------ using it

    def _require_guard(self) -> Guard:
        if self.guard is None:
            raise StateError("the broker is not started")
        return self.guard

    def check(self, intent: OrderIntent) -> Decision:
        """Would this order pass the guard now? Reserves nothing. Thread-safe."""
        return self._require_guard().check(intent)

    def guarded_exchange(self, account_id: str) -> GuardedExchange:
        """The account's exchange behind the guard: ``create_order`` is judged first."""
        return GuardedExchange(self.exchanges[account_id], self._require_guard(), account_id)

    def status(self, account_id: str | None = None) -> list[AccountStatus]:
        """A row per account (never a total across accounts). Thread-safe."""
        if self.books is None:
            raise StateError("the broker is not started")
        guard = self.guard
        return status_rows(self.books, self.live, self.clock.now(), account_id,
                           breakers=guard.breaker_report if guard is not None else None)


def _error_kind(error: Exception) -> str:
    """The metrics label of a failed cycle: the error-tree branch it belongs to."""
    for kind, classes in (("rate_limited", RateLimited), ("transient", TransientError),
                          ("auth", AccountFatal), ("order", OrderError)):
        if isinstance(error, classes):
            return kind
    return "other"


# ---------------------------------------------------------------------- INFO lines
# One line per thing that happened, its figures as key=value fields (logs.fields);
# ``event`` names the kind, for grep and log queries.


def _order_fields(kind: str, order: Order, **more: object) -> dict[str, object]:
    return fields(order.account_id, event=kind, order_id=order.id,
                  client_order_id=order.client_order_id, symbol=order.symbol, side=order.side,
                  type=order.type, amount=order.amount, price=order.price,
                  filled=order.filled, role=order.role, **more)


def _log_fill(fill: Fill) -> None:
    fee = (f"{fill.fee_cost:g} {fill.fee_currency}"
           if fill.fee_currency is not None and fill.fee_cost is not None else f"{fill.fee:g}")
    log.info("account %s: fill booked: %s %g %s at %g, fee %s (order %s)", fill.account_id,
             fill.side.value, fill.amount, fill.symbol, fill.price, fee, fill.order_id,
             extra=fields(fill.account_id, event="fill_booked", order_id=fill.order_id,
                          trade_id=fill.trade_id, symbol=fill.symbol, side=fill.side,
                          amount=fill.amount, price=fill.price, fee=fill.fee,
                          fee_currency=fill.fee_currency, fee_cost=fill.fee_cost))


def _log_trade(trade: TradeRecord) -> None:
    net = trade.net_pnl if trade.net_pnl is not None else trade.pnl - trade.fees
    log.info("account %s: trade closed: %s %g, %g -> %g, net %+.2f after %.2f fees",
             trade.account_id, trade.symbol, trade.quantity, trade.entry_price,
             trade.exit_price, net, trade.fees,
             extra=fields(trade.account_id, event="trade_closed", trade_id=trade.trade_id,
                          symbol=trade.symbol, side=trade.side, quantity=trade.quantity,
                          entry_price=trade.entry_price, exit_price=trade.exit_price,
                          pnl=trade.pnl, fees=trade.fees, net_pnl=net))


def _log_stale(event: StaleOrderFound) -> None:
    order = event.order
    age_s = (event.at - order.created_at).total_seconds()
    doing = "cancelling it" if event.action == "cancel" else "alert only"
    log.info("account %s: order %s on %s is stale (%.0f s old, limit %g s): %s",
             order.account_id, order.id, order.symbol, age_s, event.max_age_s, doing,
             extra=_order_fields("stale_order", order, age_s=round(age_s, 1),
                                 max_age_s=event.max_age_s, action=event.action))


def _log_adopted(order: Order) -> None:
    log.info("account %s: order %s adopted from the exchange's listing: %s %g %s at %s",
             order.account_id, order.id, order.side.value, order.amount, order.symbol,
             "market" if order.price is None else f"{order.price:g}",
             extra=_order_fields("order_adopted", order))


def _log_recovery(account_id: str, before: AccountHealth) -> None:
    log.info("account %s: sync ok again after %d failed cycles (last error: %s)", account_id,
             before.consecutive_failures, before.last_error or "none",
             extra=fields(account_id, event="account_recovered", was=before.state,
                          failures=before.consecutive_failures, last_error=before.last_error))


class BrokerThread:
    """The Broker on its own event loop in a background thread, for a synchronous bot."""

    def __init__(self, config: Config, **broker_kwargs: Any) -> None:
        self._config = config
        self._kwargs = broker_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stale_cancelling: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.broker: Broker | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        if self._thread is not None:
            raise StateError("already started")
        self._thread = threading.Thread(target=self._main, name="nija-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"nija_broker did not start within {timeout_s:g}s")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Broker(self._config, **self._kwargs) as broker:
                self.broker = broker
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if not isinstance(exc, Exception):
                raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down gracefully and wait for the thread. Safe twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout_s)
        self._thread = None

    def _broker(self) -> Broker:
        if self.broker is None:
            raise StateError("nija_broker is not running; call start() first")
        return self.broker

    def check(self, intent: OrderIntent) -> Decision:
        return self._broker().check(intent)

    def decide(self, intent: OrderIntent) -> Decision:
        """Judge and reserve (thread-safe): confirm or release through :attr:`guard`."""
        return self._broker()._require_guard().decide(intent)

    @property
    def guard(self) -> Guard:
        return self._broker()._require_guard()

    def status(self, account_id: str | None = None) -> list[AccountStatus]:
        return self._broker().status(account_id)
