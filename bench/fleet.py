"""The sidecar at fleet scale: CPU, memory, start-up and guard latency; prints one JSON document.

Three processes, as a trader runs them: the exchange (``python -m
bench._fleet_exchange``: the built-in emulator, Binance's dialect by default,
serving N accounts with K resting orders each, placed straight in its engine
and never filling), the sidecar (``python -m nija_broker run --config
<tmp>/fleet.toml``, the configuration written here, the emulator's made-up keys
in its environment), and this process, which measures:

- **CPU per account-cycle**: the sidecar's CPU time (``utime + stime`` of
  ``/proc/<pid>/stat``, every thread, children excluded) over a steady window,
  divided by the account-cycles the *emulator* counted in that window (its
  open-orders requests, per account, a run of them under 0.3 s apart counted as
  one: the venue's count, not the sidecar's); the figures net of the process's
  idle rate use per-thread ``schedstat`` (ns) instead of ``stat``'s 10 ms ticks;
- **raw-endpoint CPU per listing** (the reference, measured in this run): a bare
  ``ccxt.async_support.binance`` on the same server calling the implicit
  endpoint ``privateGetOpenOrders()`` (signing, HTTP, JSON decoding; no
  parsing into orders) for one account with K orders, CPU time
  (``time.process_time``) over many calls, in this process while no sidecar runs;
- **share of one core**: the sidecar's CPU time / the window's wall time;
- **RSS per account, per tracked order**: ``VmRSS`` of the running sidecar
  (median of 1 s samples over its steady windows), differences between runs of
  this invocation: per account = (RSS at 1,000 x 20 - RSS at 10 x 20) / 990;
  per order = (RSS at 300 x 100 - RSS at 300 x 20) / (300 x 80);
- **start-up**: wall time from spawning the sidecar to its first ``GET
  /healthz`` answer, and to the first answer listing every account, none
  ``syncing`` or ``failed`` (accounts that stay failed for a minute end the run,
  with the sidecar's last log lines);
- **guard ``check`` over HTTP while it polls**: ``POST /v1/guard/check`` from one
  keep-alive aiohttp connection at ``--check-rate`` a second, for accounts in
  turn, in a window *after* the CPU window (so its own cost stays out of the CPU
  figures; that window's CPU is reported apart); wall-time latency p50/p99.

Scenarios (``--scenario``, comma-separated; default: all, about 6-8 minutes on
2 cores): ``idle`` (1 x 100, nothing polled: the process's own idle CPU rate),
``cycle`` (1 x 100 at a 1 s poll: CPU per account-cycle against the raw
reference, gross and net of the idle rate), ``orders300`` (300 x 100),
``baseline`` (10 x 20), ``fleet300`` (300 x 20 at 5 s: share of a core, guard
latency), ``fleet1000`` (1,000 x 20: start-up, RSS per account, guard latency),
``fleet300_stream`` (300 x 20 with ``stream = true``, the default: the same
figures with each account's stream up and polling at ``stream_poll_interval_s``).
Every other scenario sets ``stream = false``: the goals are of polling.
``--accounts/--orders/--poll-s/--window-s/--check-s`` override the selected
scenarios; ``--accounts`` or ``--orders`` without ``--scenario`` runs one
``custom`` scenario.

    python bench/fleet.py [--scenario NAMES] [--accounts N] [--orders K] [--poll-s S]
                          [--window-s S] [--check-s S] [--dialect binance|kraken]
                          [--work DIR] [--keep-going]

Every scenario's sidecar has its own store, configuration and log in a temporary
directory (kept under ``--work DIR``). Both children are ended on any way out
(an error, Ctrl-C, SIGTERM); the JSON is printed even then, with ``errors`` and
the figures measured so far, and the exit code is 1.

Accounts are configured with ``rate_budget = "off"`` when this checkout's
configuration takes that key; otherwise with ccxt's ``rateLimit`` at 0.1 ms
(nija_broker's shared budget is 1000 / rateLimit a second), and the JSON says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as ``python bench/fleet.py``: the repository on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _fleet_proc as fp

GOAL_CYCLE_OVER_RAW = 2.0
GOAL_CORE_SHARE_PCT = 10.0
GOAL_RSS_PER_ACCOUNT_KIB = 250.0
GOAL_RSS_PER_ORDER_B = 1024.0
GOAL_FIRST_ANSWER_S = 2.0
GOAL_ALL_SYNCED_S = 20.0
SAMPLE_EVERY_S = 1.0
STARTUP_LIMIT_S = 900.0
FAILED_GIVE_UP_S = 60.0
RAW_WARMUP = 30
PACE_S = 1.0  # the cycle scenario's poll_interval_s


@dataclass(frozen=True)
class Scenario:
    name: str
    accounts: int
    orders: int
    poll_s: float
    window_s: float
    """The CPU window (0: none)."""
    check_s: float = 0.0
    """The guard-check window after it (0: none)."""
    balance_s: float | None = None
    """``balance_interval_s`` (None: the default, 60 s)."""
    settle_s: float | None = None
    """Wait after all synced (None: one poll interval + 2 s)."""
    stream: bool = False
    """``stream`` of every account: off, the issue's figures are of polling."""
    purpose: str = ""

    def settle(self) -> float:
        return self.settle_s if self.settle_s is not None else self.poll_s + 2.0


