"""``nija-broker check-config``: every problem ``run`` would refuse, in one pass, each named by
file, key and value; exit 0 exactly when ``run`` would start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nija_broker.service.cli import main
from nija_broker.service.config import config_problems, load_config

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "qW3rTy7UiOp0AsDfGhJkLzXcVbNm1234qW3rTy7UiOp0AsDfGhJkLzXcVbNm5678"

TEN_MISTAKES = """
tier_hysteresis = 2.0                 # 1: misspelt tier_hysteresis_pct

[store]
path = "{not_a_dir}/state.sqlite3"    # 2: its directory is a file

[api]
host = "0.0.0.0"                      # 3: off loopback without api.token_env

[reconciler]
call_timeout_s = -1                   # 4: out of range

[[accounts]]
id = "PLATFORM"
exchange = "krakn"                    # 5: no such ccxt exchange
api_key_env = "NB_CHECK_KEY"
secret_env = "NB_CHECK_SECRET"        # 6: not set in the environment
poll_interval_s = -5                  # 7: out of range

[[accounts]]
id = "PLATFORM"                       # 8: repeated id
exchange = "binance"
tier = "MIRCO_CAP"                    # 9: no such tier
pol_interval_s = 5                    # 10: misspelt poll_interval_s
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check-config", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_ten_different_mistakes_are_all_listed_in_one_pass_with_file_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("NB_CHECK_KEY", FAKE_KEY)
    monkeypatch.delenv("NB_CHECK_SECRET", raising=False)
    path = _write(tmp_path, TEN_MISTAKES.format(not_a_dir=not_a_dir))

    code, out, err = _check(path, capsys)

    assert code == 2
    assert out == ""
    first, second = "accounts[0](id='PLATFORM')", "accounts[1](id='PLATFORM')"
    expected = [  # (key, what is wrong, the value as the file has it)
        ("tier_hysteresis", "unknown key", "(value: 2.0); did you mean 'tier_hysteresis_pct'?"),
        ("store.path", f"{not_a_dir} is not a directory", f"'{not_a_dir}/state.sqlite3'"),
        ("api.host", "not a loopback address: set api.token_env", "(value: '0.0.0.0')"),
        ("reconciler", "call_timeout_s must be", "-1"),
        (
            f"{first}.exchange",
            "unknown ccxt exchange id",
            "(value: 'krakn'); did you mean 'kraken'?",
        ),
        (
            f"{first}.secret_env",
            "environment variable NB_CHECK_SECRET is not set",
            "(value: 'NB_CHECK_SECRET')",
        ),
        (f"{first}.poll_interval_s", "greater than 0", "(value: -5)"),
        (f"{second}.id", "account ids must be unique", "(value: 'PLATFORM')"),
        (f"{second}.tier", "unknown tier", "(value: 'MIRCO_CAP'); did you mean 'MICRO_CAP'?"),
        (f"{second}.pol_interval_s", "unknown key", "(value: 5); did you mean 'poll_interval_s'?"),
    ]
    lines = err.splitlines()
    for key, what, value in expected:
        found = [line for line in lines if line.startswith(f"{path}: {key}: ")]
        assert len(found) == 1, (key, err)
        assert what in found[0], found[0]
        assert value in found[0], found[0]
    assert lines[-1] == f"{path}: 10 problems; nija-broker run would refuse this configuration"
    assert len(lines) == 11
    assert FAKE_KEY not in err


def test_run_refuses_with_the_same_problems_and_exit_code_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NB_CHECK_SECRET", raising=False)
    monkeypatch.setenv("NB_CHECK_KEY", "   ")  # blank counts as missing
    path = _write(
        tmp_path,
        (
            f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n'
            "[[accounts]]\nid = 'A'\nexchange = 'kraken'\napi_key_env = 'NB_CHECK_KEY'\n"
            "secret_env = 'NB_CHECK_SECRET'\n"
        ),
    )
    code, _, checked = _check(path, capsys)
    assert code == 2
    assert "environment variable NB_CHECK_KEY is blank" in checked
    assert "environment variable NB_CHECK_SECRET is not set" in checked

    assert main(["run", "--config", str(path)]) == 2
    refused = capsys.readouterr().err
    assert checked.splitlines()[:-1] == refused.splitlines()
    assert not (tmp_path / "state.sqlite3").exists()


