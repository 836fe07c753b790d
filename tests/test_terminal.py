"""The terminal: the status table fits 100 columns with what a trader reads first, colour only
where it is wanted, and ``status --watch`` redraws until Ctrl-C (exit 0)."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market, Order
from nija_broker.service import cli
from nija_broker.service.status import AccountStatus, render_table
from nija_broker.service.terminal import (
    HOME_CLEAR,
    color_wanted,
    display_width,
    truncate,
    watch,
)
from nija_broker.state.books import Books
from nija_broker.state.records import DecisionRecord, PauseRecord
from nija_broker.state.store import Store

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
WIDTH = 100
FIRST_COLUMNS = ["ACCOUNT", "TIER", "EQUITY", "HELD%", "OPEN", "POS", "DD%", "SYNC", "NOTES"]


def _row(account_id: str, **changes: Any) -> AccountStatus:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "tier": "MICRO_CAP",
        "equity_usd": 100.59,
        "held_capital_usd": 20.03,
        "held_share_pct": 19.9,
        "open_orders": 1,
        "stale_orders": 0,
        "double_reservations": 0,
        "fragmented": False,
        "drawdown_pct": 0.4,
        "max_drawdown_pct": 2.5,
        "expectancy_usd": 0.59,
        "trades": 3,
        "sync": "ok",
        "last_sync": (NOW - timedelta(seconds=3)).isoformat(),
        "consecutive_failures": 0,
        "breakers_armed": ("daily_loss", "loss_streak"),
        "exchange": "binance",
        "quote_currency": "USDT",
        "positions": 2,
    }
    return AccountStatus.model_validate({**fields, **changes})


def _realistic_rows() -> list[AccountStatus]:
    """A fleet a trader runs: big and small equities, long ids, every kind of note."""
    return [
        _row(
            "PLATFORM",
            tier="STANDARD",
            equity_usd=12_345_678.9,
            held_capital_usd=1_500_000.0,
            held_share_pct=12.2,
            open_orders=148,
            positions=37,
        ),
        _row(
            "USER:alice",
            paused=True,
            paused_by="ops",
            paused_at=(NOW - timedelta(minutes=5)).isoformat(),
            pause_reason="CPI print at 14:30, no new entries until it is out",
            last_block={
                "at": (NOW - timedelta(seconds=40)).isoformat(),
                "rule": "duplicate_symbol_entry",
                "reason": "one entry per symbol",
                "symbol": "ETH/USDT",
            },
        ),
        _row(
            "USER:alexandra-the-very-long-account-name",
            tier="SMALL_CAP",
            quote_currency="USD",
            sync="failed",
            consecutive_failures=12,
            breakers_tripped=("loss_streak",),
        ),
        _row("USER:张伟", sync="degraded", equity_usd=None, unvalued_holdings=("JUNK", "LDBTC")),
    ]


def _plain(text: str) -> str:
    return ANSI.sub("", text)


# ---------------------------------------------------------------------------- widths


def _demo_rows() -> list[AccountStatus]:
    """The demo's three accounts as its live table shows them at 80 columns."""
    alice = _realistic_rows()[1]
    return [
        _row("PLATFORM", tier="STANDARD", equity_usd=10_050.85, positions=3),
        alice,
        _row("USER:bob", tier="SMALL_CAP", equity_usd=751.38),
    ]


@pytest.mark.parametrize(("width", "rows"), [(WIDTH, _realistic_rows()), (80, _demo_rows())])
def test_the_status_table_fits_the_width_by_display_cells(
    width: int, rows: list[AccountStatus]
) -> None:
    lines = render_table(rows, width=width, now=NOW).splitlines()
    assert len(lines) == len(rows) + 1
    assert max(display_width(line) for line in lines) <= width
    assert lines[0].split() == FIRST_COLUMNS  # what a trader reads first, nothing dropped


