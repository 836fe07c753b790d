"""How a configuration's problems are named: where (file and key), what, the value, a hint.

Pure over the parsed TOML table, so every rule here runs whether or not the
fields validate: :class:`Problem` itself, the key path of a pydantic error
(``accounts[1](id='USER:bob').poll_interval_s``), "did you mean" hints, and the
rules across fields no single field can judge (unique account ids, tiers that
exist and are whole, alert targets whole for their type). A value that may be a
key is never shown.

Used by :mod:`nija_broker.service.config` (shape problems, ``parse_config``)
and :mod:`nija_broker.service.config_checks` (what only this machine can say).
"""

from __future__ import annotations

import difflib
import tomllib
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from nija_broker.core.tiers import DEFAULT_TIERS

__all__ = [
    "ENV_FIELDS",
    "SECRET_KEYS",
    "Problem",
    "account_tables",
    "across_fields",
    "alert_rules",
    "alert_tables",
    "by_table",
    "did_you_mean",
    "field_problem",
    "key_path",
    "read_toml",
    "url_problem",
]

# Keys that would put a credential in the file; ccxt accepts all of these.
SECRET_KEYS = frozenset(
    {"apikey", "secret", "password", "uid", "privatekey", "walletaddress", "token", "api_key"}
)
ENV_FIELDS = ("api_key_env", "secret_env", "password_env")
"""An account's fields that name the environment variables holding its keys."""
# Keys people paste a credential under, and the field that names its variable instead.
_PASTED = {
    "api_key": "api_key_env",
    "apikey": "api_key_env",
    "key": "api_key_env",
    "secret": "secret_env",
    "api_secret": "secret_env",
    "secret_key": "secret_env",
    "password": "password_env",
    "passphrase": "password_env",
    "token": "api.token_env",
    "api_token": "api.token_env",
}


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


def by_table(problems: list[Problem]) -> list[Problem]:
    """Grouped by table, accounts in order; each group's problems in the order found."""

    def table(problem: Problem) -> tuple[str, int]:
        name, _, index = problem.key.partition("[")
        number = index.split("]", 1)[0]
        return name.split(".", 1)[0], int(number) if number.isdigit() else -1

    return sorted(problems, key=table)


def read_toml(path: Path, file: str) -> dict[str, Any] | Problem:
    """The file's table, or the one problem that it cannot be read or parsed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Problem(file, "", f"cannot read: {exc.strerror}")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return Problem(file, "", f"not valid TOML: {exc}")


def key_path(loc: Sequence[int | str], data: Mapping[str, Any]) -> str:
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


def field_problem(
    err: ErrorDetails, data: Mapping[str, Any], file: str, root: type[BaseModel]
) -> Problem:
    """One pydantic error of validating ``data`` as ``root``, as a :class:`Problem`."""
    loc = tuple(err["loc"])
    key = key_path(loc, data) or "(top level)"
    leaf = str(loc[-1]) if loc else ""
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        return _unknown_key(loc, key, value, file, root)
    message = err["msg"].removeprefix("Value error, ")
    # A value that may be a key is never echoed: an env-name field (a key pasted in place
    # of its variable's name), a credential field, anything under [accounts.ccxt].
    secret = "env" in leaf.lower() or leaf.lower() in SECRET_KEYS or "ccxt" in loc
    if err["type"] == "missing" or value is None or isinstance(value, dict | list):
        return Problem(file, key, message)
    return Problem(file, key, message, None if secret else repr(value), hidden=secret)


def _unknown_key(
    loc: tuple[int | str, ...], key: str, value: Any, file: str, root: type[BaseModel]
) -> Problem:
    leaf = str(loc[-1])
    named = _PASTED.get(leaf.lower())
    if named == "api.token_env" and loc[:1] == ("alerts",):
        named = "token_env"  # an alert target's own token
    if named is not None:
        return Problem(
            file,
            key,
            "a credential may not be written in the file",
            hidden=True,
            hint=f"put it in an environment variable and give that variable's name as {named}",
        )
    fields = _fields_at(loc[:-1], root)
    hint = did_you_mean(leaf, fields) or (
        f"known keys here: {', '.join(fields)}" if fields else None
    )
    # Numbers and booleans cannot be a pasted key; a string under an unknown name might be.
    if isinstance(value, bool | int | float):
        return Problem(file, key, "unknown key", repr(value), hint=hint)
    return Problem(file, key, "unknown key", hidden=isinstance(value, str), hint=hint)


def _fields_at(loc: Sequence[int | str], root: type[BaseModel]) -> list[str]:
    """The field names of the table at ``loc`` (``('accounts', 0)``), for "did you mean"."""
    node: Any = root
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


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {close[0]!r}?" if close else None


def account_tables(data: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The ``[[accounts]]`` tables of a raw configuration, with their index."""
    accounts = data.get("accounts")
    if not isinstance(accounts, list):
        return []
    return [(i, a) for i, a in enumerate(accounts) if isinstance(a, dict)]


