"""One account's websocket stream: orders and trades booked as they come; the poll is the net.

Where the account's exchange streams (``capabilities.watch_orders`` and
:class:`~nija_broker.core.exchange.OrderStreams`), :class:`AccountStream` runs beside
its poller, in the reconciler's task group:

- **Orders.** Each order update is the exchange's own word about that order: it goes
  through :func:`~nija_broker.core.reconcile.resolve` and the same commit as a
  listing's change (an unknown order is adopted; a terminal state needs this positive
  evidence, DESIGN invariant 2). An update older than what the book holds (less
  filled, or live while the book has it ended: a reordered or repeated message) is
  left out; the poll is the truth.
- **Trades.** Each trade of an order the book follows is booked by its trade id, the
  same key a polled trade has, so a fill seen by both is booked once (invariant 3).
  A trade of an order the book does not know yet waits for the poll, which fetches
  the trades of every order whose filled amount grew.
- **The same owner.** Both run holding the account's turn
  (:attr:`~nija_broker.sync.cycle.AccountSync.turn`), as each cycle and each trader's
  cancel do, and change the book only through the owner: the stream never lands
  between a listing and its diff.
- **Health.** ``connecting`` until the subscription has held for ``stream_settle_s``
  (or a first message), then ``up``: the poll runs every ``stream_poll_interval_s``
  and skips the per-cycle balance of accounts without DCA (the stream carries it).
  When the stream drops, ``down``: the poll returns to ``poll_interval_s`` at once,
  the reconnect backs off (doubling, with jitter), and once the stream is up again
  one full poll (every symbol, balances, the closed-orders sweep) reconciles the gap:
  what happened while it was down was never streamed.

Runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from nija_broker.core.errors import AccountFatal
from nija_broker.core.events import Event
from nija_broker.core.exchange import OrderStreams
from nija_broker.core.health import StreamHealth
from nija_broker.core.models import Fill, Order
from nija_broker.core.reconcile import less_filled, resolve
from nija_broker.state.book import AccountBook
from nija_broker.sync.fills import _unbooked, _value_fees

if TYPE_CHECKING:
    from nija_broker.core.settings import ReconcilerSettings
    from nija_broker.sync.cycle import AccountSync

__all__ = ["AccountStream", "is_stale_update", "streams"]

log = logging.getLogger("nija_broker.stream")


def streams(sync: AccountSync) -> bool:
    """Whether the account's exchange offers a stream this module can read."""
    exchange = sync.exchange
    return exchange.capabilities.watch_orders and isinstance(exchange, OrderStreams)


def is_stale_update(tracked: Order | None, update: Order) -> bool:
    """A stream update older than what the book holds: less filled, or live while the
    book has the order ended (a reordered, repeated or late message). Pure."""
    if tracked is None:
        return False
    if less_filled(update, tracked):
        return True
    return tracked.is_terminal and not update.is_terminal


