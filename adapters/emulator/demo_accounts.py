"""The demo's accounts: the ids and starting quote balances, one account per tier.

``nija-broker demo`` (nija_broker/demo/world.py) and ``nija-broker emulator``
(``adapters/emulator/__main__.py``) both open exactly these, so a rehearsal
against the emulator meets the accounts the demo showed. The list lives in
``adapters`` because adapters import nothing of nija_broker but its core, while
the demo (a composition root) may import adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DEMO_BALANCES"]

DEMO_BALANCES: Mapping[str, float] = MappingProxyType(
    {
        "PLATFORM": 10_000.0,  # STANDARD
        "USER:alice": 100.0,  # MICRO_CAP
        "USER:bob": 750.0,  # SMALL_CAP
    }
)
"""Starting balance per account id, in the dialect's quote currency (USDT on Binance, USD
on Kraken); the tiers in the comments are those of the default tier table."""
