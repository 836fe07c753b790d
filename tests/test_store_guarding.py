"""One process per store, and a store refused at start rather than half used.

A long-lived writer (``run``, ``demo``, an embedded broker) holds the store's
lock for its whole life; a second one on the same store exits at once with
exit code 2 and one line naming the store and the holder's pid, while the
first keeps serving and readers (``status`` reading the store) keep working.
A read-only, damaged, non-SQLite or foreign file is refused with one line and
exit code 2, and a run that fails its checks creates no store file. A book
whose store cannot be read back keeps its last good state and fails closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Blocked
from nija_broker.core.models import Market, Order
from nija_broker.demo.demo import run_demo
from nija_broker.state.books import Books
from nija_broker.state.store import AccountSnapshot, Store, StoreLock, StoreLocked

from ._guard_support import ALICE, T0, account_live, buy, make_guard, sell

KEY = "store-guarding-key-0001"
SECRET = "store-guarding-secret-0001"
ENV = {**os.environ, "NB_KEY": KEY, "NB_SECRET": SECRET}
HANG_GUARD_S = 60.0
"""Only against a hang: no test waits for time to pass."""


# --------------------------------------------------------------------------- helpers


def _config(
    tmp_path: Path,
    store: Path,
    *,
    exchange_url: str = "http://127.0.0.1:9",
    api_port: int = 0,
    name: str = "broker.toml",
) -> Path:
    ccxt_table = json.dumps(binance_ccxt_config(exchange_url)).replace('":', '" =')
    # TOML inline tables are close enough to JSON objects once ':' becomes '='.
    path = tmp_path / name
    path.write_text(
        f'[store]\npath = "{store}"\n[api]\nhost = "127.0.0.1"\nport = {api_port}\n'
        "[[accounts]]\nid = 'USER:alice'\nexchange = 'binance'\napi_key_env = 'NB_KEY'\n"
        "secret_env = 'NB_SECRET'\nquote_currency = 'USDT'\npoll_interval_s = 0.5\n"
        f"ccxt = {ccxt_table}\n"
    )
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nija_broker.service.cli", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=HANG_GUARD_S,
        check=False,
    )


def _seeded_store(path: Path, orders: int = 1) -> None:
    with Store(path) as store:
        book = Books(store).get(ALICE)
        for n in range(orders):
            book.apply_order(
                Order(
                    id=f"O-{n}",
                    account_id=ALICE,
                    symbol="BTC/USD",
                    side="buy",
                    price=100.0 + n,
                    amount=0.1,
                    created_at=T0,
                )
            )


def _damaged(path: Path) -> None:
    """A real store whose pages after the first are garbage."""
    _seeded_store(path, orders=300)
    data = bytearray(path.read_bytes())
    page_size = 4096
    data[page_size:] = b"\x5a" * (len(data) - page_size)
    path.write_bytes(bytes(data))


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"not an sqlite database, just bytes\n" * 200)


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.close()


def _read_only(path: Path) -> None:
    _seeded_store(path)
    path.chmod(0o444)


BAD_FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "read-only": (_read_only, "read-only"),
    "damaged": (_damaged, "damaged"),
    "not-sqlite": (_not_sqlite, "not an SQLite database"),
    "foreign": (_foreign, "not a nija_broker store"),
}


def _side_files(store: Path) -> list[str]:
    """SQLite's -wal/-shm/-journal and the lock file: none may be left by a refusal."""
    return sorted(
        p.name
        for p in store.parent.iterdir()
        if p.name != store.name and p.name.startswith(store.name)
    )


@pytest.fixture
def writable_again(tmp_path: Path) -> Iterator[None]:
    """Give write permission back so pytest can remove tmp_path."""
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


# --------------------------------------------------------------------------- the lock


def test_a_second_exclusive_store_is_refused_naming_the_holder_and_readers_still_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    with Store(path, exclusive=True) as writer:
        assert writer.exclusive
        # Taking the lock never waits: a held lock raises at once.
        with pytest.raises(StoreLocked, match=rf"{path}.*in use by pid {os.getpid()}") as held:
            Store(path, exclusive=True)
        assert held.value.holder_pid == os.getpid()
        assert isinstance(held.value, ConfigError)
        writer.save_orders(
            [
                Order(
                    id="O-1",
                    account_id=ALICE,
                    symbol="BTC/USD",
                    side="buy",
                    price=100.0,
                    amount=0.1,
                    created_at=T0,
                )
            ]
        )
        with Store(path) as reader:  # status / report: no writer lock
            assert [o.id for o in reader.orders(ALICE)] == ["O-1"]
    assert not writer.exclusive
    with Store(path, exclusive=True) as again:  # closing gave the lock up
        assert again.exclusive


