"""The one Exchange protocol the whole product talks to, and the values that cross it.

It lives in the core, not in :mod:`adapters`, so that dependencies point
inward: the reconciler, the guard and the runtime name :class:`Exchange`
without importing any adapter, and every adapter (:mod:`adapters.ccxt_adapter`,
any ccxt exchange, live or its sandbox; :mod:`adapters.sim`, the in-memory
matching engine) implements it by importing only the core.
:mod:`adapters.base` re-exports these names for code written against it.

Methods return nija_broker models, never ccxt dicts, and raise only the
errors of :mod:`nija_broker.core.errors`.

How the runtime gets an exchange without importing an adapter: an installed
package declares an :class:`ExchangeBackend` in the entry point group
:data:`EXCHANGE_BACKENDS` (this project's ``pyproject.toml`` declares
``ccxt = "adapters.ccxt_backend:backend"``); the runtime looks it up by name
and hands it one :class:`ExchangeSpec` per account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from nija_broker.core.clock import DEFAULT_CALL_TIMEOUT_S, Clock
from nija_broker.core.errors import ImpossibleAnswer
from nija_broker.core.models import Balance, Fill, Market, Order, OrderRole, OrderType, Side, Ticker

__all__ = [
    "EXCHANGE_BACKENDS",
    "Capabilities",
    "Exchange",
    "ExchangeBackend",
    "ExchangeSpec",
    "OpenOrdersPage",
    "OrderRequest",
]

EXCHANGE_BACKENDS = "nija_broker.exchanges"
"""The entry point group an exchange package registers its :class:`ExchangeBackend` in."""


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


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    """Everything an adapter needs to open one account's exchange, and nothing else.

    Built by the configuration (``AccountConfig.exchange_spec``), which reads the
    keys from the environment, so that adapters never import the configuration.
    The keys are left out of ``repr`` (invariant 9).
    """

    account_id: str
    exchange_id: str
    """The ccxt exchange id, e.g. ``kraken``."""
    sandbox: bool = False
    """Use the exchange's sandbox (testnet) URLs."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """The account's ``[accounts.ccxt]`` table, given to the exchange's constructor as is."""
    api_key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    """The deadline of a call no caller bounded (the guard's sends): the configured
    ``[reconciler] call_timeout_s``, so every exchange call has the same one."""

    def __post_init__(self) -> None:
        # A frozen value should not change under the exchange that was built from it.
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


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

    async def fetch_closed_orders(
        self, symbol: str | None, since: datetime | None
    ) -> list[Order]: ...

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


class ExchangeBackend(Protocol):
    """What an exchange package registers under :data:`EXCHANGE_BACKENDS`."""

    def exchange_ids(self) -> Sequence[str]:
        """The exchange ids :meth:`open_exchange` knows (for ``check``'s "did you mean")."""
        ...

    def open_exchange(self, spec: ExchangeSpec, clock: Clock) -> Exchange:
        """Build the account's exchange; nothing is sent. Raises ``ConfigError`` naming
        the account's key (``accounts.<id>.exchange`` or ``.sandbox``) when it cannot."""
        ...
