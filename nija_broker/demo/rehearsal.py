"""``nija-broker emulator --write-config PATH``: a rehearsal's files, ready for ``run``.

Once the emulator listens, three paths side by side:

- ``PATH``: a broker configuration for every account the emulator serves (the
  demo's: PLATFORM, USER:alice, USER:bob), each with every ccxt URL pointed at
  the emulator's real port, the dialect's exchange id and quote currency (USDT
  on Binance, USD on Kraken), no rate budget (the emulator is local), and the
  API on 127.0.0.1;
- ``PATH`` with the suffix ``.env``: ``export NAME=value`` lines with the
  accounts' keys (made up from the seed, valid only against this emulator),
  ``NIJA_BROKER_CONFIG`` (so ``nija-broker status`` finds the configuration)
  and ``NIJA_EMULATOR_URL``; ``. FILE`` and ``set -a; . FILE; set +a`` both load it;
- ``PATH`` with the suffix ``.sqlite3``: the store, created by ``run``.

A fresh emulator knows no order, so a store from an earlier rehearsal would hold
orders this one never had: any of the three already there is refused (exit 2)
unless ``--force``, which replaces the two files and deletes the store, under
the store's lock (so never under a sidecar still running on it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nija_broker.core.errors import ConfigError
from nija_broker.service.config import parse_config
from nija_broker.state.store import StoreLock

if TYPE_CHECKING:
    from adapters.emulator.__main__ import Serving

__all__ = ["DEFAULT_API_PORT", "RehearsalFiles", "claim", "pick_api_port", "write_rehearsal"]

DEFAULT_API_PORT = 8765
"""The sidecar's usual API port (``[api] port``'s default)."""
_STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")
# Loopback answers in milliseconds and no budget waits: poll often, and list every
# symbol every few seconds, so an order placed straight on the emulator is adopted soon.
_POLL_INTERVAL_S = 1.0
_BALANCE_INTERVAL_S = 2.0
_FULL_LISTING_INTERVAL_S = 2.0
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class RehearsalFiles:
    """The configuration, its environment file and the store it names (absolute)."""

    config: Path
    env: Path
    store: Path

    @classmethod
    def beside(cls, config_path: Path) -> RehearsalFiles:
        config = Path(os.path.abspath(config_path))  # not resolve(): keep the user's links
        if config.suffix == ".env":
            raise ConfigError(
                f"--write-config {config_path}: the configuration is TOML; give it another "
                "suffix (.toml): the environment file is written next to it as .env",
                file=str(config_path),
            )
        return cls(config, config.with_suffix(".env"), config.with_suffix(".sqlite3"))

    def existing(self) -> list[Path]:
        return [p for p in (self.config, self.env, self.store) if p.exists()]


def claim(files: RehearsalFiles, *, force: bool) -> None:
    """Before the emulator starts: refuse files that exist unless ``force``, and a store a
    running sidecar holds even then (:func:`write_rehearsal` deletes it)."""
    existing = files.existing()
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise ConfigError(
            f"--write-config: {names} already exist{'s' if len(existing) == 1 else ''}; "
            "a fresh emulator knows none of an earlier rehearsal's orders. Add --force to "
            "replace the configuration and environment file and delete the store, or "
            "choose another PATH",
            file=str(existing[0]),
        )
    for path in (files.config, files.env):
        if path.is_dir():
            raise ConfigError(f"--write-config: {path} is a directory", file=str(path))
    files.config.parent.mkdir(parents=True, exist_ok=True)
    if force and files.store.exists():
        with StoreLock.acquire(files.store):  # refused now, not after the emulator started
            pass


def _delete_store(store: Path) -> None:
    """A fresh emulator's store starts empty: delete the last rehearsal's, under its lock."""
    with StoreLock.acquire(store):
        for suffix in _STORE_SUFFIXES:
            Path(str(store) + suffix).unlink(missing_ok=True)


def pick_api_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (``--api-port 0``): written down, so ``status`` finds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def env_names(account_id: str) -> tuple[str, str]:
    """``USER:alice`` -> ``NIJA_EMULATOR_USER_ALICE_KEY``, ``..._SECRET``."""
    slug = re.sub(r"[^A-Z0-9]+", "_", account_id.upper()).strip("_")
    return f"NIJA_EMULATOR_{slug}_KEY", f"NIJA_EMULATOR_{slug}_SECRET"


def config_document(serving: Serving, files: RehearsalFiles, api_port: int) -> dict[str, Any]:
    """The configuration as data (what :func:`render_toml` writes)."""
    ccxt_table = serving.ccxt_config()
    accounts = []
    for account_id in serving.keys:
        key_env, secret_env = env_names(account_id)
        accounts.append(
            {
                "id": account_id,
                "exchange": serving.dialect,
                "quote_currency": serving.quote,
                "api_key_env": key_env,
                "secret_env": secret_env,
                "poll_interval_s": _POLL_INTERVAL_S,
                "balance_interval_s": _BALANCE_INTERVAL_S,
                "rate_budget": "off",
                "ccxt": ccxt_table,
            }
        )
    return {
        "store": {"path": str(files.store)},
        "api": {"host": "127.0.0.1", "port": api_port},
        "reconciler": {"full_listing_interval_s": _FULL_LISTING_INTERVAL_S},
        "accounts": accounts,
    }


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _table(lines: list[str], path: str, table: Mapping[str, Any], *, array: bool = False) -> None:
    """``table``'s plain values under ``[path]`` (``[[path]]`` for an array's entry), then
    its sub-tables under dotted headers; a header with nothing of its own is left out."""
    plain = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if array or plain or not nested:
        lines.extend(["", f"[[{path}]]" if array else f"[{path}]"])
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in plain.items())
    for name, sub in nested.items():
        _table(lines, f"{path}.{_key(name)}", sub)


def render_toml(document: Mapping[str, Any], comments: Sequence[str] = ()) -> str:
    """The document as TOML: its tables, then each ``accounts`` entry as ``[[accounts]]``."""
    lines = [f"# {line}".rstrip() for line in comments]
    for name, value in document.items():
        if name != "accounts":
            _table(lines, _key(name), value)
    for account in document.get("accounts", []):
        _table(lines, "accounts", account, array=True)
    return "\n".join(lines).lstrip("\n") + "\n"


def environment(serving: Serving, files: RehearsalFiles) -> dict[str, str]:
    """What the environment file exports: the configuration's path, the emulator's URL and
    every account's keys."""
    names = {"NIJA_BROKER_CONFIG": str(files.config), "NIJA_EMULATOR_URL": serving.url}
    for account_id, (api_key, secret) in serving.keys.items():
        key_env, secret_env = env_names(account_id)
        names[key_env], names[secret_env] = api_key, secret
    return names


