"""Streams against polling: fill detection, REST requests, a drop; prints one JSON document.

Two processes per dialect (``--dialect binance|kraken|both``): the exchange
(``python -m bench._streams_proc``: the built-in emulator with its stream endpoints,
Binance's WebSocket API user data stream or Kraken's private v2 feeds, counting every
authenticated REST request per account with its wall time), and this one, which runs
the sidecar (:class:`~nija_broker.service.runtime.Broker`, the configuration a trader
writes, real ccxt and ccxt.pro over loopback, ``rate_budget = "off"``: the local
exchange enforces no limit) and measures it from outside: the book's events, the
guard's answers, the emulator's counts. Every poll, balance and listing interval is the
configuration's default unless named here.

- **Fill detection, stream up** (``poll_interval_s = 30``, ``stream = true``, the
  default ``stream_poll_interval_s`` of 30 s): ``--fills`` fills (100), half of them
  resting limit orders placed straight in the engine (as the live bot does through its
  own SDK), adopted by the sidecar, then filled by moving the price in the emulator's
  process, half external market buys on a symbol the account holds nothing of. Each
  fill's delay runs from the engine's fill time to the moment the sidecar's bus tells
  the fill booked (``FillsBooked`` with its trade id); for a market buy also to the
  first guard check (``guard.check``, polled every ``--guard-poll-ms``) that answers
  ``dca`` for that symbol (MICRO_CAP, pinned: no averaging). ``known`` is a resting
  fill's booking and a market buy's later of booking and ``dca``. p50/p95/max, wall time.
- **Reference: polling** (the same fills, ``stream = false``, ``poll_interval_s = 5``:
  what polling gives today). Fills start at random moments (the pause before a price
  move is uniform over one poll interval) and run in ``--lanes`` lanes at once, each
  lane its own symbol, so the run takes about a minute and a half rather than ten: a
  fill's delay is its poll's phase, whatever the other lanes do. A market buy the poll
  never lists is booked by the closed-orders sweep, on the 60 s balance cadence; the
  guard knows it sooner from the balance a MICRO_CAP account reads each cycle.
- **Private REST requests per account per minute, idle** (nothing happens on the
  account but one resting order): counted at the emulator (its per-account counter of
  authenticated requests, every endpoint, with each request's wall time; Binance's
  stream subscription is a WebSocket request, not counted; Kraken's
  GetWebSocketsToken is, once a connection, before the period) over one whole balance
  period after start-up (from the cycle that swept closed orders at start-up, or the
  stream's full poll, to the next cycle that swept: the balance, its tickers and the
  sweep come once a period, the listings at the poll's interval), as a rate a minute,
  for a STANDARD and a MICRO_CAP account (a MICRO_CAP poller also reads its balance each
  cycle), streaming at ``poll_interval_s = 30`` against ``stream = false`` at 5 s.
  These run beside the polling reference, on other accounts (``--idle-s``: the longest
  wait for that period, 150 s).
- **A stream drop**: ``--drops`` times (5), the emulator ends the account's streams
  (``close_streams``); from the emulator's wall time of that call: the sidecar's health
  leaving ``up``, the first open-orders listing after it (the poller at full rate), the
  subscription again at the emulator, the health ``up`` again (after
  ``stream_settle_s``, 1 s), and the full poll that follows (its first listing).

CPU time (``time.process_time`` of this process, which runs the sidecar and the
driver; the emulator's from ``/proc``) and wall time (``time.perf_counter``, and the
system clock ``time.time`` both processes read for delays across them) are named as
such. Ratios are stream over polling, in the same run.

    python bench/streams.py [--dialect both] [--fills 100] [--drops 5] [--lanes 20]
                            [--guard-poll-ms 2] [--work DIR]

A default run takes about four and a half minutes (two dialects, 2 cores). The emulator
is ended by its pid on any way out; the JSON is printed even then, with ``errors``, and
the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python bench/streams.py``: the repository on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _fleet_proc as fp
from bench import _streams_proc as sp
from bench.fleet import source
from nija_broker.core.events import FillsBooked, OrderEvent
from nija_broker.core.intent import OrderIntent
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker

STREAM, POLL = "USER:stream", "USER:poll"
IDLE = {
    "stream_up_standard": "USER:idle_stream",
    "poll_5s_standard": "USER:idle_poll",
    "stream_up_micro": "USER:idle_stream_micro",
    "poll_5s_micro": "USER:idle_poll_micro",
}
STREAM_POLL_S = 30.0
REFERENCE_POLL_S = 5.0
REFERENCE_GUARD_POLL_S = 0.05
"""The polling reference's guard checks: 25 market buys wait seconds at once."""
RESTING_AMOUNT = 0.1  # of a lane market at 100: about 10 of quote
MARKET_BUY_AMOUNT = 3.0  # of a market-buy market at 2: about 6 of quote
DCA_INTENT_USD = 6.0
GOAL_P95_S = 0.3
GOAL_MAX_S = 0.5
GOAL_REST_PER_MIN = 4.0
WAIT_S = 180.0
"""The longest a fill may take to be seen before it counts as missed."""


