"""The nija-broker command: check-config, status, report, run (SIGTERM), and no secret printed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market, Order, TradeRecord
from nija_broker.service.cli import main
from nija_broker.state.books import Books
from nija_broker.state.store import Store

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "qW3rTy7UiOp0AsDfGhJkLzXcVbNm1234qW3rTy7UiOp0AsDfGhJkLzXcVbNm5678"
FAKE_SECRET = "Zx9Cv8Bn7Mq6Wl5Ek4Rj3Th2Yg1Uf0IdZx9Cv8Bn7Mq6Wl5Ek4Rj3Th2Yg1Uf0Id"
T0 = datetime(2026, 3, 1, tzinfo=UTC)

# Status JSON schema: traders' scripts parse it; changing it is a breaking change.
STATUS_KEYS = {
    "account_id",
    "tier",
    "equity_usd",
    "held_capital_usd",
    "held_share_pct",
    "open_orders",
    "stale_orders",
    "double_reservations",
    "fragmented",
    "drawdown_pct",
    "max_drawdown_pct",
    "expectancy_usd",
    "trades",
    "sync",
    "last_sync",
    "consecutive_failures",
    "unvalued_holdings",
    "breakers_armed",
    "breakers_tripped",
    "weight_planned_per_min",
    "weight_spent_last_min",
    "weight_unit",
    "exchange",
    "quote_currency",
    "positions",
    "paused",
    "paused_by",
    "paused_at",
    "pause_reason",
    "last_block",
    "stale_cancels",
}


def _write_config(tmp_path: Path, accounts: str = "", api_port: int = 8765) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n'
        f'[api]\nhost = "127.0.0.1"\nport = {api_port}\n{accounts}'
    )
    return path


def _seed_store(tmp_path: Path) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        book = Books(store).get("USER:alice")
        book.apply_order(
            Order(
                id="O-1",
                account_id="USER:alice",
                symbol="BTC/USD",
                side="buy",
                price=100.0,
                amount=0.2,
                created_at=T0,
            )
        )
        book.update_equity(100.0, T0)
        book.update_equity(90.0, T0 + timedelta(hours=1))
        book.record_trade(
            TradeRecord(
                trade_id="T-1",
                account_id="USER:alice",
                symbol="BTC/USD",
                side="buy",
                entry_price=100,
                exit_price=105,
                quantity=1,
                pnl=5,
                fees=0.2,
                entry_time=T0,
                exit_time=T0 + timedelta(hours=1),
            )
        )


def test_run_with_an_unknown_log_level_names_the_option_and_starts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", "config/demo.toml", "--log-level", "BOGUS"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level" in err
    assert "'BOGUS'" in err
    assert "INFO" in err  # the valid choices are listed


def test_check_config_explains_errors_and_never_prints_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_config(
        tmp_path,
        "[[accounts]]\nid = 'PLATFORM'\nexchange = 'kraken'\n"
        f"api_key_env = '{FAKE_KEY}'\n[accounts.ccxt]\n"
        f"secret = '{FAKE_SECRET}'\n",
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "api_key_env" in err
    assert "credentials may not be set in the file" in err
    assert FAKE_KEY not in err
    assert FAKE_SECRET not in err


def test_check_config_names_a_missing_key_variable_and_never_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NB_TEST_KEY", FAKE_KEY)
    monkeypatch.delenv("NB_TEST_SECRET", raising=False)
    config = _write_config(
        tmp_path,
        "[[accounts]]\nid = 'PLATFORM'\nexchange = 'kraken'\n"
        "api_key_env = 'NB_TEST_KEY'\nsecret_env = 'NB_TEST_SECRET'\n",
    )
    assert main(["check-config", str(config)]) == 2  # run would refuse it: exit 2 as run does
    captured = capsys.readouterr()
    assert (
        f"{config}: accounts[0](id='PLATFORM').secret_env: environment variable "
        "NB_TEST_SECRET is not set (value: 'NB_TEST_SECRET')"
    ) in captured.err
    assert FAKE_KEY not in captured.out + captured.err

    monkeypatch.setenv("NB_TEST_SECRET", FAKE_SECRET)
    assert main(["check-config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "keys: set (NB_TEST_KEY, NB_TEST_SECRET)" in captured.out
    assert FAKE_KEY not in captured.out + captured.err
    assert FAKE_SECRET not in captured.out + captured.err


def test_example_config_checks_clean(tmp_path: Path) -> None:
    env = {
        **os.environ,
        **{
            name: f"set-for-the-test-{n}"
            for n, name in enumerate(
                (
                    "NIJA_PLATFORM_KRAKEN_KEY",
                    "NIJA_PLATFORM_KRAKEN_SECRET",
                    "NIJA_ALICE_COINBASE_KEY",
                    "NIJA_ALICE_COINBASE_SECRET",
                    "NIJA_ALICE_COINBASE_PASSPHRASE",
                    "NIJA_BOB_BINANCE_KEY",
                    "NIJA_BOB_BINANCE_SECRET",
                )
            )
        },
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nija_broker.service.cli",
            "check-config",
            str(REPO / "config" / "live.example.toml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "account USER:bob: binance sandbox, tier MICRO_CAP" in result.stdout
    assert "account USER:alice: coinbaseexchange sandbox" in result.stdout


def test_status_json_has_a_stable_schema_when_read_from_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_store(tmp_path)
    config = _write_config(tmp_path, api_port=9)  # nothing listens there: falls back
    assert main(["status", "--config", str(config), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"schema_version", "generated_at", "accounts"}
    assert document["schema_version"] == 5
    (row,) = document["accounts"]
    assert set(row) == STATUS_KEYS
    assert row["account_id"] == "USER:alice"
    assert row["open_orders"] == 1
    assert row["sync"] is None
    assert row["max_drawdown_pct"] == pytest.approx(10.0)


def test_status_table_and_unknown_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_store(tmp_path)
    config = _write_config(tmp_path, api_port=9)
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "USER:alice" in out
    assert "sidecar not running" in out
    assert main(["status", "--config", str(config), "--account", "USER:nobody"]) == 2


def test_report_writes_an_html_page_with_the_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_store(tmp_path)
    config = _write_config(tmp_path)
    out_dir = tmp_path / "out"
    assert (
        main(["report", "--account", "USER:alice", "--out", str(out_dir), "--config", str(config)])
        == 0
    )
    (page,) = out_dir.glob("*.html")
    html = page.read_text()
    assert "<svg" in html
    assert "USER:alice" in html
    assert (
        main(["report", "--account", "USER:nobody", "--out", str(out_dir), "--config", str(config)])
        == 2
    )


def _closed_early(*args: str) -> tuple[int, str]:
    """Run the command with its stdout a pipe nobody reads: closed before the first line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nija_broker.service.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # `| head -1` that has its line: every later write fails
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def test_status_and_report_end_quietly_when_the_reader_goes_away(tmp_path: Path) -> None:
    _seed_store(tmp_path)
    config = str(_write_config(tmp_path, api_port=9))
    for args in (
        ("status", "--config", config),
        ("status", "--config", config, "--json"),
        ("report", "--account", "USER:alice", "--out", str(tmp_path / "out"), "--config", config),
    ):
        code, err = _closed_early(*args)
        assert code == 0, err
        assert err == "", err


