"""Configuration: one TOML file, validated by pydantic, unknown keys rejected.

Secrets never live in the file. An account names the environment variables
that hold its keys (``api_key_env``, ``secret_env``, ``password_env``); the
values are read from the environment only when an exchange is built, and no
error message ever contains them.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .logs import register_secret
from .symbols import normalize_symbol
from .tiers import DEFAULT_TIERS, TierPolicy, TierTable

if TYPE_CHECKING:
    from .guard import GuardSettings
    from .reconciler import ReconcilerSettings

# Upper case only: exchange keys are mixed case or base64, so a pasted key fails here.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
# Keys that would put a credential in the file; ccxt accepts all of these.
_SECRET_KEYS = frozenset(
    {"apikey", "secret", "password", "uid", "privatekey", "walletaddress", "token", "api_key"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StoreConfig(_Strict):
    path: str = "nija_broker.sqlite3"


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token_env: str | None = None


class TierOverride(_Strict):
    """Any field of :class:`~nija_broker.tiers.TierPolicy` except its name."""

    min_equity_usd: float | None = Field(default=None, ge=0)
    entries_allowed: bool | None = None
    max_positions: int | None = Field(default=None, ge=0)
    allow_dca: bool | None = None
    allow_multiple_entries_same_symbol: bool | None = None
    fragmentation_threshold: float | None = Field(default=None, gt=0)
    fragmentation_blocks_entries: bool | None = None
    stale_max_age_s: float | None = Field(default=None, gt=0)
    stale_action: Literal["cancel", "alert"] | None = None
    stale_includes_exits: bool | None = None
    min_trade_usd: float | None = Field(default=None, ge=0)
    fail_closed: bool | None = None


def _check_env_name(value: str | None) -> str | None:
    # The value is not echoed: someone may have pasted the key itself here.
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable (A-Z, 0-9, _), "
            "not a key; the value is not shown"
        )
    return value


class AccountConfig(_Strict):
    id: str = Field(min_length=1)
    exchange: str = Field(min_length=1, description="a ccxt exchange id, e.g. 'kraken'")
    api_key_env: str | None = None
    secret_env: str | None = None
    password_env: str | None = None
    sandbox: bool = False
    tier: str = "auto"
    poll_interval_s: float = Field(default=5.0, gt=0)
    balance_interval_s: float = Field(default=60.0, gt=0)
    fee_rate: float = Field(default=0.004, ge=0, lt=0.1)
    quote_currency: str = Field(default="USD", pattern=r"^[A-Z0-9]{2,10}$",
                                description="currency equity and tiers are counted in")
    watch_symbols: list[str] = Field(
        default_factory=list,
        description="symbols the closed-orders sweep always covers (BTC/USDT or BTC-USDT)")
    ccxt: dict[str, Any] = Field(default_factory=dict)

    _env_names = field_validator("api_key_env", "secret_env", "password_env")(
        classmethod(lambda cls, v: _check_env_name(v))
    )

    @field_validator("exchange")
    @classmethod
    def _exchange_id(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9_]+$", value):
            raise ValueError(f"must be a ccxt exchange id like 'kraken', got {value!r}")
        return value

    @field_validator("watch_symbols")
    @classmethod
    def _watch_symbols(cls, value: list[str]) -> list[str]:
        return [normalize_symbol(symbol) for symbol in value]

    @field_validator("ccxt")
    @classmethod
    def _no_secrets_in_ccxt(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = sorted(k for k in value if k.lower() in _SECRET_KEYS)
        if found:
            raise ValueError(
                f"credentials may not be set in the file ({', '.join(found)}); "
                "name environment variables with api_key_env / secret_env instead"
            )
        return value

    def credentials(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """Read this account's keys from the environment. Raises naming the variable only."""
        env = os.environ if environ is None else environ
        found: dict[str, str] = {}
        for field, ccxt_key in (("api_key_env", "apiKey"), ("secret_env", "secret"),
                                ("password_env", "password")):
            name = getattr(self, field)
            if name is None:
                continue
            if not env.get(name):
                raise ConfigError(
                    f"account {self.id!r}: environment variable {name} ({field}) is not set",
                    key=f"accounts.{self.id}.{field}",
                )
            found[ccxt_key] = env[name]
            register_secret(env[name])
        return found