class AccountStream:
    """The stream of one account and its health; see the module docstring."""

    def __init__(self, sync: AccountSync, settings: ReconcilerSettings, seed: int = 0) -> None:
        self.sync = sync
        self.settings = settings
        self._rng = random.Random(f"{seed}:{sync.account_id}:stream")
        self.health = StreamHealth(state="connecting")
        sync.live.stream = self.health

    @property
    def up(self) -> bool:
        return self.health.state == "up"

    async def run(self) -> None:
        """Stream until cancelled: subscribe, read, and after a drop reconnect, backing off."""
        exchange = self.sync.exchange
        assert isinstance(exchange, OrderStreams)
        await self.sync.ready.wait()  # its book loaded and synced once: updates have a base
        backoff_s = self.settings.stream_backoff_initial_s
        while True:
            self._set("connecting")
            error: BaseException | None = None
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._orders(exchange), name=f"stream:{self.sync.account_id}")
                    group.create_task(self._trades(exchange))
                    group.create_task(self._settle())
            except* AccountFatal as failed:
                error = failed.exceptions[0]
                backoff_s = max(backoff_s, self.settings.fatal_retry_s)
            except* Exception as failed:
                error = failed.exceptions[0]
            was_up = self.up
            self._set("down", error=f"{type(error).__name__}: {error}" if error else None)
            log.warning(
                "account %s: stream dropped (%s); polling every %.0f s until it is back",
                self.sync.account_id,
                self.health.last_error,
                self.sync.poll_interval_s,
            )
            self.sync.wake.set()  # poll at full rate, at once
            if was_up:
                backoff_s = self.settings.stream_backoff_initial_s
            jitter = self._rng.uniform(1 - self.settings.jitter, 1 + self.settings.jitter)
            await self.sync.clock.sleep(backoff_s * jitter)
            backoff_s = min(backoff_s * 2, self.settings.stream_backoff_max_s)
            self._replace(
                state="connecting",
                since=self.sync.clock.now(),
                last_message=None,
                reconnects=self.health.reconnects + 1,
            )

    # ------------------------------------------------------------------ readers

    async def _settle(self) -> None:
        await self.sync.clock.sleep(self.settings.stream_settle_s)
        self._now_up()

    async def _orders(self, exchange: OrderStreams) -> None:
        while True:
            orders = await exchange.watch_orders()
            self._heard()
            async with self.sync.turn:
                await apply_orders(self.sync, orders)

    async def _trades(self, exchange: OrderStreams) -> None:
        while True:
            fills = await exchange.watch_my_trades()
            self._heard()
            async with self.sync.turn:
                await book_trades(self.sync, fills)

    # ------------------------------------------------------------------ health

    def _replace(self, **changes: Any) -> None:
        """The stream's health with ``changes``, replaced whole on the live view."""
        self.health = replace(self.health, **changes)
        self.sync.live.stream = self.health

    def _heard(self) -> None:
        self._replace(last_message=self.sync.clock.now())
        self._now_up()

    def _now_up(self) -> None:
        if self.up:
            return
        self._set("up")
        log.info(
            "account %s: stream up; polling every %.0f s as the safety net",
            self.sync.account_id,
            self.sync.stream_poll_interval_s,
        )
        # What happened before the subscription was never streamed: one full poll.
        self.sync.listing.full_due_mono = -math.inf
        self.sync.balances.due_mono = -math.inf
        self.sync.wake.set()

    def _set(self, state: str, *, error: str | None = None) -> None:
        changes: dict[str, Any] = {"state": state, "since": self.sync.clock.now()}
        if error is not None:
            changes["last_error"] = error
        self._replace(**changes)
        self.sync.stream_up = state == "up"


# ---------------------------------------------------------------------------- booking


async def apply_orders(sync: AccountSync, updates: Sequence[Order]) -> None:
    """The stream's order updates through resolve and the cycle's commit (under the turn)."""
    if not updates:
        return
    tracked = await sync.in_book(_tracked, [u.id for u in updates])
    sending = await _being_sent(sync, [u for u in updates if u.id not in tracked])
    now = sync.clock.now()
    events: list[Event] = []
    for update in updates:
        known = tracked.get(update.id)
        if is_stale_update(known, update):
            continue
        if known is None and update.client_order_id in sending:
            # The bot's own entry, streamed before the exchange's answer to the send came
            # back: the guard's confirm brings it in with its role (or, if that answer is
            # lost, the poll resolves the journaled intent by client order id).
            continue
        event = resolve(known, update, now, sync.price_step(update.symbol))
        if event is not None:
            events.append(event)
            if known is not None:
                tracked[update.id] = update  # a later update in this batch compares with it
    if events:
        await sync.commit(events)


async def book_trades(sync: AccountSync, fills: Sequence[Fill]) -> None:
    """The stream's trades of orders the book follows, booked by trade id (under the turn)."""
    if not fills:
        return
    # A message repeated (or a trade the venue sends twice) comes once per trade id here;
    # trades already booked are left out by the book's own keys below.
    once = list({fill.key: fill for fill in fills}.values())
    tracked = await sync.in_book(_tracked, sorted({f.order_id for f in once}))
    known = [
        f.model_copy(update={"role": tracked[f.order_id].role})
        for f in once
        if f.order_id in tracked
    ]
    if not known:
        return  # the poll brings the order in, then fetches its trades
    fresh = await sync.in_book(_unbooked, known)
    if fresh:
        await sync.lookups._book(sync, await _value_fees(sync, fresh))


async def _being_sent(sync: AccountSync, unknown: Sequence[Order]) -> set[str]:
    """The client order ids among ``unknown`` orders that are intents the guard journaled
    and the exchange has not answered yet (one store read, only for unknown orders)."""
    wanted = {o.client_order_id for o in unknown if o.client_order_id}
    store = sync.store
    if not wanted or store is None:
        return set()
    pending = await sync.run_book(partial(store.pending_intents, sync.account_id))
    return wanted & {intent.client_order_id for intent in pending}


# Run on the book's owner thread, through AccountSync.in_book.
def _tracked(book: AccountBook, order_ids: list[str]) -> dict[str, Order]:
    found = {}
    for order_id in order_ids:
        order = book.orders.get(order_id)
        if order is not None:
            found[order_id] = order
    return found
