"""The reconciler through real ccxt against the emulator on loopback, in both dialects.

A representative subset of the sim scenarios, end to end over HTTP: the
exchange's REST dialect (Binance or Kraken), ccxt's parsing and the adapter's
error mapping all sit between the exchange's state and the tracker here. Each
scenario runs once per dialect, from one body: the rig hides what differs
(market and quote currency, keys, the single-order look-up endpoint, and
Kraken's txids standing for the engine's order ids).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.emulator._kraken_wire import order_txid
from adapters.ratelimit import RateBudget
from adapters.sim import FaultInjector, FaultKind, FaultPlan, SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.events import Event, OrderAdopted, OrderCancelled, OrderFilled
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.models import Market, Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

from ._reconciler_rig import sums_by_order

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ALICE = "USER:alice"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _same(order_id: str) -> str:
    return order_id


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one exchange dialect needs that the scenarios must not spell out."""

    name: str
    market: Market
    api_key: str
    secret: str
    server_class: type[EmulatorServer]
    ccxt_class: Callable[[dict[str, Any]], Any]
    ccxt_config: Callable[[str, str, str], dict[str, Any]]
    lookup_request: str
    """The request counter of a single-order look-up (ccxt's fetch_order)."""
    exchange_id: Callable[[str], str]
    """Engine order id -> the id the exchange (and so the tracker) uses."""
    engine_id: Callable[[str], str]
    """The inverse: the tracker's id -> the engine's, to act on the engine."""

    @property
    def symbol(self) -> str:
        return self.market.symbol

    @property
    def quote(self) -> str:
        return self.market.quote


BINANCE = Dialect(
    name="binance",
    market=Market(
        symbol="BTC/USDT",
        base="BTC",
        quote="USDT",
        amount_step=0.00001,
        price_step=0.01,
        min_amount=0.00001,
        min_notional=5.0,
    ),
    api_key="alice-key-0001",
    secret="alice-secret-0001",
    server_class=EmulatorServer,
    ccxt_class=ccxt.binance,
    ccxt_config=binance_ccxt_config,
    lookup_request="GET /api/v3/order",
    exchange_id=_same,
    engine_id=_same,
)
KRAKEN = Dialect(
    name="kraken",
    market=Market(
        symbol="BTC/USD",
        base="BTC",
        quote="USD",
        amount_step=1e-8,
        price_step=0.1,
        min_amount=0.0001,
        min_notional=0.5,
    ),
    api_key="alice-kraken-key",
    secret=_b64("alice-secret-bytes-0001"),
    server_class=KrakenEmulatorServer,
    ccxt_class=ccxt.kraken,
    ccxt_config=kraken_ccxt_config,
    lookup_request="POST /0/private/QueryOrders",
    exchange_id=order_txid,
    engine_id=KrakenEmulatorServer.engine_order_id,
)