_HOLDER = """
import sys, time
from nija_broker.state.store import StoreLock
lock = StoreLock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(3600)
"""


def test_a_lock_held_by_another_process_names_its_pid_and_dies_with_it(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=f"in use by pid {holder.pid}"):
            StoreLock.acquire(path)
        assert not path.exists()  # refused before anything was created
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
        holder.wait(HANG_GUARD_S)
        if holder.stdout is not None:
            holder.stdout.close()
    assert path.with_name(path.name + ".lock").exists()  # left by the killed holder
    with StoreLock.acquire(path) as lock:  # taken over: nothing to clean by hand
        assert lock.held
    assert not lock.held
    assert not lock.lock_path.exists()  # removed by its holder on release


def test_a_late_opener_of_a_released_lock_file_does_not_take_a_lock_nobody_sees(
    tmp_path: Path,
) -> None:
    import fcntl

    from nija_broker.state.store_lock import _is_at

    path = tmp_path / "state.sqlite3"
    first = StoreLock.acquire(path)
    late = os.open(first.lock_path, os.O_RDWR)  # opened just before the holder releases
    try:
        first.release()
        fcntl.flock(late, fcntl.LOCK_EX | fcntl.LOCK_NB)  # succeeds on the unlinked file...
        assert not _is_at(late, first.lock_path)  # ...which acquire() sees, and retries
        # The file at the path is a new one, so its lock is free while `late` holds the old.
        with StoreLock.acquire(path) as second:
            assert second.held
    finally:
        os.close(late)


# --------------------------------------------------------------------------- refused files


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.usefixtures("writable_again")
def test_a_bad_store_file_is_refused_with_one_line_and_left_untouched(
    tmp_path: Path, kind: str
) -> None:
    make, words = BAD_FILES[kind]
    path = tmp_path / "state.sqlite3"
    make(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as refused:
        Store(path, exclusive=True)
    message = str(refused.value)
    assert message.startswith(f"cannot use store {path}: ")
    assert words in message
    assert "\n" not in message
    assert path.read_bytes() == before  # not migrated into, not switched to WAL
    assert _side_files(path) == []


@pytest.mark.usefixtures("writable_again")
def test_a_store_in_a_read_only_directory_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    for path in (directory / "state.sqlite3", directory / "sub" / "state.sqlite3"):
        with pytest.raises(ConfigError, match=f"directory {directory} is read-only"):
            Store(path, exclusive=True)
    assert list(directory.iterdir()) == []


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.usefixtures("writable_again")
def test_run_refuses_a_bad_store_with_exit_2_and_one_line(tmp_path: Path, kind: str) -> None:
    make, words = BAD_FILES[kind]
    store = tmp_path / "state.sqlite3"
    make(store)
    before = store.read_bytes()
    result = _cli("run", "--config", str(_config(tmp_path, store)))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cannot use store {store}: ")
    assert words in line
    assert store.read_bytes() == before
    assert _side_files(store) == []


@pytest.mark.usefixtures("writable_again")
def test_a_run_that_fails_its_checks_creates_no_store_file(tmp_path: Path) -> None:
    store = tmp_path / "state.sqlite3"
    config = _config(tmp_path, store)
    no_secret = {k: v for k, v in ENV.items() if k != "NB_SECRET"}
    result = _cli("run", "--config", str(config), env=no_secret)
    assert result.returncode == 2, result.stderr
    assert "NB_SECRET" in result.stderr
    assert list(tmp_path.iterdir()) == [config]

    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o555)
    result = _cli("run", "--config", str(_config(tmp_path, directory / "state.sqlite3")))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"directory {directory} is read-only" in line
    assert list(directory.iterdir()) == []


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    engine = SimEngine(seed=3, clock=SystemClock())
    engine.add_market(
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
    )
    engine.open_account(ALICE, {"USDT": 100.0})
    async with EmulatorServer(engine, {ALICE: (KEY, SECRET)}) as server:
        yield server