def render_env(serving: Serving, files: RehearsalFiles) -> str:
    lines = [
        f"# nija-broker emulator ({serving.dialect}, seed {serving.seed}) at {serving.url}:",
        "# the keys of the accounts it serves, made up from the seed and valid only against",
        f"# it, for {files.config}.",
        f"# Load into a shell with:  . {shlex.quote(str(files.env))}",
        *(
            f"export {name}={shlex.quote(value)}"
            for name, value in environment(serving, files).items()
        ),
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, *, force: bool, mode: int) -> None:
    """Write ``text`` whole: exclusively (a file that appeared meanwhile is not overwritten)
    unless ``force``, which replaces the file at once (never a half-written one)."""
    if force:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)  # left by a run that died mid-write
        target = temporary
    else:
        target = path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(target, flags, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if force:
        os.replace(temporary, path)


def write_rehearsal(
    serving: Serving, files: RehearsalFiles, *, api_port: int, force: bool
) -> dict[str, Any]:
    """Write the configuration and the environment file; the configuration as parsed back.

    The text is read back and parsed as ``run`` parses it before anything is written,
    so a file that would not load is never left behind.
    """
    document = config_document(serving, files, api_port)
    comments = [
        "nija_broker rehearsal, written by `nija-broker emulator --write-config`: the",
        f"accounts the emulator serves ({', '.join(serving.keys)}), {serving.dialect}",
        f"dialect, seed {serving.seed}, at {serving.url}. Keys are never in this",
        f"file: the accounts' made-up keys are in {files.env}.",
        "",
        f"  . {shlex.quote(str(files.env))}",
        f"  nija-broker run --config {shlex.quote(str(files.config))}",
        "",
        "rate_budget = 'off': the emulator is local and enforces no limit. Every ccxt",
        "URL points at the emulator's port; a restarted emulator on another port needs",
        "this file written again (--force).",
    ]
    text = render_toml(document, comments)
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # a bug here, not the user's
        raise ConfigError(f"the rehearsal configuration did not render as TOML: {exc}") from exc
    if parsed != document:
        raise ConfigError("the rehearsal configuration did not read back as written")
    parse_config(parsed, str(files.config))
    if force:
        _delete_store(files.store)
    try:
        _write(files.config, text, force=force, mode=0o644)
        _write(files.env, render_env(serving, files), force=force, mode=0o600)
    except OSError as exc:
        raise ConfigError(
            f"--write-config: cannot write {exc.filename or files.config}: {exc.strerror or exc}",
            file=str(exc.filename or files.config),
        ) from exc
    return parsed


def announce(
    serving: Serving, files: RehearsalFiles, api_port: int, stream: TextIO = sys.stdout
) -> None:
    """The paths and the exact next commands."""
    env, config = shlex.quote(str(files.env)), shlex.quote(str(files.config))
    lines = [
        f"nija-broker emulator: {serving.dialect} on {serving.url} (seed {serving.seed}), "
        f"accounts {', '.join(serving.keys)} in {serving.quote}",
        f"  config:      {files.config}",
        f"  environment: {files.env} (the accounts' keys, valid only against this emulator)",
        f"  store:       {files.store} (nija-broker run creates it)",
        "",
        "Next, in another terminal (this one keeps serving; Ctrl-C stops it):",
        f"  . {env}",
        f"  nija-broker check-config {config}",
        f"  nija-broker run --config {config}",
        "Then, in a third terminal:",
        f"  . {env}",
        "  nija-broker status",
        f"  and open http://127.0.0.1:{api_port}/ in a browser",
    ]
    stream.write("\n".join(lines) + "\n")
    stream.flush()