def test_a_wide_character_takes_two_columns_and_the_columns_stay_aligned() -> None:
    assert display_width("USER:张伟") == 9
    assert display_width("e\u0301") == 1  # a combining accent takes no cell
    lines = render_table(_realistic_rows(), width=WIDTH, now=NOW).splitlines()
    # TIER starts at the same display column on every line, the CJK one included.
    starts = {
        display_width(line[: line.index(tier)]) for line, tier in zip(lines, _tiers(), strict=True)
    }
    assert len(starts) == 1


def _tiers() -> list[str]:
    return ["TIER", "STANDARD", "MICRO_CAP", "SMALL_CAP", "MICRO_CAP"]


def test_equity_is_shown_in_its_quote_currency_code_never_as_dollars() -> None:
    lines = render_table(_realistic_rows(), width=WIDTH, now=NOW).splitlines()
    platform, alice, alexandra = lines[1], lines[2], lines[3]
    assert "12,345,678.90 USDT" in platform
    assert "100.59 USDT" in alice
    assert "100.59 USD " in alexandra  # codes padded: the figures line up on the point
    assert platform.index("678.90") + 3 == alice.index("0.59") + 1  # the decimal points
    assert "$" not in "".join(lines)


def test_a_long_account_id_keeps_both_ends_and_the_line_still_fits() -> None:
    lines = render_table(_realistic_rows(), width=WIDTH, now=NOW).splitlines()
    alexandra = lines[3]
    assert alexandra.startswith("USER:ale")
    first = alexandra.split()[0]
    assert "…" in first
    assert first.endswith("name")
    assert display_width(first) == 16
    assert truncate("USER:alexandra-the-great", 12, middle=True) == "USER:a…great"


def test_notes_say_who_paused_the_account_its_last_block_and_what_tripped() -> None:
    lines = render_table(_realistic_rows(), width=140, now=NOW).splitlines()
    alice, alexandra, cjk = lines[2], lines[3], lines[4]
    notes = lines[0].index("NOTES")
    assert alice[notes:].startswith("PAUSED by ops 5m ago: CPI print")
    wide = render_table(_realistic_rows(), width=400, now=NOW).splitlines()[2]
    assert "; blocked duplicate_symbol_entry ETH/USDT 40s ago" in wide
    assert "tripped loss_streak" in alexandra
    assert "failed x12" in alexandra
    assert "unvalued JUNK,LDBTC" in cjk


def test_more_room_brings_more_columns_and_without_a_width_every_one() -> None:
    narrow = render_table(_realistic_rows(), width=WIDTH, now=NOW).splitlines()[0].split()
    roomy = render_table(_realistic_rows(), width=160, now=NOW).splitlines()[0]
    every = render_table(_realistic_rows(), now=NOW).splitlines()[0]
    assert narrow == FIRST_COLUMNS
    assert "STALE" in roomy
    assert "LAST SYNC" in roomy
    for column in ("HELD ", "CXL", "DOUBLE", "FRAG", "EXPECT", "WEIGHT/MIN", "BREAKERS"):
        assert column in every
    # Which columns show does not change with what the notes say (a redraw must not jump).
    unnoted = {"paused": False, "paused_by": None, "paused_at": None, "last_block": None}
    quiet = [r.model_copy(update=unnoted) for r in _realistic_rows()]
    assert (
        render_table(quiet, width=160, now=NOW).splitlines()[0].split()[:-1] == (roomy.split()[:-1])
    )


# ---------------------------------------------------------------------------- colour


def test_colour_marks_failures_pauses_and_blocks_and_never_moves_a_column() -> None:
    rows = _realistic_rows()
    plain = render_table(rows, width=WIDTH, now=NOW)
    painted = render_table(rows, width=WIDTH, color=True, now=NOW)
    assert "\x1b[" not in plain
    assert _plain(painted) == plain
    assert "\x1b[1;31mfailed x12\x1b[0m" in painted
    assert "\x1b[1;33mPAUSED by ops" in painted
    assert "\x1b[33mdegraded\x1b[0m" in painted
    wide = render_table(rows, color=True, now=NOW)
    assert "\x1b[1;35mblocked duplicate_symbol_entry ETH/USDT 40s ago\x1b[0m" in wide


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("mode", "tty", "environ", "wanted"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": "anything"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),  # an explicit choice wins
        ("never", True, {}, False),
    ],
)
def test_colour_is_wanted_on_a_terminal_unless_no_color_says_otherwise(
    mode: Any, tty: bool, environ: dict[str, str], wanted: bool
) -> None:
    assert color_wanted(mode, _Stream(tty), environ) is wanted


