"""HTTP guard latency of a real sidecar, idle and with many accounts polling; prints JSON.

Three processes, as a trader runs them: the built-in exchange emulator
(:class:`adapters.emulator.EmulatorServer`, Binance's dialect, serving
``--accounts`` accounts with ``--orders`` resting orders each, placed before the
sidecar starts), the sidecar (``python -m nija_broker run --config ...`` with a
generated TOML configuration and the emulator's made-up keys in its environment,
also written to ``keys.env``), and this process as the bot: one aiohttp
``ClientSession`` holding one keep-alive connection, calling in turn
``POST /v1/guard/check``, ``POST /v1/guard/reserve`` and ``POST /v1/guard/release``
for the same entry on ``PLATFORM``.

Two phases in one run:

- ``idle``: a sidecar with ``PLATFORM`` alone (its ``--orders`` orders);
- ``loaded``: a sidecar with every account polling every ``--poll-interval-s``,
  measured once every account has synced and a whole poll interval has passed.

For each: seconds from the process's start to its first ``/healthz`` answer and
to every account synced (none ``syncing``), and p50/p99/max of each call in
milliseconds, timed around the request and the read of its JSON answer.
``ratios`` are loaded / idle. Goals (issue 13): loaded p99 <= 1.5 x idle p99
for ``check`` and ``reserve``, idle ``check`` p99 <= 1 ms.

    python -m bench.api_load [--accounts 300] [--orders 20] [--samples 2000]
                             [--poll-interval-s 5] [--switch-interval-s S]

``--switch-interval-s`` is handed to ``nija-broker run`` (its own option); without
it the sidecar keeps its default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

GOAL_RATIO = 1.5
GOAL_IDLE_CHECK_P99_MS = 1.0
TOKEN_ENV = "NIJA_BENCH_API_TOKEN"
BENCH_TOKEN = "bench-token-made-up-for-this-run"
ACCOUNT = "PLATFORM"
ENTRY = {"account_id": ACCOUNT, "symbol": "BTC-USDT", "side": "buy", "size_usd": 20.0}
WARMUP = 100
STARTUP_LIMIT_S = 900.0

# (symbol, base, price, amount of a resting buy at half the price: just over $5 notional).
MARKETS = (
    ("BTC/USDT", "BTC", 60_000.0, 0.0002),
    ("ETH/USDT", "ETH", 3_000.0, 0.004),
    ("SOL/USDT", "SOL", 150.0, 0.08),
)


def account_ids(n: int) -> list[str]:
    """The bot's ids: one PLATFORM account, then USER accounts."""
    return [ACCOUNT] + [f"USER:u{i:04d}" for i in range(1, n)]


# ---------------------------------------------------------------------------- the emulator


async def _serve_emulator(accounts: int, orders: int) -> None:
    """This process as the exchange: print ``{"url", "keys"}`` on one line, serve until killed."""
    import secrets

    from adapters.base import OrderRequest
    from adapters.emulator import EmulatorServer
    from adapters.sim.engine import SimEngine
    from nija_broker.core.clock import SystemClock
    from nija_broker.core.models import Market, OrderType, Side

    engine = SimEngine(seed=1, clock=SystemClock())
    for symbol, base, price, _ in MARKETS:
        engine.add_market(
            Market(
                symbol=symbol,
                base=base,
                quote="USDT",
                amount_step=0.00001,
                price_step=0.01,
                min_amount=0.00001,
                min_notional=5.0,
            ),
            price,
        )
    keys: dict[str, tuple[str, str]] = {}
    for account_id in account_ids(accounts):
        engine.open_account(account_id, {"USDT": 25_000.0})
        keys[account_id] = ("bench-" + secrets.token_hex(12), secrets.token_hex(32))
        for i in range(orders):
            # Far below the price (which never moves here: no steps), so nothing fills and
            # every poll lists the same orders: the steady cost of polling, no more.
            symbol, _, price, amount = MARKETS[i % len(MARKETS)]
            engine.place_order(
                account_id,
                OrderRequest(
                    symbol=symbol,
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=amount,
                    price=round(price / 2 + i * 0.01, 2),
                ),
            )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with EmulatorServer(engine, keys, host="127.0.0.1", port=0) as server:
        print(json.dumps({"url": server.url, "keys": keys}), flush=True)
        await stop.wait()


