"""The one Exchange protocol everything in nija_broker talks to.

Implementations: :mod:`adapters.ccxt_adapter` (any ccxt exchange, live or its
sandbox) and :mod:`adapters.sim` (in-memory matching engine). Methods return
nija_broker models, never ccxt dicts, and raise only the errors of
:mod:`nija_broker.core.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from nija_broker.core.errors import ImpossibleAnswer
from nija_broker.core.models import Balance, Fill, Market, Order, OrderRole, OrderType, Side, Ticker


@dataclass(frozen=True, slots=True)
class Capabilities:
    open_orders_without_symbol: bool
    """One call lists every open order of the account."""
    fetch_order_by_client_id: bool
    """``fetch_order`` can look an order up by its client order id."""
    watch_orders: bool
    """A websocket order stream exists (ccxt.pro)."""
    client_order_id: bool = True
    """Orders can carry our own client order id."""
    order_trades: bool = False
    """``fetch_order_trades`` reports an order's trades with their ids and fees: fills are
    then booked from trades, by trade id; otherwise by the cumulative rule."""


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What to send. ``amount`` is in base currency; ``price`` is the limit price."""

    symbol: str
    side: Side
    type: OrderType
    amount: float
    price: float | None = None
    stop_price: float | None = None
    client_order_id: str | None = None
    reduce_only: bool = False
    post_only: bool = False
    role: OrderRole = OrderRole.ENTRY


@dataclass(frozen=True, slots=True)
class OpenOrdersPage:
    """The open orders of one account, and how many calls it took to get them."""

    orders: Sequence[Order]
    calls: int
    complete: bool = True
    """False when the exchange truncated the answer: absence then proves nothing."""
    problems: Sequence[ImpossibleAnswer] = ()
    """Rows left out because they were impossible (the page is then incomplete)."""


@runtime_checkable
class Exchange(Protocol):
    """One account on one exchange."""

    @property
    def account_id(self) -> str: ...

    @property
    def exchange_id(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def load_markets(self) -> Mapping[str, Market]: ...

    async def fetch_open_orders(self, symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        """All open orders. ``symbols`` is used only where the exchange needs a symbol."""
        ...

    async def fetch_order(self, order_id: str, symbol: str) -> Order: ...

    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order: ...

    async def fetch_closed_orders(self, symbol: str | None, since: datetime | None) -> list[Order]:
        ...

    async def fetch_my_trades(self, symbol: str | None, since: datetime | None) -> list[Fill]: ...

    async def fetch_order_trades(self, order: Order) -> list[Fill]:
        """The trades of ``order`` so far; raises ``Unsupported`` where there are none."""
        ...

    async def fetch_balance(self) -> Mapping[str, Balance]: ...

    async def fetch_tickers(self, symbols: Sequence[str]) -> Mapping[str, Ticker]: ...

    async def create_order(self, request: OrderRequest) -> Order: ...

    async def cancel_order(self, order_id: str, symbol: str) -> Order:
        """Cancel and return the order as the exchange reports it afterwards."""
        ...

    async def aclose(self) -> None: ...
