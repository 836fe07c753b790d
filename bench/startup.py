"""Start-up of an old account against a fresh one. Prints one JSON object.

One store holds two accounts with the same recent day (a few open orders, an
open position, ``RECENT_TRIPS`` round trips and equity points: more than the
book's ``history_size``, so both hold a full in-memory window, which a fresh
account fills within its first day of trading). ``OLD`` also has
``--old-trades`` round trips before that (each a buy order and a sell order,
filled, with their fills, the trade and an equity point), written through the
store's own ``apply``. Then, in the same run and alternating between the two:

- start-up time of ``Books(store).get(account)`` (what a restarted sidecar does
  per account): CPU time (``time.process_time``) and wall time
  (``time.perf_counter``), median of ``--runs`` runs;
- memory: the tracemalloc peak while the book loads, and what the loaded book
  keeps (traced memory still allocated after it loaded, the book alive).

The figure that matters is each ratio old/fresh; the goal is <= 1.10, i.e. start-up
flat in the age of the account.

Run: ``python -m bench.startup [--old-trades N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nija_broker.core.clock import FakeClock
from nija_broker.core.ledger import Ledger
from nija_broker.core.models import EquityPoint, Fill, Order, OrderStatus, Side, TradeRecord
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.store import Store, StoreBatch

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD")
BATCH = 2_000
RECENT_TRIPS = 1_100


def _round_trip(
    account: str, n: int, at: datetime, ledger: Ledger
) -> tuple[list[Order], list[Fill], list[TradeRecord]]:
    """One buy and one sell order, filled, booked through a real ledger: orders, fills, trade."""
    symbol = SYMBOLS[n % len(SYMBOLS)]
    price = 100.0 + n % 37
    exit_price = price * (1.0 + ((n * 7919) % 21 - 9) / 1000.0)
    orders: list[Order] = []
    fills: list[Fill] = []
    for leg, (side, px, ts) in enumerate(
        ((Side.BUY, price, at), (Side.SELL, exit_price, at + timedelta(minutes=3)))
    ):
        order_id = f"{account}-{n}-{leg}"
        orders.append(
            Order(
                id=order_id,
                client_order_id=f"nb-{order_id}",
                account_id=account,
                symbol=symbol,
                side=side,
                price=px,
                amount=1.0,
                filled=1.0,
                average=px,
                status=OrderStatus.FILLED,
                created_at=ts,
                updated_at=ts,
                fee=px * 0.001,
            )
        )
        fills.append(
            Fill(
                account_id=account,
                order_id=order_id,
                trade_id=f"{n}{leg}",
                symbol=symbol,
                side=side,
                amount=1.0,
                price=px,
                fee=px * 0.001,
                timestamp=ts,
            )
        )
    trades = [t for f in fills for t in ledger.book(f).trades]
    return orders, fills, trades


def _write(
    store: Store,
    account: str,
    start_n: int,
    count: int,
    first: datetime,
    step: timedelta,
    ledger: Ledger,
) -> None:
    orders: list[Order] = []
    fills: list[Fill] = []
    trades: list[TradeRecord] = []
    points: list[EquityPoint] = []
    equity = 1_000_000.0

    def flush() -> None:
        store.apply(
            StoreBatch(
                account_id=account,
                orders=orders,
                fills=fills,
                trades=trades,
                positions=ledger.positions(),
                equity_points=points,
            )
        )
        orders.clear(), fills.clear(), trades.clear(), points.clear()

    for i in range(count):
        at = first + step * i
        o, f, t = _round_trip(account, start_n + i, at, ledger)
        orders += o
        fills += f
        trades += t
        equity += sum(x.net for x in t)
        points.append(
            EquityPoint(account_id=account, timestamp=at + timedelta(minutes=4), equity=equity)
        )
        if len(orders) >= BATCH:
            flush()
    flush()


def _recent_day(store: Store, account: str, ledger: Ledger) -> None:
    """What both accounts share: the last day's trades, an open position, open orders."""
    start = NOW - timedelta(hours=20)
    _write(
        store, account, 10_000_000, RECENT_TRIPS, start, timedelta(hours=19) / RECENT_TRIPS, ledger
    )
    buy = Fill(
        account_id=account,
        order_id=f"{account}-held",
        trade_id="held",
        symbol="BTC/USD",
        side=Side.BUY,
        amount=0.5,
        price=101.0,
        fee=0.05,
        timestamp=NOW - timedelta(hours=1),
    )
    ledger.book(buy)
    open_orders = [
        Order(
            id=f"{account}-open-{i}",
            client_order_id=f"nb-{account}-open-{i}",
            account_id=account,
            symbol=SYMBOLS[i % len(SYMBOLS)],
            side=Side.BUY,
            price=90.0 + i,
            amount=1.0,
            created_at=NOW - timedelta(minutes=10 + i),
        )
        for i in range(5)
    ]
    store.apply(
        StoreBatch(
            account_id=account, orders=open_orders, fills=[buy], positions=ledger.positions()
        )
    )


