"""Reconciler benchmark on the simulated exchange; prints one JSON document.

- ``api_calls``: exchange calls of one poll cycle with M open orders and nothing
  changed, against the one-``fetch_order``-per-open-order approach of a peer
  (Freqtrade). Also the average per cycle once the balance cadence (balance,
  tickers, closed-orders sweep every ``balance_interval_s``) is included.
- ``calls_per_fill``: the calls of the cycle that finds an order filled between
  two polls, fills booked from the exchange's trades (confirmation + trades);
  ``bench/money.py`` gives the same per venue through real ccxt.
- ``cpu_full_cycle``: CPU seconds for one cycle of every account, 1,000 accounts
  x 100 open orders, nothing changed (goal <= 0.5 s, ~5 us per tracked order).
- ``fill_detection``: delay between a fill on the exchange and the reconciler's
  event, running the real poll loop in virtual time, against the poll interval.

Usage: ``python bench/reconcile.py [--accounts 1000] [--orders 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import logging
import random
import statistics
import time
from typing import Any

from adapters.base import Capabilities, OrderRequest
from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.events import OrderFilled
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.state.books import Books
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

TRADES = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    order_trades=True,
)
BTC = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=0.0001,
    price_step=0.01,
    min_amount=0.0001,
    min_notional=0.0,
)


def _engine(accounts: list[str], orders_each: int, clock: FakeClock) -> SimEngine:
    engine = SimEngine(seed=1, clock=clock)
    engine.add_market(BTC, 100.0)
    for account_id in accounts:
        engine.open_account(account_id, {"USD": 1e9, "BTC": 1e6})
        for i in range(orders_each):
            side = Side.BUY if i % 2 == 0 else Side.SELL
            price = 50.0 + i * 0.01 if side is Side.BUY else 150.0 + i * 0.01
            engine.place_order(
                account_id,
                OrderRequest(
                    symbol="BTC/USD", side=side, type=OrderType.LIMIT, amount=0.01, price=price
                ),
            )
    return engine


def _reconciler(
    engine: SimEngine, accounts: list[str], clock: FakeClock, settings: ReconcilerSettings
) -> tuple[Reconciler, dict[str, SimExchange]]:
    exchanges = {a: SimExchange(engine, a) for a in accounts}
    table = TierTable()
    live = {a: AccountLive.create(a, table) for a in accounts}
    # No store: a cycle in which nothing changed writes nothing anyway.
    reconciler = Reconciler(
        Books(None, clock=clock), exchanges, live, clock=clock, settings=settings
    )
    return reconciler, exchanges


async def api_calls(open_orders: int) -> dict[str, Any]:
    clock = FakeClock()
    settings = ReconcilerSettings(poll_interval_s=5.0, balance_interval_s=60.0)
    engine = _engine(["A"], open_orders, clock)
    reconciler, exchanges = _reconciler(engine, ["A"], clock, settings)
    await reconciler.startup("A")
    calls = exchanges["A"].calls
    before = sum(calls.values())
    clock.advance(5.0)
    await reconciler.sync_once("A")
    one_cycle = sum(calls.values()) - before
    cycles = 120  # ten minutes at 5 s
    before = sum(calls.values())
    for _ in range(cycles):
        clock.advance(5.0)
        await reconciler.sync_once("A")
    average = (sum(calls.values()) - before) / cycles
    await reconciler.aclose()
    return {
        "open_orders": open_orders,
        "ours_per_cycle": one_cycle,
        "ours_per_cycle_with_balance_cadence": round(average, 3),
        "peer_fetch_order_per_open_order": open_orders,
    }


async def calls_per_fill() -> dict[str, Any]:
    """Calls of the cycle that finds a fill, fills booked from trades (by trade id)."""
    clock = FakeClock()
    settings = ReconcilerSettings(
        poll_interval_s=5.0, balance_interval_s=3600.0, visibility_window_s=0.0
    )
    engine = _engine(["A"], 10, clock)
    exchanges = {"A": SimExchange(engine, "A", capabilities=TRADES)}
    live = {"A": AccountLive.create("A", TierTable())}
    reconciler = Reconciler(
        Books(None, clock=clock), exchanges, live, clock=clock, settings=settings
    )
    await reconciler.startup("A")
    calls = exchanges["A"].calls

    async def cycle() -> dict[str, int]:
        before = dict(calls)
        clock.advance(5.0)
        await reconciler.sync_once("A")
        return {k: v - before.get(k, 0) for k, v in sorted(calls.items()) if v - before.get(k, 0)}

    idle = await cycle()
    engine.place_order(
        "A",
        OrderRequest(
            symbol="BTC/USD", side=Side.BUY, type=OrderType.LIMIT, amount=0.01, price=99.0
        ),
    )
    await cycle()
    engine.set_price("BTC/USD", 98.0)  # fills between two polls
    filled = await cycle()
    after = await cycle()
    await reconciler.aclose()
    return {
        "idle_cycle": idle,
        "cycle_that_finds_a_fill": filled,
        "idle_after": after,
        "calls_per_fill": sum(filled.values()) - sum(idle.values()),
    }


async def cpu_full_cycle(accounts_n: int, orders_each: int) -> dict[str, Any]:
    clock = FakeClock()
    accounts = [f"USER:{i:04d}" for i in range(accounts_n)]
    settings = ReconcilerSettings(poll_interval_s=5.0, balance_interval_s=3600.0)
    engine = _engine(accounts, orders_each, clock)
    reconciler, exchanges = _reconciler(engine, accounts, clock, settings)
    await asyncio.gather(*(reconciler.startup(a) for a in accounts))
    samples = []
    for _ in range(5):
        clock.advance(5.0)
        started = time.process_time()
        await asyncio.gather(*(reconciler.sync_once(a) for a in accounts))
        samples.append(time.process_time() - started)
    calls = sum(ex.calls["fetch_open_orders"] for ex in exchanges.values())
    tracked = accounts_n * orders_each
    await reconciler.aclose()
    best = min(samples)
    return {
        "accounts": accounts_n,
        "open_orders_per_account": orders_each,
        "cpu_s_per_full_cycle_median": round(statistics.median(samples), 4),
        "cpu_s_per_full_cycle_best": round(best, 4),
        "us_per_tracked_order": round(statistics.median(samples) / tracked * 1e6, 3),
        "goal_s": 0.5,
        "fetch_open_orders_calls": calls,
        "note": "sim exchange in-process: includes the sim's own listing cost",
    }


class _VirtualClock(FakeClock):
    """Sleepers wait until the driver moves virtual time past their deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()
        self.slept = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiters, (self.monotonic() + seconds, next(self._ids), future))
        self.slept.set()
        await future

    async def tick(self, seconds: float) -> None:
        """Advance by ``seconds`` (waking whoever is due), once the poller is asleep."""
        while not any(not f.done() for _, _, f in self.waiters):
            self.slept.clear()
            await self.slept.wait()
        end = self.monotonic() + seconds
        while self.waiters and self.waiters[0][0] <= end:
            due, _, future = heapq.heappop(self.waiters)
            self.advance(max(due - self.monotonic(), 0.0))
            future.set_result(None)
            self.slept.clear()
            await self.slept.wait()  # the poller ran its cycle and sleeps again
        self.advance(end - self.monotonic())


