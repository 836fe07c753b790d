"""The store for asyncio code: every call on one thread, the owner's when there is one."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, ParamSpec, Self, TypeVar

from nija_broker.core.errors import StateError
from nija_broker.core.models import EquityPoint, Fill, Order, Position, TradeRecord

if TYPE_CHECKING:
    from nija_broker.state.owner import Owner
    from nija_broker.state.store import (
        AccountSnapshot,
        BatchResult,
        DecisionRecord,
        Intent,
        Store,
        StoreBatch,
    )

_P = ParamSpec("_P")
_T = TypeVar("_T")


class AsyncStore:
    """The same store for asyncio code.

    Every call runs on ONE thread, so the event loop never blocks on the disk and
    calls run in the order they were made: the ``owner``'s thread where the store
    belongs to a running broker's account state (so the store has one face and one
    thread), else a thread of its own. A call cancelled before its turn never runs;
    one cancelled while running still commits whole (batches are idempotent, so a
    retry is harmless).
    """

    def __init__(self, store: Store, owner: Owner | None = None) -> None:
        self._store = store
        self._own_thread = owner is None
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="nija-store")
            if owner is None
            else owner.executor
        )
        self._closed = False

    @property
    def store(self) -> Store:
        return self._store

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._closed:
            raise StateError(f"async store {self._store.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Finish the calls already queued, close the store, stop the thread. Safe twice."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._store.close)
        finally:
            if self._own_thread:  # an owner's thread is its owner's to stop
                # The worker is idle once close() ran, so this returns at once.
                self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def apply(self, batch: StoreBatch) -> BatchResult:
        return await self._run(self._store.apply, batch)

    async def save_orders(self, orders: Iterable[Order]) -> None:
        await self._run(self._store.save_orders, list(orders))

    async def record_fills(
        self,
        account_id: str,
        fills: Sequence[Fill],
        trades: Sequence[TradeRecord],
        positions: Sequence[Position],
        closed_symbols: Sequence[str] = (),
    ) -> list[str]:
        return await self._run(
            self._store.record_fills, account_id, fills, trades, positions, closed_symbols
        )

    async def save_trades(self, trades: Iterable[TradeRecord]) -> list[str]:
        return await self._run(self._store.save_trades, list(trades))

    async def add_equity_points(self, points: Iterable[EquityPoint]) -> None:
        await self._run(self._store.add_equity_points, list(points))

    async def put_intent(
        self, account_id: str, client_order_id: str, request_json: str, now: datetime
    ) -> None:
        await self._run(self._store.put_intent, account_id, client_order_id, request_json, now)

    async def set_intent_status(
        self,
        account_id: str,
        client_order_id: str,
        status: str,
        now: datetime,
        order_id: str | None = None,
    ) -> None:
        await self._run(
            self._store.set_intent_status, account_id, client_order_id, status, now, order_id
        )

    async def journal_decision(self, decision: DecisionRecord) -> None:
        await self._run(self._store.journal_decision, decision)

    async def accounts(self) -> list[str]:
        return await self._run(self._store.accounts)

    async def load_account(
        self, account_id: str, *, since: datetime | None = None
    ) -> AccountSnapshot:
        return await self._run(self._store.load_account, account_id, since=since)

    async def orders(self, account_id: str, *, open_only: bool = False) -> list[Order]:
        return await self._run(self._store.orders, account_id, open_only=open_only)

    async def trades(self, account_id: str, *, limit: int | None = None) -> list[TradeRecord]:
        return await self._run(self._store.trades, account_id, limit=limit)

    async def fills(self, account_id: str) -> list[Fill]:
        return await self._run(self._store.fills, account_id)

    async def fill_keys(self, account_id: str) -> set[str]:
        return await self._run(self._store.fill_keys, account_id)

    async def positions(self, account_id: str) -> list[Position]:
        return await self._run(self._store.positions, account_id)

    async def equity_points(self, account_id: str) -> list[EquityPoint]:
        return await self._run(self._store.equity_points, account_id)

    async def pending_intents(self, account_id: str) -> list[Intent]:
        return await self._run(self._store.pending_intents, account_id)

    async def decisions(
        self, account_id: str, *, limit: int = 100, blocked_only: bool = False
    ) -> list[DecisionRecord]:
        return await self._run(
            self._store.decisions, account_id, limit=limit, blocked_only=blocked_only
        )