class Emulator:
    """The emulator child process."""

    def __init__(self, accounts: int, orders: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.api_load",
                "--emulator-child",
                "--accounts",
                str(accounts),
                "--orders",
                str(orders),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator exited ({self.proc.wait()}) before serving")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.keys: dict[str, tuple[str, str]] = {a: tuple(k) for a, k in hello["keys"].items()}

    def close(self) -> None:
        _terminate(self.proc)


def _terminate(proc: subprocess.Popen[Any], wait_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


# ---------------------------------------------------------------------------- the sidecar


def _toml(value: Any) -> str:
    """One TOML value (inline tables for mappings): JSON strings are TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def write_config(
    out: Path, emulator: Emulator, ids: list[str], port: int, poll_interval_s: float
) -> tuple[Path, dict[str, str]]:
    """The configuration a trader would write for these accounts, and their keys' variables."""
    from adapters.emulator import binance_ccxt_config

    # ccxt's own limiter off (binance_ccxt_config) and a 1 ms rateLimit: nija_broker's shared
    # budget for the exchange derives from it, and the local emulator enforces no limit, so
    # the 300 accounts poll at their interval instead of queueing on Binance's 20 a second.
    ccxt_table = {**binance_ccxt_config(emulator.url), "rateLimit": 1}
    lines = [
        "tier_hysteresis_pct = 2.0",
        "",
        "[store]",
        f"path = {_toml(str(out / 'bench.sqlite3'))}",
        "",
        "[api]",
        'host = "127.0.0.1"',
        f"port = {port}",
        f"token_env = {_toml(TOKEN_ENV)}",
        "",
    ]
    environ = {TOKEN_ENV: BENCH_TOKEN}
    for n, account_id in enumerate(ids):
        key_env, secret_env = f"NIJA_BENCH_{n:04d}_KEY", f"NIJA_BENCH_{n:04d}_SECRET"
        environ[key_env], environ[secret_env] = emulator.keys[account_id]
        lines += [
            "[[accounts]]",
            f"id = {_toml(account_id)}",
            'exchange = "binance"',
            f"api_key_env = {_toml(key_env)}",
            f"secret_env = {_toml(secret_env)}",
            'quote_currency = "USDT"',
            f"poll_interval_s = {poll_interval_s!r}",
            f"ccxt = {_toml(ccxt_table)}",
            "",
        ]
    config = out / "bench.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    # The keys as a trader would export them; made up by the emulator for this run only.
    (out / "keys.env").write_text(
        "".join(f"export {k}={v}\n" for k, v in environ.items()), encoding="utf-8"
    )
    return config, environ


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sidecar:
    """``python -m nija_broker run`` in its own process, its log in ``out/sidecar.log``."""

    def __init__(
        self,
        config: Path,
        environ: Mapping[str, str],
        port: int,
        log: IO[str],
        switch_interval_s: float | None,
    ) -> None:
        argv = [sys.executable, "-m", "nija_broker", "run", "--config", str(config)]
        if switch_interval_s is not None:
            argv += ["--switch-interval-s", repr(switch_interval_s)]
        self.url = f"http://127.0.0.1:{port}"
        self._log = Path(log.name)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, env={**os.environ, **environ}, stdout=log, stderr=subprocess.STDOUT
        )

    def close(self) -> int:
        return _terminate(self.proc)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log.read_text(encoding="utf-8").splitlines()[-lines:])


# ---------------------------------------------------------------------------- measuring


def percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples_s)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": round(q[49], 3), "p99_ms": round(q[98], 3), "max_ms": round(ms[-1], 3)}


async def wait_until_synced(
    session: aiohttp.ClientSession, sidecar: Sidecar, accounts: int
) -> dict[str, Any]:
    """Seconds to the first ``/healthz`` answer and to no account ``syncing``; final states."""
    first: float | None = None
    while True:
        if sidecar.proc.poll() is not None:
            raise RuntimeError(
                f"the sidecar exited with {sidecar.proc.returncode}:\n" + sidecar.log_tail()
            )
        elapsed = time.perf_counter() - sidecar.started
        if elapsed > STARTUP_LIMIT_S:
            raise RuntimeError(f"the sidecar did not sync within {STARTUP_LIMIT_S:g}s")
        try:
            async with session.get(
                sidecar.url + "/healthz", timeout=aiohttp.ClientTimeout(total=5.0)
            ) as r:
                health = await r.json()
        except (aiohttp.ClientConnectionError, TimeoutError):
            await asyncio.sleep(0.01)
            continue
        now = time.perf_counter() - sidecar.started
        if first is None:
            first = now
        states = [a["state"] for a in health["accounts"].values()]
        if len(states) == accounts and "syncing" not in states:
            counted = {s: states.count(s) for s in sorted(set(states))}
            return {
                "first_healthz_s": round(first, 3),
                "all_synced_s": round(now, 3),
                "states": counted,
            }
        await asyncio.sleep(0.05)


