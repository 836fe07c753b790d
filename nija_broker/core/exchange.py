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
    "RATE_BUDGETS",
    "Capabilities",
    "Exchange",
    "ExchangeBackend",
    "ExchangeSpec",
    "OpenOrdersPage",
    "OrderRequest",
    "OrderStreams",
    "RequestWeights",
    "WeightMeter",
]

EXCHANGE_BACKENDS = "nija_broker.exchanges"
"""The entry point group an exchange package registers its :class:`ExchangeBackend` in."""


@dataclass(frozen=True, slots=True)
class RequestWeights:
    """What an exchange's requests cost against its rate limit, in the exchange's own units.

    Binance counts request *weight* per IP (``GET /api/v3/openOrders`` is 6 with a
    symbol, 80 without, against 6,000 a minute); Kraken a per-key counter (1 a call,
    2 for trade history). Plain data, hashable: the adapter's profile fills it, the
    reconciler plans its listings from it and ``check-config`` prints it.

    Keys are the adapter's cost keys: mostly the protocol method's name
    (``fetch_balance``), plus ``fetch_open_orders_symbol`` for a listing of one
    symbol's open orders and ``fetch_order_trades`` for the trades of one order.
    """

    costs: tuple[tuple[str, float], ...] = ()
    """(cost key, weight) pairs; keys not listed weigh ``default``."""
    by_count: tuple[tuple[str, tuple[tuple[int, float], ...]], ...] = ()
    """Weights that grow with the symbols one request names: per cost key, (up to this
    many symbols, weight) in ascending order; past the last bound, the last weight
    (Binance's ``ticker/24hr``: 2 up to 20 symbols, 40 up to 100, 80 beyond)."""
    default: float = 1.0
    limit_per_min: float | None = None
    """The venue's documented limit in these units a minute (Binance: 6,000 request
    weight per IP); ``None`` where it is not known."""
    per_key: bool = False
    """The limit counts per API key (each account has its own), not per IP (shared by
    every account of the venue that this machine runs)."""
    unit: str = "requests"
    """What the figures count, for people (``request weight``, ``API counter``)."""
    per_symbol: tuple[str, ...] = ()
    """Cost keys whose request needs a symbol: asking about every symbol an account
    touched costs one each (Binance's ``allOrders``, behind the closed-orders sweep)."""

    @classmethod
    def of(
        cls,
        costs: Mapping[str, float] | None = None,
        *,
        by_count: Mapping[str, Sequence[tuple[int, float]]] | None = None,
        default: float = 1.0,
        limit_per_min: float | None = None,
        per_key: bool = False,
        unit: str = "requests",
        per_symbol: Sequence[str] = (),
    ) -> RequestWeights:
        """Build from mappings (the fields are tuples so that the value stays hashable)."""
        tiers = {
            key: tuple(sorted((int(n), float(w)) for n, w in bounds))
            for key, bounds in (by_count or {}).items()
        }
        return cls(
            costs=tuple(sorted((k, float(v)) for k, v in (costs or {}).items())),
            by_count=tuple(sorted(tiers.items())),
            default=float(default),
            limit_per_min=limit_per_min,
            per_key=per_key,
            unit=unit,
            per_symbol=tuple(sorted(per_symbol)),
        )

    def known(self, key: str) -> float | None:
        """The weight listed for ``key`` (``None``: not listed)."""
        for name, weight in self.costs:
            if name == key:
                return weight
        return None

    def weight(self, key: str, count: int = 1) -> float:
        """What one request of ``key`` naming ``count`` symbols weighs."""
        for name, tiers in self.by_count:
            if name == key and tiers:
                for bound, weight in tiers:
                    if count <= bound:
                        return weight
                return tiers[-1][1]
        listed = self.known(key)
        return self.default if listed is None else listed


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
    weights: RequestWeights = field(default_factory=RequestWeights)
    """What each request costs against the exchange's limit (the adapter's profile)."""

    @property
    def open_orders_weight(self) -> float:
        """One listing of every open order (``fetch_open_orders(None)``)."""
        return self.weights.weight("fetch_open_orders")

    @property
    def open_orders_symbol_weight(self) -> float | None:
        """One listing of one symbol's open orders; ``None`` where the exchange offers no
        cheaper one (Kraken lists every symbol in one call whatever is asked): the
        reconciler then lists every symbol each cycle, where the exchange allows it."""
        return self.weights.known("fetch_open_orders_symbol")


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
    symbols: tuple[str, ...] | None = None
    """What the page lists: ``None`` every symbol, else exactly these (ccxt's unified
    form). A page complete for some symbols says nothing of orders on any other: the
    reconciler diffs only the tracked orders of these symbols against it."""


RATE_BUDGETS = ("venue", "off")
"""``ExchangeSpec.rate_budget``: the venue's documented limits kept (per IP, and per key
where the venue limits per key), or none (a local exchange, such as the emulator)."""


@runtime_checkable
class WeightMeter(Protocol):
    """An exchange that counts what its requests cost against the venue's limit."""

    def weight_spent(self, window_s: float = 60.0) -> float:
        """The weight this account's requests spent in the last ``window_s`` seconds."""
        ...


@runtime_checkable
class OrderStreams(Protocol):
    """An exchange that pushes the account's order updates, trades and balances (ccxt.pro's
    ``watch_orders``, ``watch_my_trades``, ``watch_balance``).

    Each ``watch_*`` waits for the next message and returns what it said, converted like
    the REST answers; it raises :class:`~nija_broker.core.errors.TransientError` when the
    stream drops, and the next call subscribes again (what happened in between is lost:
    the caller polls once to find out). Only where ``capabilities.watch_orders``.
    """

    async def watch_orders(self) -> list[Order]: ...

    async def watch_my_trades(self) -> list[Fill]: ...

    async def watch_balance(self) -> Mapping[str, Balance]: ...


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
    rate_budget: str = "venue"
    """``venue``: requests wait for the venue's documented limits (one budget per IP,
    shared by every account of that exchange, and one per key where the venue limits
    per key); ``off``: no budget at all, for a local exchange (the emulator on
    loopback), where a thousand accounts must sync in seconds. See :data:`RATE_BUDGETS`."""
    stream: bool = False
    """Open the exchange's websocket streams too (ccxt.pro), where the venue has them."""

    def __post_init__(self) -> None:
        if self.rate_budget not in RATE_BUDGETS:
            raise ValueError(
                f"rate_budget must be one of {', '.join(RATE_BUDGETS)}, got {self.rate_budget!r}"
            )
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
        """The open orders: ``None``, of every symbol in one listing where the exchange
        allows it; a sequence, one listing per symbol (even where one unscoped listing is
        possible), the page complete for exactly those symbols (``page.symbols``)."""
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
