"""One account of the simulated exchange, behind the one Exchange protocol.

Calls go straight to the engine, no HTTP, so unit tests and benchmarks run
fast. Every call still yields to the event loop, so concurrent callers really
interleave, and passes through the fault injector when one is given:

==============  =====================================================================
fault           what the caller sees
==============  =====================================================================
TIMEOUT         ``TransientError`` after ``timeout_s``; the engine was not touched
RATE_LIMIT      ``RateLimited``; the engine was not touched
SERVER_ERROR    ``TransientError``; the engine was not touched
LOST_RESPONSE   ``TransientError`` after ``timeout_s``, but the call DID take effect
TRUNCATED_PAGE  ``fetch_open_orders`` returns half the list with ``complete=False``
LATENCY         the right answer, ``latency_s`` late on the clock
==============  =====================================================================
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from nija_broker.core.clock import Clock
from nija_broker.core.errors import (
    ExchangeError,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    TransientError,
)
from nija_broker.core.exchange import Capabilities, OpenOrdersPage, OrderRequest
from nija_broker.core.models import Balance, Fill, Market, Order, Ticker
from nija_broker.core.symbols import normalize_symbol

from .engine import SimEngine
from .faults import FaultInjector, FaultKind

T = TypeVar("T")

DEFAULT_CAPABILITIES = Capabilities(
    open_orders_without_symbol=True, fetch_order_by_client_id=True, watch_orders=False
)


class SimExchange:
    """The :class:`~nija_broker.core.exchange.Exchange` of one account on a :class:`SimEngine`."""

    def __init__(
        self,
        engine: SimEngine,
        account_id: str,
        *,
        faults: FaultInjector | None = None,
        capabilities: Capabilities | None = None,
        exchange_id: str = "sim",
    ) -> None:
        self.engine = engine
        self.faults = faults
        self._account_id = account_id
        self._exchange_id = exchange_id
        self._capabilities = capabilities if capabilities is not None else DEFAULT_CAPABILITIES
        self._sleep_clock: Clock = faults.clock if faults is not None else engine.clock
        self._closed = False
        self.calls: Counter[str] = Counter()
        """Requests per method, faulted ones included (one per symbol where a symbol is needed)."""
        self.call_log: list[tuple[str, dict[str, Any]]] = []
        """Every request in order: method name and arguments."""
        self.weight_total = 0.0
        """What every request so far cost at ``capabilities.weights`` (faulted ones too)."""
        self._weights: collections.deque[tuple[float, float]] = collections.deque()

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def exchange_id(self) -> str:
        return self._exchange_id

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def load_markets(self) -> Mapping[str, Market]:
        result, _ = await self._call("load_markets", {}, lambda: self.engine.markets)
        return result

    async def fetch_open_orders(self, symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        """As the protocol says: ``None``, one listing of every symbol (where the
        capabilities allow one); symbols, one listing each, the page complete for
        exactly those (``page.symbols``), even where one listing of all is possible."""
        if symbols is None and self._capabilities.open_orders_without_symbol:
            orders, complete = await self._open_orders_request(None)
            return OpenOrdersPage(orders=orders, calls=1, complete=complete)
        if not symbols and not self._capabilities.open_orders_without_symbol:
            raise InvalidOrder(
                f"{self._exchange_id} lists open orders one symbol at a time; pass the symbols",
                exchange=self._exchange_id,
                account_id=self._account_id,
            )
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols or ()))
        collected: list[Order] = []
        all_complete = True
        for symbol in wanted:
            orders, complete = await self._open_orders_request(symbol)
            collected.extend(orders)
            all_complete = all_complete and complete
        return OpenOrdersPage(
            orders=collected, calls=len(wanted), complete=all_complete, symbols=tuple(wanted)
        )

    async def fetch_order(self, order_id: str, symbol: str) -> Order:
        def action() -> Order:
            order = self.engine.get_order(self._account_id, order_id)
            return self._visible_or_missing(order, symbol, f"order {order_id!r}")

        args = {"order_id": order_id, "symbol": symbol}
        result, _ = await self._call("fetch_order", args, action)
        return result

    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order:
        if not self._capabilities.fetch_order_by_client_id:
            raise InvalidOrder(
                f"{self._exchange_id} cannot look orders up by client order id",
                exchange=self._exchange_id,
                account_id=self._account_id,
            )

        def action() -> Order:
            order = self.engine.get_order_by_client_id(self._account_id, client_order_id)
            return self._visible_or_missing(order, symbol, f"client order {client_order_id!r}")

        args = {"client_order_id": client_order_id, "symbol": symbol}
        result, _ = await self._call("fetch_order_by_client_id", args, action)
        return result

    async def fetch_closed_orders(self, symbol: str | None, since: datetime | None) -> list[Order]:
        def action() -> list[Order]:
            orders = self.engine.all_orders(self._account_id, symbol, since)
            return [order for order in orders if order.is_terminal]

        args = {"symbol": symbol, "since": since}
        result, _ = await self._call("fetch_closed_orders", args, action)
        return result

    async def fetch_my_trades(self, symbol: str | None, since: datetime | None) -> list[Fill]:
        result, _ = await self._call(
            "fetch_my_trades",
            {"symbol": symbol, "since": since},
            lambda: self.engine.trades(self._account_id, symbol, since),
        )
        return result

    async def fetch_order_trades(self, order: Order) -> list[Fill]:
        """The fills of ``order`` so far, oldest first, with their fees as charged.

        Answered whatever ``capabilities.order_trades`` says: the flag tells the
        reconciler whether to book fills from trades, the engine always has them.
        """

        def action() -> list[Fill]:
            fills = self.engine.trades(self._account_id, order.symbol)
            return [fill for fill in fills if fill.order_id == order.id]

        args = {"order_id": order.id, "symbol": order.symbol}
        result, _ = await self._call("fetch_order_trades", args, action)
        return result

    async def fetch_balance(self) -> Mapping[str, Balance]:
        result, _ = await self._call(
            "fetch_balance", {}, lambda: self.engine.balances(self._account_id)
        )
        return result

    async def fetch_tickers(self, symbols: Sequence[str]) -> Mapping[str, Ticker]:
        def action() -> dict[str, Ticker]:
            tickers = (self.engine.ticker(symbol) for symbol in symbols)
            return {ticker.symbol: ticker for ticker in tickers}

        result, _ = await self._call("fetch_tickers", {"symbols": list(symbols)}, action)
        return result

    async def create_order(self, request: OrderRequest) -> Order:
        if not self._capabilities.client_order_id and request.client_order_id is not None:
            # Such an exchange has nowhere to put our id: it is dropped, as the API would.
            request = dataclasses.replace(request, client_order_id=None)
        result, _ = await self._call(
            "create_order",
            {"request": request},
            lambda: self.engine.place_order(self._account_id, request),
        )
        return result

    async def cancel_order(self, order_id: str, symbol: str) -> Order:
        def action() -> Order:
            order = self.engine.get_order(self._account_id, order_id)
            self._check_symbol(order, symbol, f"order {order_id!r}")
            return self.engine.cancel_order(self._account_id, order_id)

        args = {"order_id": order_id, "symbol": symbol}
        result, _ = await self._call("cancel_order", args, action)
        return result

    async def aclose(self) -> None:
        self._closed = True

    def weight_spent(self, window_s: float = 60.0) -> float:
        """What this account's requests cost in the last ``window_s`` seconds (at most 60),
        at ``capabilities.weights``: :class:`~nija_broker.core.exchange.WeightMeter`."""
        now_s = self.engine.clock.monotonic()
        since = now_s - min(window_s, 60.0)
        return math.fsum(w for at, w in self._weights if at > since)

    # --------------------------------------------------------------- internals

    async def _open_orders_request(self, symbol: str | None) -> tuple[list[Order], bool]:
        """One open-orders request: the visible orders, and whether the list is whole."""

        def action() -> list[Order]:
            return self.engine.open_orders(self._account_id, symbol)

        orders, fault = await self._call("fetch_open_orders", {"symbol": symbol}, action)
        visible = [order for order in orders if not self._hidden(order)]
        if fault is FaultKind.TRUNCATED_PAGE:
            return visible[: len(visible) // 2], False
        return visible, True

    def _hidden(self, order: Order) -> bool:
        if self.faults is None:
            return False
        age_s = (self.engine.clock.now() - order.created_at).total_seconds()
        return self.faults.is_hidden(age_s)

    def _check_symbol(self, order: Order, symbol: str, what: str) -> None:
        # Symbol-scoped lookups (Binance's GET /api/v3/order) do not find an order of another
        # symbol; the sim answers the same way rather than forgiving a caller's mix-up.
        if normalize_symbol(symbol) != order.symbol:
            raise OrderNotFound(f"{what} does not exist on {symbol}", account_id=self._account_id)

    def _visible_or_missing(self, order: Order, symbol: str, what: str) -> Order:
        self._check_symbol(order, symbol, what)
        if self._hidden(order):
            raise OrderNotFound(f"{what} does not exist (yet)", account_id=self._account_id)
        return order

    async def _call(
        self, method: str, args: dict[str, Any], action: Callable[[], T]
    ) -> tuple[T, FaultKind | None]:
        """Run one request through the fault plan; return its answer and any fault suffered."""
        if self._closed:
            raise ExchangeError(
                f"{self._exchange_id} exchange for {self._account_id!r} is closed",
                exchange=self._exchange_id,
                account_id=self._account_id,
            )
        self.calls[method] += 1
        self.call_log.append((method, args))
        self._count_weight(method, args)
        await asyncio.sleep(0)  # a real request always yields; concurrency must be real here
        fault = self.faults.next(method) if self.faults is not None else None
        plan = self.faults.plan if self.faults is not None else None
        if plan is not None and plan.base_latency_s > 0:
            await self._sleep_clock.sleep(plan.base_latency_s)
        where = f"{self._exchange_id} {method} for {self._account_id!r}"
        if plan is not None and fault is FaultKind.LATENCY:
            await self._sleep_clock.sleep(plan.latency_s)
        elif plan is not None and fault is FaultKind.TIMEOUT:
            await self._sleep_clock.sleep(plan.timeout_s)
            raise self._stamp(TransientError(f"{where}: request timed out"))
        elif fault is FaultKind.RATE_LIMIT:
            raise self._stamp(RateLimited(f"{where}: too many requests (429)"))
        elif fault is FaultKind.SERVER_ERROR:
            raise self._stamp(TransientError(f"{where}: server error (503)"))
        try:
            result = action()
        except ExchangeError as exc:
            self._stamp(exc)
            raise
        if plan is not None and fault is FaultKind.LOST_RESPONSE:
            await self._sleep_clock.sleep(plan.timeout_s)
            raise self._stamp(TransientError(f"{where}: request timed out"))
        return result, fault

    def _count_weight(self, method: str, args: dict[str, Any]) -> None:
        """One request's weight, from what it asks (a listing of one symbol or of all, the
        tickers it names), at ``capabilities.weights``."""
        weights = self._capabilities.weights
        cost_key, count = method, 1
        if method == "fetch_open_orders" and args.get("symbol") is not None:
            if weights.known("fetch_open_orders_symbol") is not None:
                cost_key = "fetch_open_orders_symbol"  # else one symbol weighs as all
        elif method == "fetch_tickers":
            count = len(args.get("symbols") or ())
        weight = weights.weight(cost_key, count)
        now_s = self.engine.clock.monotonic()
        self._weights.append((now_s, weight))
        self.weight_total += weight
        while self._weights and self._weights[0][0] <= now_s - 60.0:
            self._weights.popleft()

    def _stamp(self, exc: ExchangeError) -> ExchangeError:
        """Name this exchange and account on an error, keeping what it already says."""
        exc.exchange = exc.exchange or self._exchange_id
        exc.account_id = exc.account_id or self._account_id
        return exc