async def _post(session: aiohttp.ClientSession, url: str, body: Mapping[str, Any]) -> Any:
    async with session.post(url, json=body) as r:
        answer = await r.json()
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}: {answer}")
        return answer


async def measure(
    session: aiohttp.ClientSession, url: str, samples: int, tag: str
) -> dict[str, Any]:
    """``check``, ``reserve`` and ``release`` in turn, ``samples`` times, timed one by one."""
    timings: dict[str, list[float]] = {"check": [], "reserve": [], "release": []}
    allowed = 0
    clock = time.perf_counter
    for i in range(WARMUP + samples):
        keep = i >= WARMUP
        start = clock()
        decision = await _post(session, url + "/v1/guard/check", ENTRY)
        mid = clock()
        held = await _post(
            session, url + "/v1/guard/reserve", {**ENTRY, "client_order_id": f"bench-{tag}-{i}"}
        )
        reserved = clock()
        if keep:
            timings["check"].append(mid - start)
            timings["reserve"].append(reserved - mid)
            allowed += bool(decision["allowed"])
        reservation = held.get("reservation_id")
        if reservation is not None:
            before = clock()
            await _post(session, url + "/v1/guard/release", {"reservation_id": reservation})
            if keep:
                timings["release"].append(clock() - before)
    result: dict[str, Any] = {name: percentiles_ms(t) for name, t in timings.items() if t}
    result["check_allowed_share"] = round(allowed / samples, 3)
    return result


async def phase(
    name: str,
    emulator: Emulator,
    accounts: int,
    samples: int,
    poll_interval_s: float,
    switch_interval_s: float | None,
    root: Path,
) -> dict[str, Any]:
    out = root / name
    out.mkdir()
    load_before = os.getloadavg()[0]
    port = free_port()
    config, environ = write_config(out, emulator, account_ids(accounts), port, poll_interval_s)
    with (out / "sidecar.log").open("w", encoding="utf-8") as log:
        sidecar = Sidecar(config, environ, port, log, switch_interval_s)
        try:
            headers = {"Authorization": f"Bearer {BENCH_TOKEN}"}
            # One connection, kept alive: what a bot's client holds.
            connector = aiohttp.TCPConnector(limit=1, force_close=False)
            async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
                started = await wait_until_synced(session, sidecar, accounts)
                # Every poller past its first interval: the steady polling load.
                await asyncio.sleep(poll_interval_s)
                timed = await measure(session, sidecar.url, samples, name)
        finally:
            code = sidecar.close()
    # The machine's 1-minute load average around the phase: on a shared machine, a phase
    # measured while others ran is not comparable to one measured alone.
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return {"accounts": accounts, **started, **timed, "load_average_1m": load, "sidecar_exit": code}


def _ratio(loaded: dict[str, Any], idle: dict[str, Any], call: str, key: str) -> float:
    ratio: float = loaded[call][key] / idle[call][key]
    return round(ratio, 2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    emulator = Emulator(args.accounts, args.orders)
    try:
        with tempfile.TemporaryDirectory(prefix="nija-api-load-") as tmp:
            root = Path(tmp)
            idle = await phase(
                "idle",
                emulator,
                1,
                args.samples,
                args.poll_interval_s,
                args.switch_interval_s,
                root,
            )
            loaded = await phase(
                "loaded",
                emulator,
                args.accounts,
                args.samples,
                args.poll_interval_s,
                args.switch_interval_s,
                root,
            )
    finally:
        emulator.close()
    ratios = {
        f"{call}_{key}": _ratio(loaded, idle, call, key)
        for call in ("check", "reserve", "release")
        for key in ("p50_ms", "p99_ms")
    }
    return {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "orders_per_account": args.orders,
        "samples": args.samples,
        "poll_interval_s": args.poll_interval_s,
        "switch_interval_s": args.switch_interval_s,
        "idle": idle,
        "loaded": loaded,
        "ratios_loaded_over_idle": ratios,
        "goals": {
            "loaded_p99_within_1_5x_idle": all(
                ratios[f"{call}_p99_ms"] <= GOAL_RATIO for call in ("check", "reserve")
            ),
            "idle_check_p99_within_1ms": idle["check"]["p99_ms"] <= GOAL_IDLE_CHECK_P99_MS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--orders", type=int, default=20, help="open orders per account")
    parser.add_argument("--samples", type=int, default=2000, help="calls of each kind")
    parser.add_argument("--poll-interval-s", type=float, default=5.0)
    parser.add_argument("--switch-interval-s", type=float, default=None)
    parser.add_argument("--emulator-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.emulator_child:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_emulator(args.accounts, args.orders))
        return 0
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
