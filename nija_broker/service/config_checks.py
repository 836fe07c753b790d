"""The checks of a configuration only this machine can answer, for :func:`config_problems`.

The exchange ids ccxt knows (and whether it has the sandbox asked for), the
environment variables each account and alert target names, the API binding's
token and the store's directory. Each is judged on the raw table, item by item, so one bad
field elsewhere hides nothing here; nothing is created, no key is read into
an exchange, and no variable's value is ever shown.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nija_broker.core.clock import SystemClock
from nija_broker.core.errors import ConfigError
from nija_broker.service.config import (
    _ENV_NAME,
    _EXCHANGE_ID,
    AccountConfig,
    ApiConfig,
    StoreConfig,
)
from nija_broker.service.config_problems import (
    ENV_FIELDS,
    Problem,
    account_tables,
    alert_tables,
    did_you_mean,
    key_path,
    url_problem,
)

__all__ = ["machine_problems"]


def machine_problems(
    data: Mapping[str, Any], file: str, env: Mapping[str, str], *, build: bool = True
) -> list[Problem]:
    """What only this machine can say: ccxt's exchange ids and sandboxes, the environment
    variables named, the API binding's token, the store's directory.

    ``build``: build each exchange (without keys) for ccxt to judge its sandbox and
    ``[accounts.ccxt]`` table; ``run`` leaves that to its own build, once its API listens
    (importing ccxt takes seconds), so only the exchange ids are checked here then."""
    problems: list[Problem] = []
    if not account_tables(data) and isinstance(data.get("accounts", []), list):
        problems.append(Problem(file, "accounts", "no [[accounts]]: run needs at least one"))
    built: dict[str, _Refusal | None] = {}  # accounts alike build alike: once each
    known = cache(_ccxt_exchange_ids)  # asked once, if at all: a thousand accounts ask alike
    for i, account in account_tables(data):
        problems += _exchange_problems(i, account, data, file, built if build else None, known)
        for field in ENV_FIELDS:
            problems += _env_problems(
                file, key_path(("accounts", i, field), data), account.get(field), env
            )
    problems += _alert_env_problems(data, file, env)
    return problems + _api_problems(data, file, env) + _store_problems(data, file)


def _ccxt_exchange_ids() -> frozenset[str]:
    # ccxt's own list, asked through the installed exchange backend: only adapters/ imports
    # ccxt, and nothing here imports adapters/ (dependencies point inward).
    from nija_broker.service.exchanges import exchange_backend

    return frozenset(exchange_backend("ccxt").exchange_ids())


_Refusal = tuple[str, str]
"""The field ccxt's constructor refused (``sandbox``, ``ccxt``, ...) and why."""


def _exchange_problems(
    i: int,
    account: Mapping[str, Any],
    data: Mapping[str, Any],
    file: str,
    built: dict[str, _Refusal | None] | None,
    exchange_ids: Callable[[], frozenset[str]],
) -> list[Problem]:
    """The exchange id is ccxt's; with ``built`` (each alike build's refusal, filled here),
    ccxt's constructor takes the account's settings too."""
    exchange = account.get("exchange")
    if not isinstance(exchange, str) or not _EXCHANGE_ID.match(exchange):
        return []  # a field error, listed already
    known = exchange_ids()
    if exchange not in known:
        return [
            Problem(
                file,
                key_path(("accounts", i, "exchange"), data),
                "unknown ccxt exchange id",
                repr(exchange),
                hint=did_you_mean(exchange, sorted(known)),
            )
        ]
    if built is None:
        return []
    try:
        parsed = AccountConfig.model_validate(account)
    except ValidationError:
        return []  # its field errors are listed already
    # Only these reach ccxt's constructor (the keys are checked apart, by name).
    alike = json.dumps([parsed.exchange, parsed.sandbox, parsed.ccxt], sort_keys=True, default=repr)
    if alike not in built:
        built[alike] = _build_refusal(parsed)
    refusal = built[alike]
    if refusal is None:
        return []
    leaf, message = refusal
    shown = getattr(parsed, leaf, None)
    return [
        Problem(
            file,
            key_path(("accounts", i, leaf), data),
            message,
            repr(shown) if isinstance(shown, str | bool) else None,
        )
    ]


