"""The processes of ``bench/fleet.py``: the emulator and the sidecar, and what /proc says of them.

- :class:`Emulator`: ``python -m bench._fleet_exchange`` in its own process, its
  URL, keys and per-account request counts;
- :class:`Sidecar`: ``python -m nija_broker run --config <tmp>/fleet.toml`` with
  a generated configuration and the emulator's made-up keys in its environment;
- :func:`cpu_s`, :func:`memory_kb`: a process's own CPU time (user + system,
  children excluded) and its RSS, read from ``/proc``.

Both children are ended by their pid (SIGTERM, then SIGKILL after a grace),
never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
_CLK_TCK = os.sysconf("SC_CLK_TCK")
KEY_ENV = "NIJA_FLEET_{n:04d}_KEY"
SECRET_ENV = "NIJA_FLEET_{n:04d}_SECRET"
RATE_BUDGET_OFF = "off"
# When the configuration refuses ``rate_budget``: ccxt's rateLimit (ms between requests),
# from which nija_broker derives the shared budget (1000 / rateLimit a second). 0.1 ms is
# 10,000 requests a second: the local emulator enforces no limit.
FALLBACK_RATE_LIMIT_MS = 0.1


# ---------------------------------------------------------------------------- /proc


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (every thread; waited-for children excluded)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLK_TCK


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Each live thread of ``pid`` and its CPU time so far in ns (``/proc/.../schedstat``,
    the scheduler's own clock: finer than :func:`cpu_s`'s ticks, but a thread that ends
    takes its time with it)."""
    found: dict[int, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        with (
            contextlib.suppress(OSError),
            open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f,
        ):
            found[int(task)] = int(f.read().split()[0])
    return found


def precise_cpu_s(before: dict[int, int], after: dict[int, int]) -> float | None:
    """CPU seconds between two :func:`thread_cpu_ns` readings; ``None`` when a thread ended
    in between (its time would be lost)."""
    if not set(before) <= set(after):
        return None
    return sum(after[t] - before.get(t, 0) for t in after) / 1e9


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of ``pid``, in KiB."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


_LIVE: list[subprocess.Popen[Any]] = []
"""Every child started here and not yet ended (:func:`terminate_all` ends them)."""


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc: subprocess.Popen[Any] = subprocess.Popen(argv, **kwargs)
    _LIVE.append(proc)
    return proc


def terminate(proc: subprocess.Popen[Any], wait_s: float = 15.0) -> int:
    """SIGTERM to this child (by its pid), SIGKILL if it has not ended after ``wait_s``."""
    with contextlib.suppress(ValueError):
        _LIVE.remove(proc)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def terminate_all() -> None:
    """End every child still running (on any way out of the bench)."""
    for proc in list(_LIVE):
        terminate(proc, wait_s=5.0)


# ---------------------------------------------------------------------------- the emulator


class Emulator:
    """``python -m bench._fleet_exchange`` with ``accounts`` x ``orders``; started at once."""

    def __init__(self, accounts: int, orders: int, dialect: str, work: Path) -> None:
        self.accounts = accounts
        self.orders = orders
        self.dialect = dialect
        keys_file = work / f"emulator-{dialect}-{accounts}x{orders}.keys.json"
        self._log = work / f"emulator-{dialect}-{accounts}x{orders}.log"
        argv = [
            sys.executable,
            "-m",
            "bench._fleet_exchange",
            "--accounts",
            str(accounts),
            "--orders",
            str(orders),
            "--dialect",
            dialect,
            "--keys-out",
            str(keys_file),
        ]
        with self._log.open("w", encoding="utf-8") as log:
            self.proc = spawn(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the emulator exited ({code}) before serving:\n{self.log_tail()}")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.control_url: str = hello["control_url"]
        self.open_orders_endpoint: str = hello["open_orders_endpoint"]
        self.engine_built_s: float = hello["engine_built_s"]
        raw = json.loads(keys_file.read_text(encoding="utf-8"))
        self.keys: dict[str, tuple[str, str]] = {a: (k[0], k[1]) for a, k in raw.items()}
        self.ids: list[str] = list(self.keys)

    def counts(self) -> dict[str, Any]:
        """The control port's ``/counts`` (blocking; a few ms even for 1,000 accounts)."""
        with urllib.request.urlopen(self.control_url + "/counts", timeout=30) as r:
            document: dict[str, Any] = json.loads(r.read())
            return document

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log.read_text(encoding="utf-8").splitlines()[-lines:])

    def close(self) -> int:
        return terminate(self.proc)


# ---------------------------------------------------------------------------- configuration


def toml_value(value: Any) -> str:
    """One TOML value (inline tables for mappings): JSON strings are TOML basic strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def rate_budget_accepted() -> tuple[bool, str | None]:
    """Whether this checkout's configuration takes ``rate_budget = "off"`` on an account;
    when it does not, the first line of what it said."""
    from nija_broker.core.errors import ConfigError
    from nija_broker.service.config import parse_config

    account = {"id": "PLATFORM", "exchange": "binance", "rate_budget": RATE_BUDGET_OFF}
    try:
        parse_config({"accounts": [account]}, "<fleet probe>")
    except ConfigError as exc:
        return False, str(exc).strip().splitlines()[0]
    return True, None


def ccxt_table(dialect: str, url: str) -> dict[str, Any]:
    from adapters.emulator import binance_ccxt_config, kraken_ccxt_config

    config = binance_ccxt_config(url) if dialect == "binance" else kraken_ccxt_config(url)
    return dict(config)


def write_config(
    work: Path,
    emulator: Emulator,
    ids: Sequence[str],
    *,
    api_port: int,
    poll_interval_s: float,
    balance_interval_s: float | None,
    rate_budget_off: bool,
    stream: bool = False,
) -> tuple[Path, dict[str, str]]:
    """``work/fleet.toml`` for ``ids`` on ``emulator``, and the environment with their keys."""
    table = ccxt_table(emulator.dialect, emulator.url)
    if not rate_budget_off:
        table["rateLimit"] = FALLBACK_RATE_LIMIT_MS
    quote = "USDT" if emulator.dialect == "binance" else "USD"
    lines = [
        "[store]",
        f"path = {toml_value(str(work / 'fleet.sqlite3'))}",
        "",
        "[api]",
        'host = "127.0.0.1"',
        f"port = {api_port}",
        "",
    ]
    environ: dict[str, str] = {}
    inline = toml_value(table)
    for n, account_id in enumerate(ids):
        key_env, secret_env = KEY_ENV.format(n=n), SECRET_ENV.format(n=n)
        environ[key_env], environ[secret_env] = emulator.keys[account_id]
        lines += [
            "[[accounts]]",
            f"id = {toml_value(account_id)}",
            f"exchange = {toml_value(emulator.dialect)}",
            f"api_key_env = {toml_value(key_env)}",
            f"secret_env = {toml_value(secret_env)}",
            f"quote_currency = {toml_value(quote)}",
            f"poll_interval_s = {float(poll_interval_s)!r}",
            f"stream = {toml_value(stream)}",
        ]
        if balance_interval_s is not None:
            lines.append(f"balance_interval_s = {float(balance_interval_s)!r}")
        if rate_budget_off:
            lines.append(f"rate_budget = {toml_value(RATE_BUDGET_OFF)}")
        lines += [f"ccxt = {inline}", ""]
    config = work / "fleet.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config, environ


# ---------------------------------------------------------------------------- the sidecar


class Sidecar:
    """``python -m nija_broker run --config ...``, its output in ``work/sidecar.log``."""

    def __init__(
        self,
        config: Path,
        environ: Mapping[str, str],
        api_port: int,
        work: Path,
        log_level: str,
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "nija_broker",
            "run",
            "--config",
            str(config),
            "--log-level",
            log_level,
        ]
        self.url = f"http://127.0.0.1:{api_port}"
        self.log_path = work / "sidecar.log"
        self._log: IO[str] = self.log_path.open("w", encoding="utf-8")
        self.started = time.perf_counter()
        self.proc = spawn(
            argv,
            cwd=work,
            env={**os.environ, **environ},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def exited_error(self) -> RuntimeError:
        return RuntimeError(
            f"the sidecar exited early with code {self.proc.returncode}; "
            f"the last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def close(self) -> int:
        try:
            return terminate(self.proc)
        finally:
            self._log.close()