def test_the_example_configurations_pass_once_their_variables_are_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative store paths land here, and must not be created
    for name in ("live.example.toml", "demo.toml"):
        path = REPO / "config" / name
        config = load_config(path)
        for account in config.accounts:
            for variable in (account.api_key_env, account.secret_env, account.password_env):
                if variable is not None:
                    monkeypatch.setenv(variable, f"set-for-the-test-{variable.lower()}")
        code, out, err = _check(path, capsys)
        assert code == 0, err
        assert out.startswith(f"{path}: OK, nija-broker run would start with it\n")
        assert err == ""
    assert not any(tmp_path.iterdir())


def test_without_its_variables_the_example_lists_each_one_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = REPO / "config" / "live.example.toml"
    problems = config_problems(path, environ={})
    assert [p.message for p in problems] == [
        f"environment variable {name} is not set"
        for name in (
            "NIJA_PLATFORM_KRAKEN_KEY",
            "NIJA_PLATFORM_KRAKEN_SECRET",
            "NIJA_ALICE_COINBASE_KEY",
            "NIJA_ALICE_COINBASE_SECRET",
            "NIJA_ALICE_COINBASE_PASSPHRASE",
            "NIJA_BOB_BINANCE_KEY",
            "NIJA_BOB_BINANCE_SECRET",
        )
    ]
    assert all(p.file == str(path) for p in problems)


@pytest.mark.parametrize(
    ("pasted", "hint"),
    [("api_key", "api_key_env"), ("secret", "secret_env"), ("password", "password_env")],
)
def test_a_pasted_secret_gets_the_hint_to_name_a_variable_and_is_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pasted: str, hint: str
) -> None:
    path = _write(
        tmp_path, f"[[accounts]]\nid = 'PLATFORM'\nexchange = 'kraken'\n{pasted} = '{FAKE_KEY}'\n"
    )
    code, out, err = _check(path, capsys)
    assert code == 2
    (line, _summary) = err.splitlines()
    assert line.startswith(f"{path}: accounts[0](id='PLATFORM').{pasted}: ")
    assert "may not be written in the file (value not shown)" in line
    assert f"give that variable's name as {hint}" in line
    assert FAKE_KEY not in out + err


def test_a_key_pasted_as_a_token_variable_name_is_refused_without_printing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path, f"[api]\ntoken_env = '{FAKE_KEY}'\n[[accounts]]\nid = 'A'\nexchange = 'kraken'\n"
    )
    code, _, err = _check(path, capsys)
    assert code == 2
    assert f"{path}: api.token_env: must be the NAME of an environment variable" in err
    assert FAKE_KEY not in err


def test_misspelt_keys_and_exchange_ids_get_a_did_you_mean(tmp_path: Path) -> None:
    problems = config_problems(
        {
            "api": {"hots": "127.0.0.1"},
            "guard": {"reservation_ttl": 10},
            "tiers": {"MICRO_CAP": {"max_position": 3}},
            "accounts": [{"id": "A", "exchange": "binanse"}, {"id": "B", "exchange": "okex5"}],
        },
        environ={},
        file="live.toml",
    )
    hints = {p.key: p.hint for p in problems}
    assert hints == {
        "api.hots": "did you mean 'host'?",
        "guard.reservation_ttl": "did you mean 'reservation_ttl_s'?",
        "tiers.MICRO_CAP.max_position": "did you mean 'max_positions'?",
        "accounts[0](id='A').exchange": "did you mean 'binance'?",
        "accounts[1](id='B').exchange": "did you mean 'okx'?",
    }
    assert str(problems[0]) == (
        "live.toml: accounts[0](id='A').exchange: unknown ccxt exchange id (value: 'binanse'); "
        "did you mean 'binance'?"
    )


def test_a_binding_off_loopback_needs_a_token_variable_that_is_set(tmp_path: Path) -> None:
    base = {
        "store": {"path": str(tmp_path / "s.sqlite3")},
        "accounts": [{"id": "A", "exchange": "kraken"}],
    }
    bare = config_problems({**base, "api": {"host": "0.0.0.0"}}, environ={})
    assert [(p.key, p.value) for p in bare] == [("api.host", "'0.0.0.0'")]
    named = {**base, "api": {"host": "0.0.0.0", "token_env": "NB_TOKEN"}}
    unset = config_problems(named, environ={})
    assert [(p.key, p.message) for p in unset] == [
        ("api.token_env", "environment variable NB_TOKEN is not set")
    ]
    assert config_problems(named, environ={"NB_TOKEN": "a-long-bearer-token"}) == []
    # On loopback a named token must be set too: run reads it whatever the host.
    loopback = {**base, "api": {"token_env": "NB_TOKEN"}}
    assert [p.key for p in config_problems(loopback, environ={"NB_TOKEN": ""})] == ["api.token_env"]