# ---------------------------------------------------------------------------- the command


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A store with two accounts (one paused and blocked) and no sidecar answering."""
    with Store(tmp_path / "state.sqlite3") as store:
        books = Books(store)
        for account, equity in (("PLATFORM", 10_050.85), ("USER:alice", 100.59)):
            book = books.get(account)
            book.update_equity(equity, NOW - timedelta(hours=1))
            book.apply_order(_order(account, "O-1"))
        store.journal_pause(
            PauseRecord(
                account_id="USER:alice", ts=NOW, kind="paused", by="ops", reason="CPI print"
            )
        )
        store.journal_decision(
            DecisionRecord(
                account_id="USER:alice",
                ts=NOW,
                allowed=False,
                symbol="BTC/USDT",
                rule="dca",
                reason="already holds BTC",
            )
        )
    path = tmp_path / "broker.toml"
    accounts = "".join(
        f"[[accounts]]\nid = '{account}'\nexchange = 'binance'\nquote_currency = 'USDT'\n"
        for account in ("PLATFORM", "USER:alice")
    )
    # Port 9 (discard): nothing answers there, so status reads the store.
    path.write_text(
        f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n'
        f'[api]\nhost = "127.0.0.1"\nport = 9\n{accounts}',
        encoding="utf-8",
    )
    return path


def _order(account: str, order_id: str) -> Order:
    return Order(
        id=order_id,
        account_id=account,
        symbol="BTC/USDT",
        side="buy",
        price=100.0,
        amount=0.01,
        created_at=NOW,
    )


def test_status_piped_fits_100_columns_without_colour_and_names_the_quote(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli.main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].startswith(f"source: {config.parent / 'state.sqlite3'} (sidecar not running)")
    assert max(display_width(line) for line in lines[1:]) <= WIDTH  # the table
    assert lines[1].split() == FIRST_COLUMNS
    assert "10,050.85 USDT" in out
    alice = next(line for line in lines if line.startswith("USER:alice"))
    assert "PAUSED by ops" in alice
    assert "offline" in alice


def test_status_color_always_paints_even_piped_and_wide_shows_every_column(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.main(["status", "--config", str(config), "--color", "always"]) == 0
    assert "\x1b[1;33mPAUSED by ops" in capsys.readouterr().out
    assert cli.main(["status", "--config", str(config), "--wide"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # auto, piped
    assert "WEIGHT/MIN" in out
    assert "blocked dca BTC/USDT" in out


def test_status_watch_with_json_is_refused(config: Path) -> None:
    assert cli.main(["status", "--config", str(config), "--watch", "--json"]) == 2


def test_watch_draws_until_ctrl_c_and_exits_zero() -> None:
    frames = iter(range(100))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise KeyboardInterrupt

    tty = _Stream(True)
    assert (
        watch(lambda: f"frame {next(frames)}", tty, interval_s=2.0, interactive=True, sleep=sleep)
        == 0
    )
    assert tty.getvalue().count(HOME_CLEAR) == 3
    assert tty.getvalue().endswith("frame 2\n\n")
    assert slept == [2.0, 2.0, 2.0]

    piped = _Stream(False)
    assert watch(lambda: "table", piped, interval_s=1.0, interactive=False, iterations=2) == 0
    assert piped.getvalue() == "table\n\ntable\n"  # appended, never cleared


def test_status_watch_redraws_what_changed_between_frames_then_stops_on_ctrl_c(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = config.parent / "state.sqlite3"
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        # Between frames an order is placed; the third nap is Ctrl-C.
        naps.append(seconds)
        if len(naps) == 3:
            raise KeyboardInterrupt
        with Store(store_path) as store:
            Books(store).get("PLATFORM").apply_order(_order("PLATFORM", f"O-{len(naps) + 1}"))

    monkeypatch.setattr(cli, "_watch_sleep", sleep)
    assert cli.main(["status", "--config", str(config), "--watch", "0.5"]) == 0
    out = capsys.readouterr().out
    assert naps == [0.5, 0.5, 0.5]
    frames = out.split("source: ")[1:]
    assert len(frames) == 3
    open_orders = [_open_orders(frame, "PLATFORM") for frame in frames]
    assert open_orders == [1, 2, 3]
    assert HOME_CLEAR not in out  # piped: each frame appended


def _open_orders(frame: str, account: str) -> int:
    header, *rows = (line for line in frame.splitlines()[1:] if line)
    row = next(r for r in rows if r.startswith(account))
    end = header.index("OPEN") + len("OPEN")
    return int(row[:end].split()[-1])


# ---------------------------------------------------------------------------- a real terminal


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal of 100x30: (the side the command writes to, the side read)."""
    controller, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, WIDTH, 0, 0))
    try:
        yield child, controller
    finally:
        os.close(controller)
        os.close(child)


