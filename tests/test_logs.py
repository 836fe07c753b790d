from __future__ import annotations

import asyncio
import logging

import pytest

from nija_broker.config import parse_config
from nija_broker.logs import KeyValueFormatter, account_context, redact, register_secret

KEY = "Kx9LmN2pQr7StUv4WxYz-demo-key"


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("nija_broker.test", logging.WARNING, __file__, 1, message, args,
                             None)


def test_keys_read_from_the_environment_are_redacted_in_every_line() -> None:
    config = parse_config({"accounts": [{"id": "A", "exchange": "kraken",
                                         "api_key_env": "K", "secret_env": "S"}]})
    config.account("A").credentials({"K": KEY, "S": "another-secret-value"})
    line = KeyValueFormatter().format(_record("ccxt said: bad key %s / %s", KEY,
                                              "another-secret-value"))
    assert KEY not in line
    assert "another-secret-value" not in line
    assert "***" in line


def test_tracebacks_are_redacted_too() -> None:
    register_secret("trace-secret-123456")
    try:
        raise RuntimeError("request failed with secret=trace-secret-123456")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (),
                                   __import__("sys").exc_info())
    assert "trace-secret-123456" not in KeyValueFormatter().format(record)


def test_short_values_are_not_treated_as_secrets() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


def test_account_comes_from_context_or_the_poller_task_name() -> None:
    formatter = KeyValueFormatter()
    token = account_context.set("USER:alice")
    try:
        assert "account=USER:alice" in formatter.format(_record("hello"))
    finally:
        account_context.reset(token)

    async def poller() -> str:
        return formatter.format(_record("cycle"))

    async def main() -> str:
        return await asyncio.create_task(poller(), name="reconcile:USER:bob")

    assert "account=USER:bob" in asyncio.run(main())
    assert "account=" not in formatter.format(_record("no account here"))


@pytest.mark.parametrize("message", ['quote " and newline \n inside'])
def test_messages_are_one_line(message: str) -> None:
    line = KeyValueFormatter().format(_record(message))
    assert "\n" not in line
    assert line.startswith("ts=")