class ReconcilerConfig(_Strict):
    """``[reconciler]``: overrides of :class:`~nija_broker.reconciler.ReconcilerSettings`.

    Poll and balance intervals are set per account (``poll_interval_s``,
    ``balance_interval_s``). Unset keys keep the defaults.
    """

    jitter: float | None = None
    call_timeout_s: float | None = None
    confirm_budget: int | None = None
    attention_after: int | None = None
    visibility_window_s: float | None = None
    stale_cancel_budget: int | None = None
    failed_after: int | None = None
    max_backoff_s: float | None = None
    fatal_retry_s: float | None = None
    sweep_lookback_s: float | None = None
    shutdown_timeout_s: float | None = None

    @model_validator(mode="after")
    def _in_range(self) -> ReconcilerConfig:
        self.settings([])  # ReconcilerSettings checks its own ranges
        return self

    def settings(self, accounts: list[AccountConfig]) -> ReconcilerSettings:
        from .reconciler import ReconcilerSettings

        return ReconcilerSettings.from_accounts(accounts, **self.model_dump(exclude_none=True))


class GuardConfig(_Strict):
    """``[guard]``: overrides of :class:`~nija_broker.guard.GuardSettings`."""

    reservation_ttl_s: float | None = None
    settle_max_s: float | None = None
    dust_usd: float | None = None
    not_found_grace_s: float | None = None

    @model_validator(mode="after")
    def _in_range(self) -> GuardConfig:
        self.settings()  # GuardSettings checks its own ranges
        return self

    def settings(self) -> GuardSettings:
        from .guard import GuardSettings

        return GuardSettings(**self.model_dump(exclude_none=True))


class Config(_Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    reconciler: ReconcilerConfig = Field(default_factory=ReconcilerConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    tiers: dict[str, TierOverride] = Field(default_factory=dict)
    tier_hysteresis_pct: float = Field(default=2.0, ge=0, lt=50)
    accounts: list[AccountConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Config:
        ids = [a.id for a in self.accounts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"account ids must be unique; repeated: {dupes}")
        table = self.tier_table()
        for account in self.accounts:
            if account.tier != "auto":
                try:
                    table.get(account.tier)
                except KeyError as exc:
                    raise ValueError(f"account {account.id!r}: {exc.args[0]}") from None
        return self

    def tier_table(self) -> TierTable:
        defaults = {t.name: t for t in DEFAULT_TIERS}
        tiers = dict(defaults)
        for name, override in self.tiers.items():
            changes = override.model_dump(exclude_none=True)
            if name in defaults:
                tiers[name] = defaults[name].model_copy(update=changes)
            elif "min_equity_usd" not in changes or "max_positions" not in changes:
                raise ValueError(
                    f"new tier {name!r} needs min_equity_usd and max_positions "
                    f"(known tiers: {sorted(defaults)})"
                )
            else:
                changes.setdefault("allow_dca", False)
                changes.setdefault("allow_multiple_entries_same_symbol", False)
                tiers[name] = TierPolicy(name=name, **changes)
        return TierTable(tuple(tiers.values()), self.tier_hysteresis_pct)

    def account(self, account_id: str) -> AccountConfig:
        for account in self.accounts:
            if account.id == account_id:
                return account
        raise KeyError(f"no account {account_id!r} in the configuration")


def _key_path(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """``('accounts', 1, 'poll_interval_s')`` -> ``accounts[1](id='USER:bob').poll_interval_s``."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id")
                if isinstance(ident, str):
                    label += f"(id={ident!r})"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _explain(exc: ValidationError, data: dict[str, Any], file: str) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False, include_input=True):
        key = _key_path(tuple(err["loc"]), data) or "(top level)"
        message = err["msg"]
        leaf = str(err["loc"][-1]).lower() if err["loc"] else ""
        show_value = err["type"] not in ("missing",) and "env" not in leaf and (
            leaf not in _SECRET_KEYS and "ccxt" not in key
        )
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            show_value = False
        value = f" (value: {err['input']!r})" if show_value and err.get("input") is not None else ""
        if isinstance(err.get("input"), dict | list):
            value = ""
        lines.append(f"{file}: {key}: {message}{value}")
    return lines


def parse_config(data: dict[str, Any], file: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = _explain(exc, data, file)
        raise ConfigError("\n".join(lines), file=file) from None


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML file; every problem is named by file, key and value."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}", file=file) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}", file=file) from None
    return parse_config(data, file)