@dataclass
class Rig:
    dialect: Dialect
    engine: SimEngine
    server: EmulatorServer
    faults: FaultInjector
    path: Path
    store: Store | None = None
    books: Books | None = None
    reconciler: Reconciler | None = None
    seen: list[Event] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return self.dialect.symbol

    def start(self) -> Reconciler:
        """Build the runtime's side afresh over the store: what a restart does."""
        d = self.dialect
        self.store = Store(self.path)
        self.books = Books(self.store, clock=SystemClock())
        raw = d.ccxt_class(d.ccxt_config(self.server.url, d.api_key, d.secret))
        exchange = CcxtExchange(
            raw,
            account_id=ALICE,
            clock=FakeClock(),
            call_timeout_s=2.0,
            budget=RateBudget(1000.0),
            max_attempts=2,
        )
        live = {ALICE: AccountLive.create(ALICE, TierTable(), quote_currency=d.quote)}
        # No visibility lag to wait out in tests: confirmations go out at once.
        settings = ReconcilerSettings(visibility_window_s=0.0, call_timeout_s=5.0)
        self.reconciler = Reconciler(
            self.books, {ALICE: exchange}, live, clock=SystemClock(), settings=settings
        )
        self._events = self.reconciler.subscribe()
        return self.reconciler

    async def stop(self) -> None:
        assert self.reconciler is not None
        assert self.store is not None
        await self.reconciler.aclose()
        self.store.close()

    async def sync(self) -> list[Event]:
        assert self.reconciler is not None
        health = await self.reconciler.sync_once(ALICE)
        assert health.state is SyncState.OK, health
        fresh = self._events.drain()
        self.seen.extend(fresh)
        return fresh

    def order(self, order_id: str) -> Order | None:
        assert self.books is not None
        return self.books.get(ALICE).orders.get(order_id)

    def lookups(self) -> int:
        """Single-order look-ups the exchange has answered so far."""
        return self.server.requests[self.dialect.lookup_request]

    def place(
        self,
        side: Side = Side.BUY,
        price: float | None = 40_000.0,
        amount: float = 0.01,
        type: OrderType = OrderType.LIMIT,
        stop_price: float | None = None,
        cid: str | None = None,
    ) -> str:
        """Someone else places an order (straight on the exchange); its exchange id."""
        placed = self.engine.place_order(
            ALICE,
            OrderRequest(
                symbol=self.symbol,
                side=side,
                type=type,
                amount=amount,
                price=price,
                stop_price=stop_price,
                client_order_id=cid,
            ),
        )
        return self.dialect.exchange_id(placed.id)

    def as_listed(self, order_id: str) -> Order:
        """The exchange's view of an order, under the id the exchange gives it."""
        order = self.engine.get_order(ALICE, self.dialect.engine_id(order_id))
        return order.model_copy(update={"id": order_id})

    def fill_partially(self, order_id: str, amount: float) -> None:
        self.engine.fill_partially(ALICE, self.dialect.engine_id(order_id), amount)

    def cancel(self, order_id: str) -> None:
        """Someone else cancels (on the exchange, not through us)."""
        self.engine.cancel_order(ALICE, self.dialect.engine_id(order_id))


@pytest.fixture(params=[BINANCE, KRAKEN], ids=lambda d: d.name)
def dialect(request: pytest.FixtureRequest) -> Dialect:
    chosen: Dialect = request.param
    return chosen


@pytest_asyncio.fixture
async def rig(dialect: Dialect, tmp_path: Path) -> AsyncIterator[Rig]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(dialect.market, 50_000.0)
    engine.open_account(ALICE, {dialect.quote: 10_000.0, "BTC": 0.5})
    faults = FaultInjector(FaultPlan(), SystemClock())
    keys = {ALICE: (dialect.api_key, dialect.secret)}
    async with dialect.server_class(engine, keys, faults=faults) as server:
        rig = Rig(dialect, engine, server, faults, tmp_path / "state.sqlite3")
        rig.start()
        yield rig
        await rig.stop()
        # Everything real ccxt asked for exists in the emulator.
        assert not server.not_found, dict(server.not_found)


async def test_filled_between_polls_is_confirmed_and_booked_once(rig: Rig) -> None:
    order_id = rig.place(price=49_000.0, amount=0.01)
    assert [type(e) for e in await rig.sync() if isinstance(e, OrderAdopted)] == [OrderAdopted]
    rig.engine.set_price(rig.symbol, 48_900.0)
    events = await rig.sync()
    assert [e.order.id for e in events if isinstance(e, OrderFilled)] == [order_id]
    await rig.sync()
    assert rig.store is not None
    assert rig.books is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {order_id: pytest.approx(0.01)}
    position = rig.books.get(ALICE).ledger.position(rig.symbol)
    assert position is not None
    assert position.quantity == pytest.approx(0.01)
    assert position.avg_price == pytest.approx(49_000.0)


async def test_partially_filled_then_cancelled_books_only_the_filled_part(rig: Rig) -> None:
    order_id = rig.place(price=49_000.0, amount=0.02)
    await rig.sync()
    rig.fill_partially(order_id, 0.005)
    rig.cancel(order_id)
    events = await rig.sync()
    (cancelled,) = [e for e in events if isinstance(e, OrderCancelled)]
    assert cancelled.order.id == order_id
    assert cancelled.order.filled == pytest.approx(0.005)
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {order_id: pytest.approx(0.005)}


