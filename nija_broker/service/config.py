"""Configuration: one TOML file, validated by pydantic, unknown keys rejected.

Secrets never live in the file. An account names the environment variables
that hold its keys (``api_key_env``, ``secret_env``, ``password_env``); the
values are read from the environment only when an exchange is built, and no
error message ever contains them.

:func:`config_problems` lists every reason ``nija-broker run`` would refuse a
configuration, in one pass, each a :class:`Problem` naming the file, the key
and (unless it may be a secret) the value: every field error of every table
(pydantic collects them all), the rules across fields (unique account ids,
tiers that exist), and what only this machine can say (the exchange ids ccxt
knows, the environment variables named, the API binding's token, the store's
directory). ``check-config`` prints them; ``run`` refuses to start on any.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from nija_broker.core.breakers import BreakerName
from nija_broker.core.errors import ConfigError
from nija_broker.core.settings import GuardSettings, ReconcilerSettings
from nija_broker.core.symbols import normalize_symbol
from nija_broker.core.tiers import DEFAULT_TIERS, TierPolicy, TierTable
from nija_broker.service.logs import register_secret

# Upper case only: exchange keys are mixed case or base64, so a pasted key fails here.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_EXCHANGE_ID = re.compile(r"^[a-z0-9_]+$")
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

    @field_validator("token_env")
    @classmethod
    def _token_env_name(cls, value: str | None) -> str | None:
        return _check_env_name(value)


class TierOverride(_Strict):
    """Any field of :class:`~nija_broker.core.tiers.TierPolicy` except its name."""

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
    breakers: list[BreakerName] | None = None
    max_drawdown_pct: float | None = Field(default=None, gt=0, le=100)
    resume_drawdown_pct: float | None = Field(default=None, ge=0, le=100)
    expectancy_window: int | None = Field(default=None, ge=1)
    max_daily_loss_pct: float | None = Field(default=None, gt=0, le=100)
    max_daily_loss_usd: float | None = Field(default=None, gt=0)
    max_loss_streak: int | None = Field(default=None, ge=1)
    loss_streak_cooldown_s: float | None = Field(default=None, gt=0)
    stoploss_cooldown_s: float | None = Field(default=None, gt=0)


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
        if not _EXCHANGE_ID.match(value):
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
    """``[reconciler]``: overrides of :class:`~nija_broker.sync.reconciler.ReconcilerSettings`.

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
        """The reconciler's settings, carrying each account's poll and balance intervals."""
        return ReconcilerSettings(
            poll_interval_by_account={a.id: a.poll_interval_s for a in accounts},
            balance_interval_by_account={a.id: a.balance_interval_s for a in accounts},
            watch_symbols_by_account={a.id: tuple(a.watch_symbols) for a in accounts},
            **self.model_dump(exclude_none=True),
        )


class GuardConfig(_Strict):
    """``[guard]``: overrides of :class:`~nija_broker.guard.guard.GuardSettings`."""

    reservation_ttl_s: float | None = None
    settle_max_s: float | None = None
    dust_usd: float | None = None
    not_found_grace_s: float | None = None

    @model_validator(mode="after")
    def _in_range(self) -> GuardConfig:
        self.settings()  # GuardSettings checks its own ranges
        return self

    def settings(self) -> GuardSettings:
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
    def _check_across(self, info: ValidationInfo) -> Config:
        # parse_config and config_problems list these next to every field error instead.
        if not (info.context or {}).get(_LISTED_APART):
            problems = _across_fields(self.model_dump(), "<config>")
            if problems:
                raise ValueError("; ".join(p.text() for p in problems))
            self.tier_table()
        return self

    def tier_table(self) -> TierTable:
        defaults = {t.name: t for t in DEFAULT_TIERS}
        tiers = dict(defaults)
        for name, override in self.tiers.items():
            changes = override.model_dump(exclude_none=True)
            if name in defaults:
                # Validated again: a change may break a rule across fields (resume < max).
                try:
                    tiers[name] = TierPolicy.model_validate(
                        {**defaults[name].model_dump(), **changes})
                except ValidationError as exc:
                    raise ValueError("; ".join(
                        str(e["msg"]).removeprefix("Value error, ")
                        for e in exc.errors(include_url=False))) from None
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


