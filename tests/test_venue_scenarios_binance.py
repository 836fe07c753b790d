"""The reconciler through real ccxt against the Binance emulator, in situations the live
venue produces and the emulator used not to: an IOC order that expires after a partial
fill, self-trade prevention (EXPIRED_IN_MATCH), a pending cancel (PENDING_CANCEL), and
order history answered newest first in pages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.profiles import BINANCE
from adapters.ratelimit import RateBudget
from adapters.sim import FaultInjector, FaultPlan, SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.events import Event, OrderCancelled
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.models import Market, Order, OrderStatus, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

from ._reconciler_rig import sums_by_order

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

ALICE = "USER:alice"
KEY, SECRET = "alice-key-0001", "alice-secret-0001"
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
PAGE = 5
"""allOrders rows a page in these tests (the profile's 1,000 would need a thousand orders)."""


@dataclasses.dataclass
class Rig:
    engine: SimEngine
    server: EmulatorServer
    path: Path
    store: Store | None = None
    books: Books | None = None
    reconciler: Reconciler | None = None

    def start(self) -> None:
        self.store = Store(self.path)
        self.books = Books(self.store, clock=SystemClock())
        raw = ccxt.binance(binance_ccxt_config(self.server.url, KEY, SECRET))
        exchange = CcxtExchange(
            raw,
            account_id=ALICE,
            clock=FakeClock(),
            call_timeout_s=5.0,
            budget=RateBudget(1000.0),
            max_attempts=2,
            profile=dataclasses.replace(BINANCE, all_orders_page=PAGE),
        )
        live = {ALICE: AccountLive.create(ALICE, TierTable(), quote_currency="USDT")}
        settings = ReconcilerSettings(visibility_window_s=0.0, call_timeout_s=10.0)
        self.reconciler = Reconciler(
            self.books, {ALICE: exchange}, live, clock=SystemClock(), settings=settings
        )
        self._events = self.reconciler.subscribe()

    async def stop(self) -> None:
        assert self.reconciler is not None
        assert self.store is not None
        await self.reconciler.aclose()
        self.store.close()

    async def sync(self) -> list[Event]:
        assert self.reconciler is not None
        health = await self.reconciler.sync_once(ALICE)
        assert health.state is SyncState.OK, health
        return self._events.drain()

    async def startup(self) -> None:
        assert self.reconciler is not None
        health = await self.reconciler.startup(ALICE)
        assert health.state is SyncState.OK, health

    def order(self, order_id: str) -> Order | None:
        assert self.books is not None
        return self.books.get(ALICE).orders.get(order_id)

    def booked(self) -> dict[str, float]:
        assert self.store is not None
        return sums_by_order(self.store.fills(ALICE))

    def place(
        self,
        side: Side,
        amount: float,
        price: float | None,
        *,
        time_in_force: str = "GTC",
        stp_mode: str = "NONE",
    ) -> str:
        """Someone else places an order, straight on the exchange; its id."""
        kind = OrderType.MARKET if price is None else OrderType.LIMIT
        return self.engine.place_order(
            ALICE,
            OrderRequest(symbol=BTC.symbol, side=side, type=kind, amount=amount, price=price),
            time_in_force=time_in_force,
            stp_mode=stp_mode,
        ).id


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine = SimEngine(seed=11, clock=SystemClock())
    engine.add_market(BTC, 50_000.0)
    engine.open_account(ALICE, {"USDT": 10_000.0, "BTC": 0.5})
    faults = FaultInjector(FaultPlan(), SystemClock())
    async with EmulatorServer(engine, {ALICE: (KEY, SECRET)}, faults=faults) as server:
        rig = Rig(engine, server, tmp_path / "state.sqlite3")
        rig.start()
        yield rig
        await rig.stop()
        assert not server.not_found, dict(server.not_found)


async def test_ioc_expired_after_a_partial_fill_is_booked_once_and_ended(rig: Rig) -> None:
    await rig.sync()
    rig.engine.set_liquidity(BTC.symbol, 0.004)
    order_id = rig.place(Side.BUY, 0.01, 50_010.0, time_in_force="IOC")
    assert rig.engine.get_order(ALICE, order_id).status is OrderStatus.EXPIRED
    # Never open: only the closed-orders sweep (allOrders, expired orders kept) can see it.
    await rig.startup()
    for _ in range(2):
        await rig.sync()
    order = rig.order(order_id)
    assert order is not None
    assert (order.status, order.filled) == (OrderStatus.EXPIRED, pytest.approx(0.004))
    assert rig.booked() == {order_id: pytest.approx(0.004)}


async def test_expired_in_match_ends_the_resting_order_with_what_filled(rig: Rig) -> None:
    resting = rig.place(Side.SELL, 0.01, 50_100.0)
    await rig.sync()
    rig.engine.fill_partially(ALICE, resting, 0.003)
    await rig.sync()
    # An incoming buy of the same account reaches it; EXPIRE_MAKER ends the resting sell.
    rig.engine.set_liquidity(BTC.symbol, 0.0)
    rig.place(Side.BUY, 0.01, 50_200.0, time_in_force="IOC", stp_mode="EXPIRE_MAKER")
    assert rig.engine.order_flags(ALICE, resting).expired_in_match
    await rig.sync()
    await rig.sync()
    order = rig.order(resting)
    assert order is not None
    assert (order.status, order.filled) == (OrderStatus.EXPIRED, pytest.approx(0.003))
    assert rig.booked() == {resting: pytest.approx(0.003)}


async def test_pending_cancel_keeps_the_order_and_its_hold_until_cancelled(rig: Rig) -> None:
    order_id = rig.place(Side.BUY, 0.01, 45_000.0)
    await rig.sync()
    assert rig.books is not None
    held_before = rig.books.get(ALICE).orders.held_capital().total
    rig.engine.delay_cancels(1)
    rig.engine.cancel_order(ALICE, order_id)
    for _ in range(2):
        events = await rig.sync()
        assert not any(isinstance(e, OrderCancelled) for e in events)
        order = rig.order(order_id)
        assert order is not None
        assert order.status is OrderStatus.OPEN
        assert rig.books.get(ALICE).orders.held_capital().total == pytest.approx(held_before)
    assert held_before > 0
    rig.engine.complete_cancels(ALICE)
    events = await rig.sync()
    assert [e.order.id for e in events if isinstance(e, OrderCancelled)] == [order_id]


async def test_pending_cancel_answer_to_our_cancel_is_not_an_end(rig: Rig) -> None:
    raw = ccxt.binance(binance_ccxt_config(rig.server.url, KEY, SECRET))
    exchange = CcxtExchange(raw, account_id=ALICE, clock=FakeClock(), budget=RateBudget(1000.0))
    try:
        order_id = rig.place(Side.BUY, 0.01, 45_000.0)
        rig.engine.delay_cancels(1)
        answered = await exchange.cancel_order(order_id, BTC.symbol)
        assert answered.status is OrderStatus.OPEN
        rig.engine.complete_cancels()
        assert (await exchange.fetch_order(order_id, BTC.symbol)).status is OrderStatus.CANCELLED
    finally:
        await exchange.aclose()


async def test_sweep_finds_every_order_across_pages_of_history(rig: Rig) -> None:
    await rig.sync()
    before = rig.server.requests["GET /api/v3/allOrders"]
    # More orders than three pages, each opened and filled between two polls.
    ids = [rig.place(Side.BUY if i % 2 else Side.SELL, 0.001, None) for i in range(3 * PAGE + 2)]
    await rig.startup()
    await rig.sync()
    assert rig.booked() == {i: pytest.approx(0.001) for i in ids}
    assert rig.server.requests["GET /api/v3/allOrders"] - before >= 4
