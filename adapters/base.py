"""The Exchange protocol and its value types, under the name this package first gave them.

They are defined in :mod:`nija_broker.core.exchange` (the core owns the
protocol; adapters implement it), and re-exported here so that
``from adapters.base import OrderRequest`` keeps working.
"""

from __future__ import annotations

from nija_broker.core.exchange import (
    Capabilities,
    Exchange,
    OpenOrdersPage,
    OrderRequest,
    RequestWeights,
)

__all__ = ["Capabilities", "Exchange", "OpenOrdersPage", "OrderRequest", "RequestWeights"]
