"""What this package offers nija_broker's runtime: every ccxt exchange, by entry point.

``pyproject.toml`` declares ``ccxt = "adapters.ccxt_backend:backend"`` in the
entry point group ``nija_broker.exchanges``; the runtime and ``nija-broker
check`` look it up by name, so nothing in ``nija_broker`` imports ``adapters``
(DESIGN: Layout) and ccxt loads only when an exchange is built.
"""

from __future__ import annotations

import ccxt.async_support as ccxt

from nija_broker.core.clock import Clock
from nija_broker.core.exchange import ExchangeSpec

from .ccxt_adapter import CcxtExchange

__all__ = ["CcxtBackend", "backend"]


class CcxtBackend:
    """The :class:`~nija_broker.core.exchange.ExchangeBackend` of every ccxt exchange."""

    def exchange_ids(self) -> list[str]:
        ids: list[str] = list(ccxt.exchanges)
        return ids

    def open_exchange(self, spec: ExchangeSpec, clock: Clock) -> CcxtExchange:
        return CcxtExchange.from_spec(spec, clock=clock, call_timeout_s=spec.call_timeout_s)


backend = CcxtBackend()
"""The one instance the entry point names (it holds no state)."""