def build(path: Path, old_trades: int) -> None:
    with Store(path) as store:
        fresh = Ledger("FRESH")
        _recent_day(store, "FRESH", fresh)
        old = Ledger("OLD")
        # The old history ends two days before now: beyond every retention window.
        step = timedelta(minutes=5)
        first = NOW - timedelta(days=2) - step * old_trades
        _write(store, "OLD", 0, old_trades, first, step, old)
        _recent_day(store, "OLD", old)


def _start(store: Store, account: str) -> AccountBook:
    return Books(store, clock=FakeClock(NOW)).get(account)


def _time_once(store: Store, account: str) -> tuple[float, float]:
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    book = _start(store, account)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    del book
    return cpu * 1000, wall * 1000


def _memory(store: Store, account: str) -> tuple[int, int]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    book = _start(store, account)
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del book
    return peak - before, kept - before


def _ratio(old: float, fresh: float) -> float | None:
    return round(old / fresh, 3) if fresh > 0 else None


def measure(path: Path, runs: int) -> dict[str, object]:
    with Store(path) as store:
        _start(store, "OLD"), _start(store, "FRESH")  # warm SQLite's page cache for both
        times: dict[str, list[tuple[float, float]]] = {"FRESH": [], "OLD": []}
        for _ in range(runs):
            for account in ("FRESH", "OLD"):
                times[account].append(_time_once(store, account))
        memory = {a: _memory(store, a) for a in ("FRESH", "OLD")}
        book = _start(store, "OLD")
        in_memory = {
            "orders": len(book.orders.orders()),
            "fill_keys": len(book.ledger.fill_keys()),
            "trades": len(book.performance.trade_history()),
            "equity_points": len(book.performance.equity_points()),
            "trade_count": book.performance.trade_count,
        }

    def med(account: str, pick: Callable[[tuple[float, float]], float]) -> float:
        return round(statistics.median(pick(t) for t in times[account]), 3)

    figures: dict[str, object] = {}
    for name, index in (("cpu_ms", 0), ("wall_ms", 1)):
        fresh = med("FRESH", lambda t, i=index: t[i])
        old = med("OLD", lambda t, i=index: t[i])
        figures[f"startup_{name}"] = {"fresh": fresh, "old": old, "ratio": _ratio(old, fresh)}
    for name, index in (("tracemalloc_peak_bytes", 0), ("retained_bytes", 1)):
        fresh_b, old_b = memory["FRESH"][index], memory["OLD"][index]
        figures[name] = {"fresh": fresh_b, "old": old_b, "ratio": _ratio(old_b, fresh_b)}
    figures["old_account_in_memory"] = in_memory
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--old-trades", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="reuse (or create) this store file instead of a temporary one",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "startup.sqlite3"
        built_s = None
        if not path.exists():
            start = time.perf_counter()
            build(path, args.old_trades)
            built_s = round(time.perf_counter() - start, 1)
        result = {
            "old_trades": args.old_trades,
            "runs": args.runs,
            "build_s": built_s,
            **measure(path, args.runs),
            "goals": {"ratio": "<= 1.10 for cpu, wall, peak and retained"},
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