_STATUS = (sys.executable, "-m", "nija_broker.service.cli", "status")


def _start(child: int, config: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    environ.update(env, PYTHONPATH=str(REPO), TERM="xterm-256color")
    return subprocess.Popen(
        [*_STATUS, "--config", str(config), *args],
        stdin=child,
        stdout=child,
        stderr=child,
        env=environ,
        cwd=config.parent,
    )


def _read_until(controller: int, done: Any, timeout_s: float = 60.0) -> bytes:
    """What the terminal shows until ``done(seen)`` holds (generous: a loaded machine)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while not done(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                seen += os.read(controller, 65_536)
            except OSError:  # the command exited and closed its side
                break
    return seen


def test_status_on_a_terminal_is_coloured_unless_no_color_is_set(
    config: Path, terminal: tuple[int, int]
) -> None:
    child, controller = terminal
    for env, coloured in (({}, True), ({"NO_COLOR": "1"}, False)):
        process = _start(child, config, **env)
        seen = _read_until(controller, lambda s: s.count(b"USER:alice") >= 1 and b"\n" in s)
        assert process.wait(timeout=60) == 0
        seen += _read_until(controller, lambda s: False, timeout_s=0.5)
        text = seen.decode("utf-8", "replace")
        assert ("\x1b[" in text) is coloured, text
        table = text.splitlines()[1:]
        assert max(display_width(_plain(line)) for line in table) <= WIDTH


def test_status_watch_on_a_terminal_redraws_and_ctrl_c_exits_zero(
    config: Path, terminal: tuple[int, int]
) -> None:
    child, controller = terminal
    process = _start(child, config, "--watch", "0.2")
    try:
        seen = _read_until(controller, lambda s: s.count(HOME_CLEAR.encode()) >= 2)
        assert seen.count(HOME_CLEAR.encode()) >= 2, seen
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seen += _read_until(controller, lambda s: False, timeout_s=0.5)
    assert b"Traceback" not in seen


def test_status_watch_piped_prints_a_table_each_time_and_ctrl_c_exits_zero(config: Path) -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [*_STATUS, "--config", str(config), "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=config.parent,
    )
    try:
        assert process.stdout is not None
        heads = 0
        for raw in process.stdout:
            heads += raw.startswith(b"source: ")
            if heads == 2:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert heads == 2
    assert process.returncode == 0
    assert b"\x1b" not in out
    assert b"Traceback" not in err


# ---------------------------------------------------------------------------- a running sidecar

FAKE_KEY = "qW3rTy7UiOp0AsDfGhJkLzXcVbNm1234qW3rTy7UiOp0AsDfGhJkLzXcVbNm5678"
FAKE_SECRET = "Zx9Cv8Bn7Mq6Wl5Ek4Rj3Th2Yg1Uf0IdZx9Cv8Bn7Mq6Wl5Ek4Rj3Th2Yg1Uf0Id"


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """Binance's dialect on loopback: USER:alice holds 100 USDT and 0.001 BTC (bought before
    the sidecar ran: a position only the exchange's balance knows)."""
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
    engine.open_account("USER:alice", {"USDT": 100.0, "BTC": 0.001})
    async with EmulatorServer(engine, {"USER:alice": (FAKE_KEY, FAKE_SECRET)}) as server:
        yield server


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nija_broker.service.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


@pytest.mark.integration
@pytest.mark.asyncio
async def test_status_and_report_of_a_running_sidecar_show_its_live_row_and_positions(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    ccxt_table = json.dumps(binance_ccxt_config(emulator.url)).replace('":', '" =')
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n[api]\nhost = "127.0.0.1"\nport = 0\n'
        "[[accounts]]\nid = 'USER:alice'\nexchange = 'binance'\napi_key_env = 'NB_KEY'\n"
        "secret_env = 'NB_SECRET'\nquote_currency = 'USDT'\npoll_interval_s = 0.5\n"
        f"balance_interval_s = 0.5\nccxt = {ccxt_table}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "NB_KEY": FAKE_KEY, "NB_SECRET": FAKE_SECRET, "PYTHONPATH": str(REPO)}
    sidecar = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "nija_broker.service.cli", "run", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert sidecar.stdout is not None
        started = (await asyncio.wait_for(sidecar.stdout.readline(), 60)).decode()
        url = started.split("API ")[1].split(";")[0]
        # Until the first balances are in: equity and the BTC held are known then.
        for _ in range(240):
            status = await _cli("status", "--url", url, "--json")
            (row,) = json.loads(status.stdout)["accounts"]
            if row["sync"] == "ok" and row["equity_usd"] and row["positions"]:
                break
            await asyncio.sleep(0.25)
        assert row["positions"] == 1, row

        table = await _cli("status", "--url", url)
        assert table.returncode == 0, table.stderr
        header, line = table.stdout.splitlines()[1:3]
        assert header.split() == FIRST_COLUMNS
        assert line.startswith("USER:alice ")
        assert re.search(r"\b150\.00 USDT\b", line)  # 100 USDT + 0.001 BTC at 50,000
        assert " ok " in line
        assert max(display_width(text) for text in table.stdout.splitlines()[1:]) <= WIDTH

        out = tmp_path / "out"
        report = await _cli(
            "report", "--account", "USER:alice", "--out", str(out), "--config", str(config)
        )  # without --url: the store and the configuration
        assert report.returncode == 0, report.stderr
        (path,) = out.glob("report-*.html")
        offline = path.read_text(encoding="utf-8")
        assert "not known (counted by the running sidecar)" in offline
        report = await _cli(
            "report",
            "--account",
            "USER:alice",
            "--out",
            str(out),
            "--config",
            str(config),
            "--url",
            url,
        )
        assert report.returncode == 0, report.stderr
        page = path.read_text(encoding="utf-8")
        assert "tier <b>MICRO_CAP</b>" in page
        assert "exchange <b>binance</b>" in page
        assert "<td>0 (each confirmed by the exchange)</td>" in page
        section = page.split("<h2>Open positions</h2>", 1)[1].split("</section>", 1)[0]
        assert "As the running sidecar sees them" in section
        assert "<td>BTC/USDT</td><td>0.001</td>" in section
        assert "<td>exchange</td>" in section  # held, with no fill booked
        assert "$" not in page
    finally:
        if sidecar.returncode is None:
            sidecar.send_signal(signal.SIGTERM)
            await asyncio.wait_for(sidecar.communicate(), 30)
