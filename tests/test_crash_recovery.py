"""Crash test: the runtime is SIGKILLed at random points, again and again.

A worker process (``tests/_crash_worker.py``) runs the reconciler with a SQLite
store over a replayable sim world and is killed at random moments: during
startup, between polls, in the middle of a book write. Afterwards one more
restart (in this process) reconciles, and the store must hold every fill the
exchange made, each exactly once, and the same open orders as the exchange.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
from pathlib import Path

import pytest

from . import _crash_worker as worker
from ._reconciler_rig import sums_by_order

SEED = 21
FINAL_STEP = 5_000
KILLS = 8


def _run_and_kill(directory: Path, rng: random.Random) -> int:
    return worker.run_and_kill(directory, SEED, FINAL_STEP, rng.uniform(0.02, 0.6))


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_books_nothing_twice(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    codes = [_run_and_kill(tmp_path, rng) for _ in range(KILLS)]
    assert codes == [-signal.SIGKILL] * KILLS  # every run died by the kill, none by a bug
    step = worker.read_step(tmp_path)
    assert step > 50  # the world moved on while the runtime kept dying

    world = worker.build_world(SEED, step)
    # Let time pass (only time) so young orders are visible and confirmations allowed.
    world.clock.advance(30.0)
    figures = asyncio.run(_final_restart(tmp_path, world))
    assert figures["fills"] > 20
    assert figures["orders"] > 20


async def _final_restart(directory: Path, world: worker.World) -> dict[str, int]:
    fills = orders = 0
    async with worker.restarted(directory, world) as (store, books):
        for account_id in worker.ACCOUNTS:
            truth = world.engine.truth(account_id)
            booked = store.fills(account_id)
            # Nothing booked twice: one row per key, and per order the sim's exact total.
            assert len({f.key for f in booked}) == len(booked)
            expected = sums_by_order(truth.fills)
            got = sums_by_order(booked)
            # Nothing lost: every order that filled at all is booked.
            assert got.keys() == expected.keys(), account_id
            for order_id, amount in expected.items():
                assert got[order_id] == pytest.approx(amount, rel=1e-9), order_id
            assert math.fsum(f.fee for f in booked) == pytest.approx(
                math.fsum(f.fee for f in truth.fills), rel=1e-9
            )
            tracker = books.get(account_id).orders
            assert {o.id for o in tracker.open_orders()} == truth.open_ids
            for order in truth.orders:
                tracked = tracker.get(order.id)
                if tracked is not None:
                    assert tracked.filled == pytest.approx(order.filled, rel=1e-9)
                    if tracked.is_terminal:
                        assert tracked.status is order.status
            fills += len(booked)
            orders += len(truth.orders)
    return {"fills": fills, "orders": orders}
