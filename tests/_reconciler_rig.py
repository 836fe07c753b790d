"""A reconciler over the simulated exchange, with a fake (or mock) clock and a real SQLite store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.base import Capabilities, OrderRequest
from adapters.sim import DEFAULT_CAPABILITIES, FaultInjector, FaultPlan, SimEngine, SimExchange
from nija_broker.core.clock import FakeClock, MockClock
from nija_broker.core.errors import AuthenticationFailed
from nija_broker.core.events import Event, Subscription
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Fill, Market, Order, OrderRole, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

BTC = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=0.0001,
    price_step=0.01,
    min_amount=0.0001,
    min_notional=1.0,
)
ETH = Market(
    symbol="ETH/USD",
    base="ETH",
    quote="USD",
    amount_step=0.001,
    price_step=0.01,
    min_amount=0.001,
    min_notional=1.0,
)


class RevocableExchange(SimExchange):
    """A sim account whose keys can be revoked: every call then fails as the exchange would."""

    revoked = False

    async def _call(self, method: str, args: dict[str, Any], action: Any) -> Any:
        if self.revoked:
            self.calls[method] += 1
            raise AuthenticationFailed(f"sim {method}: API key revoked", account_id=self.account_id)
        return await super()._call(method, args, action)


@dataclass
class Rig:
    clock: FakeClock | MockClock
    engine: SimEngine
    store: Store
    path: Path
    settings: ReconcilerSettings
    exchanges: dict[str, RevocableExchange] = field(default_factory=dict)
    live: dict[str, AccountLive] = field(default_factory=dict)
    books: Books | None = None
    reconciler: Reconciler | None = None
    events: Subscription | None = None
    seen: list[Event] = field(default_factory=list)
    table: TierTable = field(default_factory=TierTable)
    capabilities: Capabilities = DEFAULT_CAPABILITIES
    faults: dict[str, FaultInjector] = field(default_factory=dict)

    @property
    def rec(self) -> Reconciler:
        assert self.reconciler is not None
        return self.reconciler

    def book(self, account_id: str = "USER:alice") -> Any:
        assert self.books is not None
        return self.books.get(account_id)

    def start(self, plan: FaultPlan | None = None) -> Reconciler:
        """(Re)build everything above the exchange, as a process restart would."""
        self.books = Books(self.store, clock=self.clock)
        self.exchanges = {}
        self.faults = {}
        for account_id in self.engine.accounts:
            injector = FaultInjector(plan or FaultPlan(), self.clock)
            self.faults[account_id] = injector
            self.exchanges[account_id] = RevocableExchange(
                self.engine, account_id, faults=injector, capabilities=self.capabilities
            )
            if account_id not in self.live:
                self.live[account_id] = AccountLive.create(account_id, self.table)
        self.reconciler = Reconciler(
            self.books, self.exchanges, self.live, clock=self.clock, settings=self.settings
        )
        self.events = self.reconciler.subscribe()
        return self.reconciler

    async def restart(self, plan: FaultPlan | None = None) -> Reconciler:
        await self.rec.aclose()
        self.store.close()
        self.store = Store(self.path)
        self.live = {}
        return self.start(plan)

    def drain(self) -> list[Event]:
        assert self.events is not None
        fresh = self.events.drain()
        self.seen.extend(fresh)
        return fresh

    async def sync(self, account_id: str = "USER:alice", *, after_s: float = 1.0) -> list[Event]:
        self.clock.advance(after_s)
        await self.rec.sync_once(account_id)
        return self.drain()

    def place(
        self,
        account_id: str = "USER:alice",
        *,
        side: Side = Side.BUY,
        type: OrderType = OrderType.LIMIT,
        amount: float = 1.0,
        price: float | None = 99.0,
        stop_price: float | None = None,
        client_order_id: str | None = None,
        symbol: str = "BTC/USD",
    ) -> Order:
        """An order placed by someone else (the bot through its own SDK): straight to the sim."""
        return self.engine.place_order(
            account_id,
            OrderRequest(
                symbol=symbol,
                side=side,
                type=type,
                amount=amount,
                price=price,
                stop_price=stop_price,
                client_order_id=client_order_id,
            ),
        )

    def booked_fills(self, account_id: str = "USER:alice") -> list[Fill]:
        return self.store.fills(account_id)


def make_rig(
    tmp_path: Path,
    accounts: Sequence[str] = ("USER:alice",),
    *,
    settings: ReconcilerSettings | None = None,
    table: TierTable | None = None,
    capabilities: Capabilities = DEFAULT_CAPABILITIES,
    plan: FaultPlan | None = None,
    clock: FakeClock | MockClock | None = None,
) -> Rig:
    clock = clock or FakeClock()
    engine = SimEngine(seed=3, clock=clock)
    engine.add_market(BTC, 100.0)
    engine.add_market(ETH, 10.0)
    for account_id in accounts:
        engine.open_account(account_id, {"USD": 10_000.0, "BTC": 10.0})
    path = tmp_path / "state.sqlite3"
    rig = Rig(
        clock=clock,
        engine=engine,
        store=Store(path),
        path=path,
        settings=settings or ReconcilerSettings(),
        table=table or TierTable(),
        capabilities=capabilities,
    )
    rig.start(plan)
    return rig


def sums_by_order(fills: Sequence[Fill]) -> dict[str, float]:
    totals: dict[str, list[float]] = {}
    for fill in fills:
        totals.setdefault(fill.order_id, []).append(fill.amount)
    return {order_id: math.fsum(amounts) for order_id, amounts in totals.items()}


ENTRY, EXIT, STOP, TARGET = OrderRole.ENTRY, OrderRole.EXIT, OrderRole.STOP, OrderRole.TARGET
