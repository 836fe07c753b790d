"""The runtime the crash test kills: a reconciler over a sim world that survives the kill.

The exchange must outlive the process, so the world is a pure function of a
step number: :func:`build_world` replays the seeded order flow up to that step.
The worker writes the step it is about to reach to ``world_step`` (fsynced,
atomically replaced) BEFORE the world reaches it, so whatever the store has
seen, a restart rebuilds a world at least as far along: the exchange never goes
backwards. The reconciler never changes the world itself (stale orders only
raise alerts here), so replaying the flow reproduces the exchange exactly.

Usage: ``python -m tests._crash_worker DIR SEED FINAL_STEP [money]``; prints
``ready`` once the world is rebuilt, then runs until killed (after FINAL_STEP
only the clock moves). With ``money``, the accounts start with cash only (every
coin sold was bought under the runtime's eyes or while it was dead), pay fees
in quote, in the base asset received and in a third asset (BNB), and fills are
booked from the exchange's trades by trade id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from adapters.base import Capabilities, OrderRequest
from adapters.sim import FaultInjector, FaultPlan, SimEngine, SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import InsufficientFunds, InvalidOrder
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.core.tiers import DEFAULT_TIERS, StaleAction, TierTable
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

ACCOUNTS = ("PLATFORM", "USER:alice", "USER:bob")
BTC = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=0.001,
    price_step=0.01,
    min_amount=0.001,
    min_notional=1.0,
)
BNB = Market(
    symbol="BNB/USD",
    base="BNB",
    quote="USD",
    amount_step=0.001,
    price_step=0.01,
    min_amount=0.001,
    min_notional=1.0,
)
FEE_MODES = {"PLATFORM": "quote", "USER:alice": "base_for_buys", "USER:bob": "BNB"}
TRADES = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    order_trades=True,
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
REAL_S_PER_WORLD_S = 0.002
"""The worker's world runs 500 times faster than real time."""


def tier_table() -> TierTable:
    # Alerts only: a cancel by the reconciler would change a world that must be replayable.
    return TierTable(
        tuple(
            t.model_copy(update={"stale_action": StaleAction.ALERT, "stale_max_age_s": 120.0})
            for t in DEFAULT_TIERS
        )
    )


def settings(seed: int) -> ReconcilerSettings:
    return ReconcilerSettings(
        poll_interval_s=5.0, balance_interval_s=20.0, visibility_window_s=3.0, seed=seed
    )


def _step_world(engine: SimEngine, rng: random.Random) -> None:
    for account_id in ACCOUNTS:
        roll = rng.random()
        price = engine.price("BTC/USD")
        amount = round(rng.uniform(0.01, 0.2), 3)
        if roll < 0.25:
            request = OrderRequest(
                symbol="BTC/USD",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=amount,
                price=round(price * rng.uniform(0.99, 1.003), 2),
            )
        elif roll < 0.45:
            request = OrderRequest(
                symbol="BTC/USD",
                side=Side.SELL,
                type=OrderType.LIMIT,
                amount=amount,
                price=round(price * rng.uniform(0.997, 1.01), 2),
            )
        elif roll < 0.5:
            request = OrderRequest(
                symbol="BTC/USD", side=rng.choice(list(Side)), type=OrderType.MARKET, amount=amount
            )
        else:
            request = None
        if request is not None:
            with contextlib.suppress(InsufficientFunds, InvalidOrder):
                engine.place_order(account_id, request)
        if rng.random() < 0.08:
            open_now = engine.open_orders(account_id)
            if open_now:
                engine.cancel_order(account_id, rng.choice(open_now).id)
    engine.step()


class World:
    """The exchange at a step: the engine and its clock (one world second per step)."""

    def __init__(self, seed: int, money: bool = False) -> None:
        self.seed = seed
        self.money = money
        self.clock = FakeClock(T0)
        self.engine = SimEngine(seed=seed, clock=self.clock, partial_fill_prob=0.3)
        self.engine.add_market(BTC, 100.0, volatility=0.004)
        if money:
            # A fixed BNB price: a fee valued at the fill and at booking is the same money.
            self.engine.add_market(BNB, 500.0, volatility=0.0)
        for account_id in ACCOUNTS:
            if money:
                balances = (
                    {"USD": 3_000.0, "BNB": 2.0}
                    if FEE_MODES[account_id] == "BNB"
                    else {"USD": 3_000.0}
                )
                self.engine.open_account(account_id, balances, fee_mode=FEE_MODES[account_id])
            else:
                self.engine.open_account(account_id, {"USD": 2_000.0, "BTC": 5.0})
        self.step = 0

    def advance_to(self, step: int) -> None:
        while self.step < step:
            self.step += 1
            self.clock.advance(1.0)
            _step_world(self.engine, random.Random(f"{self.seed}:{self.step}"))


