"""What this package offers nija_broker's runtime: every ccxt exchange, by entry point.

``pyproject.toml`` declares ``ccxt = "adapters.ccxt_backend:backend"`` in the
entry point group ``nija_broker.exchanges``; the runtime and ``nija-broker
check`` look it up by name, so nothing in ``nija_broker`` imports ``adapters``
(DESIGN: Layout) and ccxt loads only when an exchange is built.

Importing ccxt takes a second or two (its package imports every exchange class),
so this module does not: ``run`` checks the exchange ids and starts its API first.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nija_broker.core.clock import Clock
from nija_broker.core.exchange import ExchangeSpec

if TYPE_CHECKING:
    from .ccxt_adapter import CcxtExchange

__all__ = ["CcxtBackend", "backend", "installed_exchange_ids"]


def installed_exchange_ids() -> list[str]:
    """ccxt's ``exchanges``, without importing ccxt: one module per exchange id in its
    ``async_support`` package (a test holds the two lists equal)."""
    loaded = sys.modules.get("ccxt")
    if loaded is not None:
        return list(loaded.exchanges)
    spec = importlib.util.find_spec("ccxt")  # finds the package; runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("ccxt is not installed")
    found: set[str] = set()
    for location in spec.submodule_search_locations:
        found.update(
            path.stem
            for path in (Path(location) / "async_support").glob("*.py")
            if not path.stem.startswith("_")
        )
    return sorted(found)


class CcxtBackend:
    """The :class:`~nija_broker.core.exchange.ExchangeBackend` of every ccxt exchange."""

    def exchange_ids(self) -> list[str]:
        return installed_exchange_ids()

    def open_exchange(self, spec: ExchangeSpec, clock: Clock) -> CcxtExchange:
        from .ccxt_adapter import CcxtExchange  # ccxt loads here

        return CcxtExchange.from_spec(spec, clock=clock, call_timeout_s=spec.call_timeout_s)


backend = CcxtBackend()
"""The one instance the entry point names (it holds no state)."""
