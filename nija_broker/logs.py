"""Structured logs: one ``key=value`` line per record, the account in context, secrets redacted.

::

    ts=2026-11-25T23:50:01.123Z level=WARNING logger=nija_broker.reconciler account=USER:alice
    msg="cycle failed: TransientError: ..."

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
import threading
from datetime import UTC, datetime

__all__ = ["account_context", "configure_logging", "redact", "register_secret"]

account_context: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nija_broker_account", default=None)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


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
