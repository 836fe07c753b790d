"""A per-account ccxt instance copied from one built instance is what ccxt's constructor gives.

A fleet of a thousand accounts builds its ccxt instances as copies of one per
exchange class and settings (``adapters/_ccxt_clone.py``); the copy must be a
fresh instance in every attribute but its own uuid and throttler, and share no
mutable state with any other account's.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro
import pytest

from adapters._ccxt_clone import build
from adapters._shared import share_tables, shared_table
from adapters.emulator import binance_ccxt_config, kraken_ccxt_config
from adapters.profiles import _BY_ID

SETTINGS: list[dict[str, Any]] = [
    {"enableRateLimit": True, "timeout": 15_000},
    {"enableRateLimit": False, "timeout": 5_000, "options": {"adjustForTimeDifference": False}},
]
KEYS = {"apiKey": "key-of-USER:alice-0001", "secret": "secret-of-USER:alice-0001"}
CLASSES = [
    pytest.param(module, exchange_id, id=f"{name}-{exchange_id}")
    for exchange_id in sorted(_BY_ID)
    for name, module in (("rest", ccxt_async), ("pro", ccxt_pro))
    if hasattr(module, exchange_id)
]


def _fresh(cls: type, settings: dict[str, Any], keys: dict[str, str]) -> Any:
    exchange = cls({**settings, **keys})
    share_tables(exchange, settings)
    return exchange


def _same(copied: Any, fresh: Any, copy_owner: Any, fresh_owner: Any) -> bool:
    """Equal, a method of the fresh instance matching the same method of the copy."""
    if isinstance(fresh, types.MethodType):
        return (
            isinstance(copied, types.MethodType)
            and copied.__func__ is fresh.__func__
            and (copied.__self__ is copy_owner if fresh.__self__ is fresh_owner else True)
        )
    if isinstance(fresh, dict):
        return (
            isinstance(copied, dict)
            and copied.keys() == fresh.keys()
            and all(_same(copied[k], v, copy_owner, fresh_owner) for k, v in fresh.items())
        )
    if isinstance(fresh, list | tuple):
        return (
            type(copied) is type(fresh)
            and len(copied) == len(fresh)
            and all(
                _same(c, f, copy_owner, fresh_owner) for c, f in zip(copied, fresh, strict=True)
            )
        )
    return bool(copied == fresh)


def _containers(exchange: Any) -> dict[str, Any]:
    cls = type(exchange)
    return {
        name: value
        for name, value in vars(exchange).items()
        if isinstance(value, dict | list | set) and shared_table(cls, name) is not value
    }


@pytest.mark.parametrize("settings", SETTINGS, ids=["adapter-defaults", "own-options"])
@pytest.mark.parametrize(("module", "exchange_id"), CLASSES)
def test_a_copy_equals_a_fresh_instance_attribute_by_attribute(
    module: Any, exchange_id: str, settings: dict[str, Any]
) -> None:
    cls = getattr(module, exchange_id)
    fresh = _fresh(cls, settings, KEYS)
    copied = build(cls, settings, KEYS)
    assert type(copied) is cls
    assert vars(copied).keys() == vars(fresh).keys()
    for name, value in vars(fresh).items():
        if name == "origin":  # a uuid of its own, as each constructor call draws
            assert copied.origin != fresh.origin
            assert len(copied.origin) == len(fresh.origin)
        elif name == "throttler":
            assert type(copied.throttler) is type(value)
            assert copied.throttler.config == value.config
            assert copied.throttler is not build(cls, settings, KEYS).throttler
        else:
            assert _same(getattr(copied, name), value, copied, fresh), name
    assert copied.apiKey == KEYS["apiKey"]
    assert copied.secret == KEYS["secret"]
    assert copied.sign.__func__ is fresh.sign.__func__  # the same class methods
    ping = (vars(copied).get("streaming") or {}).get("ping")
    if ping is not None:  # ccxt.pro holds a method of the instance in a table
        assert ping.__self__ is copied


@pytest.mark.parametrize(("module", "exchange_id"), CLASSES)
def test_two_accounts_copies_share_no_mutable_state(module: Any, exchange_id: str) -> None:
    cls = getattr(module, exchange_id)
    alice = build(cls, SETTINGS[0], KEYS)
    bob = build(cls, SETTINGS[0], {"apiKey": "key-of-bob-0002", "secret": "secret-of-bob-02"})
    for name, value in _containers(alice).items():
        assert getattr(bob, name) is not value, name
    alice.options["timeDifference"] = 12_345
    alice.urls["api"] = {"spot": "http://127.0.0.1:1"}
    assert bob.options.get("timeDifference") != 12_345
    assert bob.urls != alice.urls
    assert alice.throttler is not bob.throttler
    assert alice.throttler.config is not bob.throttler.config
    assert alice.throttler.queue is not bob.throttler.queue
    assert bob.apiKey == "key-of-bob-0002"
    assert alice.apiKey == KEYS["apiKey"]


def test_the_emulators_urls_reach_each_copy_as_the_constructor_would_take_them() -> None:
    for exchange_id, table in (
        ("binance", binance_ccxt_config("http://127.0.0.1:8899")),
        ("kraken", kraken_ccxt_config("http://127.0.0.1:8899")),
    ):
        cls = getattr(ccxt_async, exchange_id)
        settings = {"enableRateLimit": True, "timeout": 15_000, **table}
        assert vars(build(cls, settings, KEYS))["urls"] == _fresh(cls, settings, KEYS).urls


def test_settings_that_are_not_plain_data_are_built_by_the_constructor() -> None:
    hook = {"enableRateLimit": True, "timeout": 15_000, "fetchImplementation": inspect.isclass}
    built = build(ccxt_async.binance, hook, KEYS)
    assert built.fetchImplementation is inspect.isclass
    assert built.apiKey == KEYS["apiKey"]