# ---------------------------------------------------------------------------- problems

_LISTED_APART = "nija_broker.service.config: across-field rules listed apart"
_ENV_FIELDS = ("api_key_env", "secret_env", "password_env")
# Keys people paste a credential under, and the field that names its variable instead.
_PASTED = {"api_key": "api_key_env", "apikey": "api_key_env", "key": "api_key_env",
           "secret": "secret_env", "api_secret": "secret_env", "secret_key": "secret_env",
           "password": "password_env", "passphrase": "password_env",
           "token": "api.token_env", "api_token": "api.token_env"}


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a configuration would be refused: where (file, key), what, and the value.

    ``value`` is the value as the file has it (a repr), ``None`` when there is none;
    ``hidden`` says it is not shown because a key may have been pasted there.
    ``hint`` says how to fix it ("did you mean ...").
    """

    file: str
    key: str
    message: str
    value: str | None = None
    hidden: bool = False
    hint: str | None = None

    def text(self) -> str:
        """The problem without its file: ``key: message (value: ...); hint``."""
        text = f"{self.key}: {self.message}" if self.key else self.message
        if self.hidden:
            text += " (value not shown)"
        elif self.value is not None:
            text += f" (value: {self.value})"
        return f"{text}; {self.hint}" if self.hint else text

    def __str__(self) -> str:
        return f"{self.file}: {self.text()}"


def config_problems(source: str | Path | Mapping[str, Any],
                    environ: Mapping[str, str] | None = None, *,
                    file: str | None = None) -> list[Problem]:
    """Every reason ``nija-broker run`` would refuse this configuration; ``[]`` when it starts.

    ``source`` is a TOML file's path or its parsed table; ``environ`` defaults to
    the process environment. Nothing is created or changed: the store's directory
    is only inspected, and each exchange is built without its keys (whose
    variables are checked by name).
    """
    if isinstance(source, Mapping):
        name, data = file or "<config>", dict(source)
    else:
        name = file or str(source)
        read = _read_toml(Path(source), name)
        if isinstance(read, Problem):
            return [read]
        data = read
    from nija_broker.service.config_checks import machine_problems  # it imports this module

    env = os.environ if environ is None else environ
    return _by_table([*_shape_problems(data, name), *machine_problems(data, name, env)])


def _by_table(problems: list[Problem]) -> list[Problem]:
    """Grouped by table, accounts in order; each group's problems in the order found."""

    def table(problem: Problem) -> tuple[str, int]:
        name, _, index = problem.key.partition("[")
        number = index.split("]", 1)[0]
        return name.split(".", 1)[0], int(number) if number.isdigit() else -1

    return sorted(problems, key=table)


def _read_toml(path: Path, file: str) -> dict[str, Any] | Problem:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Problem(file, "", f"cannot read: {exc.strerror}")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return Problem(file, "", f"not valid TOML: {exc}")


def _shape_problems(data: Mapping[str, Any], file: str) -> list[Problem]:
    """Field errors of every table, the rules across fields, then the tier table's own rules."""
    try:
        config = Config.model_validate(data, context={_LISTED_APART: True})
    except ValidationError as exc:
        fields = [_field_problem(e, data, file) for e in exc.errors(include_url=False)]
        return fields + _across_fields(data, file)
    across = _across_fields(data, file)
    if across:
        return across
    try:
        config.tier_table()
    except ValueError as exc:  # e.g. the lowest tier no longer starts at 0
        return [Problem(file, "tiers", str(exc))]
    return []


def _key_path(loc: Sequence[int | str], data: Mapping[str, Any]) -> str:
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


def _field_problem(err: ErrorDetails, data: Mapping[str, Any], file: str) -> Problem:
    loc = tuple(err["loc"])
    key = _key_path(loc, data) or "(top level)"
    leaf = str(loc[-1]) if loc else ""
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        return _unknown_key(loc, key, value, file)
    message = err["msg"].removeprefix("Value error, ")
    # A value that may be a key is never echoed: an env-name field (a key pasted in place
    # of its variable's name), a credential field, anything under [accounts.ccxt].
    secret = "env" in leaf.lower() or leaf.lower() in _SECRET_KEYS or "ccxt" in loc
    if err["type"] == "missing" or value is None or isinstance(value, dict | list):
        return Problem(file, key, message)
    return Problem(file, key, message, None if secret else repr(value), hidden=secret)


