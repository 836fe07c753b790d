"""Tracker benchmarks. Prints one JSON object.

- order updates per second in memory (OrderTracker.apply of prepared values)
- order updates per second persisted through AccountBook in batches (SQLite, WAL)
- bytes per tracked open order (tracemalloc, values plus the tracker's indexes)
- time to compute metrics for 1,000 and 100,000 trades (compute_metrics, pure)

Run: ``python -m bench.trackers [--orders N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nija_broker.core.models import Order, OrderStatus, TradeRecord
from nija_broker.core.orders import OrderTracker
from nija_broker.core.performance import compute_metrics
from nija_broker.state.book import AccountBook
from nija_broker.state.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _orders(account: str, n: int) -> list[Order]:
    """n new orders, then each one partially filled: 2n updates."""
    created = [
        Order(
            id=f"{i}",
            client_order_id=f"nb-{i}",
            account_id=account,
            symbol="BTC/USD",
            side="buy" if i % 2 else "sell",
            price=40_000.0 + i % 500,
            amount=0.01,
            created_at=T0,
        )
        for i in range(n)
    ]
    partial = [
        o.model_copy(update={"filled": 0.004, "status": OrderStatus.PARTIALLY_FILLED})
        for o in created
    ]
    return created + partial


def bench_in_memory(n: int) -> float:
    updates = _orders("PLATFORM", n)
    best = 0.0
    for _ in range(3):
        tracker = OrderTracker("PLATFORM")
        start = time.perf_counter()
        for order in updates:
            tracker.apply(order)
        best = max(best, len(updates) / (time.perf_counter() - start))
    return best


def bench_persisted(n: int, batch: int) -> float:
    updates = _orders("PLATFORM", n)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.sqlite3") as store:
        book = AccountBook("PLATFORM", store)
        start = time.perf_counter()
        for i in range(0, len(updates), batch):
            book.apply_orders(updates[i : i + batch])
        return len(updates) / (time.perf_counter() - start)


def bench_bytes_per_order(n: int) -> float:
    orders = [
        Order(
            id=f"{100_000 + i}",
            client_order_id=f"nb-{i:08d}",
            account_id="PLATFORM",
            symbol="BTC/USD",
            side="buy",
            price=40_000.0 + i % 500,
            amount=0.01,
            created_at=T0,
        )
        for i in range(n)
    ]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracker = OrderTracker("PLATFORM")
    for order in orders:
        tracker.apply(order)
    del orders
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # Counted: what the tracker keeps alive. The orders list was freed; the
    # values it held were created before tracing began, so build fresh ones.
    return (after - before) / n


def bench_bytes_per_order_total(n: int) -> float:
    """Values created under tracing: the full cost of holding an open order."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracker = OrderTracker("PLATFORM")
    for i in range(n):
        tracker.apply(
            Order(
                id=f"{100_000 + i}",
                client_order_id=f"nb-{i:08d}",
                account_id="PLATFORM",
                symbol="BTC/USD",
                side="buy",
                price=40_000.0 + i % 500,
                amount=0.01,
                created_at=T0,
            )
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / n


def _trades(n: int) -> list[TradeRecord]:
    trades = []
    for i in range(n):
        pnl = ((i * 7919) % 200 - 90) / 10.0
        entry = T0 + timedelta(minutes=i)
        trades.append(
            TradeRecord(
                trade_id=f"T-{i}",
                account_id="PLATFORM",
                symbol="BTC/USD",
                side="buy",
                entry_price=100.0,
                exit_price=100.0 + pnl,
                quantity=1.0,
                pnl=pnl,
                fees=0.1,
                entry_time=entry,
                exit_time=entry + timedelta(minutes=5),
                risk_usd=2.0 if i % 2 else None,
            )
        )
    return trades


def bench_metrics_ms(n: int, repeats: int) -> float:
    trades = _trades(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        compute_metrics("PLATFORM", trades)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=50_000)
    args = parser.parse_args()
    result = {
        "in_memory_updates_per_s": round(bench_in_memory(args.orders)),
        "persisted_updates_per_s_batch_1000": round(bench_persisted(args.orders, 1_000)),
        "bytes_per_open_order": round(bench_bytes_per_order_total(20_000)),
        "tracker_index_bytes_per_open_order": round(bench_bytes_per_order(20_000)),
        "metrics_ms_1000_trades": round(bench_metrics_ms(1_000, 21), 3),
        "metrics_ms_100000_trades": round(bench_metrics_ms(100_000, 3), 1),
        "goals": {
            "in_memory_updates_per_s": ">= 100000",
            "persisted_updates_per_s_batch_1000": ">= 20000",
            "bytes_per_open_order": "<= 1024",
            "metrics_ms_1000_trades": "<= 5",
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
