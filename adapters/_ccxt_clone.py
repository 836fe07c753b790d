"""Per-account ccxt instances at a fraction of ccxt's constructor: copies of one built instance.

ccxt's constructor costs about 8 ms for Binance on a 2-core machine: it merges
the exchange's whole description into the instance, then walks every attribute
(about 2,000, most of them the implicit API's methods) to give each a camelCase
alias. For a thousand accounts that is eight seconds before the first start-up
sync, all of it the same work giving the same result, except for the keys.

So the constructor runs once per exchange class and settings (the account's
``[accounts.ccxt]`` table and the adapter's own settings, the keys left out),
and each account gets a copy of that instance (:func:`build`):

- every attribute is copied; every container (dict, list, set) deeply, so no
  account's ``options``, ``urls``, caches or token bucket is another's (a method
  of the instance held in one is the copy's own method); the
  read-only description tables shared by :func:`~adapters._shared.share_tables`
  stay shared (one object per class, as a fresh instance would have them after
  it);
- the account's keys are set as the constructor sets them (plain attributes);
- ``origin`` gets the account's own uuid and the throttler is built anew on the
  copy's own token bucket, as the constructor does.

``tests/test_ccxt_clone.py`` holds a copy equal to a fresh instance, attribute by
attribute, for every dialect the project profiles, REST and websocket classes.
A settings table that is not plain data (it cannot be keyed) is built by the
constructor itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from ._shared import share_tables, shared_table

__all__ = ["build"]

_templates: dict[tuple[type, str], Any] = {}


def build(exchange_cls: type, settings: Mapping[str, Any], keys: Mapping[str, str]) -> Any:
    """``exchange_cls({**settings, **keys})``, its read-only tables shared: a copy of the
    one instance built with ``settings`` (a fresh one when ``settings`` is not plain data)."""
    try:
        key = (exchange_cls, json.dumps(settings, sort_keys=True))
    except (TypeError, ValueError):  # not plain data: no key to share a template under
        exchange = exchange_cls({**settings, **keys})
        share_tables(exchange, settings)
        return exchange
    template = _templates.get(key)
    if template is None:
        template = exchange_cls(dict(settings))
        share_tables(template, settings)
        _templates[key] = template
    return _copy(template, keys)


def _copy(template: Any, keys: Mapping[str, str]) -> Any:
    cls = type(template)
    exchange = object.__new__(cls)
    state = exchange.__dict__
    # One memo for every attribute: a method of the template held in a table (ccxt.pro's
    # ``streaming['ping']``) becomes the copy's own, and tables that share a part still do.
    memo: dict[int, Any] = {id(template): exchange}
    for name, value in template.__dict__.items():
        if isinstance(value, dict | list | set) and shared_table(cls, name) is not value:
            value = copy.deepcopy(value, memo)
        state[name] = value
    state.update(keys)
    exchange.origin = exchange.uuid()
    exchange.init_throttler()  # its own, on its own token bucket (copied above)
    return exchange