def build_world(seed: int, step: int, money: bool = False) -> World:
    world = World(seed, money)
    world.advance_to(step)
    return world


def read_step(directory: Path) -> int:
    try:
        return int((directory / "world_step").read_text())
    except FileNotFoundError:
        return 0


def write_step(directory: Path, step: int) -> None:
    tmp = directory / "world_step.tmp"
    with tmp.open("w") as handle:
        handle.write(str(step))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / "world_step")


class WorkerClock:
    """World time for timestamps; real (scaled) sleeps so the pollers interleave with the world."""

    def __init__(self, world: World) -> None:
        self.world = world

    def now(self) -> datetime:
        return self.world.clock.now()

    def monotonic(self) -> float:
        return self.world.clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) * REAL_S_PER_WORLD_S)


def exchange(world: World, account_id: str, faults: FaultInjector | None = None) -> SimExchange:
    return SimExchange(
        world.engine, account_id, faults=faults, capabilities=TRADES if world.money else None
    )


@contextlib.asynccontextmanager
async def restarted(directory: Path, world: World) -> AsyncIterator[tuple[Store, Books]]:
    """The runtime started once more over the killed runs' store, every account synced."""
    store = Store(directory / "state.sqlite3")
    books = Books(store, clock=world.clock)
    exchanges = {a: exchange(world, a) for a in ACCOUNTS}
    table = tier_table()
    live = {a: AccountLive.create(a, table) for a in ACCOUNTS}
    try:
        async with Reconciler(
            books, exchanges, live, clock=world.clock, settings=settings(world.seed)
        ) as reconciler:
            for account_id in ACCOUNTS:
                health = await reconciler.startup(account_id)
                assert health.state.value == "ok", health
            yield store, books
    finally:
        store.close()


def run_and_kill(
    directory: Path, seed: int, final_step: int, delay_s: float, *, money: bool = False
) -> int:
    """Start a worker, wait until it is up, SIGKILL it after ``delay_s``; its return code."""
    root = Path(__file__).resolve().parent.parent
    argv = [
        sys.executable,
        "-m",
        "tests._crash_worker",
        str(directory),
        str(seed),
        str(final_step),
        *(["money"] if money else []),
    ]
    with subprocess.Popen(
        argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
            # From "ready", startup reconciliation and the pollers run: any point will do.
            try:
                process.wait(timeout=delay_s)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
            return process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()


async def main(directory: Path, seed: int, final_step: int, money: bool = False) -> None:
    world = build_world(seed, read_step(directory), money)
    clock = WorkerClock(world)
    store = Store(directory / "state.sqlite3")
    books = Books(store, clock=clock)
    table = tier_table()
    # Some faults too: a restart must cope with a flaky exchange as well.
    exchanges = {
        a: exchange(
            world,
            a,
            FaultInjector(
                FaultPlan(rate=0.1, seed=seed + i, hidden_after_create_s=2.0), world.clock
            ),
        )
        for i, a in enumerate(ACCOUNTS)
    }
    live = {a: AccountLive.create(a, table) for a in ACCOUNTS}
    print("ready", flush=True)
    async with (
        Reconciler(books, exchanges, live, clock=clock, settings=settings(seed)) as reconciler,
        asyncio.TaskGroup() as group,
    ):
        group.create_task(reconciler.run(), name="reconciler")
        while True:
            if world.step < final_step:
                write_step(directory, world.step + 1)  # before the world gets there
                world.advance_to(world.step + 1)
            else:
                world.clock.advance(1.0)  # only time moves after the last step
            await asyncio.sleep(REAL_S_PER_WORLD_S)


if __name__ == "__main__":
    asyncio.run(
        main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), money=sys.argv[4:] == ["money"])
    )