def test_status_piped_to_head_prints_its_first_line_only(tmp_path: Path) -> None:
    _seed_store(tmp_path)
    config = _write_config(tmp_path, api_port=9)
    result = subprocess.run(
        f"{sys.executable} -m nija_broker.service.cli status --config {config} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("source: ")
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr


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
    engine.open_account("USER:alice", {"USDT": 100.0})
    async with EmulatorServer(engine, {"USER:alice": (FAKE_KEY, FAKE_SECRET)}) as server:
        yield server


@pytest.mark.integration
@pytest.mark.asyncio
async def test_run_serves_the_api_and_stops_gracefully_on_sigterm(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    ccxt_table = json.dumps(binance_ccxt_config(emulator.url)).replace('":', '" =')
    # TOML inline tables are close enough to JSON objects once ':' becomes '='.
    config = _write_config(
        tmp_path,
        (
            "[[accounts]]\nid = 'USER:alice'\nexchange = 'binance'\napi_key_env = 'NB_KEY'\n"
            "secret_env = 'NB_SECRET'\nquote_currency = 'USDT'\npoll_interval_s = 0.5\n"
            f"ccxt = {ccxt_table}\n"
        ),
        api_port=0,
    )
    env = {**os.environ, "NB_KEY": FAKE_KEY, "NB_SECRET": FAKE_SECRET}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "nija_broker.service.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    assert "nija-broker running: 1 accounts, API http://127.0.0.1:" in line
    url = line.split("API ")[1].split(";")[0]
    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "nija_broker.service.cli", "status", "--url", url, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    (row,) = json.loads(status.stdout)["accounts"]
    assert row["sync"] == "ok"
    process.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 0, err.decode()
    assert "nija-broker stopped" in out.decode()
    for text in (line, out.decode(), err.decode(), status.stdout, status.stderr):
        assert FAKE_KEY not in text
        assert FAKE_SECRET not in text
