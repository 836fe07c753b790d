"""The guard's confirm (a bot thread) and the reconciler's commit (its event loop) report the
same order: in every interleaving, on their real threads, the fill is booked exactly once.

Both reach the account's books only through the owner's thread. The interleavings
driven here are every order in which the two reports can reach it:

* ``confirm_first``: the bot confirms before the reconciler lists the account;
* ``confirm_between``: the reconciler has listed the exchange and computed its diff
  from the book as it was, then the bot's confirm lands, then the reconciler's commit;
* ``commit_first``: the reconciler books the order before the bot's answer arrives;
* ``race``: both are let go at the same moment, many times, with a switch interval as
  short as the interpreter allows.

For each, on both fill sources (the cumulative rule, and fills from trades by id), and
for an order that filled at once and one that filled in parts around the confirm.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapters.base import OrderRequest
from adapters.sim import SimEngine, SimExchange
from adapters.sim.exchange import DEFAULT_CAPABILITIES
from nija_broker.core.clock import FakeClock
from nija_broker.core.events import Event, FillsBooked
from nija_broker.core.intent import Allowed
from nija_broker.core.models import Order, OrderType, Side
from nija_broker.guard.guard import Guard
from nija_broker.state.books import Books
from nija_broker.state.owner import Owner
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler

from ._guard_support import ALICE, account_live, buy, sim, usd

T = TypeVar("T")
BTC = "BTC/USD"
AMOUNT = 0.0004
INTERLEAVINGS = ("confirm_first", "confirm_between", "commit_first", "race")


class GatedOwner(Owner):
    """The owner, with a hook at its asyncio door: called (and awaited) just before the
    reconciler's commit of order changes is handed to the owner's thread."""

    def __init__(self) -> None:
        super().__init__(name="test-owner")
        self.before_commit: Callable[[], Any] | None = None

    async def acall(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        hook = self.before_commit
        if hook is not None and getattr(getattr(fn, "func", None), "__name__", "") == (
            "apply_changes"
        ):
            self.before_commit = None
            await hook()
        return await super().acall(fn, *args, **kwargs)


class World:
    """A guard, a reconciler and the sim, sharing one store and one owner."""

    def __init__(self, tmp_path: Path, *, order_trades: bool) -> None:
        self.clock = FakeClock()
        self.engine: SimEngine
        self.engine, _ = sim(self.clock, {"USD": 5_000.0})
        capabilities = DEFAULT_CAPABILITIES.__class__(
            **{**_fields(DEFAULT_CAPABILITIES), "order_trades": order_trades}
        )
        self.exchange = SimExchange(self.engine, ALICE, capabilities=capabilities)
        self.store = Store(tmp_path / "state.sqlite3")
        self.owner = GatedOwner()
        self.books = Books(self.store, clock=self.clock, owner=self.owner)
        # A standard account: it may enter the same symbol again (the race runs 5 rounds).
        self.live = {ALICE: account_live(equity=5_000.0, free=5_000.0, balances=usd(5_000.0))}
        self.guard = Guard(self.books, self.live, store=self.store, clock=self.clock)
        self.reconciler = Reconciler(
            self.books, {ALICE: self.exchange}, self.live, clock=self.clock
        )
        self.events: list[Event] = []
        self.guard.event_sinks.append(self.events.extend)

    async def aclose(self) -> None:
        await self.reconciler.aclose()
        await self.owner.acall(self.store.close)
        await self.owner.aclose()


def _fields(capabilities: Any) -> dict[str, Any]:
    return {name: getattr(capabilities, name) for name in capabilities.__dataclass_fields__}


@pytest.fixture
def busy_switching() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _in_bot_thread(work: Callable[[], None]) -> threading.Thread:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="bot-thread")
    thread.errors = errors  # type: ignore[attr-defined]
    return thread


async def _join(thread: threading.Thread) -> None:
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive(), "the bot's confirm never came back"
    assert thread.errors == []  # type: ignore[attr-defined]


async def _place(world: World, *, parts: bool) -> tuple[str, Order]:
    """The bot's entry: reserved by the guard, sent to the exchange, answered."""
    decision = world.guard.decide(
        buy(
            BTC,
            size_usd=None,
            amount=AMOUNT,
            **({"type": "limit", "price": 49_000.0} if parts else {}),
        )
    )
    assert isinstance(decision, Allowed)
    assert decision.reservation is not None
    request = OrderRequest(
        symbol=BTC,
        side=Side.BUY,
        type=OrderType.LIMIT if parts else OrderType.MARKET,
        amount=AMOUNT,
        price=49_000.0 if parts else None,
        client_order_id=decision.intent.client_order_id,
    )
    answer = await world.exchange.create_order(request)
    if parts:
        # Part filled by the time the answer is read; more fills after it.
        world.engine.fill_partially(ALICE, answer.id, AMOUNT * 0.4)
        answer = await world.exchange.fetch_order(answer.id, BTC)
        world.engine.fill_partially(ALICE, answer.id, AMOUNT * 0.3)
    return decision.reservation.id, answer


