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
directory). ``check-config`` prints them; ``run`` refuses to start on any. How
a problem is named (key paths, hints, hidden values) and the rules across
fields live in :mod:`nija_broker.service.config_problems`; the machine's
checks in :mod:`nija_broker.service.config_checks`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nija_broker.core.breakers import BreakerName
from nija_broker.core.clock import DEFAULT_CALL_TIMEOUT_S
from nija_broker.core.errors import ConfigError
from nija_broker.core.exchange import ExchangeSpec
from nija_broker.core.settings import GuardSettings, ReconcilerSettings
from nija_broker.core.symbols import normalize_symbol
from nija_broker.core.tiers import DEFAULT_TIERS, TierPolicy, TierTable
from nija_broker.service.config_problems import (
    SECRET_KEYS,
    across_fields,
    by_table,
    field_problem,
    read_toml,
)
from nija_broker.service.config_problems import Problem as Problem  # public as nija_broker.Problem
from nija_broker.service.logs import register_secret

# Upper case only: exchange keys are mixed case or base64, so a pasted key fails here.
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_EXCHANGE_ID = re.compile(r"^[a-z0-9_]+$")


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
    full_listing_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds between listings of every symbol's open orders where listing "
        "only the symbols with orders is cheaper; unset: [reconciler] full_listing_interval_s",
    )
    rate_budget: Literal["venue", "off"] = Field(
        default="venue",
        description="'venue': wait for the exchange's documented rate limits (per IP and per "
        "key); 'off': no budget, only for a local exchange such as the emulator on loopback",
    )
    fee_rate: float = Field(default=0.004, ge=0, lt=0.1)
    quote_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z0-9]{2,10}$",
        description="currency equity and tiers are counted in",
    )
    watch_symbols: list[str] = Field(
        default_factory=list,
        description="symbols the closed-orders sweep always covers (BTC/USDT or BTC-USDT)",
    )
    stream: bool = Field(
        default=True,
        description="order and trade updates over the venue's websocket (ccxt.pro) where it "
        "has them, the poll as the safety net; false: polling only",
    )
    stream_poll_interval_s: float = Field(
        default=30.0,
        gt=0,
        description="seconds between open-orders polls while the account's stream is up "
        "(poll_interval_s again at once when it drops)",
    )
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
        found = sorted(k for k in value if k.lower() in SECRET_KEYS)
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
        for field, ccxt_key in (
            ("api_key_env", "apiKey"),
            ("secret_env", "secret"),
            ("password_env", "password"),
        ):
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

    def exchange_spec(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> ExchangeSpec:
        """What an adapter needs to open this account's exchange, keys read as
        :meth:`credentials` reads them (so adapters never import this module)."""
        keys = self.credentials(dict(environ) if environ is not None else None)
        return ExchangeSpec(
            account_id=self.id,
            exchange_id=self.exchange,
            sandbox=self.sandbox,
            options=self.ccxt,
            api_key=keys.get("apiKey"),
            secret=keys.get("secret"),
            password=keys.get("password"),
            call_timeout_s=call_timeout_s,
            rate_budget=self.rate_budget,
            stream=self.stream,
        )


class ReconcilerConfig(_Strict):
    """``[reconciler]``: overrides of :class:`~nija_broker.sync.reconciler.ReconcilerSettings`.

    Poll and balance intervals are set per account (``poll_interval_s``,
    ``balance_interval_s``); ``full_listing_interval_s`` here, and per account too.
    Unset keys keep the defaults.
    """

    jitter: float | None = None
    full_listing_interval_s: float | None = None
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
    startup_concurrency: int | None = None
    stream_settle_s: float | None = None
    stream_backoff_initial_s: float | None = None
    stream_backoff_max_s: float | None = None

    @model_validator(mode="after")
    def _in_range(self) -> ReconcilerConfig:
        self.settings([])  # ReconcilerSettings checks its own ranges
        return self

    def settings(self, accounts: list[AccountConfig]) -> ReconcilerSettings:
        """The reconciler's settings, carrying each account's poll and balance intervals."""
        return ReconcilerSettings(
            poll_interval_by_account={a.id: a.poll_interval_s for a in accounts},
            balance_interval_by_account={a.id: a.balance_interval_s for a in accounts},
            full_listing_interval_by_account={
                a.id: a.full_listing_interval_s
                for a in accounts
                if a.full_listing_interval_s is not None
            },
            watch_symbols_by_account={a.id: tuple(a.watch_symbols) for a in accounts},
            stream_poll_interval_by_account={a.id: a.stream_poll_interval_s for a in accounts},
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


AlertEvent = Literal[
    "fill",
    "trade",
    "block",
    "stale_cancel",
    "sync_failed",
    "sync_recovered",
    "attention",
    "paused",
]
"""What an alert target may ask for (``[[alerts]] events``)."""
ALERT_EVENTS: tuple[AlertEvent, ...] = get_args(AlertEvent)
AlertType = Literal["webhook", "telegram", "discord", "slack"]
TELEGRAM_API_URL = "https://api.telegram.org"


class AlertConfig(_Strict):
    """``[[alerts]]``: one target the alerts go to, and which of them it wants.

    The rules across its fields (what each ``type`` needs, unique names, known
    accounts, well-formed URLs) are judged with the other cross-field rules in
    :func:`nija_broker.service.config_problems.alert_rules`, on the raw table, so a
    URL that may hold a secret (Discord's and Slack's do) is never echoed.
    """

    type: AlertType
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="shown in /healthz and the logs; default: the type",
    )
    url: str | None = Field(
        default=None, repr=False, description="webhook, discord, slack: where to post"
    )
    url_env: str | None = Field(
        default=None, description="the environment variable holding url (it may hold a secret)"
    )
    api_url: str | None = Field(default=None, description=f"telegram: default {TELEGRAM_API_URL}")
    chat_id: int | str | None = Field(default=None, description="telegram: the chat to write to")
    token_env: str | None = Field(
        default=None,
        description="telegram: the bot token's variable; webhook: a bearer token's (optional)",
    )
    events: list[AlertEvent] = Field(default_factory=lambda: list(ALERT_EVENTS), min_length=1)
    accounts: list[str] | None = Field(
        default=None, min_length=1, description="account ids covered; default: every account"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    block_repeat_s: float = Field(
        default=60.0,
        ge=0,
        description="the same block (account, symbol, side, rule) is sent once per this many "
        "seconds, the repeats counted in the next one; 0 sends every one",
    )

    _env_names = field_validator("url_env", "token_env")(
        classmethod(lambda cls, v: _check_env_name(v))
    )

    @property
    def target_name(self) -> str:
        return self.name or self.type


class Config(_Strict):
    store: StoreConfig = Field(default_factory=StoreConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    reconciler: ReconcilerConfig = Field(default_factory=ReconcilerConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    tiers: dict[str, TierOverride] = Field(default_factory=dict)
    tier_hysteresis_pct: float = Field(default=2.0, ge=0, lt=50)
    accounts: list[AccountConfig] = Field(default_factory=list)
    alerts: list[AlertConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_across(self, info: ValidationInfo) -> Config:
        # parse_config and config_problems list these next to every field error instead.
        if not (info.context or {}).get(_LISTED_APART):
            problems = across_fields(self.model_dump(), "<config>")
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
                        {**defaults[name].model_dump(), **changes}
                    )
                except ValidationError as exc:
                    raise ValueError(
                        "; ".join(
                            str(e["msg"]).removeprefix("Value error, ")
                            for e in exc.errors(include_url=False)
                        )
                    ) from None
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

# Validation context key: the caller lists the rules across fields itself, beside the
# field errors (config_problems, parse_config), so Config does not raise on them first.
_LISTED_APART = "nija_broker.service.config: across-field rules listed apart"


def config_problems(
    source: str | Path | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    file: str | None = None,
) -> list[Problem]:
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
        read = read_toml(Path(source), name)
        if isinstance(read, Problem):
            return [read]
        data = read
    return _checked(data, name, environ, build=True)[1]


def _checked(
    data: Mapping[str, Any], file: str, environ: Mapping[str, str] | None, *, build: bool
) -> tuple[Config | None, list[Problem]]:
    """The configuration, validated once, and every problem of its shape and of this
    machine (``[]``: it starts; the configuration is ``None`` whenever its shape fails).
    ``build``: ccxt judges each exchange's settings too (see ``machine_problems``)."""
    from nija_broker.service.config_checks import machine_problems  # it imports this module

    env = os.environ if environ is None else environ
    config, shape = _shape(data, file)
    return config, by_table([*shape, *machine_problems(data, file, env, build=build)])


def _shape(data: Mapping[str, Any], file: str) -> tuple[Config | None, list[Problem]]:
    """Field errors of every table, the rules across fields, then the tier table's own
    rules; with the validated configuration when there are none."""
    try:
        config = Config.model_validate(data, context={_LISTED_APART: True})
    except ValidationError as exc:
        fields = [field_problem(e, data, file, Config) for e in exc.errors(include_url=False)]
        return None, fields + across_fields(data, file)
    across = across_fields(data, file)
    if across:
        return None, across
    try:
        config.tier_table()
    except ValueError as exc:  # e.g. the lowest tier no longer starts at 0
        return None, [Problem(file, "tiers", str(exc))]
    return config, []


# ---------------------------------------------------------------------------- loading


def _refuse(problems: list[Problem], file: str) -> ConfigError:
    return ConfigError("\n".join(str(p) for p in problems), file=file)


def parse_config(data: dict[str, Any], file: str = "<config>") -> Config:
    """Validate a parsed table; every problem of its shape is named by file, key and value.

    The environment and the machine are not consulted: see :func:`config_problems`.
    """
    config, problems = _shape(data, file)
    if config is None:
        raise _refuse(by_table(problems), file)
    return config


def load_config(path: str | Path) -> Config:
    """Load and validate a TOML file; every problem is named by file, key and value."""
    file = str(path)
    read = read_toml(Path(path), file)
    if isinstance(read, Problem):
        raise _refuse([read], file)
    return parse_config(read, file)


def load_checked_config(
    path: str | Path, environ: Mapping[str, str] | None = None, *, build: bool = True
) -> Config:
    """:func:`load_config` refusing, in one :class:`ConfigError`, every problem
    :func:`config_problems` finds: what ``nija-broker run`` starts from.

    ``build=False`` (``run``) leaves ccxt's judgement of each exchange's sandbox and
    ``[accounts.ccxt]`` table to the exchanges' own build: ccxt is not imported here."""
    file = str(path)
    read = read_toml(Path(path), file)
    if isinstance(read, Problem):
        raise _refuse([read], file)
    config, problems = _checked(read, file, environ, build=build)
    if config is None or problems:
        raise _refuse(problems, file)
    return config
