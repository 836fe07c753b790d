"""Kraken venue situations through the real reconciler, real ccxt and the Kraken emulator.

The shapes pinned in ``test_conformance_kraken.py`` (a pending order, a partial fill then a
cancel, closed-order history newest first in pages of 50) driven end to end: what the books,
the store and the held capital say after the reconciler has seen them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import KrakenEmulatorServer
from adapters.sim import FaultInjector, FaultPlan, SimEngine
from nija_broker.clock import SystemClock
from nija_broker.events import OrderAdopted, OrderCancelled, OrderFilled
from nija_broker.health import SyncState
from nija_broker.models import OrderStatus, OrderType, Side

from ._reconciler_rig import sums_by_order
from .test_reconciler_emulator import ALICE, KRAKEN, Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SYMBOL = KRAKEN.symbol


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(KRAKEN.market, 50_000.0)
    engine.open_account(ALICE, {"USD": 10_000.0, "BTC": 0.5})
    faults = FaultInjector(FaultPlan(), SystemClock())
    keys = {ALICE: (KRAKEN.api_key, KRAKEN.secret)}
    async with KRAKEN.server_class(engine, keys, faults=faults) as server:
        rig = Rig(KRAKEN, engine, server, faults, tmp_path / "state.sqlite3")
        rig.start()
        yield rig
        await rig.stop()
        assert not server.not_found, dict(server.not_found)


def _server(rig: Rig) -> KrakenEmulatorServer:
    server = rig.server
    assert isinstance(server, KrakenEmulatorServer)
    return server


async def test_order_seen_pending_is_tracked_holding_capital_then_filled(rig: Rig) -> None:
    order_id = rig.place(price=49_000.0, amount=0.01)
    _server(rig).mark_pending(ALICE, order_id)

    events = await rig.sync()

    # Kraken says "pending"; ccxt reads it as open: tracked, live, its capital held.
    assert [e.order.id for e in events if isinstance(e, OrderAdopted)] == [order_id]
    tracked = rig.order(order_id)
    assert tracked is not None
    assert tracked.status is OrderStatus.OPEN
    assert not tracked.is_terminal
    assert rig.books is not None
    held = rig.books.get(ALICE).orders.held_capital()
    assert held.buys >= 0.01 * 49_000.0

    _server(rig).release_pending()
    rig.engine.set_price(SYMBOL, 48_900.0)  # now in the book, it fills
    events = await rig.sync()
    await rig.sync()

    assert [e.order.id for e in events if isinstance(e, OrderFilled)] == [order_id]
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {order_id: pytest.approx(0.01)}
    assert rig.books.get(ALICE).orders.held_capital().buys == 0


async def test_partial_fill_then_our_cancel_books_the_partial_once_and_ends_it(
        rig: Rig) -> None:
    order_id = rig.place(price=49_000.0, amount=0.02)
    await rig.sync()
    rig.fill_partially(order_id, 0.005)
    assert rig.reconciler is not None
    # The reconciler's own adapter: one ccxt instance per key keeps the nonces in order.
    exchange = rig.reconciler._accounts[ALICE].exchange

    # Kraken answers the cancel with a count only; the adapter reads the order back.
    cancelled = await exchange.cancel_order(order_id, SYMBOL)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.filled == pytest.approx(0.005)
    for _ in range(2):
        await rig.sync()
    await rig.stop()
    rig.start()  # a restart books nothing again
    assert rig.reconciler is not None
    health = await rig.reconciler.startup(ALICE)
    assert health.state is SyncState.OK, health
    await rig.sync()

    order = rig.order(order_id)
    assert order is not None
    assert order.status is OrderStatus.CANCELLED
    assert order.filled == pytest.approx(0.005)
    assert sum(isinstance(e, OrderCancelled) and e.order.id == order_id for e in rig.seen) == 1
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {order_id: pytest.approx(0.005)}


async def test_closed_history_past_one_page_of_fifty_is_found_whole(rig: Rig) -> None:
    await rig.stop()
    # 60 market buys nobody saw open, newest first across two ClosedOrders pages.
    bought = [rig.dialect.exchange_id(rig.engine.place_order(ALICE, OrderRequest(
        symbol=SYMBOL, side=Side.BUY, type=OrderType.MARKET, amount=0.0002)).id)
        for _ in range(60)]
    rig.start()
    assert rig.reconciler is not None
    health = await rig.reconciler.startup(ALICE)
    assert health.state is SyncState.OK, health
    await rig.sync()

    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {i: pytest.approx(0.0002) for i in bought}
    assert rig.server.requests["POST /0/private/ClosedOrders"] >= 2
    assert rig.books is not None
    position = rig.books.get(ALICE).ledger.position(SYMBOL)
    assert position is not None
    assert position.quantity == pytest.approx(0.012)