def test_the_store_directory_is_judged_without_creating_anything(tmp_path: Path) -> None:
    def problems(store_path: Path) -> list[str]:
        found = config_problems(
            {"store": {"path": str(store_path)}, "accounts": [{"id": "A", "exchange": "kraken"}]},
            environ={},
        )
        return [p.message for p in found]

    assert problems(tmp_path / "new" / "deeper" / "state.sqlite3") == []
    assert not (tmp_path / "new").exists()
    assert problems(tmp_path) == ["is a directory; name the SQLite file in it"]
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    assert problems(blocker / "state.sqlite3") == [f"{blocker} is not a directory"]


def test_a_sandbox_ccxt_does_not_have_is_refused_as_run_refuses_it(tmp_path: Path) -> None:
    found = config_problems(
        {
            "store": {"path": str(tmp_path / "s.sqlite3")},
            "accounts": [{"id": "A", "exchange": "kraken", "sandbox": True}],
        },
        environ={},
    )
    assert [(p.key, p.message, p.value) for p in found] == [
        ("accounts[0](id='A').sandbox", "kraken has no sandbox in ccxt", "True")
    ]


def test_no_accounts_is_a_problem_because_run_needs_one(tmp_path: Path) -> None:
    found = config_problems({"store": {"path": str(tmp_path / "s.sqlite3")}}, environ={})
    assert [p.key for p in found] == ["accounts"]


def test_check_config_ends_quietly_when_its_reader_goes_away(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n'
        "[[accounts]]\nid = 'A'\nexchange = 'kraken'\n",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "nija_broker.service.cli", "check-config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()  # as `| head -0` would: every line written from now on fails
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()
    assert err == b""


def test_settings_ccxt_refuses_are_listed_by_check_config_and_refused_by_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NB_CHECK_KEY", FAKE_KEY)
    monkeypatch.setenv("NB_CHECK_SECRET", FAKE_KEY[::-1])
    path = _write(
        tmp_path,
        (
            f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n'
            "[api]\nport = 0\n"
            "[[accounts]]\nid = 'USER:alice'\nexchange = 'binance'\napi_key_env = 'NB_CHECK_KEY'\n"
            "secret_env = 'NB_CHECK_SECRET'\nccxt = { rateLimit = 'fast' }\n"
        ),
    )
    code, _, checked = _check(path, capsys)
    assert code == 2
    assert "accounts[0](id='USER:alice').ccxt" in checked
    assert "ccxt refused this account's settings: TypeError" in checked

    # run builds the exchanges once its API listens (ccxt's import takes seconds), and
    # refuses there: the same exit code, the account and its key named, nothing synced.
    assert main(["run", "--config", str(path)]) == 2
    refused = capsys.readouterr().err
    assert "account 'USER:alice': ccxt refused this account's settings: TypeError" in refused
    assert FAKE_KEY not in refused


def test_the_exchange_ids_checked_without_importing_ccxt_are_ccxts_own_list() -> None:
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from adapters.ccxt_backend import installed_exchange_ids as ids; "
            "listed = ids(); print('ccxt' in sys.modules); import ccxt; "
            "print(listed == list(ccxt.exchanges), len(listed))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    assert found[:2] == ["False", "True"]
    assert int(found[2]) > 100


def test_runs_checks_import_no_ccxt_so_its_api_can_answer_first(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f'[store]\npath = "{tmp_path / "s.sqlite3"}"\n'
        "[[accounts]]\nid = 'PLATFORM'\nexchange = 'binance'\n"
        "[[accounts]]\nid = 'USER:bob'\nexchange = 'krakn'\n",
    )
    script = (
        "import sys\n"
        "from nija_broker.core.errors import ConfigError\n"
        "from nija_broker.service.config import load_checked_config\n"
        "try:\n"
        f"    load_checked_config({str(path)!r}, build=False)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "print('ccxt imported:', 'ccxt' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert "unknown ccxt exchange id" in out
    assert "did you mean 'kraken'?" in out
    assert out.strip().endswith("ccxt imported: False")