def _get_json(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=HANG_GUARD_S) as response:
        return response.status, json.loads(response.read())


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_second_run_on_one_store_exits_2_naming_the_holder_while_the_first_serves(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    store = tmp_path / "state.sqlite3"
    config = _config(tmp_path, store, exchange_url=emulator.url)
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nija_broker.service.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    try:
        assert first.stdout is not None
        line = (await asyncio.wait_for(first.stdout.readline(), HANG_GUARD_S)).decode()
        assert "nija-broker running" in line, line
        url = line.split("API ")[1].split(";")[0]

        # The same configuration again: refused on the store, before its API would bind.
        second = await asyncio.to_thread(_cli, "run", "--config", str(config))
        assert second.returncode == 2, second.stderr
        (refusal,) = second.stderr.strip().splitlines()
        assert refusal.startswith(f"cannot use store {store}: ")
        assert f"in use by pid {first.pid}" in refusal
        assert first.returncode is None  # still running, still serving
        status, health = await asyncio.to_thread(_get_json, f"{url}/healthz")
        assert status == 200
        assert health["accounts"][ALICE]["state"] == "ok"

        # A reader of the store (status with no sidecar at its configured port) still works.
        reader = _config(tmp_path, store, api_port=9, name="reader.toml")
        shown = await asyncio.to_thread(_cli, "status", "--config", str(reader), "--json")
        assert shown.returncode == 0, shown.stderr
        assert [a["account_id"] for a in json.loads(shown.stdout)["accounts"]] == [ALICE]
    finally:
        if first.returncode is None:
            first.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(first.communicate(), HANG_GUARD_S)
    assert first.returncode == 0, err.decode()
    assert "nija-broker stopped" in out.decode()


def test_a_second_demo_on_the_same_store_exits_2_and_leaves_that_store_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    store = tmp_path / "demo.sqlite3"
    _seeded_store(store)
    before = store.read_bytes()
    stream = io.StringIO()
    with StoreLock.acquire(store):  # a demo (this process) is running on it
        assert run_demo(duration_s=10.0, out_dir=tmp_path, stream=stream) == 2
    (line,) = [t for t in stream.getvalue().splitlines() if "cannot use store" in t]
    assert f"cannot use store {store}: it is in use by pid {os.getpid()}" in line
    assert store.read_bytes() == before  # the running demo's store was not cleared


# --------------------------------------------------------------------------- the book


class _UnreadableStore(Store):
    unreadable = False

    def load_account(self, account_id: str, **bounds: Any) -> AccountSnapshot:
        if self.unreadable:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().load_account(account_id, **bounds)


@pytest.fixture
def unreadable(tmp_path: Path) -> Iterator[_UnreadableStore]:
    with _UnreadableStore(tmp_path / "state.sqlite3") as store:
        yield store


def test_a_book_reload_failure_keeps_the_last_good_state_and_blocks_micro_cap_entries(
    unreadable: _UnreadableStore,
) -> None:
    live: dict[str, AccountLive] = {ALICE: account_live()}  # $100: MICRO_CAP, synced
    guard = make_guard(unreadable, FakeClock(T0), live)
    book = guard.books.get(ALICE)
    book.apply_order(
        Order(
            id="O-1",
            account_id=ALICE,
            symbol="ETH/USD",
            side="buy",
            price=2_000.0,
            amount=0.002,
            created_at=T0,
        )
    )
    assert guard.check(buy("BTC/USD")).allowed

    unreadable.unreadable = True
    with pytest.raises(sqlite3.DatabaseError):
        book.reload()
    assert [o.id for o in book.orders.open_orders()] == ["O-1"]  # the last good state
    assert book.degraded_reason is not None
    assert "malformed" in book.degraded_reason
    decision = guard.check(buy("BTC/USD"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "sync_unknown"
    assert "malformed" in decision.reason
    assert guard.check(sell("ETH/USD", amount=0.001)).allowed  # exits are never blocked

    unreadable.unreadable = False
    book.reload()
    assert book.degraded_reason is None
    assert guard.check(buy("BTC/USD")).allowed
