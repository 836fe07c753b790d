from __future__ import annotations

from pathlib import Path

import pytest

from nija_broker.core.errors import ConfigError
from nija_broker.core.tiers import MICRO_CAP, STANDARD
from nija_broker.service.config import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
FAKE_SECRET = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def test_example_configuration_is_valid() -> None:
    config = load_config(REPO / "config" / "live.example.toml")
    assert [a.id for a in config.accounts] == ["PLATFORM", "USER:alice", "USER:bob"]
    assert config.account("USER:bob").tier == MICRO_CAP
    assert config.account("USER:bob").ccxt == {"options": {"adjustForTimeDifference": True}}


def test_unknown_key_is_named_with_file_and_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "[store]\npth = 'x'\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}: store.pth: unknown key" in str(info.value)


def test_bad_value_is_named_with_account_id_and_value(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[[accounts]]\nid = 'USER:bob'\nexchange = 'kraken'\npoll_interval_s = -5\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "accounts[0](id='USER:bob').poll_interval_s" in message
    assert "-5" in message


def test_key_pasted_in_place_of_env_name_is_rejected_without_printing_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"[[accounts]]\nid = 'PLATFORM'\nexchange = 'kraken'\napi_key_env = '{FAKE_SECRET}'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "api_key_env" in str(info.value)
    assert FAKE_SECRET not in str(info.value)


def test_secret_in_ccxt_table_is_rejected_without_printing_it(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[[accounts]]\nid = 'PLATFORM'\nexchange = 'kraken'\n"
        f"[accounts.ccxt]\nsecret = '{FAKE_SECRET}'\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "credentials may not be set in the file" in str(info.value)
    assert FAKE_SECRET not in str(info.value)


def test_credentials_come_from_the_environment_only() -> None:
    config = parse_config(
        {
            "accounts": [
                {
                    "id": "PLATFORM",
                    "exchange": "kraken",
                    "api_key_env": "K",
                    "secret_env": "S",
                }
            ]
        }
    )
    account = config.account("PLATFORM")
    env = {"K": "key-value-1", "S": "secret-value-2"}
    assert account.credentials(env) == {"apiKey": "key-value-1", "secret": "secret-value-2"}
    with pytest.raises(ConfigError, match="environment variable S") as info:
        account.credentials({"K": "key-value-1"})
    assert "key-value-1" not in str(info.value)


def test_tier_override_changes_only_the_named_fields() -> None:
    config = parse_config({"tiers": {"MICRO_CAP": {"max_positions": 2}}})
    micro = config.tier_table().get(MICRO_CAP)
    assert micro.max_positions == 2
    assert micro.allow_dca is False
    assert micro.min_equity_usd == 15.0


def test_pinning_an_unknown_tier_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"tier: unknown tier \(value: 'MEGA'\); known: "):
        parse_config({"accounts": [{"id": "A", "exchange": "kraken", "tier": "MEGA"}]})


def test_duplicate_account_ids_are_an_error() -> None:
    accounts = [{"id": "A", "exchange": "kraken"}, {"id": "A", "exchange": "binance"}]
    with pytest.raises(ConfigError, match="repeated"):
        parse_config({"accounts": accounts})


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[store\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_new_tier_can_be_defined() -> None:
    config = parse_config({"tiers": {"WHALE": {"min_equity_usd": 100000, "max_positions": 12}}})
    table = config.tier_table()
    assert table.band(250_000).name == "WHALE"
    assert table.band(5_000).name == STANDARD


def test_every_example_account_builds_its_ccxt_exchange_offline() -> None:
    """Sandbox flags and ccxt tables of the example are ones ccxt accepts (no request sent)."""
    import asyncio

    from adapters.ccxt_adapter import CcxtExchange

    config = load_config(REPO / "config" / "live.example.toml")
    names = [
        n
        for a in config.accounts
        for n in (a.api_key_env, a.secret_env, a.password_env)
        if n is not None
    ]
    environ = {name: f"fake-{i:02d}-value" for i, name in enumerate(names)}

    async def build_all() -> list[str]:
        built = [CcxtExchange.from_config(a, environ=environ) for a in config.accounts]
        ids = [e.exchange_id for e in built]
        for exchange in built:
            await exchange.aclose()
        return ids

    assert asyncio.run(build_all()) == ["kraken", "coinbaseexchange", "binance"]


def test_reconciler_and_guard_tables_override_the_defaults() -> None:
    config = parse_config(
        {
            "reconciler": {"call_timeout_s": 4.0, "failed_after": 3},
            "guard": {"reservation_ttl_s": 12.0},
            "accounts": [{"id": "A", "exchange": "kraken", "poll_interval_s": 2.0}],
        }
    )
    settings = config.reconciler.settings(config.accounts)
    assert (settings.call_timeout_s, settings.failed_after) == (4.0, 3)
    assert settings.poll_interval_for("A") == 2.0
    assert settings.confirm_budget == 20  # untouched default
    assert config.guard.settings().reservation_ttl_s == 12.0


def test_bad_reconciler_value_names_its_table() -> None:
    with pytest.raises(ConfigError, match=r"<config>: reconciler: .*call_timeout_s must be"):
        parse_config({"reconciler": {"call_timeout_s": -1}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"guard": {"ttl": 5}})


def test_rules_across_fields_do_not_hide_field_errors_nor_each_other() -> None:
    """Duplicate ids and an unknown tier used to stop validation at the first one, and only
    after every field was right: now one pass names them all."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "store": {"pth": "x"},
                "tiers": {"WHALE": {"max_positions": 9}},
                "accounts": [
                    {"id": "A", "exchange": "kraken", "poll_interval_s": 0},
                    {"id": "A", "exchange": "kraken", "tier": "WHALES"},
                ],
            },
            "live.toml",
        )
    lines = str(info.value).splitlines()
    assert lines == [  # grouped by table, accounts in order
        "live.toml: accounts[0](id='A').poll_interval_s: Input should be greater than 0 (value: 0)",
        "live.toml: accounts[1](id='A').id: account ids must be unique: repeated (first at "
        "accounts[0]) (value: 'A')",
        "live.toml: accounts[1](id='A').tier: unknown tier (value: 'WHALES'); did you mean "
        "'WHALE'? (known: BELOW_MIN, MICRO_CAP, SMALL_CAP, STANDARD, WHALE, auto)",
        "live.toml: store.pth: unknown key (value not shown); did you mean 'path'?",
        "live.toml: tiers.WHALE: a new tier needs min_equity_usd; known tiers: BELOW_MIN, "
        "MICRO_CAP, SMALL_CAP, STANDARD",
    ]


def test_a_model_built_directly_still_refuses_what_parse_config_lists() -> None:
    from nija_broker.service.config import Config

    with pytest.raises(ValueError, match="account ids must be unique"):
        Config.model_validate(
            {"accounts": [{"id": "A", "exchange": "kraken"}, {"id": "A", "exchange": "kraken"}]}
        )
    with pytest.raises(ValueError, match="the lowest tier must start at 0"):
        Config.model_validate({"tiers": {"BELOW_MIN": {"min_equity_usd": 5}}})
    with pytest.raises(ConfigError, match="tiers: the lowest tier must start at 0"):
        parse_config({"tiers": {"BELOW_MIN": {"min_equity_usd": 5}}})
