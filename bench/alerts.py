"""Alerts against the reconciler's cycle: a slow target must not slow it; prints one JSON document.

A running :class:`~nija_broker.service.runtime.Broker` (SQLite store, owner thread,
event consumer, guard) over the in-memory simulated exchange, N accounts. Its pollers
are parked (a one-hour poll) and this driver runs each account's cycle itself,
``reconciler.sync_once``, one after the other, in rounds that make alerts: a resting
buy adopted, filled (a ``fill`` alert), a resting sell adopted, filled (a ``fill`` and
a ``trade``). Meanwhile a bot thread asks the guard for entries it must block, 50 a
second (``block`` alerts, offered on the owner's thread, ``block_repeat_s = 0``).

Three scenarios, same rounds (after one warm-up round each): ``none`` (no
``[[alerts]]``), ``fast`` (a webhook and a Telegram target on a local receiver that
answers at once) and ``slow`` (the same receiver answering each request after
``--slow-s``, 2 s: its queues fill and drop their oldest). The receiver runs in a
process of its own, so its work is not the runtime's. Per scenario:

- ``cycle_wall_s``: wall time of each ``sync_once`` (``time.perf_counter``), p50 / p95 / mean;
- ``cycle_cpu_s``: CPU time of the runtime loop's thread during each ``sync_once``
  (``time.thread_time``; what else the loop ran meanwhile, the event consumer's
  offers included, counts in), p50 / mean;
- ``loop_cpu_s_per_cycle``: the loop thread's CPU time over the whole run (cycles, the
  consumer, the driver) divided by the cycles;
- ``alerts``: each target's report (delivered, dropped, queued, state) at the end.

The scenarios run interleaved ``--repeat`` times (none, fast, slow, none, ...), so a
neighbour's load on a shared machine falls on each alike; ``medians_s`` holds each
figure's median over the repeats and ``best_s`` its lowest (the run least disturbed),
``ratios_to_none`` and ``best_ratios_to_none`` the ``fast`` and ``slow`` figures over
``none``'s, ``last_run`` every figure of the last repeat.

Usage: ``python bench/alerts.py [--accounts 20] [--rounds 10] [--slow-s 2.0] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

if __package__ in (None, ""):  # run as ``python bench/alerts.py``: the repository on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.base import Capabilities, OrderRequest
from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import SystemClock
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

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
    min_notional=1.0,
)
TG_TOKEN = "123456:bench-telegram-token"
CHECKS_PER_S = 50.0


def _serve(delay_s: float, ports: Any, stop: Any) -> None:
    """The receiver process: webhook and Telegram answers, each after ``delay_s``."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        if request.path.startswith("/bot"):
            return web.json_response({"ok": True, "result": {}})
        return web.Response(text="ok")

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)
        await runner.cleanup()

    asyncio.run(run())


class _Receiver:
    """The receiver in a process of its own: its work is neither the runtime's CPU nor
    its GIL."""

    def __init__(self, delay_s: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        ports = context.Queue()
        self._process = context.Process(target=_serve, args=(delay_s, ports, self._stop))
        self._process.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=60)}"

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def _blocking_bot(broker: Broker, accounts: list[str], stop: threading.Event) -> None:
    """A bot thread asking for entries the guard blocks (far below the minimum size)."""
    i = 0
    while not stop.wait(1.0 / CHECKS_PER_S):
        account = accounts[i % len(accounts)]
        broker.check(OrderIntent(account_id=account, symbol="BTC/USD", side="buy", size_usd=0.01))
        i += 1


