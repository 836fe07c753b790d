"""Kraken venue situations through the real reconciler, real ccxt and the Kraken emulator.

The shapes pinned in ``test_conformance_kraken.py`` driven end to end: what the books, the
store and the held capital say after the reconciler has seen them. The table Binance has
(``test_venue_scenarios_binance.py``), on Kraken:

- **IOC expired after a partial fill**: AddOrder ``timeinforce=IOC``. Kraken ends the rest
  as *canceled*, not expired (``expired`` is a GTD order past its expiry time), keeping
  what filled: docs.kraken.com, guide "Order lifecycle" (partially_filled -> canceled,
  "Remaining quantity canceled (IOC residual, ...)"). The adapter reads CANCELLED.
- **Self-trade prevention**: always on, AddOrder ``stptype`` ``cancel-newest`` (default),
  ``cancel-oldest``, ``cancel-both``; the order it ends reads ``canceled``, reason "Cannot
  trade with self", with what filled before (support.kraken.com article 360042529892,
  "Self-trading prevention").
- **Pending cancel: not a Kraken situation.** An order's status is one of ``pending``
  (not yet in the book), ``open``, ``closed``, ``canceled``, ``expired``
  (docs.kraken.com, QueryOrders / OrderInfo ``status``; the same five in the "Order
  lifecycle" guide, where a user cancel goes open -> canceled with nothing in between).
  There is no pending-cancel status to track, so the Binance PENDING_CANCEL scenarios
  have no counterpart. CancelOrder's answer carries a ``pending`` flag ("if set, order(s)
  is/are pending cancellation", in Kraken's result schema of ``count`` and ``pending``),
  but the order itself never reads anything but open or canceled; the emulator always
  answers ``pending: false`` and the adapter reads the order back with QueryOrders.
- **History newest first in pages**: ClosedOrders, 50 a page (below).

Orders "someone else" places go through AddOrder on a second API key of the same account
(Kraken allows several), so their nonces never race the reconciler's.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import KrakenEmulatorServer, kraken_ccxt_config
from adapters.sim import FaultInjector, FaultPlan, SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.events import OrderAdopted, OrderCancelled, OrderFilled
from nija_broker.core.health import SyncState
from nija_broker.core.models import OrderStatus, OrderType, Side

from ._reconciler_rig import sums_by_order
from .test_reconciler_emulator import ALICE, KRAKEN, Rig

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

SYMBOL = KRAKEN.symbol
OTHER_KEY = "alice-kraken-key-2"
OTHER_SECRET = base64.b64encode(b"alice-second-key-secret").decode()


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(KRAKEN.market, 50_000.0)
    engine.open_account(ALICE, {"USD": 10_000.0, "BTC": 0.5})
    faults = FaultInjector(FaultPlan(), SystemClock())
    keys = {ALICE: (KRAKEN.api_key, KRAKEN.secret)}
    async with KRAKEN.server_class(engine, keys, faults=faults) as server:
        server.add_account(ALICE, OTHER_KEY, OTHER_SECRET)
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


async def test_partial_fill_then_our_cancel_books_the_partial_once_and_ends_it(rig: Rig) -> None:
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
    bought = [
        rig.dialect.exchange_id(
            rig.engine.place_order(
                ALICE,
                OrderRequest(symbol=SYMBOL, side=Side.BUY, type=OrderType.MARKET, amount=0.0002),
            ).id
        )
        for _ in range(60)
    ]
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


async def _add_order(rig: Rig, side: str, amount: float, price: float, **params: str) -> str:
    """Someone else's AddOrder (another program, on the account's second key); its txid."""
    other: Any = ccxt.kraken(kraken_ccxt_config(rig.server.url, OTHER_KEY, OTHER_SECRET))
    try:
        created = await other.create_order(SYMBOL, "limit", side, amount, price, params)
    finally:
        await other.close()
    return str(created["id"])


async def _restart_and_sync(rig: Rig) -> None:
    assert rig.reconciler is not None
    health = await rig.reconciler.startup(ALICE)
    assert health.state is SyncState.OK, health
    for _ in range(2):
        await rig.sync()


async def test_ioc_cancelled_after_a_partial_fill_is_booked_once_and_ended(rig: Rig) -> None:
    await rig.sync()
    rig.engine.set_liquidity(SYMBOL, 0.004)
    order_id = await _add_order(rig, "buy", 0.01, 50_010.0, timeInForce="IOC")
    # Never open: only the closed-orders sweep can see it.
    await _restart_and_sync(rig)

    order = rig.order(order_id)
    assert order is not None
    assert (order.status, order.filled) == (OrderStatus.CANCELLED, pytest.approx(0.004))
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {order_id: pytest.approx(0.004)}
    assert rig.books is not None
    assert rig.books.get(ALICE).orders.held_capital().total == 0


async def test_self_trade_cancels_the_newest_order_with_what_it_filled(rig: Rig) -> None:
    resting = rig.place(Side.SELL, price=50_100.0, amount=0.01)
    await rig.sync()
    # 0.004 offered by others, then only the account's own sell: cancel-newest (the
    # default) ends the arriving buy and leaves the resting sell.
    rig.engine.set_liquidity(SYMBOL, 0.004)
    taker = await _add_order(rig, "buy", 0.01, 50_200.0)
    await _restart_and_sync(rig)

    order = rig.order(taker)
    assert order is not None
    assert (order.status, order.filled) == (OrderStatus.CANCELLED, pytest.approx(0.004))
    kept = rig.order(resting)
    assert kept is not None
    assert (kept.status, kept.filled) == (OrderStatus.OPEN, 0.0)
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {taker: pytest.approx(0.004)}


async def test_self_trade_cancel_oldest_ends_the_resting_order_with_what_filled(rig: Rig) -> None:
    resting = rig.place(Side.SELL, price=50_100.0, amount=0.01)
    await rig.sync()
    rig.fill_partially(resting, 0.003)
    await rig.sync()
    rig.engine.set_liquidity(SYMBOL, 0.004)
    taker = await _add_order(rig, "buy", 0.01, 50_200.0, timeInForce="IOC", stptype="cancel-oldest")
    await _restart_and_sync(rig)

    ended = rig.order(resting)
    assert ended is not None
    assert (ended.status, ended.filled) == (OrderStatus.CANCELLED, pytest.approx(0.003))
    order = rig.order(taker)
    assert order is not None
    assert (order.status, order.filled) == (OrderStatus.CANCELLED, pytest.approx(0.004))
    assert rig.store is not None
    assert sums_by_order(rig.store.fills(ALICE)) == {
        resting: pytest.approx(0.003),
        taker: pytest.approx(0.004),
    }