PRESETS = {
    s.name: s
    for s in (
        Scenario(
            "idle",
            1,
            100,
            poll_s=3600.0,
            balance_s=3600.0,
            window_s=20.0,
            settle_s=3.0,
            purpose="the sidecar's CPU rate with nothing to poll (subtracted for 'net')",
        ),
        Scenario(
            "cycle",
            1,
            100,
            poll_s=1.0,
            window_s=60.0,
            purpose="CPU per account-cycle, 100 unchanged orders, against the raw call",
        ),
        Scenario(
            "orders300",
            300,
            100,
            poll_s=5.0,
            window_s=30.0,
            purpose="RSS per tracked order (against fleet300); CPU per cycle at 100 orders",
        ),
        Scenario(
            "baseline",
            10,
            20,
            poll_s=5.0,
            window_s=15.0,
            purpose="RSS with few accounts (against fleet1000)",
        ),
        Scenario(
            "fleet300",
            300,
            20,
            poll_s=5.0,
            window_s=60.0,
            check_s=30.0,
            purpose="share of one core at a 5 s poll; guard check while polling",
        ),
        Scenario(
            "fleet1000",
            1000,
            20,
            poll_s=5.0,
            window_s=60.0,
            check_s=30.0,
            purpose="start-up to first API answer and all synced; RSS per account",
        ),
        Scenario(
            "fleet300_stream",
            300,
            20,
            poll_s=5.0,
            window_s=60.0,
            check_s=30.0,
            stream=True,
            purpose="300 x 20 with the default stream = true: share of a core, RSS, check",
        ),
    )
}


# ---------------------------------------------------------------------------- helpers


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def percentiles_ms(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1e3 for s in samples_s)
    if len(ms) < 2:
        return {"samples": len(ms)}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "samples": len(ms),
        "p50_ms": round(q[49], 3),
        "p99_ms": round(q[98], 3),
        "max_ms": round(ms[-1], 3),
    }


