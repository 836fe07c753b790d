"""What the ccxt adapter costs on top of ccxt: fetch_open_orders with 100 open orders.

Runs the Binance emulator on loopback, places ``--orders`` resting orders for
one account, then times ``fetch_open_orders()`` (one call, every symbol)
through :class:`~adapters.ccxt_adapter.CcxtExchange` and through a bare
``ccxt.async_support.binance`` on the same server, alternating the two so
drift hits both alike. Prints JSON: median and p95 in milliseconds for each,
and ``overhead_ratio = adapter median / raw median - 1`` (goal: at most 0.10).

``adapter`` is the steady state of a poller: the same open orders listed
again, unchanged ones served from the adapter's memo of converted orders.
``adapter_cold`` clears that memo before every call: every order validated
into a model afresh, as on the first poll after a start.

    python bench/exchange.py [--orders 100] [--iterations 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from typing import Any

import ccxt.async_support as ccxt

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market, OrderType, Side

GOAL_RATIO = 0.10
MARKETS = (
    (
        Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        50_000.0,
    ),
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.0001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
)


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in samples_s)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(statistics.quantiles(ms, n=100, method="inclusive")[94], 3),
        "min_ms": round(ms[0], 3),
    }


async def run(orders: int, iterations: int, warmup: int) -> dict[str, Any]:
    engine = SimEngine(seed=1, clock=SystemClock())
    for market, price in MARKETS:
        engine.add_market(market, price)
    engine.open_account("BENCH", {"USDT": 1_000_000.0})
    for i in range(orders):
        market, price = MARKETS[i % len(MARKETS)]
        # Resting buys 20-30% under the market: they never fill during the run.
        limit = round(price * (0.7 + 0.1 * i / orders), 2)
        amount = 0.001 if market.base == "BTC" else 0.01
        engine.place_order(
            "BENCH",
            OrderRequest(
                symbol=market.symbol,
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=amount,
                price=limit,
                client_order_id=f"bench-{i}",
            ),
        )
    keys = {"BENCH": ("bench-key", "bench-secret")}
    async with EmulatorServer(engine, keys) as server:
        config = binance_ccxt_config(server.url, *keys["BENCH"])
        raw = ccxt.binance(config)
        adapter = CcxtExchange(
            ccxt.binance(config), account_id="BENCH", budget=RateBudget(1_000_000.0)
        )
        try:
            await raw.load_markets()
            await adapter.load_markets()
            samples: dict[str, list[float]] = {"raw": [], "adapter": [], "cold": []}

            async def timed(name: str) -> float:
                start = time.perf_counter()
                if name == "raw":
                    count, calls = len(await raw.fetch_open_orders()), 1
                else:
                    if name == "cold":
                        adapter._memo.clear()
                    page = await adapter.fetch_open_orders()
                    count, calls = len(page.orders), page.calls
                elapsed_s = time.perf_counter() - start
                if count != orders or calls != 1:
                    raise SystemExit(
                        f"{name}: expected {orders} orders in one call, got {count} in {calls}"
                    )
                return elapsed_s

            for i in range(warmup + iterations):
                # Rotate who goes first, so neither side always meets a warm or cold server.
                names = ["raw", "adapter", "cold"]
                names = names[i % 3 :] + names[: i % 3]
                for name in names:
                    elapsed_s = await timed(name)
                    if i >= warmup:
                        samples[name].append(elapsed_s)
        finally:
            await raw.close()
            await adapter.aclose()
    raw_summary = summary_ms(samples["raw"])
    adapter_summary = summary_ms(samples["adapter"])
    cold_summary = summary_ms(samples["cold"])
    ratio = adapter_summary["median_ms"] / raw_summary["median_ms"] - 1.0
    return {
        "benchmark": "fetch_open_orders",
        "open_orders": orders,
        "iterations": iterations,
        "raw_ccxt": raw_summary,
        "adapter": adapter_summary,
        "adapter_cold": cold_summary,
        "cold_overhead_ratio": round(cold_summary["median_ms"] / raw_summary["median_ms"] - 1, 4),
        "overhead_ratio": round(ratio, 4),
        "overhead_ms": round(adapter_summary["median_ms"] - raw_summary["median_ms"], 3),
        "goal_ratio": GOAL_RATIO,
        "within_goal": ratio <= GOAL_RATIO,
        "ccxt_version": ccxt.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.orders, args.iterations, args.warmup))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
