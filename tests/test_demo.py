"""The offline demo: run as a user runs it (a subprocess, real ccxt, loopback), and its parts."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest

from nija_broker.core.events import BalancesUpdated, OrderAdopted, StaleOrderFound
from nija_broker.core.models import AccountMetrics, Order, OrderRole, OrderType, Side
from nija_broker.demo.demo import run_demo
from nija_broker.demo.view import AccountTally, DemoView, describe, summary_lines
from nija_broker.demo.view import line as event_line
from nija_broker.demo.world import DEFAULT_CONFIG_PATH, demo_config, read_demo_toml
from nija_broker.service.config import load_config
from nija_broker.service.status import AccountStatus

DURATION_S = "12"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    out_dir: Path


RUNS = {
    "binance": ("binance", "11"),
    "kraken": ("kraken", "11"),
    "binance-again": ("binance", "11"),
}
SLOW_POLL_S = 4.0
"""A reconciler slower than the story's beats (1.2 s apart in a 12 s run)."""


def _leaves(table: object) -> list[str]:
    """Every string in a nested table of URLs."""
    if isinstance(table, str):
        return [table]
    if isinstance(table, dict):
        return [u for value in table.values() for u in _leaves(value)]
    return []


def _slow_reconciler_run(home: Path) -> Run:
    """The demo in this process, its accounts polled every ``SLOW_POLL_S``: each beat must wait
    for the reconciler to see what the one before did, as on a loaded machine."""
    text = DEFAULT_CONFIG_PATH.read_text(encoding="utf-8")
    slow = text.replace("poll_interval_s = 0.5", f"poll_interval_s = {SLOW_POLL_S}").replace(
        "balance_interval_s = 1.0", f"balance_interval_s = {SLOW_POLL_S}"
    )
    assert slow.count(f"= {SLOW_POLL_S}") == 6
    config_path = home / "slow-demo.toml"
    config_path.write_text(slow, encoding="utf-8")
    stream = StringIO()
    code = run_demo(
        duration_s=float(DURATION_S),
        seed=11,
        exchange="binance",
        out_dir=home / "out",
        stream=stream,
        config_path=config_path,
    )
    return Run(code, stream.getvalue(), "", home / "out")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every run of this file at once: each spends most of its time waiting."""
    started = {}
    done = {}
    try:
        for name, (exchange, seed) in RUNS.items():
            home = tmp_path_factory.mktemp(name)
            # From another directory, as a user would: the demo must find its configuration.
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nija_broker.service.cli",
                    "demo",
                    "--duration",
                    DURATION_S,
                    "--exchange",
                    exchange,
                    "--seed",
                    seed,
                    "--out",
                    str(home / "out"),
                ],
                cwd=home,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started[name] = (process, home / "out")
        # Meanwhile, here: the subprocesses load the machine while it runs.
        done["slow-reconciler"] = _slow_reconciler_run(tmp_path_factory.mktemp("slow"))
        for name, (process, out_dir) in started.items():
            stdout, stderr = process.communicate(timeout=60)
            done[name] = Run(process.returncode, stdout, stderr, out_dir)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return done


def _lines(output: str, label: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(rf"\[\s*[\d.]+s\] {label}\b", line)]


@pytest.mark.integration
@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_demo_runs_every_beat_and_writes_a_report_per_account(
    runs: dict[str, Run], exchange: str
) -> None:
    _assert_every_beat(runs[exchange])


@pytest.mark.integration
def test_each_beat_waits_for_a_reconciler_slower_than_the_story(runs: dict[str, Run]) -> None:
    result = runs["slow-reconciler"]
    _assert_every_beat(result)
    assert not _lines(result.stdout, "NOTE")  # no beat gave up waiting
    # The same story as at full speed: the market stands still while a beat waits.
    assert _story(result.stdout) == _story(runs["binance"].stdout)


def _assert_every_beat(result: Run) -> None:
    out = result.stdout
    assert result.returncode == 0, result.stderr + out

    blocked = _lines(out, "BLOCKED")
    assert any("USER:alice" in b and "rule dca:" in b and "no DCA" in b for b in blocked), out
    assert any("USER:alice" in b and "rule duplicate_symbol_entry:" in b for b in blocked), out
    # Only the micro account is blocked; the others trade freely.
    assert all("USER:alice" in b for b in blocked)

    stale = _lines(out, "STALE")
    assert len(stale) == 1, out
    assert "USER:alice" in stale[0]
    assert "cancelling" in stale[0]
    stale_id = re.search(r"\(order (\S+)\)", stale[0])
    assert stale_id is not None
    assert any(
        f"(order {stale_id.group(1)})" in c and "USER:alice" in c for c in _lines(out, "CANCELLED")
    )

    adopted = _lines(out, "ADOPTED")
    assert len(adopted) == 1, out
    assert "PLATFORM" in adopted[0]
    adopted_id = re.search(r"\(order (\S+)\)", adopted[0])
    assert adopted_id is not None
    # The adopted order is then followed to its fill like any other.
    assert any(f"(order {adopted_id.group(1)})" in f for f in _lines(out, "FILLED")), out
    assert len(_lines(out, "FILLED")) >= 3
    traders = {t.split("TRADE", 1)[1].split()[0] for t in _lines(out, "TRADE")}
    assert traders >= {"PLATFORM", "USER:alice"}, out

    # A summary per account, and nothing added up across them.
    for account, tier in (
        ("PLATFORM", "STANDARD"),
        ("USER:alice", "MICRO_CAP"),
        ("USER:bob", "SMALL_CAP"),
    ):
        assert f"{account} ({tier})" in out
    assert "total" not in out.lower()

    reports = sorted(result.out_dir.glob("report-*.html"))
    assert len(reports) == 3
    for report in reports:
        assert str(report) in out
        assert "<svg" in report.read_text(encoding="utf-8")
    # The run's made-up keys stay inside the process.
    assert not re.search(r"demo-[0-9a-f]{24}", out + result.stderr)
    # Piped: no colour, and every table and summary line fits 100 columns.
    assert "\x1b" not in out
    tables = [t for t in out.splitlines() if t.startswith(("ACCOUNT ", "PLATFORM ", "USER:"))]
    assert tables
    assert max(len(t) for t in tables) <= 100
    summary = out.split("summary after", 1)[1].split("\nreports:", 1)[0]
    assert all(len(t) <= 100 for t in summary.splitlines())


def _story(output: str) -> tuple[list[str], list[str]]:
    """What the bot and the market did, in order, and the trades closed (logged as the books
    see them, so their place among the bot's lines depends on timing), without timestamps."""
    acts, trades = [], []
    for line in output.splitlines():
        found = re.match(r"\[\s*[\d.]+s\] ((BOT|MARKET|LIVE BOT|TRADE)\b.*)", line)
        if found is not None:
            (trades if found.group(2) == "TRADE" else acts).append(found.group(1))
    return acts, sorted(trades)


@pytest.mark.integration
def test_the_same_seed_gives_the_same_prices_orders_and_trades(runs: dict[str, Run]) -> None:
    first, again = runs["binance"], runs["binance-again"]
    assert first.returncode == again.returncode == 0
    acts, trades = _story(first.stdout)
    assert acts
    assert trades
    assert (acts, trades) == _story(again.stdout)


@pytest.mark.integration
def test_ctrl_c_shuts_the_demo_down_cleanly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nija_broker.service.cli",
            "demo",
            "--duration",
            "30",
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "passed the guard" in line:
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "interrupted: the broker and the emulator were shut down" in out
    assert "Traceback" not in err, err
    assert "Unclosed" not in err, err


def test_demo_toml_is_a_valid_configuration_with_no_secrets() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert [a.id for a in config.accounts] == ["PLATFORM", "USER:alice", "USER:bob"]
    assert all(a.poll_interval_s <= 1.0 for a in config.accounts)
    assert config.api.host == "127.0.0.1"


@pytest.mark.parametrize(("exchange", "quote"), [("binance", "USDT"), ("kraken", "USD")])
def test_run_time_config_points_every_account_at_the_emulator(
    tmp_path: Path, exchange: str, quote: str
) -> None:
    raw = read_demo_toml(DEFAULT_CONFIG_PATH)
    config = demo_config(
        raw,
        exchange=exchange,
        server_url="http://127.0.0.1:45678",
        out_dir=tmp_path,
        duration_s=40.0,
    )
    assert Path(config.store.path).parent == tmp_path
    for account in config.accounts:
        assert account.exchange == exchange
        assert account.quote_currency == quote
        urls = account.ccxt["urls"]["api"]
        rest = [u for u in urls.values() if isinstance(u, str)]
        assert rest
        assert all(u.startswith("http://127.0.0.1:45678") for u in rest)
        streams = _leaves(urls.get("ws", {}))  # ccxt.pro's websocket URLs, the same host
        assert streams
        assert all(u.startswith("ws://127.0.0.1:45678") for u in streams)
    assert config.tier_table().get("MICRO_CAP").stale_max_age_s == 15.0


def test_the_stale_limit_scales_with_the_run_like_the_beats(tmp_path: Path) -> None:
    raw = read_demo_toml(DEFAULT_CONFIG_PATH)
    short = demo_config(
        raw, exchange="binance", server_url="http://127.0.0.1:1", out_dir=tmp_path, duration_s=12.0
    )
    assert short.tier_table().get("MICRO_CAP").stale_max_age_s == pytest.approx(4.5)
    long = demo_config(
        raw, exchange="binance", server_url="http://127.0.0.1:1", out_dir=tmp_path, duration_s=120.0
    )
    assert long.tier_table().get("MICRO_CAP").stale_max_age_s == pytest.approx(45.0)
    # Tiers the file does not shorten keep their live default.
    assert short.tier_table().get("STANDARD").stale_max_age_s == 3600.0


def test_a_duration_too_short_for_the_story_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    stream = StringIO()
    assert run_demo(duration_s=3.0, out_dir=tmp_path, stream=stream) == 2
    assert "--duration" in stream.getvalue()
    assert not any(tmp_path.iterdir())


def _order(**changes: object) -> Order:
    fields: dict[str, object] = {
        "id": "42",
        "account_id": "PLATFORM",
        "symbol": "SOL/USDT",
        "side": Side.BUY,
        "type": OrderType.LIMIT,
        "price": 148.25,
        "amount": 5.0,
        "created_at": T0,
        "role": OrderRole.ENTRY,
    }
    return Order.model_validate({**fields, **changes})


def test_log_lines_name_the_account_the_order_and_the_reason() -> None:
    tiers: dict[str, str] = {}
    adopted = describe(OrderAdopted(account_id="PLATFORM", at=T0, order=_order()), tiers)
    assert adopted is not None
    assert adopted.startswith("ADOPTED")
    assert "buy 5 SOL/USDT @ 148.25 limit" in adopted
    stale = describe(
        StaleOrderFound(
            account_id="USER:alice",
            at=T0.replace(second=20),
            order=_order(account_id="USER:alice"),
            max_age_s=15.0,
            action="cancel",
        ),
        tiers,
    )
    assert stale is not None
    assert "rested 20.0s" in stale
    assert "15s limit" in stale
    assert "cancelling" in stale


def test_tier_is_logged_when_it_changes_not_on_every_balance_poll() -> None:
    tiers: dict[str, str] = {}

    def balances(tier: str) -> BalancesUpdated:
        return BalancesUpdated(account_id="USER:bob", at=T0, equity_usd=750.0, tier=tier)

    assert describe(balances("SMALL_CAP"), tiers) is not None
    assert describe(balances("SMALL_CAP"), tiers) is None
    assert describe(balances("MICRO_CAP"), tiers) is not None


def test_summary_speaks_of_one_account_only() -> None:
    row = _row("USER:alice")
    tally = AccountTally()
    tally.blocked["dca"] += 1
    lines = summary_lines(
        row, AccountMetrics(account_id="USER:alice", total_trades=1), tally, "USDT", fills_booked=2
    )
    text = "\n".join(lines)
    assert lines[0] == "USER:alice (MICRO_CAP)"
    assert "dca x1" in text
    assert "fills booked 2" in text
    assert "PLATFORM" not in text


def _row(account_id: str) -> AccountStatus:
    return AccountStatus(
        account_id=account_id,
        tier="MICRO_CAP",
        equity_usd=100.5,
        held_capital_usd=0.0,
        held_share_pct=0.0,
        open_orders=0,
        stale_orders=0,
        double_reservations=0,
        fragmented=False,
        drawdown_pct=0.0,
        max_drawdown_pct=0.1,
        expectancy_usd=0.5,
        trades=1,
        sync="ok",
        last_sync=None,
        consecutive_failures=0,
    )


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _busy_view(columns: int, lines: int, *, color: bool = False) -> tuple[DemoView, StringIO]:
    """A view after a run's worth of events: two blocks and a stale cancel early on, then
    many more fills and bot lines than any screen holds."""
    stream = StringIO()
    view = DemoView(
        stream, interactive=True, table_every_s=5.0, color=color, size=lambda: (columns, lines)
    )
    view.intro("nija-broker demo (binance emulator)", keep=True)
    view.intro("printed once, at the start")
    view.log(
        0.5, event_line("BLOCKED", "USER:alice", "rule dca: buy 0.0003 BTC/USDT: " + "why " * 40)
    )
    view.log(0.6, event_line("BLOCKED", "USER:alice", "rule duplicate_symbol_entry: buy ETH/USDT"))
    view.log(0.7, event_line("STALE", "USER:alice", "cancelling buy 0.007 ETH/USDT (order 4)"))
    view.log(0.8, event_line("CANCELLED", "USER:alice", "buy 0.007 ETH/USDT (order 4), confirmed"))
    for n in range(30):
        view.log(1.0 + n, event_line("FILLED", "PLATFORM", f"fill {n}"))
        view.log(1.0 + n, event_line("BOT", "PLATFORM", f"bot line {n}"))
    return view, stream


@pytest.mark.parametrize(("columns", "lines"), [(80, 24), (100, 30)])
def test_on_a_terminal_each_redraw_fits_the_screen_and_keeps_the_blocks_in_view(
    columns: int, lines: int
) -> None:
    view, stream = _busy_view(columns, lines)
    view.table([_row("PLATFORM"), _row("USER:alice"), _row("USER:bob")], 31.0)

    redraw = stream.getvalue().split("\x1b[H")[-1]
    screen = _plain(redraw).split("\n")
    assert screen[-1] == ""  # the cursor ends on the last line, left free: nothing scrolls
    assert len(screen) - 1 <= lines - 1
    assert all(len(text) <= columns for text in screen)
    assert screen[0] == "nija-broker demo (binance emulator)"
    assert "printed once" not in redraw
    assert any(text.startswith("USER:alice ") for text in screen)  # the table
    shown = "\n".join(screen)
    # However many fills came after them, the blocks and the stale cancel are on screen.
    assert shown.count("] BLOCKED   USER:alice  rule ") == 2
    assert "] STALE     USER:alice  cancelling" in shown
    assert "] CANCELLED USER:alice" in shown
    assert "fill 29" in shown  # and the newest fill
    assert "bot line 29" in shown  # and the newest other line
    assert "fill 0\n" not in shown
    assert "\x1b[2J" not in redraw  # redrawn in place, line by line: no flicker of a clear


def test_at_the_end_on_a_terminal_the_whole_log_is_replayed() -> None:
    view, stream = _busy_view(80, 24)
    view.table([_row("USER:alice")], 31.0)
    view.replay()
    replay = stream.getvalue().split("\x1b[H")[-1].split("every event of the run", 1)[1]
    assert "] FILLED    PLATFORM    fill 0\n" in replay
    assert "why why why" in replay  # whole lines, not cut to the screen


def test_colour_marks_the_blocks_on_a_terminal_that_wants_it() -> None:
    view, stream = _busy_view(100, 30, color=True)
    view.table([_row("USER:alice")], 31.0)
    redraw = stream.getvalue().split("\x1b[H")[-1]
    assert "\x1b[1;35mBLOCKED\x1b[0m" in redraw
    assert "\x1b[1;33mSTALE\x1b[0m" in redraw
    assert all(len(text) <= 100 for text in _plain(redraw).split("\n"))
    plain, _ = _busy_view(100, 30, color=False)
    assert "\x1b[1" not in plain.screen([_row("USER:alice")], 31.0)


def test_off_a_terminal_nothing_is_redrawn_and_the_table_waits_its_interval() -> None:
    stream = StringIO()
    view = DemoView(stream, interactive=False, table_every_s=5.0)
    view.log(0.5, "event")
    view.table([_row("USER:alice")], 1.0)
    view.table([_row("USER:alice")], 2.0)
    view.table([_row("USER:alice")], 6.5)
    text = stream.getvalue()
    assert "\x1b" not in text
    assert "[  0.5s] event" in text
    assert text.count("--- accounts at") == 2
    long = event_line("BLOCKED", "USER:alice", "rule dca: " + "why " * 40)
    view.log(7.0, long)
    assert f"[  7.0s] {long}\n" in stream.getvalue()  # piped: whole lines, appended