async def test_cancelled_by_someone_else_is_marked_on_the_exchanges_word(rig: Rig) -> None:
    order_id = rig.place(price=45_000.0)
    await rig.sync()
    before = rig.lookups()
    rig.cancel(order_id)
    await rig.sync()
    order = rig.order(order_id)
    assert order is not None
    assert order.status is OrderStatus.CANCELLED
    assert order.filled == 0
    # Missing from the listing, then looked up: the exchange's answer is what ends it.
    assert rig.lookups() - before >= 1


async def test_order_missing_from_listing_but_unknown_to_lookup_stays_open(rig: Rig) -> None:
    await rig.sync()
    rig.faults.set_plan(FaultPlan(hidden_after_create_s=60.0))
    order_id = rig.place(price=45_000.0, cid="bot-7")
    # The guard recorded the exchange's answer when it placed the order.
    assert rig.books is not None
    rig.books.get(ALICE).apply_order(rig.as_listed(order_id))
    before = rig.lookups()
    for _ in range(3):
        # Not listed, and the look-up says it does not exist (Binance -2013 "Order does
        # not exist", Kraken "EOrder:Invalid order"): neither ends it.
        await rig.sync()
        order = rig.order(order_id)
        assert order is not None
        assert order.status is OrderStatus.OPEN
    assert rig.lookups() - before >= 3
    assert not any(isinstance(e, OrderCancelled) for e in rig.seen)


async def test_external_orders_are_adopted_with_their_roles(rig: Rig) -> None:
    entry = rig.place(price=45_000.0)
    stop = rig.place(side=Side.SELL, type=OrderType.STOP_LIMIT, price=44_900.0, stop_price=45_000.0)
    target = rig.place(side=Side.SELL, price=60_000.0)
    events = await rig.sync()
    assert {e.order.id for e in events if isinstance(e, OrderAdopted)} == {entry, stop, target}
    orders = {i: rig.order(i) for i in (entry, stop, target)}
    roles = {i: o.role for i, o in orders.items() if o is not None}
    assert roles == {entry: OrderRole.ENTRY, stop: OrderRole.STOP, target: OrderRole.EXIT}
    assert all(o is not None and o.symbol == rig.symbol for o in orders.values())


async def test_fill_while_down_is_booked_once_across_restarts(rig: Rig) -> None:
    order_id = rig.place(price=49_000.0, amount=0.01)
    await rig.sync()
    await rig.stop()
    rig.engine.set_price(rig.symbol, 48_000.0)
    sold = rig.place(side=Side.SELL, type=OrderType.MARKET, price=None, amount=0.1)
    for _ in range(2):
        rig.start()
        assert rig.reconciler is not None
        health = await rig.reconciler.startup(ALICE)
        assert health.state is SyncState.OK, health
        await rig.stop()
    rig.start()
    assert rig.store is not None
    # The resting buy by confirmation; the market sell, which never rested, by the
    # closed-orders sweep (per symbol where the exchange needs one, as Binance does).
    assert sums_by_order(rig.store.fills(ALICE)) == {
        order_id: pytest.approx(0.01),
        sold: pytest.approx(0.1),
    }


async def test_silently_truncated_listing_ends_nothing(rig: Rig) -> None:
    ids = [rig.place(price=45_000.0 + i) for i in range(4)]
    await rig.sync()
    rig.faults.set_plan(
        FaultPlan(
            rate=1.0,
            kinds=frozenset({FaultKind.TRUNCATED_PAGE}),
            methods=frozenset({"fetch_open_orders"}),
        )
    )
    before = rig.lookups()
    await rig.sync()
    # Over HTTP the cut is invisible (the page looks complete): the missing orders are
    # asked about one by one, and the exchange says they are open.
    assert rig.lookups() - before == 2
    orders = [rig.order(i) for i in ids]
    assert all(o is not None and o.status is OrderStatus.OPEN for o in orders)
