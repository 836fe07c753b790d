"""Crash test for money: SIGKILLs while orders fill and round trips complete, over many seeds.

The worker (``tests/_crash_worker.py`` in ``money`` mode) runs the reconciler
with fills booked from the exchange's trades, for three accounts that pay
their fees in quote, in the base asset received and in BNB, and that start
with cash only. It is killed at random moments, again and again; then one
restart in this process catches up. Every account's fills, fees, round trips
and positions must then equal the exchange's ground truth: each trade booked
once, the ledger holding exactly the coins the exchange holds (no phantom
position), and the round trips those fills make in exchange time order.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
from pathlib import Path

import pytest

from nija_broker.core.ledger import replay

from . import _crash_worker as worker

SEEDS = [31, 32, 33, 34]
FINAL_STEP = 5_000
KILLS = 5


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_sigkills_during_fills_leave_fills_fees_trades_and_positions_as_the_exchange_has_them(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    codes = [
        worker.run_and_kill(tmp_path, seed, FINAL_STEP, rng.uniform(0.05, 0.8), money=True)
        for _ in range(KILLS)
    ]
    assert codes == [-signal.SIGKILL] * KILLS  # every run died by the kill, none by a bug
    step = worker.read_step(tmp_path)
    assert step > 20  # the world moved on while the runtime kept dying
    world = worker.build_world(seed, step, money=True)
    world.clock.advance(30.0)
    booked_fills = asyncio.run(_final_restart(tmp_path, world))
    assert booked_fills > 10


async def _final_restart(directory: Path, world: worker.World) -> int:
    total = 0
    async with worker.restarted(directory, world) as (store, books):
        for account_id in worker.ACCOUNTS:
            truth = world.engine.truth(account_id)
            booked = store.fills(account_id)
            # Every trade once, by its id, with the exchange's amount and fee.
            assert sorted(f.key for f in booked) == sorted(f.key for f in truth.fills)
            real = {f.key: f for f in truth.fills}
            for fill in booked:
                assert fill.amount == pytest.approx(real[fill.key].amount, rel=1e-12)
                assert fill.fee == pytest.approx(real[fill.key].fee, rel=1e-9, abs=1e-12)
                assert fill.fee_currency == (real[fill.key].fee_currency or "USD")
            # Positions: exactly the coins the exchange holds, no phantom.
            book = books.get(account_id)
            held = {p.symbol: p.quantity for p in book.positions()}
            btc = truth.balances.get("BTC")
            assert held.get("BTC/USD", 0.0) == pytest.approx(btc.total if btc else 0.0, abs=1e-9), (
                account_id
            )
            # Round trips: those the exchange's fills make in exchange time order.
            _, expected, _ = replay(truth.fills)
            trades = store.trades(account_id)
            assert sorted(t.trade_id for t in trades) == sorted(t.trade_id for t in expected)
            assert math.fsum(t.net for t in trades) == pytest.approx(
                math.fsum(t.net for t in expected), abs=1e-6
            )
            assert book.metrics().total_trades == len(expected)
            total += len(booked)
    return total