def _unknown_key(loc: tuple[int | str, ...], key: str, value: Any, file: str) -> Problem:
    leaf = str(loc[-1])
    named = _PASTED.get(leaf.lower())
    if named is not None:
        return Problem(file, key, "a credential may not be written in the file", hidden=True,
                       hint=f"put it in an environment variable and give that variable's "
                            f"name as {named}")
    fields = _fields_at(loc[:-1])
    hint = _did_you_mean(leaf, fields) or (
        f"known keys here: {', '.join(fields)}" if fields else None)
    # Numbers and booleans cannot be a pasted key; a string under an unknown name might be.
    if isinstance(value, bool | int | float):
        return Problem(file, key, "unknown key", repr(value), hint=hint)
    return Problem(file, key, "unknown key", hidden=isinstance(value, str), hint=hint)


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The field names of the table at ``loc`` (``('accounts', 0)``), for "did you mean"."""
    node: Any = Config
    for item in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(item))
            if field is None:
                return []
            node = field.annotation
        elif get_origin(node) is list and isinstance(item, int):
            node = get_args(node)[0]
        elif get_origin(node) is dict and isinstance(item, str):
            node = get_args(node)[1]
        else:
            return []
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def _accounts(data: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    accounts = data.get("accounts")
    if not isinstance(accounts, list):
        return []
    return [(i, a) for i, a in enumerate(accounts) if isinstance(a, dict)]


def _across_fields(data: Mapping[str, Any], file: str) -> list[Problem]:
    """Rules no single field can judge: unique account ids, tiers that exist and are whole.

    Judged on the raw tables, so they are listed whether or not the fields validate.
    """
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, account in _accounts(data):
        ident = account.get("id")
        if isinstance(ident, str) and ident in first:
            problems.append(Problem(
                file, _key_path(("accounts", i, "id"), data),
                f"account ids must be unique: repeated (first at accounts[{first[ident]}])",
                repr(ident)))
        elif isinstance(ident, str):
            first[ident] = i
    tiers = data.get("tiers")
    tiers = tiers if isinstance(tiers, dict) else {}
    defaults = [t.name for t in DEFAULT_TIERS]
    for name, override in tiers.items():
        if name in defaults or not isinstance(override, dict):
            continue
        missing = [f for f in ("min_equity_usd", "max_positions") if override.get(f) is None]
        if missing:
            problems.append(Problem(
                file, f"tiers.{name}", f"a new tier needs {' and '.join(missing)}",
                hint=_did_you_mean(name, defaults) or f"known tiers: {', '.join(defaults)}"))
    known = [*defaults, *(str(n) for n in tiers if n not in defaults)]
    for i, account in _accounts(data):
        tier = account.get("tier")
        if isinstance(tier, str) and tier != "auto" and tier not in known:
            choices = ", ".join([*known, "auto"])
            hint = _did_you_mean(tier, [*known, "auto"])
            problems.append(Problem(
                file, _key_path(("accounts", i, "tier"), data), "unknown tier", repr(tier),
                hint=f"{hint} (known: {choices})" if hint else f"known: {choices}"))
    return problems


# ---------------------------------------------------------------------------- loading


def _refuse(problems: list[Problem], file: str) -> ConfigError:
    return ConfigError("\n".join(str(p) for p in problems), file=file)


def parse_config(data: dict[str, Any], file: str = "<config>") -> Config:
    """Validate a parsed table; every problem of its shape is named by file, key and value.

    The environment and the machine are not consulted: see :func:`config_problems`.
    """
    problems = _shape_problems(data, file)
    if problems:
        raise _refuse(_by_table(problems), file)
    return Config.model_validate(data, context={_LISTED_APART: True})


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML file; every problem is named by file, key and value."""
    file = str(path)
    read = _read_toml(Path(path), file)
    if isinstance(read, Problem):
        raise _refuse([read], file)
    return parse_config(read, file)


def load_checked_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """:func:`load_config` refusing, in one :class:`ConfigError`, every problem
    :func:`config_problems` finds: what ``nija-broker run`` starts from."""
    problems = config_problems(path, environ)
    if problems:
        raise _refuse(problems, str(path))
    return load_config(path)