# ---------------------------------------------------------------------------- figures


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def percentiles_ms(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1e3 for s in samples_s)
    if len(ms) < 2:
        return {"samples": len(ms), **({"max_ms": round(ms[0], 3)} if ms else {})}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "samples": len(ms),
        "p50_ms": round(q[49], 3),
        "p95_ms": round(q[94], 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _ratio(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> float | None:
    x, y = a.get(key), b.get(key)
    return (
        round(x / y, 4) if isinstance(x, int | float) and isinstance(y, int | float) and y else None
    )


# ---------------------------------------------------------------------------- the sidecar


def _quote(dialect: str) -> str:
    return sp.QUOTES[dialect]


def accounts_spec(dialect: str, lanes: int) -> list[dict[str, Any]]:
    """What the emulator opens: the two latency accounts (a resting order at half price on
    every lane, so a per-symbol listing keeps each lane's symbol in view) and the idle
    ones (one resting order each, on a market nothing moves)."""
    quote = _quote(dialect)
    idle_symbol = f"{sp.IDLE_BASE}/{quote}"
    lane_symbols = [f"{sp.lane_base(k)}/{quote}" for k in range(lanes)]
    spec = [
        {"id": account, "balances": {quote: 1_500.0}, "resting": lane_symbols}
        for account in (STREAM, POLL)
    ]
    for name, account in IDLE.items():
        funds = 400.0 if name.endswith("micro") else 2_000.0
        spec.append({"id": account, "balances": {quote: funds}, "resting": [idle_symbol]})
    return spec


def sidecar_config(
    emulator: sp.StreamsEmulator, work: Path, tag: str, accounts: Mapping[str, dict[str, Any]]
) -> tuple[Any, dict[str, str]]:
    """A configuration of ``accounts`` (id -> the account's own keys: stream, tier, poll
    interval) on ``emulator``, and the environment holding their API keys."""
    table = fp.ccxt_table(emulator.dialect, emulator.url)
    environ: dict[str, str] = {}
    rows = []
    for n, (account_id, extra) in enumerate(accounts.items()):
        key_env, secret_env = fp.KEY_ENV.format(n=n), fp.SECRET_ENV.format(n=n)
        environ[key_env], environ[secret_env] = emulator.keys[account_id]
        rows.append(
            {
                "id": account_id,
                "exchange": emulator.dialect,
                "api_key_env": key_env,
                "secret_env": secret_env,
                "quote_currency": _quote(emulator.dialect),
                "rate_budget": fp.RATE_BUDGET_OFF,
                "ccxt": table,
                **extra,
            }
        )
    config = parse_config(
        {
            "store": {"path": str(work / f"streams-{emulator.dialect}-{tag}.sqlite3")},
            "api": {"host": "127.0.0.1", "port": 0},
            "accounts": rows,
        }
    )
    return config, environ


def _micro(stream: bool, poll_s: float) -> dict[str, Any]:
    return {"tier": "MICRO_CAP", "stream": stream, "poll_interval_s": poll_s}


async def _until(predicate: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling state the sidecar's tasks own
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise TimeoutError(f"not within {timeout_s:g} s: {what}") from None


def _stream_state(broker: Broker, account: str) -> str | None:
    stream = broker.live[account].stream
    return stream.state if stream is not None else None


def _streams(broker: Broker, account: str) -> bool:
    """Whether the account's configuration asks for a stream (its health may not say yet)."""
    return next(a.stream for a in broker.config.accounts if a.id == account)


async def settled(broker: Broker, account: str) -> None:
    """The account synced; a streaming one's stream up and the full poll it asked for done."""
    assert broker.reconciler is not None
    sync = broker.reconciler._accounts[account]
    await _until(lambda: sync.started, f"{account} synced")
    if not _streams(broker, account):
        return
    await _until(lambda: _stream_state(broker, account) == "up", f"{account}'s stream up")
    await _until(lambda: not sync.wake.is_set(), f"{account}'s full poll after the stream")
    async with sync.turn:  # the poll the stream asked for is over
        pass


class Seen:
    """What the sidecar's bus said, when (wall time): orders by id, fills by trade id."""

    def __init__(self) -> None:
        self.orders: dict[str, float] = {}
        self.fills: dict[str, float] = {}
        self._waiters: dict[tuple[str, str], list[asyncio.Future[float]]] = {}

    async def collect(self, events: Any) -> None:
        async for event in events:
            now = time.time()
            if isinstance(event, FillsBooked):
                for fill in event.fills:
                    if fill.trade_id is not None:
                        self._note("fill", self.fills, fill.trade_id, now)
            elif isinstance(event, OrderEvent):
                self._note("order", self.orders, event.order.id, now)

    def _note(self, kind: str, where: dict[str, float], key: str, now: float) -> None:
        if key in where:
            return
        where[key] = now
        for waiter in self._waiters.pop((kind, key), []):
            if not waiter.done():
                waiter.set_result(now)

    async def wait(self, kind: str, key: str, timeout_s: float) -> float:
        where = self.fills if kind == "fill" else self.orders
        if key in where:
            return where[key]
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault((kind, key), []).append(waiter)
        async with asyncio.timeout(timeout_s):
            return await waiter


# ---------------------------------------------------------------------------- fills


@dataclass
class FillRun:
    """One run of fills on one account, and what each delay was (seconds)."""

    account: str
    resting: list[float] = field(default_factory=list)
    market_booked: list[float] = field(default_factory=list)
    market_dca: list[float] = field(default_factory=list)
    known: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


async def _resting_fill(
    emulator: sp.StreamsEmulator,
    seen: Seen,
    run: FillRun,
    symbol: str,
    buy: bool,
    pause_s: float,
) -> None:
    placed = await emulator.place(
        account=run.account,
        symbol=symbol,
        side="buy" if buy else "sell",
        type="limit",
        amount=RESTING_AMOUNT,
        price=sp.LANE_PRICE - 1.0 if buy else sp.LANE_PRICE + 1.0,
    )
    order_id = placed["order_id"]
    await seen.wait("order", order_id, WAIT_S)  # the sidecar follows it: now it rests
    await asyncio.sleep(pause_s)
    moved = sp.LANE_PRICE - 1.5 if buy else sp.LANE_PRICE + 1.5
    fills = [f for f in await emulator.set_price(symbol, moved) if f["order_id"] == order_id]
    await emulator.set_price(symbol, sp.LANE_PRICE)
    if not fills:
        run.missed.append(f"{order_id}: did not fill")
        return
    for fill in fills:
        booked = await seen.wait("fill", fill["trade_id"], WAIT_S)
        run.resting.append(booked - fill["ts"])
        run.known.append(booked - fill["ts"])


async def _market_buy(
    emulator: sp.StreamsEmulator,
    broker: Broker,
    seen: Seen,
    run: FillRun,
    symbol: str,
    guard_poll_s: float,
) -> None:
    guard = broker.guard
    assert guard is not None
    intent = OrderIntent(account_id=run.account, symbol=symbol, side="buy", size_usd=DCA_INTENT_USD)
    before = await guard.acall(guard.check, intent)
    if getattr(before, "rule", None) == "dca":
        run.missed.append(f"{symbol}: dca before the buy")
        return
    placed = await emulator.place(
        account=run.account, symbol=symbol, side="buy", type="market", amount=MARKET_BUY_AMOUNT
    )
    (fill,) = placed["fills"]

    async def dca() -> float:
        async with asyncio.timeout(WAIT_S):
            while True:
                decision = await guard.acall(guard.check, intent)
                if getattr(decision, "rule", None) == "dca":
                    return time.time()
                await asyncio.sleep(guard_poll_s)

    booked, known_to_guard = await asyncio.gather(
        seen.wait("fill", fill["trade_id"], WAIT_S), dca()
    )
    run.market_booked.append(booked - fill["ts"])
    run.market_dca.append(known_to_guard - fill["ts"])
    run.known.append(max(booked, known_to_guard) - fill["ts"])


async def measure_fills(
    emulator: sp.StreamsEmulator,
    broker: Broker,
    seen: Seen,
    account: str,
    *,
    fills: int,
    lanes: int,
    spacing_s: tuple[float, float],
    pause_s: float,
    guard_poll_s: float,
    seed: int,
) -> dict[str, Any]:
    """``fills`` fills, resting and market buys in turn, each started ``spacing_s`` after
    the one before; resting fills take turns on ``lanes`` symbols."""
    rng = random.Random(seed)
    quote = _quote(emulator.dialect)
    run = FillRun(account)
    locks = [asyncio.Lock() for _ in range(lanes)]
    lane_fills = [0] * lanes
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    emulator_cpu = fp.cpu_s(emulator.pid)
    t_start = time.time()
    reconnects = _reconnects(broker, account)

    async def resting(k: int, pause: float) -> None:
        async with locks[k]:
            buy = lane_fills[k] % 2 == 0  # a buy, then the sell of what it bought
            lane_fills[k] += 1
            await _resting_fill(emulator, seen, run, f"{sp.lane_base(k)}/{quote}", buy, pause)

    async def one(fill: Coroutine[Any, Any, None], label: str) -> None:
        try:
            await fill
        except TimeoutError:
            run.missed.append(f"{label}: not seen within {WAIT_S:g} s")

    async with asyncio.TaskGroup() as group:
        for i in range(fills):
            if i % 2 == 0:
                lane = (i // 2) % lanes
                fill = resting(lane, rng.uniform(0.0, pause_s))
                group.create_task(one(fill, f"resting fill {i}"))
            else:
                symbol = f"{sp.market_buy_base(i // 2)}/{quote}"
                fill = _market_buy(emulator, broker, seen, run, symbol, guard_poll_s)
                group.create_task(one(fill, f"market buy {i}"))
            await asyncio.sleep(rng.uniform(*spacing_s))
    wall_s = time.perf_counter() - started_wall
    after = await emulator.requests(t_start)
    rows = after["requests"].get(account, [])
    private = sp.endpoint_counts(rows, t_start, math.inf)
    total = sum(private.values())
    return {
        "fills_asked": fills,
        "fills_measured": len(run.known),
        "missed": run.missed,
        "known_ms": percentiles_ms(run.known),
        "booked_ms": percentiles_ms(run.resting + run.market_booked),
        "resting_booked_ms": percentiles_ms(run.resting),
        "market_buy_booked_ms": percentiles_ms(run.market_booked),
        "market_buy_guard_dca_ms": percentiles_ms(run.market_dca),
        "guard_poll_ms": guard_poll_s * 1e3,
        "stream_reconnects_during_run": _reconnects(broker, account) - reconnects,
        "private_rest_requests_during_run": {"total": total, "by_endpoint": private},
        "wall_s": round(wall_s, 2),
        "cpu_s_this_process": round(time.process_time() - started_cpu, 2),
        "cpu_s_emulator": round(fp.cpu_s(emulator.pid) - emulator_cpu, 2),
    }


def _reconnects(broker: Broker, account: str) -> int:
    stream = broker.live[account].stream
    return stream.reconnects if stream is not None else 0


# ---------------------------------------------------------------------------- idle REST


def balance_period(
    rows: list[list[Any]], sweep: str, balance: str, after: float
) -> tuple[float, float] | None:
    """One whole balance period of an account's requests, or ``None``: from the start of
    the last cycle that swept closed orders at or before ``after`` to the start of the
    first that swept after it. A cycle that sweeps reads the balance first, then lists,
    then sweeps (one request a symbol on Binance): its start is its balance request."""
    sweeps = sorted(t for t, what in rows if what == sweep)
    balances = sorted(t for t, what in rows if what == balance)
    before = [t for t in sweeps if t <= after]
    later = [t for t in sweeps if t > after]
    if not before or not later:
        return None

    def cycle_start(sweep_at: float) -> float | None:
        read = [t for t in balances if t <= sweep_at]
        return read[-1] if read else None

    start, end = cycle_start(before[-1]), cycle_start(later[0])
    return (start, end) if start is not None and end is not None and end > start else None


async def measure_idle(
    emulator: sp.StreamsEmulator, broker: Broker, since: float, timeout_s: float
) -> dict[str, Any]:
    """Each idle account's authenticated REST requests over one whole balance period (the
    balance, its tickers and the closed-orders sweep come once a period; the listings at
    the account's poll interval), from the emulator's times, as a rate a minute."""
    settled_at = time.time()
    started_cpu = time.process_time()
    periods: dict[str, tuple[float, float] | None] = {}
    got: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(2.0)
        got = await emulator.requests(since)
        periods = {
            name: balance_period(
                got["requests"].get(account, []),
                emulator.sweep_endpoint,
                emulator.balance_endpoint,
                settled_at + 10.0,
            )
            for name, account in IDLE.items()
        }
        if all(p is not None for p in periods.values()):
            break
    figures: dict[str, Any] = {}
    for name, account in IDLE.items():
        rows = got.get("requests", {}).get(account, [])
        period = periods.get(name)
        stream = broker.live[account].stream
        entry: dict[str, Any] = {
            "account": account,
            "stream_state_at_end": stream.state if stream is not None else None,
            "stream_subscriptions": len(got.get("subscriptions", {}).get(account, [])),
            "requests_before_the_period": sp.endpoint_counts(
                rows, since, period[0] if period else math.inf
            ),
        }
        if period is not None:
            counts = sp.endpoint_counts(rows, *period)
            total = sum(counts.values())
            entry.update(
                period_wall_s=round(period[1] - period[0], 2),
                requests=total,
                per_min=round(total * 60.0 / (period[1] - period[0]), 2),
                by_endpoint=counts,
            )
        figures[name] = entry
    return {
        "counted_at": "the emulator: every authenticated REST request of the account "
        "(bench._fleet_exchange's per-account counter, with its wall time), every endpoint, "
        "over one whole balance period (balance_interval_s, 60 s with jitter) after the "
        "start-up sync and the stream's full poll; 'requests_before_the_period' are those "
        "of start-up (a stream's token and full poll among them)",
        **figures,
        "ratio_stream_over_poll_standard": _ratio(
            figures["stream_up_standard"], figures["poll_5s_standard"], "per_min"
        ),
        "ratio_stream_over_poll_micro": _ratio(
            figures["stream_up_micro"], figures["poll_5s_micro"], "per_min"
        ),
        "cpu_s_this_process_meanwhile": round(time.process_time() - started_cpu, 2),
    }


# ---------------------------------------------------------------------------- a drop


async def measure_drops(
    emulator: sp.StreamsEmulator, broker: Broker, account: str, drops: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    listing = emulator.listing_endpoint
    samples: list[dict[str, float | None]] = []
    for _ in range(drops):
        await settled(broker, account)
        await asyncio.sleep(rng.uniform(1.0, 3.0))  # a moment that is not a poll's
        closed_at = await emulator.close_streams(account)
        await _until(lambda: _stream_state(broker, account) != "up", "the stream down", 60.0)
        down_at = time.time()
        await _until(lambda: _stream_state(broker, account) == "up", "the stream up again")
        up_at = time.time()
        await settled(broker, account)
        await asyncio.sleep(0.2)  # the emulator has written its last request's time
        got = await emulator.requests(closed_at)
        rows = got["requests"].get(account, [])
        first_listing = sp.first_after(rows, closed_at, lambda what: what == listing)
        resubscribed = sp.first_after(
            got["subscriptions"].get(account, []), closed_at, lambda what: True
        )
        full_poll = sp.first_after(rows, up_at - 0.05, lambda what: what == listing)

        def since(t: float | None, closed_at: float = closed_at) -> float | None:
            return None if t is None else t - closed_at

        samples.append(
            {
                "to_health_down_s": since(down_at),
                "to_first_listing_s": since(first_listing),
                "to_resubscribed_s": since(resubscribed),
                "to_health_up_s": since(up_at),
                "to_full_poll_s": since(full_poll),
            }
        )
    figures: dict[str, Any] = {"drops": drops}
    for key in samples[0] if samples else ():
        values = [v for s in samples if (v := s[key]) is not None]
        figures[key.removesuffix("_s") + "_ms"] = percentiles_ms(values)
    figures["samples_s"] = [{k: _round(v) for k, v in s.items()} for s in samples]
    return figures


# ---------------------------------------------------------------------------- a dialect


async def run_dialect(args: argparse.Namespace, dialect: str, work: Path) -> dict[str, Any]:
    emulator = sp.StreamsEmulator(
        dialect,
        accounts_spec(dialect, args.lanes),
        work,
        lanes=args.lanes,
        market_buys=math.ceil(max(args.fills, args.reference_fills) / 2),
    )
    found: dict[str, Any] = {}
    try:
        found["reference_and_idle"] = await _phase_reference(args, emulator, work, found)
        found["stream"] = await _phase_stream(args, emulator, work, found)
    finally:
        found["emulator_exit"] = await emulator.aclose()
    return _summary(found)


async def _broker(config: Any, environ: dict[str, str]) -> Broker:
    broker = Broker(config, environ=environ, serve_api=False)
    await broker.start()
    return broker


async def _phase_reference(
    args: argparse.Namespace, emulator: sp.StreamsEmulator, work: Path, found: dict[str, Any]
) -> dict[str, Any]:
    """The polling reference on one account, the idle accounts beside it."""
    accounts: dict[str, dict[str, Any]] = {POLL: _micro(False, REFERENCE_POLL_S)}
    accounts[IDLE["stream_up_standard"]] = {"stream": True, "poll_interval_s": STREAM_POLL_S}
    accounts[IDLE["poll_5s_standard"]] = {"stream": False, "poll_interval_s": REFERENCE_POLL_S}
    accounts[IDLE["stream_up_micro"]] = _micro(True, STREAM_POLL_S)
    accounts[IDLE["poll_5s_micro"]] = _micro(False, REFERENCE_POLL_S)
    config, environ = sidecar_config(emulator, work, "reference", accounts)
    print(f"streams: {emulator.dialect}: polling reference and idle ...", file=sys.stderr)
    since = time.time()
    broker = await _broker(config, environ)
    seen = Seen()
    try:
        assert broker.reconciler is not None
        events = broker.reconciler.subscribe(maxsize=1_000_000)
        async with asyncio.TaskGroup() as group:
            collector = group.create_task(seen.collect(events), name="bench:events")
            for account in accounts:
                await settled(broker, account)
            idle = group.create_task(measure_idle(emulator, broker, since, args.idle_s))
            fills = await measure_fills(
                emulator,
                broker,
                seen,
                POLL,
                fills=args.reference_fills,
                lanes=args.lanes,
                spacing_s=(0.1, 0.4),
                pause_s=REFERENCE_POLL_S,
                guard_poll_s=REFERENCE_GUARD_POLL_S,
                seed=args.seed,
            )
            found["idle_rest"] = await idle
            events.close()
            await collector
    finally:
        await broker.aclose()
    return {"account": POLL, "poll_interval_s": REFERENCE_POLL_S, "stream": False, **fills}


async def _phase_stream(
    args: argparse.Namespace, emulator: sp.StreamsEmulator, work: Path, found: dict[str, Any]
) -> dict[str, Any]:
    accounts = {STREAM: _micro(True, STREAM_POLL_S)}
    config, environ = sidecar_config(emulator, work, "stream", accounts)
    print(f"streams: {emulator.dialect}: stream up, then drops ...", file=sys.stderr)
    broker = await _broker(config, environ)
    seen = Seen()
    try:
        assert broker.reconciler is not None
        events = broker.reconciler.subscribe(maxsize=1_000_000)
        async with asyncio.TaskGroup() as group:
            collector = group.create_task(seen.collect(events), name="bench:events")
            await settled(broker, STREAM)
            fills = await measure_fills(
                emulator,
                broker,
                seen,
                STREAM,
                fills=args.fills,
                lanes=args.lanes,
                spacing_s=(0.1, 0.3),
                pause_s=0.05,
                guard_poll_s=args.guard_poll_ms / 1e3,
                seed=args.seed + 1,
            )
            found["drop"] = await measure_drops(emulator, broker, STREAM, args.drops, args.seed + 2)
            events.close()
            await collector
    finally:
        await broker.aclose()
    return {
        "account": STREAM,
        "poll_interval_s": STREAM_POLL_S,
        "stream_poll_interval_s": STREAM_POLL_S,
        "stream": True,
        **fills,
    }


def _summary(found: dict[str, Any]) -> dict[str, Any]:
    stream, reference = found.get("stream", {}), found.get("reference_and_idle", {})
    ratios = {}
    for figure in ("known_ms", "booked_ms", "market_buy_guard_dca_ms"):
        for key in ("p50_ms", "p95_ms", "max_ms"):
            ratios[f"{figure.removesuffix('_ms')}_{key.removesuffix('_ms')}"] = _ratio(
                stream.get(figure, {}), reference.get(figure, {}), key
            )
    idle = found.get("idle_rest", {})
    known = stream.get("known_ms", {})
    stream_idle = [
        idle.get(k, {}).get("per_min") for k in ("stream_up_standard", "stream_up_micro")
    ]
    goals = {
        f"known_p95_le_{GOAL_P95_S * 1e3:g}_ms": _at_most(known.get("p95_ms"), GOAL_P95_S * 1e3),
        f"known_max_le_{GOAL_MAX_S * 1e3:g}_ms": _at_most(known.get("max_ms"), GOAL_MAX_S * 1e3),
        f"idle_rest_per_min_le_{GOAL_REST_PER_MIN:g}": all(
            _at_most(v, GOAL_REST_PER_MIN) for v in stream_idle
        )
        if all(v is not None for v in stream_idle)
        else None,
    }
    return {
        "fill_detection": {
            "stream_up": stream,
            "reference_polling": reference,
            "ratios_stream_over_polling": ratios,
        },
        "private_rest_per_account_per_min_idle": idle,
        "stream_drop": found.get("drop"),
        "goals": goals,
        "emulator_exit": found.get("emulator_exit"),
    }


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


# ---------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, root: Path) -> tuple[dict[str, Any], bool]:
    import ccxt

    started = time.perf_counter()
    started_cpu = time.process_time()
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    dialects = ("binance", "kraken") if args.dialect == "both" else (args.dialect,)
    results: dict[str, Any] = {}
    errors: list[str] = []
    for dialect in dialects:
        try:
            results[dialect] = await run_dialect(args, dialect, root)
        except asyncio.CancelledError:
            errors.append("interrupted: the figures below are those measured before it")
            break
        except Exception as exc:  # ccxt's, aiohttp's, ours: reported with what was measured
            errors.append(f"{dialect}: {type(exc).__name__}: {exc}")
            print(f"streams: {dialect} failed: {exc!r}", file=sys.stderr)
    document = {
        "benchmark": "streams",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "ccxt": ccxt.__version__,
        },
        "source": source(),
        "units": "delays are wall time between the engine's fill time (or the emulator's "
        "close_streams) and the sidecar's event, both read from the system clock "
        "(time.time) in their two processes; run lengths are wall time (time.perf_counter); "
        "CPU time is time.process_time of this process (the sidecar and the driver) or "
        "utime+stime of the emulator from /proc",
        "settings": {
            "fills": args.fills,
            "reference_fills": args.reference_fills,
            "lanes": args.lanes,
            "idle_s": args.idle_s,
            "drops": args.drops,
            "guard_poll_ms_stream": args.guard_poll_ms,
            "guard_poll_ms_reference": REFERENCE_GUARD_POLL_S * 1e3,
            "stream_account": {
                "stream": True,
                "poll_interval_s": STREAM_POLL_S,
                "stream_poll_interval_s": STREAM_POLL_S,
                "tier": "MICRO_CAP (pinned)",
            },
            "reference_account": {
                "stream": False,
                "poll_interval_s": REFERENCE_POLL_S,
                "tier": "MICRO_CAP (pinned)",
            },
            "rate_budget": fp.RATE_BUDGET_OFF,
            "other_intervals": "the configuration's defaults (balance_interval_s 60, "
            "full_listing_interval_s 300, stream_settle_s 1, stream_backoff_initial_s 1)",
        },
        "dialects": results,
        "errors": errors,
        "total_wall_s": round(time.perf_counter() - started, 1),
        "total_cpu_s_this_process": round(time.process_time() - started_cpu, 1),
    }
    return document, not errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/streams.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dialect", choices=("binance", "kraken", "both"), default="both")
    parser.add_argument("--fills", type=int, default=100, help="fills with the stream up")
    parser.add_argument(
        "--reference-fills", type=int, help="fills of the polling reference (default: --fills)"
    )
    parser.add_argument("--lanes", type=int, default=20, help="resting-fill symbols")
    parser.add_argument(
        "--idle-s", type=float, default=150.0, help="the longest wait for a balance period"
    )
    parser.add_argument("--drops", type=int, default=5)
    parser.add_argument("--guard-poll-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="ERROR", help="the sidecar's log level")
    parser.add_argument("--work", help="keep stores and logs in a new directory under this one")
    args = parser.parse_args(argv)
    if args.reference_fills is None:
        args.reference_fills = args.fills
    if args.fills < 2 or args.reference_fills < 2 or args.lanes < 1 or args.drops < 0:
        parser.error("--fills at least 2, --lanes at least 1, --drops at least 0")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    with contextlib.ExitStack() as stack:
        if args.work is not None:
            root = Path(args.work).resolve() / time.strftime("streams-%Y%m%d-%H%M%S")
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nija-streams-")))
        try:
            document, complete = asyncio.run(run(args, root))
        finally:
            fp.terminate_all()  # whatever happened, no child outlives the bench
    if args.work is not None:
        document["work_dir"] = str(root)
    print(json.dumps(document, indent=2))
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