def _build_refusal(account: AccountConfig) -> _Refusal | None:
    """Build the account's exchange as ``run`` does, minus the keys: ccxt itself judges the
    exchange id, the sandbox and the ``[accounts.ccxt]`` table. Nothing is sent."""
    from nija_broker.service.exchanges import build_exchanges

    try:
        spec = account.model_copy(update=dict.fromkeys(ENV_FIELDS)).exchange_spec(environ={})
        build_exchanges({account.id: spec}, SystemClock())
    except ConfigError as exc:
        leaf = (exc.key or "").rsplit(".", 1)[-1] or "exchange"
        return leaf, str(exc).removeprefix(f"account {account.id!r}: ")
    return None


def _env_problems(file: str, key: str, name: Any, env: Mapping[str, str]) -> list[Problem]:
    """The variable ``name`` must be set, and not to blanks. Its value is never shown."""
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        return []  # unset, or a field error listed already
    value = env.get(name)
    if value is not None and value.strip():
        return []
    state = "is not set" if value is None else "is blank"
    return [Problem(file, key, f"environment variable {name} {state}", repr(name))]


def _alert_env_problems(
    data: Mapping[str, Any], file: str, env: Mapping[str, str]
) -> list[Problem]:
    """Each alert target's variables are set; the one holding a URL holds one (not shown)."""
    problems: list[Problem] = []
    for i, alert in alert_tables(data):
        for field in ("token_env", "url_env"):
            key = key_path(("alerts", i, field), data)
            name = alert.get(field)
            missing = _env_problems(file, key, name, env)
            problems += missing
            if field == "url_env" and not missing and isinstance(name, str) and name in env:
                why = url_problem(env[name].strip())
                if why is not None:
                    problems.append(
                        Problem(file, key, f"environment variable {name} {why}", hidden=True)
                    )
    return problems


def _api_problems(data: Mapping[str, Any], file: str, env: Mapping[str, str]) -> list[Problem]:
    from nija_broker.service.api import check_binding

    api = data.get("api", {})
    if not isinstance(api, dict):
        return []
    host = api.get("host", ApiConfig.model_fields["host"].default)
    name = api.get("token_env")
    token = None
    if name is not None:
        problems = _env_problems(file, "api.token_env", name, env)
        if problems or not isinstance(name, str) or not _ENV_NAME.match(name):
            return problems  # the binding is judged once its token is there
        token = env[name]
    if not isinstance(host, str):
        return []
    try:
        check_binding(host, token)
    except ConfigError as exc:
        message = str(exc).removeprefix(f"api.host is {host!r}, ")
        return [Problem(file, "api.host", message, repr(host))]
    return []


def _store_problems(data: Mapping[str, Any], file: str) -> list[Problem]:
    """The store's file may be created and written: judged without creating anything."""
    store = data.get("store", {})
    default = StoreConfig.model_fields["path"].default
    path = store.get("path", default) if isinstance(store, dict) else None
    if not isinstance(path, str) or not path or path == ":memory:":
        return []
    target, shown = Path(path), repr(path)
    if target.is_dir():
        return [Problem(file, "store.path", "is a directory; name the SQLite file in it", shown)]
    if target.exists() and not os.access(target, os.W_OK):
        return [Problem(file, "store.path", "the store file is not writable", shown)]
    # The directory must take new files too: SQLite writes its -wal and -shm beside the store.
    directory = target.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # missing directories are created at start
    if not directory.is_dir():
        return [Problem(file, "store.path", f"{directory} is not a directory", shown)]
    if not os.access(directory, os.W_OK | os.X_OK):
        return [Problem(file, "store.path", f"directory {directory} is not writable", shown)]
    return []
