"""A rehearsal in one command: ``nija-broker emulator --write-config PATH``, then ``run``.

Each test drives the real commands as a trader types them, in subprocesses: the
emulator writes the configuration and the environment file, a POSIX shell loads
that file (``. FILE``), ``check-config`` accepts the configuration, ``run`` syncs
every account through real ccxt against the emulator, and ``status`` (finding the
configuration through the environment file) shows the demo's three accounts in
their tiers. Every wait is on a condition, with a generous limit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.emulator.demo_accounts import DEMO_BALANCES
from nija_broker.service.cli import main
from nija_broker.state.store import StoreLock

REPO = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "nija_broker.service.cli")
# The demo's story: one account per tier (nija_broker/demo/world.py opens the same ones).
EXPECTED_TIERS = {"PLATFORM": "STANDARD", "USER:alice": "MICRO_CAP", "USER:bob": "SMALL_CAP"}
QUOTES = {"binance": "USDT", "kraken": "USD"}
READY_LINE = "Then, in a third terminal:"
"""The emulator prints its next commands once both files are written; this line is last
but two."""
WAIT_S = 120.0
"""Upper bound on any one wait; a healthy run takes seconds."""


def _clean_environ() -> dict[str, str]:
    """This process's environment without anything a rehearsal sets."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("NIJA_", "PYTEST_"))}


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:g}s (last: {last!r})")