async def _round(broker: Broker, engine: SimEngine, accounts: list[str], timed: Any) -> None:
    """One round per account: a buy adopted then filled, a sell adopted then filled."""
    engine.set_price("BTC/USD", 100.0)
    for account in accounts:
        engine.place_order(
            account,
            OrderRequest(
                symbol="BTC/USD", side=Side.BUY, type=OrderType.LIMIT, amount=0.05, price=99.0
            ),
        )
    await timed()  # adopted
    engine.set_price("BTC/USD", 98.0)
    await timed()  # filled: a fill alert each
    engine.set_price("BTC/USD", 100.0)
    for account in accounts:
        engine.place_order(
            account,
            OrderRequest(
                symbol="BTC/USD", side=Side.SELL, type=OrderType.LIMIT, amount=0.05, price=101.0
            ),
        )
    await timed()  # adopted
    engine.set_price("BTC/USD", 102.0)
    await timed()  # filled: a fill and a trade alert each


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def scenario(name: str, accounts_n: int, rounds: int, slow_s: float) -> dict[str, Any]:
    accounts = [f"USER:{i:03d}" for i in range(accounts_n)]
    engine = SimEngine(seed=3, clock=SystemClock())
    engine.add_market(BTC, 100.0, volatility=0.0)
    for account in accounts:
        engine.open_account(account, {"USD": 1_000_000.0})
    receiver = _Receiver(slow_s if name == "slow" else 0.0) if name != "none" else None
    alerts: list[dict[str, Any]] = []
    if receiver is not None:
        alerts = [
            {"type": "webhook", "url": f"{receiver.url}/hook", "block_repeat_s": 0},
            {"type": "telegram", "api_url": receiver.url, "chat_id": 1, "token_env": "TG",
             "block_repeat_s": 0},
        ]  # fmt: skip
    walls: list[float] = []
    cpus: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "store": {"path": str(Path(tmp) / "bench.sqlite3")},
                "accounts": [
                    {"id": a, "exchange": "binance", "tier": "STANDARD"} for a in accounts
                ],
                "alerts": alerts,
            }
        )
        settings = ReconcilerSettings(
            poll_interval_s=3600.0, balance_interval_s=3600.0, visibility_window_s=0.0
        )
        exchanges = {a: SimExchange(engine, a, capabilities=TRADES) for a in accounts}
        broker = Broker(
            config,
            exchanges=exchanges,
            environ={"TG": TG_TOKEN},
            serve_api=False,
            reconciler_settings=settings,
        )
        async with broker:
            assert broker.reconciler is not None
            reconciler = broker.reconciler
            probe = broker.check(
                OrderIntent(account_id=accounts[0], symbol="BTC/USD", side="buy", size_usd=0.01)
            )
            assert isinstance(probe, Blocked), probe

            async def timed() -> None:
                for account in accounts:
                    cpu0, wall0 = time.thread_time(), time.perf_counter()
                    await reconciler.sync_once(account)
                    walls.append(time.perf_counter() - wall0)
                    cpus.append(time.thread_time() - cpu0)

            stop = threading.Event()
            bot = threading.Thread(target=_blocking_bot, args=(broker, accounts, stop))
            bot.start()
            try:
                await _round(broker, engine, accounts, timed)  # warm-up, not counted
                walls.clear()
                cpus.clear()
                loop_cpu0, run0 = time.thread_time(), time.perf_counter()
                for _ in range(rounds):
                    await _round(broker, engine, accounts, timed)
            finally:
                stop.set()
                bot.join()
            loop_cpu = time.thread_time() - loop_cpu0
            run_wall = time.perf_counter() - run0
            report = broker.alerts.report() if broker.alerts is not None else {}
    if receiver is not None:
        receiver.close()
    return {
        "cycles": len(walls),
        "run_wall_s": round(run_wall, 3),
        "cycle_wall_s": {
            "p50": round(statistics.median(walls), 6),
            "p95": round(_pct(walls, 0.95), 6),
            "mean": round(statistics.fmean(walls), 6),
        },
        "cycle_cpu_s": {
            "p50": round(statistics.median(cpus), 6),
            "mean": round(statistics.fmean(cpus), 6),
        },
        "loop_cpu_s_per_cycle": round(loop_cpu / len(walls), 6),
        "alerts": {
            n: {k: r[k] for k in ("state", "delivered", "dropped", "queued", "failed")}
            for n, r in report.items()
        },
    }


_FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "cycle_wall_p50": lambda r: r["cycle_wall_s"]["p50"],
    "cycle_wall_mean": lambda r: r["cycle_wall_s"]["mean"],
    "cycle_cpu_p50": lambda r: r["cycle_cpu_s"]["p50"],
    "loop_cpu_per_cycle": lambda r: r["loop_cpu_s_per_cycle"],
}


async def main(accounts_n: int, rounds: int, slow_s: float, repeat: int) -> dict[str, Any]:
    # Interleaved (none, fast, slow, none, ...): a neighbour's load on a shared machine
    # falls on every scenario alike; each figure is the median over the repeats.
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "fast": [], "slow": []}
    for _ in range(repeat):
        for name, done in runs.items():
            done.append(await scenario(name, accounts_n, rounds, slow_s))

    def median(name: str, figure: str) -> float:
        return statistics.median(_FIGURES[figure](r) for r in runs[name])

    def best(name: str, figure: str) -> float:
        return min(_FIGURES[figure](r) for r in runs[name])

    return {
        "accounts": accounts_n,
        "rounds": rounds,
        "repeats": repeat,
        "cycles_per_run": runs["none"][0]["cycles"],
        "slow_receiver_answers_after_s": slow_s,
        "blocked_checks_per_s": CHECKS_PER_S,
        "medians_s": {
            name: {figure: round(median(name, figure), 6) for figure in _FIGURES} for name in runs
        },
        "best_s": {
            name: {figure: round(best(name, figure), 6) for figure in _FIGURES} for name in runs
        },
        "ratios_to_none": {
            name: {
                figure: round(median(name, figure) / median("none", figure), 3)
                for figure in _FIGURES
            }
            for name in ("fast", "slow")
        },
        "best_ratios_to_none": {
            name: {
                figure: round(best(name, figure) / best("none", figure), 3) for figure in _FIGURES
            }
            for name in ("fast", "slow")
        },
        "last_run": {name: done[-1] for name, done in runs.items()},
    }


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--slow-s", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    report = asyncio.run(main(args.accounts, args.rounds, args.slow_s, args.repeat))
    print(json.dumps(report, indent=2))
