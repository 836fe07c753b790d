"""What the pre-trade guard costs: decision latency at scale, and its share of a real order.

1. ``decision``: 1,000 accounts x 100 open orders tracked (60 resting entry
   buys and 40 exits each, over 20 symbols), judged in random account order:

   - ``full_path``: STANDARD accounts, entries that pass every rule (the
     worst case: all twelve rules run), through :meth:`Guard.check` — the
     account lock, the snapshot of book, ledger, balances and reservations,
     and the rules;
   - ``full_path_after_book_change``: the same, each decision right after one
     order of the account changed (the guard revalues only what changed);
   - ``micro_cap_blocked``: MICRO_CAP accounts whose entries a rule blocks;
   - ``decide_journaled``: :meth:`Guard.decide` then :meth:`Guard.release`
     with a SQLite store on disk: reservation, intent and decision journaled.

   Goal: ``full_path`` p99 <= 50 us.

2. ``breakers``: STANDARD accounts with 1,000 trades and equity points each, the
   same entries judged with the circuit breakers off and armed (``armed_over_off_p50``),
   and right after a new trade (the cached verdicts recomputed from the history).

3. ``create_order``: real ``ccxt.async_support.binance`` through
   :class:`~adapters.ccxt_adapter.CcxtExchange` against the Binance emulator
   on loopback, market buys, alternating guarded (GuardedExchange, SQLite
   store on disk) and unguarded calls. ``guard_share`` = median time inside
   the guard (decide + confirm, journaling included) / median guarded call.
   Goal: < 5%. The store's share is reported apart: two SQLite transactions
   per order (the intent and the decision before send; the order into the
   book and the intent resolved after the answer).

    python bench/guard.py [--accounts 1000] [--orders 100] [--decisions 20000]
                          [--create-orders 300] [--breaker-accounts 100]
                          [--breaker-trades 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from nija_broker.core.breakers import BREAKERS
from nija_broker.core.clock import SystemClock
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.intent import OrderIntent
from nija_broker.core.models import Balance, Market, Order, OrderRole, OrderType, Side, TradeRecord
from nija_broker.core.tiers import DEFAULT_TIERS, TierTable
from nija_broker.guard.guard import Guard
from nija_broker.guard.guarded import GuardedExchange
from nija_broker.state.books import Books
from nija_broker.state.store import Store

GOAL_P99_US = 50.0
GOAL_SHARE = 0.05
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SYMBOLS = tuple(f"C{i:02d}/USD" for i in range(20))


def percentiles_us(samples_s: list[float]) -> dict[str, float]:
    us = sorted(s * 1e6 for s in samples_s)
    q = statistics.quantiles(us, n=100, method="inclusive")
    return {"p50_us": round(q[49], 2), "p99_us": round(q[98], 2), "max_us": round(us[-1], 2)}


def live_view(account_id: str, table: TierTable, equity: float) -> AccountLive:
    live = AccountLive.create(account_id, table)
    live.tier.update(equity)
    live.health = AccountHealth(state=SyncState.OK, last_success=T0)
    live.equity_usd = equity
    live.balances = {
        "USD": Balance(currency="USD", free=equity, total=equity),
        "C00": Balance(currency="C00", free=1.0, total=1.0),
    }
    live.markets = {
        s: Market(symbol=s, base=s.split("/")[0], quote="USD", min_notional=1.0) for s in SYMBOLS
    }
    return live


def fill_book(books: Books, account_id: str, orders: int, rng: random.Random) -> None:
    tracker = books.get(account_id).orders
    for symbol in SYMBOLS:
        tracker.set_last_price(symbol, 10.0)
    for i in range(orders):
        entry = i % 5 < 3
        tracker.apply(
            Order(
                id=f"{account_id}-{i}",
                client_order_id=f"c-{i}",
                account_id=account_id,
                symbol=rng.choice(SYMBOLS),
                side=Side.BUY if entry else Side.SELL,
                role=OrderRole.ENTRY if entry else OrderRole.TARGET,
                type=OrderType.LIMIT,
                price=9.0 if entry else 11.0,
                amount=1.0,
                created_at=T0,
            )
        )


def time_calls(call: Callable[[int], Any], n: int) -> list[float]:
    samples = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        call(i)
        samples.append(clock() - start)
    return samples


def decision_bench(accounts: int, orders: int, decisions: int, tmp: Path) -> dict[str, Any]:
    table = TierTable(DEFAULT_TIERS)
    rng = random.Random(1)
    store = Store(tmp / "decisions.sqlite3")
    books = Books(None)
    live: dict[str, AccountLive] = {}
    build_start = time.perf_counter()
    for n in range(accounts):
        account_id = f"USER:{n:04d}"
        # Half STANDARD (every rule runs), half MICRO_CAP (blocked early).
        live[account_id] = live_view(account_id, table, 1e9 if n % 2 == 0 else 200.0)
        fill_book(books, account_id, orders, rng)
    build_s = time.perf_counter() - build_start
    guard = Guard(books, live, store=store)
    standard = [a for i, a in enumerate(live) if i % 2 == 0]
    micro = [a for i, a in enumerate(live) if i % 2 == 1]

    def intents(pool: list[str]) -> list[OrderIntent]:
        # C00 is occupied on every account (a position): a STANDARD entry there passes
        # every rule, DCA included.
        return [
            OrderIntent(account_id=rng.choice(pool), symbol="C00/USD", side="buy", size_usd=20.0)
            for _ in range(decisions)
        ]

    full = intents(standard)
    blocked = intents(micro)
    journaled = intents(standard)[: max(decisions // 10, 200)]
    for account_id in live:  # warm-up: every account judged once
        guard.check(OrderIntent(account_id=account_id, symbol="C00/USD", side="buy", size_usd=20.0))
    assert all(guard.check(i).allowed for i in full[:50])
    assert not any(guard.check(i).allowed for i in blocked[:50])

    # Each of these decisions follows a change to the account's book (an order of it
    # filled a little more), as in live trading where the previous order was confirmed.
    changed = intents(standard)[: max(decisions // 4, 500)]
    filled_step = 1e-6

    def after_change(i: int) -> float:
        tracker = books.get(changed[i].account_id).orders
        order = tracker.open_orders()[i % orders]
        tracker.apply(order.replace(filled=order.filled + filled_step, status="partially_filled"))
        start = time.perf_counter()
        guard.check(changed[i])
        return time.perf_counter() - start

    journaled_again = intents(standard)[: len(journaled)]

    def decide_release(i: int, pool: list[OrderIntent] = journaled) -> None:
        decision = guard.decide(pool[i])
        assert decision.allowed
        assert decision.reservation is not None
        guard.release(decision.reservation.id)

    # The decision itself runs on the owner's thread (every guard call is a job there):
    # timed there, it is the rules' cost; timed from this thread, the door's hop (a
    # thread hand-off each way) is included, as a bot thread pays it.
    on_owner = books.owner.call
    result = {
        "accounts": accounts,
        "open_orders_per_account": orders,
        "orders_tracked": accounts * orders,
        "build_s": round(build_s, 2),
        "full_path": percentiles_us(
            on_owner(time_calls, lambda i: guard.check(full[i]), len(full))
        ),
        "full_path_from_a_thread_door_included": percentiles_us(
            time_calls(lambda i: guard.check(full[i]), len(full))
        ),
        "full_path_after_book_change": percentiles_us(
            on_owner(lambda: [after_change(i) for i in range(len(changed))])
        ),
        "micro_cap_blocked": percentiles_us(
            on_owner(time_calls, lambda i: guard.check(blocked[i]), len(blocked))
        ),
        "decide_journaled": percentiles_us(on_owner(time_calls, decide_release, len(journaled))),
        "decide_journaled_from_a_thread_door_included": percentiles_us(
            time_calls(lambda i: decide_release(i, journaled_again), len(journaled))
        ),
    }
    store.close()
    return result


def breakers_bench(accounts: int, trades: int, decisions: int) -> dict[str, Any]:
    """The circuit breakers' cost: the same entries judged with the breakers off and armed.

    Every account has ``trades`` round trips and as many equity points (a full history), so
    a breaker recomputation reads all of them. ``armed_after_new_trade``: each decision right
    after a new trade on its account (the cached verdicts are recomputed).
    """
    armed = tuple(
        t.model_copy(update={"breakers": BREAKERS}) if t.name == "STANDARD" else t
        for t in DEFAULT_TIERS
    )
    rng = random.Random(2)
    books = Books(None)
    lives: dict[str, dict[str, AccountLive]] = {"off": {}, "armed": {}}
    for n in range(accounts):
        account_id = f"USER:{n:04d}"
        for name, tiers in (("off", DEFAULT_TIERS), ("armed", armed)):
            lives[name][account_id] = live_view(account_id, TierTable(tiers), 1e9)
        book = books.get(account_id)
        fill_book(books, account_id, 20, rng)
        for i in range(trades):
            at = T0 + timedelta(minutes=i)
            net = rng.uniform(0.1, 1.0)  # winning trades: no breaker trips, all are judged
            book.record_trade(
                TradeRecord(
                    trade_id=f"{account_id}-T{i}",
                    account_id=account_id,
                    symbol="C01/USD",
                    side="buy",
                    entry_price=10.0,
                    exit_price=10.0 + net,
                    quantity=1.0,
                    pnl=net,
                    entry_time=at,
                    exit_time=at,
                )
            )
            book.update_equity(1e9 + i, at)
    guards = {name: Guard(books, live) for name, live in lives.items()}
    pool = list(lives["off"])
    intents = [
        OrderIntent(account_id=rng.choice(pool), symbol="C00/USD", side="buy", size_usd=20.0)
        for _ in range(decisions)
    ]
    for guard in guards.values():
        for account_id in pool:  # warm-up
            guard.check(
                OrderIntent(account_id=account_id, symbol="C00/USD", side="buy", size_usd=20.0)
            )
        assert all(guard.check(i).allowed for i in intents[:50])
    result: dict[str, Any] = {"accounts": accounts, "trades_and_equity_points": trades}
    # Timed on the owner's thread, where every guard call runs: the breakers' own cost.
    for name, guard in guards.items():
        result[name] = percentiles_us(
            books.owner.call(time_calls, lambda i, g=guard: g.check(intents[i]), len(intents))
        )
    armed_guard = guards["armed"]
    after = intents[: max(decisions // 20, 200)]

    def after_trade(i: int) -> float:
        intent = after[i]
        at = T0 + timedelta(minutes=trades + i)
        books.get(intent.account_id).record_trade(
            TradeRecord(
                trade_id=f"{intent.account_id}-N{i}",
                account_id=intent.account_id,
                symbol="C01/USD",
                side="buy",
                entry_price=10.0,
                exit_price=10.5,
                quantity=1.0,
                pnl=0.5,
                entry_time=at,
                exit_time=at,
            )
        )
        start = time.perf_counter()
        armed_guard.check(intent)
        return time.perf_counter() - start

    result["armed_after_new_trade"] = percentiles_us(
        books.owner.call(lambda: [after_trade(i) for i in range(len(after))])
    )
    result["armed_over_off_p50"] = round(result["armed"]["p50_us"] / result["off"]["p50_us"], 3)
    return result


def _timed(call: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    return timed


async def create_order_bench(iterations: int, tmp: Path) -> dict[str, Any]:
    btc = Market(
        symbol="BTC/USDT",
        base="BTC",
        quote="USDT",
        amount_step=0.00001,
        price_step=0.01,
        min_amount=0.00001,
        min_notional=5.0,
    )
    engine = SimEngine(seed=1, clock=SystemClock())
    engine.add_market(btc, 50_000.0)
    engine.open_account("BENCH", {"USDT": 10_000_000.0})
    keys = {"BENCH": ("bench-key", "bench-secret")}
    table = TierTable(DEFAULT_TIERS)
    live = AccountLive.create("BENCH", table, quote_currency="USDT")
    live.tier.update(10_000_000.0)
    live.health = AccountHealth(state=SyncState.OK, last_success=T0)
    live.equity_usd = 10_000_000.0
    live.markets = {"BTC/USDT": btc}
    store = Store(tmp / "orders.sqlite3")
    guard = Guard(Books(store), {"BENCH": live})
    in_guard: list[float] = []
    in_store: list[float] = []
    for target, names, sink in (
        (guard, ("decide", "confirm"), in_guard),
        (store, ("put_intent", "journal_decision", "set_intent_status", "apply"), in_store),
    ):
        for name in names:
            setattr(target, name, _timed(getattr(target, name), sink))

    async with EmulatorServer(engine, keys) as server:
        config = binance_ccxt_config(server.url, *keys["BENCH"])
        plain = CcxtExchange(
            ccxt.binance(config), account_id="BENCH", budget=RateBudget(1_000_000.0)
        )
        guarded = GuardedExchange(
            CcxtExchange(ccxt.binance(config), account_id="BENCH", budget=RateBudget(1_000_000.0)),
            guard,
        )
        try:
            await plain.load_markets()
            await guarded.load_markets()
            samples: dict[str, list[float]] = {"plain": [], "guarded": []}
            guard_per_call: list[float] = []
            store_per_call: list[float] = []
            # Market buys, as the live bot places them: each fills at once, so the book's
            # live orders stay few, as on a real account.
            request = OrderRequest(
                symbol="BTC/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.001
            )
            for i in range(iterations + 20):
                # What the reconciler does between orders: a new balance replaces the old.
                live.balances = {
                    "USDT": Balance(currency="USDT", free=5_000_000.0, total=5_000_000.0)
                }
                for name, exchange in (("plain", plain), ("guarded", guarded)):
                    in_guard.clear()
                    in_store.clear()
                    start = time.perf_counter()
                    await exchange.create_order(request)
                    elapsed = time.perf_counter() - start
                    if i >= 20:  # warm-up
                        samples[name].append(elapsed)
                        if name == "guarded":
                            guard_per_call.append(sum(in_guard))
                            store_per_call.append(sum(in_store))
        finally:
            await plain.aclose()
            await guarded.aclose()
    store.close()
    plain_ms = statistics.median(samples["plain"]) * 1e3
    guarded_ms = statistics.median(samples["guarded"]) * 1e3
    guard_ms = statistics.median(guard_per_call) * 1e3
    store_ms = statistics.median(store_per_call) * 1e3
    judging_ms = (
        statistics.median(g - st for g, st in zip(guard_per_call, store_per_call, strict=True))
        * 1e3
    )
    return {
        "iterations": iterations,
        "plain_median_ms": round(plain_ms, 3),
        "guarded_median_ms": round(guarded_ms, 3),
        "guard_median_ms": round(guard_ms, 3),
        "guard_share": round(guard_ms / guarded_ms, 4),
        "guard_store_writes_median_ms": round(store_ms, 3),
        "guard_without_store_writes_median_ms": round(judging_ms, 3),
        "guard_share_without_store_writes": round(judging_ms / guarded_ms, 4),
        "guarded_over_plain": round(guarded_ms / plain_ms - 1.0, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--create-orders", type=int, default=300)
    parser.add_argument("--breaker-accounts", type=int, default=100)
    parser.add_argument("--breaker-trades", type=int, default=1_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        decision = decision_bench(args.accounts, args.orders, args.decisions, tmp)
        breakers = breakers_bench(
            args.breaker_accounts, args.breaker_trades, max(args.decisions // 4, 1_000)
        )
        create = asyncio.run(create_order_bench(args.create_orders, tmp))
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "decision": decision,
        "breakers": breakers,
        "create_order": create,
        "goals": {
            "decision_p99_us": GOAL_P99_US,
            "decision_p99_met": decision["full_path"]["p99_us"] <= GOAL_P99_US,
            "guard_share": GOAL_SHARE,
            "guard_share_met": create["guard_share"] < GOAL_SHARE,
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