def _diff_counts(before: dict[str, Any], after: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """Cycles and requests per account and endpoint between two ``/counts`` snapshots."""
    endpoint = after["open_orders_endpoint"]
    cycles: list[int] = []
    listings = 0
    by_endpoint: dict[str, int] = {}
    for account_id in ids:
        a = after["accounts"].get(account_id, {})
        b = before["accounts"].get(account_id, {})
        cycles.append(after["cycles"].get(account_id, 0) - before["cycles"].get(account_id, 0))
        for name, count in a.items():
            by_endpoint[name] = by_endpoint.get(name, 0) + count - b.get(name, 0)
            if name.startswith(endpoint):
                listings += count - b.get(name, 0)
    return {
        "account_cycles": sum(cycles),
        "open_orders_requests": listings,
        "accounts_polled": sum(1 for c in cycles if c > 0),
        "cycles_per_account_min": min(cycles) if cycles else 0,
        "cycles_per_account_max": max(cycles) if cycles else 0,
        "signed_requests_by_endpoint": dict(sorted(by_endpoint.items())),
        "emulator_cpu_s": round(after["process_cpu_s"] - before["process_cpu_s"], 3),
    }


class Samples:
    """``VmRSS`` of the sidecar every second, in the background, tagged by phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase = "settle"
        self.rss_kib: dict[str, list[int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                kib = fp.memory_kb(self.pid)["VmRSS"]
                self.rss_kib.setdefault(self.phase, []).append(kib)
            await asyncio.sleep(SAMPLE_EVERY_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def steady(self) -> list[int]:
        """Samples of the measuring windows (the settle wait's when there were none)."""
        picked = [v for k, vs in self.rss_kib.items() if k != "settle" for v in vs]
        return picked or self.rss_kib.get("settle", [])


async def _sleep_alive(sidecar: fp.Sidecar, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        if not sidecar.alive():
            raise sidecar.exited_error()
        await asyncio.sleep(min(left, 0.5))


# ---------------------------------------------------------------------------- raw reference


async def raw_reference(emulator: fp.Emulator, calls: int, *, paced: int = 0) -> dict[str, Any]:
    """CPU time per call of the bare implicit endpoint, and of ccxt's parsed listing.

    Also the bare calls of the sidecar's steady listing plan (on Binance one
    ``openOrders`` per symbol the orders rest on: 6 weight each, not 80), and, with
    ``paced`` > 0, both bare references once every ``PACE_S`` as the ``cycle``
    scenario polls, net of this process's idle CPU over as long a sleep: a call
    after a second of idling costs more than one in a tight loop (cold caches),
    and the sidecar's cycles are all of that kind.
    """
    import ccxt.async_support as ccxt_async

    account = emulator.ids[0]
    api_key, secret = emulator.keys[account]
    config = {**fp.ccxt_table(emulator.dialect, emulator.url), "apiKey": api_key, "secret": secret}
    exchange = getattr(ccxt_async, emulator.dialect)(config)
    market_ids: list[str] = []

    async def raw_once() -> int:
        if emulator.dialect == "binance":
            answer = await exchange.privateGetOpenOrders()
            return len(answer)
        answer = await exchange.privatePostOpenOrders()
        return len(answer["result"]["open"])

    async def plan_once() -> int:
        if emulator.dialect != "binance":  # one listing of every symbol is the plan
            return await raw_once()
        listed = 0
        for market_id in market_ids:
            listed += len(await exchange.privateGetOpenOrders({"symbol": market_id}))
        return listed

    async def parsed_once() -> int:
        return len(await exchange.fetch_open_orders())

    try:
        await exchange.load_markets()
        symbols = sorted({o["symbol"] for o in await exchange.fetch_open_orders()})
        market_ids = [exchange.market_id(symbol) for symbol in symbols]
        figures: dict[str, Any] = {
            "account": account,
            "orders": emulator.orders,
            "calls": calls,
            "plan_symbols": symbols if emulator.dialect == "binance" else None,
            "how": "time.process_time() and time.perf_counter() around `calls` sequential "
            "calls after a warm-up, this process only (the emulator is another process), "
            "no sidecar running",
        }
        bare = (("raw_endpoint", raw_once), ("raw_plan", plan_once))
        references = (*bare, ("ccxt_fetch_open_orders", parsed_once))
        for name, once in references:
            for _ in range(RAW_WARMUP):
                await once()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                got = await once()
                if got != emulator.orders:
                    raise RuntimeError(f"{name}: {got} orders listed, {emulator.orders} expected")
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            figures[name] = {
                "cpu_ms_per_call": round(cpu * 1e3 / calls, 4),
                "wall_ms_per_call": round(wall * 1e3 / calls, 4),
            }
        if paced > 0:
            cpu = time.process_time()
            await asyncio.sleep(paced * PACE_S)
            idle_s = time.process_time() - cpu
            figures["paced"] = {"every_s": PACE_S, "calls": paced, "idle_cpu_s": idle_s}
            for name, once in bare:
                cpu = time.process_time()
                for _ in range(paced):
                    await asyncio.sleep(PACE_S)
                    await once()
                spent = time.process_time() - cpu - idle_s
                figures[name]["paced_net_of_idle_cpu_ms_per_call"] = round(spent * 1e3 / paced, 4)
        figures["raw_endpoint"]["call"] = (
            "privateGetOpenOrders()" if emulator.dialect == "binance" else "privatePostOpenOrders()"
        )
        figures["raw_plan"]["call"] = (
            f"privateGetOpenOrders({{'symbol': id}}) for each of {market_ids}"
            if emulator.dialect == "binance"
            else figures["raw_endpoint"]["call"]
        )
        return figures
    finally:
        await exchange.close()


# ---------------------------------------------------------------------------- one sidecar run


async def wait_until_synced(
    session: aiohttp.ClientSession, sidecar: fp.Sidecar, accounts: int
) -> dict[str, Any]:
    """Wall time from the spawn to the first ``/healthz`` answer, and to the first answer
    listing every account synced: none ``syncing`` (never synced yet) or ``failed`` (its
    state unknown). Accounts failed for ``FAILED_GIVE_UP_S`` with none syncing end the run."""
    first: float | None = None
    stuck_since: float | None = None
    polls = 0
    while True:
        if not sidecar.alive():
            raise sidecar.exited_error()
        if time.perf_counter() - sidecar.started > STARTUP_LIMIT_S:
            raise RuntimeError(
                f"the sidecar did not sync its {accounts} accounts within {STARTUP_LIMIT_S:g} s; "
                f"its last lines:\n{sidecar.log_tail()}"
            )
        try:
            async with session.get(
                sidecar.url + "/healthz", timeout=aiohttp.ClientTimeout(total=10.0)
            ) as r:
                health = await r.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            await asyncio.sleep(0.05)
            continue
        now = time.perf_counter() - sidecar.started
        polls += 1
        if first is None:
            first = now
        states = [a["state"] for a in health.get("accounts", {}).values()]
        counted = {s: states.count(s) for s in sorted(set(states))}
        if len(states) == accounts and not {"syncing", "failed"} & set(states):
            return {
                "first_api_answer_s": round(first, 3),
                "all_synced_s": round(now, 3),
                "states_when_synced": counted,
                "healthz_polls": polls,
            }
        if "failed" in states and "syncing" not in states:
            stuck_since = now if stuck_since is None else stuck_since
            if now - stuck_since > FAILED_GIVE_UP_S:
                raise RuntimeError(
                    f"accounts failed and stayed failed for {FAILED_GIVE_UP_S:g} s after start-up "
                    f"(states {counted}); the sidecar's last lines:\n{sidecar.log_tail()}"
                )
        else:
            stuck_since = None
        await asyncio.sleep(0.2)


async def cpu_window(
    sidecar: fp.Sidecar, emulator: fp.Emulator, ids: list[str], seconds: float
) -> dict[str, Any]:
    before = await asyncio.to_thread(emulator.counts)
    cpu0, wall0 = fp.cpu_s(sidecar.pid), time.perf_counter()
    threads0 = fp.thread_cpu_ns(sidecar.pid)
    await _sleep_alive(sidecar, seconds)
    cpu1, wall1 = fp.cpu_s(sidecar.pid), time.perf_counter()
    threads1 = fp.thread_cpu_ns(sidecar.pid)
    after = await asyncio.to_thread(emulator.counts)
    cpu, wall = cpu1 - cpu0, wall1 - wall0
    precise = fp.precise_cpu_s(threads0, threads1)
    venue = _diff_counts(before, after, ids)
    cycles = venue["account_cycles"]
    return {
        "wall_s": round(wall, 3),
        "sidecar_cpu_s": round(cpu, 3),
        "sidecar_cpu_s_schedstat": _round(precise, 4),
        "sidecar_threads": len(threads1),
        "core_share_pct": round(100.0 * cpu / wall, 3),
        "cpu_ms_per_account_cycle": round(cpu * 1e3 / cycles, 4) if cycles else None,
        **venue,
    }


async def check_window(
    session: aiohttp.ClientSession,
    sidecar: fp.Sidecar,
    emulator: fp.Emulator,
    ids: list[str],
    seconds: float,
    rate: float,
) -> dict[str, Any]:
    symbol = "BTC-USDT" if emulator.dialect == "binance" else "BTC-USD"
    url = sidecar.url + "/v1/guard/check"
    latencies: list[float] = []
    allowed = 0
    before = await asyncio.to_thread(emulator.counts)
    cpu0 = fp.cpu_s(sidecar.pid)
    start = time.perf_counter()
    i = 0
    while (now := time.perf_counter()) - start < seconds:
        if not sidecar.alive():
            raise sidecar.exited_error()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
        body = {"account_id": ids[i % len(ids)], "symbol": symbol, "side": "buy", "size_usd": 20.0}
        sent = time.perf_counter()
        async with session.post(url, json=body) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"guard check answered {r.status}: {answer}")
        latencies.append(time.perf_counter() - sent)
        allowed += bool(answer.get("allowed"))
        i += 1
    wall = time.perf_counter() - start
    cpu = fp.cpu_s(sidecar.pid) - cpu0
    after = await asyncio.to_thread(emulator.counts)
    venue = _diff_counts(before, after, ids)
    return {
        "rate_per_s": rate,
        "latency_wall": percentiles_ms(latencies),
        "allowed_share": round(allowed / max(len(latencies), 1), 3),
        "window_wall_s": round(wall, 3),
        "sidecar_cpu_s": round(cpu, 3),
        "core_share_pct": round(100.0 * cpu / wall, 3),
        "account_cycles": venue["account_cycles"],
        "signed_requests_by_endpoint": venue["signed_requests_by_endpoint"],
    }


async def tracked_orders(session: aiohttp.ClientSession, sidecar: fp.Sidecar) -> dict[str, Any]:
    async with session.get(
        sidecar.url + "/v1/accounts", timeout=aiohttp.ClientTimeout(total=60.0)
    ) as r:
        document = await r.json()
    rows = document.get("accounts", [])
    tiers: dict[str, int] = {}
    for row in rows:
        tiers[str(row.get("tier"))] = tiers.get(str(row.get("tier")), 0) + 1
    return {
        "accounts": len(rows),
        "open_orders_tracked": sum(int(row.get("open_orders") or 0) for row in rows),
        "tiers": tiers,
    }


async def run_scenario(
    scenario: Scenario,
    emulator: fp.Emulator,
    root: Path,
    args: argparse.Namespace,
    rate_budget_off: bool,
) -> dict[str, Any]:
    work = root / scenario.name
    work.mkdir()
    ids = emulator.ids[: scenario.accounts]
    port = fp.free_port()
    config, environ = fp.write_config(
        work,
        emulator,
        ids,
        api_port=port,
        poll_interval_s=scenario.poll_s,
        balance_interval_s=scenario.balance_s,
        rate_budget_off=rate_budget_off,
        stream=scenario.stream,
    )
    load_before = os.getloadavg()[0]
    sidecar = fp.Sidecar(config, environ, port, work, args.log_level)
    samples = Samples(sidecar.pid)
    result: dict[str, Any] = {
        "accounts": scenario.accounts,
        "orders_per_account": scenario.orders,
        "poll_interval_s": scenario.poll_s,
        "balance_interval_s": scenario.balance_s if scenario.balance_s is not None else 60.0,
        "stream": scenario.stream,
        "purpose": scenario.purpose,
        "config_bytes": config.stat().st_size,
    }
    try:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            result["startup_wall"] = await wait_until_synced(session, sidecar, len(ids))
            result["cpu_s_to_all_synced"] = round(fp.cpu_s(sidecar.pid), 3)
            samples.start()
            await _sleep_alive(sidecar, scenario.settle())
            if scenario.window_s > 0:
                samples.phase = "cpu_window"
                result["steady"] = await cpu_window(sidecar, emulator, ids, scenario.window_s)
            if scenario.check_s > 0:
                samples.phase = "check_window"
                result["guard_check_while_polling"] = await check_window(
                    session, sidecar, emulator, ids, scenario.check_s, args.check_rate
                )
            samples.phase = "after"
            await samples.stop()
            memory = fp.memory_kb(sidecar.pid)
            steady_rss = samples.steady()
            result["rss_kib"] = {
                "median_steady": int(statistics.median(steady_rss)) if steady_rss else None,
                "min_steady": min(steady_rss, default=None),
                "max_steady": max(steady_rss, default=None),
                "samples": len(steady_rss),
                "peak_VmHWM": memory.get("VmHWM"),
            }
            result["tracked"] = await tracked_orders(session, sidecar)
    except BaseException:
        await samples.stop()
        raise
    finally:
        code = sidecar.close()
    result["sidecar_exit"] = code
    result["load_average_1m"] = {
        "before": round(load_before, 2),
        "after": round(os.getloadavg()[0], 2),
    }
    return result


# ---------------------------------------------------------------------------- the figures


def figure(
    value: float | None, unit: str, goal: str | None, ok: bool | None, how: str
) -> dict[str, Any]:
    return {"value": value, "unit": unit, "goal": goal, "within_goal": ok, "how": how}


def cycle_ratio(
    cycle_ms: float, reference_ms: float, unit: str, goal: str | None, how: str
) -> dict[str, Any]:
    """The figure of a cycle's CPU time over a reference's, judged against the goal if any."""
    ratio = cycle_ms / reference_ms
    return figure(round(ratio, 3), unit, goal, ratio <= GOAL_CYCLE_OVER_RAW if goal else None, how)


def derive(
    runs: dict[str, dict[str, Any]], raw: dict[int, dict[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The headline figures from whichever runs this invocation made."""
    figures: dict[str, Any] = {}
    missing: list[str] = []

    def steady(name: str) -> dict[str, Any] | None:
        run = runs.get(name)
        return run.get("steady") if run else None

    def rss(name: str) -> float | None:
        run = runs.get(name)
        return run["rss_kib"]["median_steady"] if run else None

    def precise(window: dict[str, Any]) -> float:
        """The window's CPU seconds, at the scheduler's resolution where it holds."""
        found = window.get("sidecar_cpu_s_schedstat")
        return float(found) if found is not None else float(window["sidecar_cpu_s"])

    idle_rate = None
    if (idle := steady("idle")) is not None:
        idle_rate = precise(idle) / idle["wall_s"]
        figures["idle_cpu_share_pct"] = figure(
            _round(100 * idle_rate, 4),
            "% of one core (CPU time / wall time)",
            None,
            None,
            "scenario idle: 1 account x 100 orders, poll and balance every 3600 s, "
            "sidecar CPU time over a window after its first sync (per-thread schedstat, "
            "ns resolution: /proc/<pid>/stat counts 10 ms ticks)",
        )

    for k, reference in sorted(raw.items()):
        figures[f"raw_endpoint_cpu_per_listing_{k}_orders_ms"] = figure(
            reference["raw_endpoint"]["cpu_ms_per_call"],
            "ms CPU time per call",
            None,
            None,
            f"reference: bare ccxt {reference['raw_endpoint']['call']} for one account with "
            f"{k} orders, time.process_time() over {reference['calls']} calls in this process",
        )
        figures[f"raw_plan_cpu_per_listing_{k}_orders_ms"] = figure(
            reference["raw_plan"]["cpu_ms_per_call"],
            "ms CPU time per set of calls",
            None,
            None,
            f"reference: bare ccxt {reference['raw_plan']['call']} (the sidecar's steady "
            f"listing plan), {reference['calls']} sets back to back in this process",
        )
        if (paced := reference["raw_plan"].get("paced_net_of_idle_cpu_ms_per_call")) is not None:
            figures[f"raw_plan_paced_cpu_per_listing_{k}_orders_ms"] = figure(
                paced,
                "ms CPU time per set of calls",
                None,
                None,
                f"reference: the same calls once every {PACE_S:g} s, "
                f"{reference['paced']['calls']} sets, minus this process's CPU over as long "
                "an idle sleep",
            )

    for name, run in runs.items():
        window = run.get("steady")
        if not window or not window.get("cpu_ms_per_account_cycle") or name == "idle":
            continue
        k = run["orders_per_account"]
        tag = f"{run['accounts']}x{k}_poll{run['poll_interval_s']:g}s" + stream_tag(run)
        per_cycle = window["cpu_ms_per_account_cycle"]
        others = (
            ", ".join(
                f"{n} {name}"
                for name, n in window["signed_requests_by_endpoint"].items()
                if n and "openOrders" not in name and "OpenOrders" not in name
            )
            or "none"
        )
        how = (
            f"scenario {name}: sidecar CPU time over a {window['wall_s']:g} s wall window "
            f"/ {window['account_cycles']} account-cycles counted by the emulator (an account's "
            "open-orders requests, a run of them under 0.3 s apart counted once); the "
            f"window's other requests ({others}) included in the CPU"
        )
        figures[f"cpu_per_account_cycle_{tag}_ms"] = figure(
            per_cycle, "ms CPU time per account-cycle", None, None, how
        )
        found = raw.get(k)
        if found is not None:
            raw_ms = found["raw_endpoint"]["cpu_ms_per_call"]
            goal = f"<= {GOAL_CYCLE_OVER_RAW:g}" if name == "cycle" else None
            figures[f"cpu_per_account_cycle_{tag}_over_raw"] = cycle_ratio(
                per_cycle,
                raw_ms,
                "ratio of CPU times (sidecar per account-cycle / raw call)",
                goal,
                f"cpu_per_account_cycle_{tag}_ms / raw_endpoint_cpu_per_listing_{k}_orders_ms",
            )
            if idle_rate is not None:
                net_s = precise(window) - idle_rate * window["wall_s"]
                net_ms = net_s * 1e3 / window["account_cycles"]
                figures[f"cpu_per_account_cycle_{tag}_net_of_idle_ms"] = figure(
                    round(net_ms, 4),
                    "ms CPU time per account-cycle",
                    None,
                    None,
                    "(the window's CPU time, per-thread schedstat, - the idle scenario's CPU "
                    "rate x the window's wall time: what the process spends with nothing to "
                    "poll) / the window's account-cycles",
                )
                figures[f"cpu_per_account_cycle_{tag}_net_of_idle_over_raw"] = cycle_ratio(
                    net_ms,
                    raw_ms,
                    "ratio of CPU times (sidecar per account-cycle, net of idle / raw call)",
                    goal,
                    f"cpu_per_account_cycle_{tag}_net_of_idle_ms / "
                    f"raw_endpoint_cpu_per_listing_{k}_orders_ms",
                )
                paced_plan = found["raw_plan"].get("paced_net_of_idle_cpu_ms_per_call")
                if paced_plan:
                    key = f"cpu_per_account_cycle_{tag}_net_of_idle_over_raw_plan_paced"
                    figures[key] = cycle_ratio(
                        net_ms,
                        paced_plan,
                        "ratio of CPU times (sidecar per account-cycle, net of idle / the "
                        "plan's bare calls, one set a second, net of idle)",
                        goal,
                        f"cpu_per_account_cycle_{tag}_net_of_idle_ms / "
                        f"raw_plan_paced_cpu_per_listing_{k}_orders_ms: the same calls the "
                        "sidecar's cycle makes, at the same cadence",
                    )
            figures[f"cpu_per_account_cycle_{tag}_over_raw_plan"] = cycle_ratio(
                per_cycle,
                found["raw_plan"]["cpu_ms_per_call"],
                "ratio of CPU times (sidecar per account-cycle / the plan's bare calls)",
                goal,
                f"cpu_per_account_cycle_{tag}_ms / raw_plan_cpu_per_listing_{k}_orders_ms",
            )
        share_goal = name == "fleet300"
        figures[f"core_share_{tag}_pct"] = figure(
            window["core_share_pct"],
            "% of one core (CPU time / wall time)",
            f"<= {GOAL_CORE_SHARE_PCT:g}" if share_goal else None,
            window["core_share_pct"] <= GOAL_CORE_SHARE_PCT if share_goal else None,
            f"scenario {name}: sidecar CPU time / wall time of the steady window "
            "(no guard calls in it)",
        )
    if "cycle" not in runs:
        missing.append("CPU per account-cycle against the raw call: scenario cycle")
    if "fleet300" not in runs:
        missing.append("share of one core at 300 x 20: scenario fleet300")

    base, big = runs.get("baseline"), runs.get("fleet1000")
    per_order_b = None
    small_k, large_k = runs.get("fleet300"), runs.get("orders300")
    if (
        small_k
        and large_k
        and small_k["accounts"] == large_k["accounts"]
        and large_k["orders_per_account"] > small_k["orders_per_account"]
    ):
        delta_orders = large_k["accounts"] * (
            large_k["orders_per_account"] - small_k["orders_per_account"]
        )
        delta_kib = (rss("orders300") or 0) - (rss("fleet300") or 0)
        per_order_b = delta_kib * 1024 / delta_orders
        figures["rss_per_tracked_order_B"] = figure(
            _round(per_order_b, 1),
            "bytes of RSS per tracked open order",
            f"<= {GOAL_RSS_PER_ORDER_B:g} (1 KB)",
            per_order_b <= GOAL_RSS_PER_ORDER_B,
            f"(median steady RSS of orders300, {large_k['accounts']} x "
            f"{large_k['orders_per_account']}, - that of fleet300, {small_k['accounts']} x "
            f"{small_k['orders_per_account']}) / {delta_orders} more orders",
        )
    else:
        missing.append("RSS per tracked order: scenarios fleet300 and orders300")
    if base and big and big["accounts"] > base["accounts"]:
        delta_accounts = big["accounts"] - base["accounts"]
        delta_kib = (rss("fleet1000") or 0) - (rss("baseline") or 0)
        per_account = delta_kib / delta_accounts
        k = big["orders_per_account"]
        figures["rss_per_account_KiB"] = figure(
            round(per_account, 1),
            f"KiB of RSS per account (its {k} orders included)",
            f"<= {GOAL_RSS_PER_ACCOUNT_KIB:g}",
            per_account <= GOAL_RSS_PER_ACCOUNT_KIB,
            f"(median steady RSS of fleet1000, {big['accounts']} x {k}, - that of baseline, "
            f"{base['accounts']} x {base['orders_per_account']}) / {delta_accounts} accounts",
        )
        if per_order_b is not None:
            net = per_account - k * per_order_b / 1024
            figures["rss_per_account_net_of_orders_KiB"] = figure(
                round(net, 1),
                "KiB of RSS per account, its orders left out",
                None,
                None,
                f"rss_per_account_KiB - {k} x rss_per_tracked_order_B / 1024",
            )
        if small_k and small_k["orders_per_account"] == k and big["accounts"] > small_k["accounts"]:
            slope = ((rss("fleet1000") or 0) - (rss("fleet300") or 0)) / (
                big["accounts"] - small_k["accounts"]
            )
            figures["rss_per_account_300_to_1000_KiB"] = figure(
                round(slope, 1),
                f"KiB of RSS per account (its {k} orders included)",
                None,
                None,
                "cross-check: (median steady RSS of fleet1000 - that of fleet300) / "
                f"{big['accounts'] - small_k['accounts']} accounts",
            )
    else:
        missing.append("RSS per account: scenarios baseline and fleet1000")

    for name, run in runs.items():
        startup = run["startup_wall"]
        tag = f"{run['accounts']}x{run['orders_per_account']}" + stream_tag(run)
        goals = name == "fleet1000"
        figures[f"startup_first_api_answer_{tag}_s"] = figure(
            startup["first_api_answer_s"],
            "s wall time from spawning the sidecar",
            f"<= {GOAL_FIRST_ANSWER_S:g}" if goals else None,
            startup["first_api_answer_s"] <= GOAL_FIRST_ANSWER_S if goals else None,
            f"scenario {name}: until GET /healthz first answers",
        )
        figures[f"startup_all_synced_{tag}_s"] = figure(
            startup["all_synced_s"],
            "s wall time from spawning the sidecar",
            f"<= {GOAL_ALL_SYNCED_S:g}" if goals else None,
            startup["all_synced_s"] <= GOAL_ALL_SYNCED_S if goals else None,
            f"scenario {name}: until GET /healthz lists every account, none 'syncing'",
        )
        checks = run.get("guard_check_while_polling")
        if checks and "p50_ms" in checks["latency_wall"]:
            for q in ("p50", "p99"):
                figures[f"guard_check_{q}_{tag}_polling_ms"] = figure(
                    checks["latency_wall"][f"{q}_ms"],
                    "ms wall time per POST /v1/guard/check",
                    None,
                    None,
                    f"scenario {name}: {checks['latency_wall']['samples']} checks at "
                    f"{checks['rate_per_s']:g}/s on one keep-alive connection, accounts in "
                    "turn, while every account polls",
                )
    if "fleet1000" not in runs:
        missing.append("start-up at 1,000 x 20: scenario fleet1000")
    return figures, missing


# ---------------------------------------------------------------------------- the run


def stream_tag(run: dict[str, Any]) -> str:
    """``_stream`` in a figure's name when its scenario's accounts stream."""
    return "_stream" if run.get("stream") else ""


def source() -> dict[str, Any]:
    """Which code ran: the checkout's path, its git commit and how many files differ from it."""
    import nija_broker

    found: dict[str, Any] = {"nija_broker": str(Path(nija_broker.__file__).parent)}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=fp.ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=fp.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return found
    return {**found, "git_head": head, "files_changed_since_head": len(changed)}


def selected(args: argparse.Namespace) -> list[Scenario]:
    overrides: dict[str, Any] = {}
    for field, value in (
        ("accounts", args.accounts),
        ("orders", args.orders),
        ("poll_s", args.poll_s),
        ("window_s", args.window_s),
        ("check_s", args.check_s),
    ):
        if value is not None:
            overrides[field] = value
    if args.scenario is None and (args.accounts is not None or args.orders is not None):
        custom = Scenario(
            "custom",
            accounts=args.accounts or 20,
            orders=args.orders if args.orders is not None else 20,
            poll_s=args.poll_s or 5.0,
            window_s=args.window_s if args.window_s is not None else 30.0,
            check_s=args.check_s if args.check_s is not None else 20.0,
            purpose="as given on the command line",
        )
        return [custom]
    names = list(PRESETS) if args.scenario is None else args.scenario.split(",")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown scenario {unknown}; known: {', '.join(PRESETS)}")
    # idle polls nothing by design: a poll interval given for the others leaves it alone.
    return [
        replace(PRESETS[n], **{k: v for k, v in overrides.items() if n != "idle" or k != "poll_s"})
        for n in names
    ]


def _groups(scenarios: list[Scenario]) -> Iterator[tuple[int, int, list[Scenario]]]:
    """One emulator per order count, as large as its largest scenario, in first-seen order."""
    by_orders: dict[int, list[Scenario]] = {}
    for s in scenarios:
        by_orders.setdefault(s.orders, []).append(s)
    for orders, group in by_orders.items():
        yield orders, max(s.accounts for s in group), group


async def _scenarios(
    args: argparse.Namespace,
    root: Path,
    accepted: bool,
    runs: dict[str, dict[str, Any]],
    raw: dict[int, dict[str, Any]],
    emulators: dict[str, Any],
    errors: list[str],
) -> None:
    """Every selected scenario, one emulator per order count; results land in the dicts
    as they come, so a failure or an interrupt still reports what was measured."""
    for orders, accounts, group in _groups(selected(args)):
        emulator = fp.Emulator(accounts, orders, args.dialect, root)
        tag = f"{accounts}x{orders}"
        emulators[tag] = {"engine_built_s": emulator.engine_built_s}
        try:
            if any(s.window_s > 0 for s in group) and args.raw_calls > 0:
                paced = args.raw_paced if any(s.name == "cycle" for s in group) else 0
                raw[orders] = await raw_reference(emulator, args.raw_calls, paced=paced)
            for scenario in group:
                print(f"fleet: {scenario.name} ...", file=sys.stderr, flush=True)
                try:
                    runs[scenario.name] = await run_scenario(
                        scenario, emulator, root, args, accepted
                    )
                except RuntimeError as exc:
                    if not args.keep_going:
                        raise
                    errors.append(f"{scenario.name}: {exc}")
                    print(f"fleet: {scenario.name} failed: {exc}", file=sys.stderr)
                if emulator.proc.poll() is not None:
                    raise RuntimeError(
                        f"the emulator exited ({emulator.proc.returncode}):\n" + emulator.log_tail()
                    )
        finally:
            emulators[tag]["exit"] = emulator.close()


async def run(args: argparse.Namespace, root: Path) -> tuple[dict[str, Any], bool]:
    """The JSON document, and whether every selected scenario ran."""
    import ccxt

    accepted, refusal = fp.rate_budget_accepted()
    runs: dict[str, dict[str, Any]] = {}
    raw: dict[int, dict[str, Any]] = {}
    emulators: dict[str, Any] = {}
    errors: list[str] = []
    started = time.perf_counter()
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM as Ctrl-C: the run stops where it is, both children end, the JSON says so.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    complete = True
    try:
        await _scenarios(args, root, accepted, runs, raw, emulators, errors)
    except asyncio.CancelledError:
        errors.append("interrupted: the figures below are those measured before it")
        complete = False
    except Exception as exc:  # ccxt's, aiohttp's, ours: reported with what was measured
        errors.append(f"{type(exc).__name__}: {exc}")
        print(f"fleet: failed: {exc}", file=sys.stderr)
        complete = False
    complete = complete and not errors
    figures, missing = derive(runs, raw)
    document = {
        "benchmark": "fleet",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "ccxt": ccxt.__version__,
        },
        "source": source(),
        "dialect": args.dialect,
        "rate_budget": {
            "requested": fp.RATE_BUDGET_OFF,
            "accepted": accepted,
            "used": 'rate_budget = "off" on every account'
            if accepted
            else f"refused by this checkout's configuration ({refusal}); fell back to ccxt "
            f"rateLimit = {fp.FALLBACK_RATE_LIMIT_MS} ms in [accounts.ccxt] "
            f"(a shared budget of {1000 / fp.FALLBACK_RATE_LIMIT_MS:g} requests a second, "
            "where the budget still derives from rateLimit)",
        },
        "sidecar_log_level": args.log_level,
        "units": "CPU time (utime+stime of the sidecar from /proc, or time.process_time of "
        "this process) and wall time (time.perf_counter) are named as such in every figure",
        "figures": figures,
        "not_measured_in_this_run": missing,
        "errors": errors,
        "raw_reference": {f"{k}_orders": v for k, v in raw.items()},
        "scenarios": runs,
        "emulators": emulators,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    return document, complete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/fleet.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", help=f"comma-separated, of: {', '.join(PRESETS)}")
    parser.add_argument("--accounts", type=int, help="accounts (override, or a custom run)")
    parser.add_argument("--orders", type=int, help="resting orders per account")
    parser.add_argument("--poll-s", type=float, help="poll_interval_s of every account")
    parser.add_argument("--window-s", type=float, help="CPU window, wall seconds")
    parser.add_argument("--check-s", type=float, help="guard-check window, wall seconds")
    parser.add_argument("--check-rate", type=float, default=25.0, help="checks a second")
    parser.add_argument("--raw-calls", type=int, default=400, help="calls timed for the raw ref")
    parser.add_argument(
        "--raw-paced", type=int, default=20, help="raw calls timed 1 s apart (cycle scenario)"
    )
    parser.add_argument("--dialect", choices=("binance", "kraken"), default="binance")
    parser.add_argument("--log-level", default="INFO", help="the sidecar's (default INFO)")
    parser.add_argument(
        "--work",
        help="keep configurations, stores and logs in a new directory under this one "
        "(default: a temporary directory, removed)",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="a failed scenario is reported, not fatal"
    )
    args = parser.parse_args(argv)
    if args.accounts is not None and args.accounts < 1:
        parser.error("--accounts must be at least 1")
    selected(args)  # an unknown scenario ends the run before anything starts
    with contextlib.ExitStack() as stack:
        if args.work is not None:
            root = Path(args.work).resolve() / time.strftime("fleet-%Y%m%d-%H%M%S")
            root.mkdir(parents=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="nija-fleet-")))
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