def across_fields(data: Mapping[str, Any], file: str) -> list[Problem]:
    """Rules no single field can judge: unique account ids, tiers that exist and are whole,
    alert targets whole for their type (:func:`alert_rules`).

    Judged on the raw tables, so they are listed whether or not the fields validate.
    """
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, account in account_tables(data):
        ident = account.get("id")
        if isinstance(ident, str) and ident in first:
            problems.append(
                Problem(
                    file,
                    key_path(("accounts", i, "id"), data),
                    f"account ids must be unique: repeated (first at accounts[{first[ident]}])",
                    repr(ident),
                )
            )
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
            problems.append(
                Problem(
                    file,
                    f"tiers.{name}",
                    f"a new tier needs {' and '.join(missing)}",
                    hint=did_you_mean(name, defaults) or f"known tiers: {', '.join(defaults)}",
                )
            )
    problems += alert_rules(data, file)
    known = [*defaults, *(str(n) for n in tiers if n not in defaults)]
    for i, account in account_tables(data):
        tier = account.get("tier")
        if isinstance(tier, str) and tier != "auto" and tier not in known:
            choices = ", ".join([*known, "auto"])
            hint = did_you_mean(tier, [*known, "auto"])
            problems.append(
                Problem(
                    file,
                    key_path(("accounts", i, "tier"), data),
                    "unknown tier",
                    repr(tier),
                    hint=f"{hint} (known: {choices})" if hint else f"known: {choices}",
                )
            )
    return problems


# ---------------------------------------------------------------------------- alerts

_URL_TYPES = ("webhook", "discord", "slack")
"""Alert targets posting to a URL of their own (Telegram's is its bot API)."""


def alert_tables(data: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The ``[[alerts]]`` tables of a raw configuration, with their index."""
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        return []
    return [(i, a) for i, a in enumerate(alerts) if isinstance(a, dict)]


def url_problem(value: str) -> str | None:
    """Why ``value`` is not an ``http(s)://host`` URL to post to, or ``None``. Never quotes it."""
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    return None


def alert_rules(data: Mapping[str, Any], file: str) -> list[Problem]:
    """What each alert target's ``type`` needs, unique target names, accounts that exist,
    URLs to post to. A URL's value is never shown: Discord's and Slack's hold their secret."""
    problems: list[Problem] = []
    account_ids = [a["id"] for _, a in account_tables(data) if isinstance(a.get("id"), str)]
    first: dict[str, int] = {}
    for i, alert in alert_tables(data):

        def at(field: str, i: int = i) -> str:
            return key_path(("alerts", i, field), data)

        kind = alert.get("type")
        present = {k for k, v in alert.items() if v is not None}
        if kind == "telegram":
            for field, why in (
                ("chat_id", "the chat to write to (a number, or '@channelname')"),
                ("token_env", "the name of the environment variable holding the bot token"),
            ):
                if field not in present:
                    problems.append(Problem(file, at(field), f"required for telegram: {why}"))
            for field in sorted(present & {"url", "url_env"}):
                problems.append(
                    Problem(
                        file,
                        at(field),
                        "not for telegram: it posts to its bot API (api_url, default "
                        "https://api.telegram.org)",
                    )
                )
        elif kind in _URL_TYPES:
            for field in sorted(present & {"api_url", "chat_id"}):
                problems.append(Problem(file, at(field), "only for type = 'telegram'"))
            if not present & {"url", "url_env"}:
                problems.append(
                    Problem(
                        file,
                        at("url"),
                        f"required for {kind}: url, or url_env naming the environment "
                        "variable that holds it",
                    )
                )
            elif {"url", "url_env"} <= present:
                problems.append(Problem(file, at("url_env"), "set url or url_env, not both"))
            if kind != "webhook" and "token_env" in present:
                problems.append(
                    Problem(
                        file,
                        at("token_env"),
                        f"not for {kind}: the webhook's secret is its URL",
                        hint="put the URL in an environment variable and name it in url_env",
                    )
                )
        for field, shown in (("url", False), ("api_url", True)):
            value = alert.get(field)
            wrong = url_problem(value) if isinstance(value, str) else None
            if wrong is not None:
                problems.append(
                    Problem(
                        file, at(field), wrong, repr(value) if shown else None, hidden=not shown
                    )
                )
        accounts = alert.get("accounts")
        for ident in accounts if isinstance(accounts, list) else ():
            if isinstance(ident, str) and ident not in account_ids:
                hint = did_you_mean(ident, account_ids)
                choices = ", ".join(account_ids) or "none configured"
                problems.append(
                    Problem(
                        file,
                        at("accounts"),
                        "unknown account id",
                        repr(ident),
                        hint=f"{hint} (known: {choices})" if hint else f"known: {choices}",
                    )
                )
        name = alert.get("name") if alert.get("name") is not None else kind
        if isinstance(name, str) and name in first:
            problems.append(
                Problem(
                    file,
                    at("name"),
                    f"alert target names must be unique: repeated (first at alerts[{first[name]}])",
                    repr(name),
                    hint="give each target of the same type its own name",
                )
            )
        elif isinstance(name, str):
            first[name] = i
    return problems
