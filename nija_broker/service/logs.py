"""Structured logs: one ``key=value`` line per record, the account in context, secrets redacted.

::

    ts=2026-11-25T23:50:01.123Z level=WARNING logger=nija_broker.reconciler account=USER:alice
    msg="cycle failed: TransientError: ..."

A record may carry fields of its own, each printed as ``key=value`` after the
message (quoted as JSON where it holds a space or a quote): pass
``extra=fields(account=..., event="fill_booked", symbol=...)``.

The account comes from :data:`account_context` when set, else from the name
of the asyncio task logging it (the reconciler names each poller
``reconcile:<account id>``). Every value passed to :func:`register_secret`
(the runtime registers each account's keys as it reads them) is replaced by
``***`` in messages and tracebacks, whatever logger wrote them, ccxt's included.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

__all__ = ["account_context", "configure_logging", "fields", "redact", "register_secret"]

account_context: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nija_broker_account", default=None
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


@dataclass(frozen=True)
class _SecretIndex:
    """Where a secret may start in a text, found in one regex pass whatever their number.

    ``prefixes`` matches the first :data:`_MIN_SECRET_LEN` characters of any secret
    (a trie of them, so the pass costs the text's length, not the secrets' count: a
    thousand accounts register two thousand keys); ``by_prefix`` holds the secrets of
    each prefix, longest first.
    """

    prefixes: re.Pattern[str] | None
    by_prefix: dict[str, tuple[str, ...]]


_index: _SecretIndex | None = _SecretIndex(None, {})  # None: rebuilt at the next redact


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line."""
    global _index
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            if value not in _secrets:
                _secrets.add(value)
                _index = None


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, all of one length (so none ends inside another)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})

    def branch(node: dict[str, Any]) -> str:
        alternatives = [re.escape(char) + branch(child) for char, child in sorted(node.items())]
        if len(alternatives) <= 1:
            return "".join(alternatives)
        return "(?:" + "|".join(alternatives) + ")"

    return branch(trie)


def _secret_index() -> _SecretIndex:
    global _index
    index = _index
    if index is not None:
        return index
    with _secrets_lock:
        by_prefix: dict[str, list[str]] = {}
        for secret in _secrets:
            by_prefix.setdefault(secret[:_MIN_SECRET_LEN], []).append(secret)
        pattern = re.compile(_trie_pattern(by_prefix)) if by_prefix else None
        index = _SecretIndex(
            pattern,
            {p: tuple(sorted(found, key=len, reverse=True)) for p, found in by_prefix.items()},
        )
        _index = index
        return index


def redact(text: str) -> str:
    """``text`` with every registered secret in it replaced by ``***`` (overlapping ones as
    one)."""
    index = _secret_index()
    if index.prefixes is None:
        return text
    spans: list[list[int]] = []
    at = 0
    while (found := index.prefixes.search(text, at)) is not None:
        start = found.start()
        for secret in index.by_prefix[found.group()]:
            if text.startswith(secret, start):
                end = start + len(secret)
                if spans and start <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], end)
                else:
                    spans.append([start, end])
                break
        at = start + 1
    if not spans:
        return text
    parts, kept = [], 0
    for start, end in spans:
        parts += [text[kept:start], "***"]
        kept = end
    parts.append(text[kept:])
    return "".join(parts)


def fields(account: str | None = None, **values: object) -> dict[str, object]:
    """``extra=`` for a log call: the record's ``account`` and its own ``key=value`` fields.

    ``None`` values are left out. Values are redacted like the message.
    """
    extra: dict[str, object] = {"fields": values}
    if account is not None:
        extra["account"] = account
    return extra


# A value printed bare: no space, quote, '=' or control character.
_BARE = re.compile(r"^[A-Za-z0-9_.:/+@*-]+$")


def _field_text(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.10g}"
    elif isinstance(value, Enum):
        text = str(value.value)
    else:
        text = str(value)
    text = redact(text)
    return text if _BARE.match(text) else json.dumps(text)


def _task_account() -> str | None:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return None
    name = task.get_name()
    prefix, _, account = name.partition(":")
    return account if prefix == "reconcile" and account else None


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        account = getattr(record, "account", None) or account_context.get() or _task_account()
        when = datetime.fromtimestamp(record.created, UTC)
        parts = [
            f"ts={when.strftime('%Y-%m-%dT%H:%M:%S.')}{when.microsecond // 1000:03d}Z",
            f"level={record.levelname}",
            f"logger={record.name}",
        ]
        if account:
            parts.append(f"account={account}")
        parts.append(f"msg={json.dumps(redact(record.getMessage()))}")
        own: dict[str, object] = getattr(record, "fields", None) or {}
        parts.extend(
            f"{key}={_field_text(value)}" for key, value in own.items() if value is not None
        )
        if record.exc_info:
            parts.append(f"exc={json.dumps(redact(self.formatException(record.exc_info)))}")
        return " ".join(parts)


def configure_logging(level: str | int = "INFO") -> None:
    """Send every logger's records to stderr as structured, redacted lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
