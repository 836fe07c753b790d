"""Every order the guard confirmed is followed by id to its end, even if no listing showed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import Capabilities, OrderRequest
from adapters.sim import DEFAULT_CAPABILITIES
from nija_broker.core.events import AttentionRequired
from nija_broker.core.intent import OrderIntent
from nija_broker.core.models import OrderStatus, OrderType, Side
from nija_broker.guard.guard import Guard
from nija_broker.sync.reconciler import ReconcilerSettings

from ._reconciler_rig import Rig, make_rig

pytestmark = pytest.mark.asyncio
ALICE = "USER:alice"
TRADES = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    order_trades=True,
)


def _rig(tmp_path: Path) -> tuple[Rig, Guard]:
    rig = make_rig(
        tmp_path,
        capabilities=TRADES,
        settings=ReconcilerSettings(visibility_window_s=0.0, balance_interval_s=3600.0),
    )
    assert rig.books is not None
    guard = Guard(rig.books, rig.live, store=rig.store, clock=rig.clock)
    return rig, guard


@pytest.mark.parametrize("confirm_with", ["order id", "nothing"])
async def test_confirmed_entry_and_exit_that_never_rested_are_booked_from_their_trades(
    tmp_path: Path, confirm_with: str
) -> None:
    rig, guard = _rig(tmp_path)
    await rig.rec.startup(ALICE)
    ids = []
    for side, role in ((Side.BUY, "entry"), (Side.SELL, "exit")):
        held = guard.reserve(
            OrderIntent(
                account_id=ALICE,
                symbol="ETH/USD",
                side=side,
                type=OrderType.MARKET,
                amount=2.0,
                price=10.0,
                role=role,
            )
        )
        order = rig.engine.place_order(
            ALICE,
            OrderRequest(
                symbol="ETH/USD",
                side=side,
                type=OrderType.MARKET,
                amount=2.0,
                client_order_id=held.client_order_id,
            ),
        )
        assert order.status is OrderStatus.FILLED  # filled at once: no listing shows it
        guard.confirm(held.id, order.id if confirm_with == "order id" else None)
        ids.append(order.id)
    await rig.sync(ALICE)
    book = rig.book(ALICE)
    assert [book.orders.get(i).status for i in ids] == [OrderStatus.FILLED] * 2
    fills = rig.store.fills(ALICE)
    assert sorted(f.order_id for f in fills) == sorted(ids)
    assert len(rig.store.trades(ALICE)) == 1
    assert book.followed() == []


async def test_an_order_id_the_exchange_does_not_know_raises_attention_then_is_asked_rarely(
    tmp_path: Path,
) -> None:
    rig, guard = _rig(tmp_path)
    await rig.rec.startup(ALICE)
    held = guard.reserve(
        OrderIntent(
            account_id=ALICE,
            symbol="ETH/USD",
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=2.0,
            price=9.0,
        )
    )
    guard.confirm(held.id, "999999")
    exchange = rig.exchanges[ALICE]
    alerts = []
    for _ in range(5):
        alerts += [e for e in await rig.sync(ALICE) if isinstance(e, AttentionRequired)]
    assert len(alerts) == 1
    assert "999999" in alerts[0].reason
    before = exchange.calls["fetch_order"]
    for _ in range(20):
        await rig.sync(ALICE)
    assert exchange.calls["fetch_order"] - before == 2  # every tenth cycle, not every one
    assert [f.order_id for f in rig.book(ALICE).followed()] == ["999999"]


@pytest.mark.parametrize("trades", [False, True], ids=["cumulative-rule", "trades"])
@pytest.mark.parametrize("first", ["guard", "reconciler"])
async def test_guard_confirm_and_reconciler_commit_interleaved_book_the_exchange_amount(
    tmp_path: Path, first: str, trades: bool
) -> None:
    """The guard confirms with an answer showing 0.8 filled, the reconciler lists 1.2."""
    rig = make_rig(
        tmp_path,
        capabilities=TRADES if trades else DEFAULT_CAPABILITIES,
        settings=ReconcilerSettings(visibility_window_s=0.0, balance_interval_s=3600.0),
    )
    assert rig.books is not None
    guard = Guard(rig.books, rig.live, store=rig.store, clock=rig.clock)
    await rig.rec.startup(ALICE)
    held = guard.reserve(
        OrderIntent(
            account_id=ALICE,
            symbol="ETH/USD",
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=2.0,
            price=9.9,
        )
    )
    order = rig.engine.place_order(
        ALICE,
        OrderRequest(
            symbol="ETH/USD",
            side=Side.BUY,
            type=OrderType.LIMIT,
            amount=2.0,
            price=9.9,
            client_order_id=held.client_order_id,
        ),
    )
    rig.engine.fill_partially(ALICE, order.id, 0.8)
    answer = rig.engine.get_order(ALICE, order.id)  # what the create/confirm path saw
    rig.engine.fill_partially(ALICE, order.id, 0.4)  # the listing will show 1.2
    if first == "guard":
        guard.confirm(held.id, answer)
        await rig.sync(ALICE)
    else:
        await rig.sync(ALICE)
        guard.confirm(held.id, answer)
        await rig.sync(ALICE)
    book = rig.book(ALICE)
    assert sum(p.quantity for p in book.positions() if p.symbol == "ETH/USD") == (
        pytest.approx(1.2)
    )
    assert book.booked_amount(order.id) == pytest.approx(1.2)
    assert sum(f.amount for f in rig.store.fills(ALICE)) == pytest.approx(1.2)