def _stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C, as a trader stops it; the rest of its output (its pipes closed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


class Emulator:
    """``nija-broker emulator --write-config CONFIG --port 0 --api-port 0`` in a subprocess."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.env_file = config.with_suffix(".env")
        self.process = subprocess.Popen(
            [
                *CLI,
                "emulator",
                "--write-config",
                str(config),
                "--port",
                "0",
                "--api-port",
                "0",
                *extra,
            ],
            cwd=REPO,
            env=_clean_environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.announced: list[str] = []

    def wait_ready(self) -> list[str]:
        """Read its output up to the next commands (the files are written by then)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.announced.append(line.rstrip("\n"))
            if line.strip() == READY_LINE:
                return self.announced
        stderr = self.process.stderr.read() if self.process.stderr else ""
        raise AssertionError(f"the emulator ended before writing its files: {stderr}")

    def stop(self) -> None:
        _stop(self.process)


@pytest.fixture
def emulators() -> Iterator[list[Emulator]]:
    started: list[Emulator] = []
    yield started
    for emulator in started:
        emulator.stop()


def _shell_environment(env_file: Path) -> dict[str, str]:
    """The environment after ``. FILE`` in a POSIX shell, as the README says to load it."""
    result = subprocess.run(
        ["sh", "-c", '. "$1" && exec env -0', "sh", str(env_file)],
        env=_clean_environ(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)


def _get_json(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError):
        return None  # not listening yet


def _all_accounts_ok(api: str) -> dict[str, Any] | None:
    answer = _get_json(f"{api}/healthz")
    if answer is None:
        return None
    _, health = answer
    accounts = health.get("accounts", {})
    if set(accounts) == set(EXPECTED_TIERS) and all(a["state"] == "ok" for a in accounts.values()):
        return health
    return None


def _tiers_known(api: str) -> dict[str, Any] | None:
    answer = _get_json(f"{api}/v1/accounts")
    if answer is None:
        return None
    _, document = answer
    rows = document.get("accounts", [])
    return document if rows and all(row["tier"] is not None for row in rows) else None


@pytest.mark.parametrize("dialect", ["binance", "kraken"])
def test_written_config_passes_check_config_and_run_syncs_every_demo_account(
    tmp_path: Path, emulators: list[Emulator], dialect: str
) -> None:
    config_path = tmp_path / "rehearsal.toml"
    emulator = Emulator(config_path, "--dialect", dialect)
    emulators.append(emulator)
    announced = "\n".join(emulator.wait_ready())
    env_file = tmp_path / "rehearsal.env"
    assert str(config_path) in announced
    assert str(env_file) in announced

    config = tomllib.loads(config_path.read_text())
    assert [a["id"] for a in config["accounts"]] == list(DEMO_BALANCES)
    assert config["api"]["host"] == "127.0.0.1"
    assert config["store"]["path"] == str(tmp_path / "rehearsal.sqlite3")
    emulator_url = next(word for word in announced.split() if word.startswith("http://127.0.0.1:"))
    assert not emulator_url.endswith(":0")  # --port 0: the real port went in the file
    for account in config["accounts"]:
        assert account["exchange"] == dialect
        assert account["quote_currency"] == QUOTES[dialect]
        assert "apiKey" not in account["ccxt"]
        assert "secret" not in account["ccxt"]
        urls = [u for u in account["ccxt"]["urls"]["api"].values() if isinstance(u, str)]
        assert urls
        assert all(url.startswith(emulator_url) for url in urls)
        ws = account["ccxt"]["urls"]["api"]["ws"]  # ccxt.pro's: the same emulator
        ws_urls = [
            u
            for value in ws.values()
            for u in (value.values() if isinstance(value, dict) else [value])
        ]
        assert ws_urls
        assert all(u.startswith(emulator_url.replace("http://", "ws://")) for u in ws_urls)

    # Without the environment file the keys are missing, and check-config says which.
    bare = subprocess.run(
        [*CLI, "check-config", str(config_path)],
        cwd=REPO,
        env=_clean_environ(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert bare.returncode == 2
    assert "NIJA_EMULATOR_PLATFORM_KEY" in bare.stderr

    environ = _shell_environment(env_file)
    assert environ["NIJA_BROKER_CONFIG"] == str(config_path)
    written = config_path.read_text()
    for account in config["accounts"]:  # keys only in the environment file
        assert environ[account["api_key_env"]] not in written
        assert environ[account["secret_env"]] not in written
    checked = subprocess.run(
        [*CLI, "check-config", str(config_path)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""  # no warning either: rate_budget "off" is on loopback

    api = f"http://127.0.0.1:{config['api']['port']}"
    run = subprocess.Popen(
        [*CLI, "run", "--config", str(config_path)],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = _wait_for(
            "every account ok in /healthz",
            lambda: _all_accounts_ok(api) if run.poll() is None else "run exited",
        )
        assert health != "run exited", _stop(run)
        _wait_for("every account's tier in /v1/accounts", lambda: _tiers_known(api))

        # `nija-broker status` finds the configuration through the environment file.
        status = subprocess.run(
            [*CLI, "status", "--json"],
            cwd=REPO,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        rows = {row["account_id"]: row for row in json.loads(status.stdout)["accounts"]}
        assert {a: row["tier"] for a, row in rows.items()} == EXPECTED_TIERS
        for account_id, balance in DEMO_BALANCES.items():
            assert rows[account_id]["sync"] == "ok"
            assert rows[account_id]["equity_usd"] == pytest.approx(balance)
    finally:
        output = _stop(run)
    assert run.returncode == 0, output


def test_existing_config_is_refused_without_force_and_left_untouched(tmp_path: Path) -> None:
    config_path = tmp_path / "rehearsal.toml"
    config_path.write_text("# the trader's own file\n")
    result = subprocess.run(
        [*CLI, "emulator", "--write-config", str(config_path), "--port", "0"],
        cwd=REPO,
        env=_clean_environ(),
        capture_output=True,
        text=True,
        check=False,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    assert str(config_path) in result.stderr
    assert "--force" in result.stderr
    assert config_path.read_text() == "# the trader's own file\n"
    assert not (tmp_path / "rehearsal.env").exists()


def test_an_earlier_rehearsals_store_alone_is_refused_without_force(tmp_path: Path) -> None:
    store = tmp_path / "rehearsal.sqlite3"
    store.write_bytes(b"")
    result = subprocess.run(
        [*CLI, "emulator", "--write-config", str(tmp_path / "rehearsal.toml"), "--port", "0"],
        cwd=REPO,
        env=_clean_environ(),
        capture_output=True,
        text=True,
        check=False,
        timeout=WAIT_S,
    )
    assert result.returncode == 2
    assert str(store) in result.stderr
    assert store.exists()
    assert not (tmp_path / "rehearsal.toml").exists()


def test_force_replaces_the_files_and_deletes_the_earlier_store(
    tmp_path: Path, emulators: list[Emulator]
) -> None:
    config_path = tmp_path / "rehearsal.toml"
    config_path.write_text("# an earlier rehearsal\n")
    (tmp_path / "rehearsal.env").write_text("export OLD=1\n")
    store = tmp_path / "rehearsal.sqlite3"
    store.write_bytes(b"an earlier emulator's orders")
    emulator = Emulator(config_path, "--force")
    emulators.append(emulator)
    emulator.wait_ready()
    assert not store.exists()
    assert [a["id"] for a in tomllib.loads(config_path.read_text())["accounts"]] == list(
        DEMO_BALANCES
    )
    assert "OLD" not in _shell_environment(tmp_path / "rehearsal.env")


def test_force_is_refused_while_a_sidecar_holds_the_store(tmp_path: Path) -> None:
    config_path = tmp_path / "rehearsal.toml"
    config_path.write_text("# a running rehearsal\n")
    store = tmp_path / "rehearsal.sqlite3"
    store.write_bytes(b"")
    with StoreLock.acquire(store):  # as `nija-broker run` holds it
        result = subprocess.run(
            [*CLI, "emulator", "--write-config", str(config_path), "--port", "0", "--force"],
            cwd=REPO,
            env=_clean_environ(),
            capture_output=True,
            text=True,
            check=False,
            timeout=WAIT_S,
        )
    assert result.returncode == 2
    assert "in use by" in result.stderr
    assert store.exists()
    assert config_path.read_text() == "# a running rehearsal\n"


def test_no_files_are_written_when_the_emulator_cannot_listen(tmp_path: Path) -> None:
    config_path = tmp_path / "rehearsal.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "emulator", "--write-config", str(config_path), "--port", str(port)],
            cwd=REPO,
            env=_clean_environ(),
            capture_output=True,
            text=True,
            check=False,
            timeout=WAIT_S,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", [["--force"], ["--api-port", "9000"]])
def test_write_config_options_alone_are_refused(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["emulator", *option]) == 2
    assert "need --write-config" in capsys.readouterr().err