async def _run(world: World, interleaving: str, reservation_id: str, order: Order) -> None:
    confirm = _in_bot_thread(partial(world.guard.confirm, reservation_id, order))

    async def sync_once() -> None:
        # A balance refresh is due, so the closed-orders sweep runs: an order that filled
        # at once is never in an open listing, and the sweep is how the reconciler sees it.
        world.clock.advance(61.0)
        await world.reconciler.sync_once(ALICE)

    if interleaving == "confirm_first":
        confirm.start()
        await _join(confirm)
        await sync_once()
    elif interleaving == "confirm_between":

        async def let_the_bot_confirm() -> None:
            confirm.start()
            await _join(confirm)

        world.owner.before_commit = let_the_bot_confirm
        await sync_once()
        assert world.owner.before_commit is None, "the reconciler committed nothing"
        assert not confirm.is_alive()
    elif interleaving == "commit_first":
        await sync_once()
        book = world.books.get(ALICE)
        assert await world.owner.acall(book.orders.get, order.id) is not None, (
            "the reconciler did not book the order first"
        )
        confirm.start()
        await _join(confirm)
    else:
        go = threading.Event()
        racer = _in_bot_thread(lambda: (go.wait(5), world.guard.confirm(reservation_id, order)))
        racer.start()
        go.set()
        await sync_once()
        await _join(racer)


def _booked_once(world: World, order_id: str) -> None:
    truth = sum(f.amount for f in world.engine.fills if f.order_id == order_id)
    assert truth > 0
    book = world.books.get(ALICE)
    assert book.booked_amount(order_id) == pytest.approx(truth, rel=1e-9)
    stored = [f for f in world.store.fills(ALICE) if f.order_id == order_id]
    assert sum(f.amount for f in stored) == pytest.approx(truth, rel=1e-9)
    assert len({f.key for f in stored}) == len(stored)
    reported = [
        f
        for e in world.events
        if isinstance(e, FillsBooked)
        for f in e.fills
        if f.order_id == order_id
    ]
    assert sum(f.amount for f in reported) == pytest.approx(truth, rel=1e-9)


@pytest.mark.asyncio
@pytest.mark.parametrize("interleaving", INTERLEAVINGS)
@pytest.mark.parametrize("order_trades", [False, True], ids=["cumulative", "trades"])
@pytest.mark.parametrize("parts", [False, True], ids=["filled_at_once", "filled_in_parts"])
async def test_confirm_and_reconciler_commit_of_one_order_book_its_fill_once(
    tmp_path: Path,
    interleaving: str,
    order_trades: bool,
    parts: bool,
    busy_switching: None,
) -> None:
    world = World(tmp_path, order_trades=order_trades)
    rounds = 5 if interleaving == "race" else 1
    try:
        await world.reconciler.startup(ALICE)
        with world.reconciler.subscribe() as bus:
            order_ids = []
            for _ in range(rounds):
                reservation_id, order = await _place(world, parts=parts)
                order_ids.append(order.id)
                await _run(world, interleaving, reservation_id, order)
                world.clock.advance(1.0)
                await world.reconciler.sync_once(ALICE)  # one more clean look changes nothing
                world.events.extend(bus.drain())
        for order_id in order_ids:
            _booked_once(world, order_id)
        bought = sum(f.amount for f in world.engine.fills if f.order_id in order_ids)
        [position] = [p for p in world.books.get(ALICE).positions() if p.symbol == BTC]
        assert position.quantity == pytest.approx(bought, rel=1e-9)
        assert world.store.pending_intents(ALICE) == []
    finally:
        await world.aclose()