async def fill_detection(poll_interval_s: float = 5.0, fills: int = 300) -> dict[str, Any]:
    clock = _VirtualClock()
    settings = ReconcilerSettings(
        poll_interval_s=poll_interval_s, balance_interval_s=3600.0, jitter=0.1, seed=5
    )
    engine = _engine(["A"], 0, clock)
    reconciler, _ = _reconciler(engine, ["A"], clock, settings)
    events = reconciler.subscribe()
    rng = random.Random(9)
    runner = asyncio.create_task(reconciler.run(), name="bench-run")
    delays: list[float] = []
    while len(delays) < fills:
        engine.set_price("BTC/USD", 100.0)
        engine.place_order(
            "A",
            OrderRequest(
                symbol="BTC/USD", side=Side.BUY, type=OrderType.LIMIT, amount=0.01, price=99.0
            ),
        )
        # Rests a random while (young and old orders alike), then fills.
        await clock.tick(rng.uniform(0.0, 4 * poll_interval_s))
        engine.set_price("BTC/USD", 98.0)
        deadline = clock.monotonic() + 10 * poll_interval_s
        found = False
        while clock.monotonic() < deadline and not found:
            await clock.tick(0.05)
            for event in events.drain():
                if isinstance(event, OrderFilled):
                    assert event.order.updated_at is not None
                    delays.append((event.at - event.order.updated_at).total_seconds())
                    found = True
    runner.cancel()
    await reconciler.aclose()
    delays.sort()
    return {
        "poll_interval_s": poll_interval_s,
        "jitter": settings.jitter,
        "fills": len(delays),
        "mean_s": round(statistics.fmean(delays), 3),
        "p50_s": round(delays[len(delays) // 2], 3),
        "p95_s": round(delays[int(len(delays) * 0.95)], 3),
        "max_s": round(delays[-1], 3),
        "mean_over_interval": round(statistics.fmean(delays) / poll_interval_s, 3),
    }


async def main(accounts: int, orders: int) -> dict[str, Any]:
    return {
        "api_calls": [await api_calls(m) for m in (10, 100, 1000)],
        "calls_per_fill": await calls_per_fill(),
        "cpu_full_cycle": await cpu_full_cycle(accounts, orders),
        "fill_detection": await fill_detection(),
    }


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.accounts, args.orders)), indent=2))
