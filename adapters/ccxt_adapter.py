"""Any ccxt exchange, one account, behind the :class:`~adapters.base.Exchange` protocol.

What this layer adds to ccxt:

- nija_broker models out (:mod:`adapters._ccxt_convert`), nija_broker errors
  out, mapped once (:mod:`adapters._ccxt_errors`), never carrying a key;
- a timeout around every call (``call_timeout_s``);
- retries of transient errors with exponential backoff and jitter, bounded
  in attempts and in total time, sleeping on the injected clock. Reads are
  always retried. An order is re-sent only when it carries a client order
  id, and only after looking it up by that id: an order whose answer was
  lost is found, not placed twice. A cancel is retried, and an "order not
  found" after a lost cancel is settled by fetching the order;
- one request budget shared by every account on the same exchange
  (:mod:`adapters.ratelimit`);
- a count of requests per method (``calls``) for the reconciler's benchmarks;
- what differs per exchange (symbol aliases, client order ids, rate costs,
  ccxt quirks) read from one :class:`~adapters.profiles.ExchangeProfile`.

Each account needs its own API key. NIJA's bot drives the nonce of its
Kraken keys; a second program on the same key gets "invalid nonce" errors,
which this adapter reports as :class:`~nija_broker.errors.AuthenticationFailed`
saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import ccxt.async_support as ccxt
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from nija_broker.clock import Clock, SystemClock, to_ms
from nija_broker.config import AccountConfig
from nija_broker.errors import (
    ConfigError,
    ExchangeError,
    InvalidOrder,
    OrderError,
    OrderNotFound,
    TransientError,
)
from nija_broker.models import Balance, Fill, Market, Order, OrderStatus, OrderType, Ticker

from ._ccxt_convert import (
    OrderMemo,
    convert_balance,
    convert_market,
    convert_order,
    convert_ticker,
    convert_trade,
    is_spot_market,
)
from ._ccxt_errors import is_duplicate_order, map_ccxt_error
from .base import Capabilities, OpenOrdersPage, OrderRequest
from .profiles import ClientIdLookup, ExchangeProfile, profile_for
from .ratelimit import RateBudget

__all__ = ["CcxtExchange"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

_SECRET_ATTRS = ("apiKey", "secret", "password", "uid", "privateKey", "token")


class _ClockDeadline(stop_base):
    """A tenacity stop condition on the injected clock (tenacity's own uses time.monotonic)."""

    def __init__(self, clock: Clock, max_s: float) -> None:
        self._clock = clock
        self._deadline_s = clock.monotonic() + max_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock.monotonic() >= self._deadline_s


class CcxtExchange:
    """One account on one ccxt exchange. Build with :meth:`from_config`, or wrap a ccxt object."""

    def __init__(
        self,
        exchange: Any,
        *,
        account_id: str,
        clock: Clock | None = None,
        budget: RateBudget | None = None,
        call_timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_retry_s: float = 30.0,
        retry_initial_s: float = 0.2,
        retry_max_wait_s: float = 5.0,
        profile: ExchangeProfile | None = None,
    ) -> None:
        if call_timeout_s <= 0 or max_attempts < 1 or max_retry_s < 0:
            raise ValueError("call_timeout_s must be > 0, max_attempts >= 1, max_retry_s >= 0")
        self._ex = exchange
        self._account_id = account_id
        self._clock: Clock = clock or SystemClock()
        self._profile = profile or profile_for(str(exchange.id))
        self._budget = budget or self._shared_budget()
        self.call_timeout_s = call_timeout_s
        self.max_attempts = max_attempts
        self.max_retry_s = max_retry_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_wait_s = retry_max_wait_s
        self.calls: Counter[str] = Counter()
        """Requests sent per protocol method, retries included."""
        self._secrets = tuple(
            str(v) for v in (getattr(exchange, a, None) for a in _SECRET_ATTRS) if v
        )
        self._markets: dict[str, Market] | None = None
        self._memo = OrderMemo(account_id, client_id=self._profile.client_ids.from_exchange)
        self._closed = False
        has = getattr(exchange, "has", {}) or {}
        # Otherwise learned at run time: ccxt raises ArgumentsRequired where a symbol is needed.
        known = self._profile.open_orders_without_symbol
        self._open_orders_without_symbol = bool(has.get("fetchOpenOrders")) if known is None \
            else known and bool(has.get("fetchOpenOrders"))
        self._lookup = self._profile.client_ids.lookup
        if self._lookup is ClientIdLookup.SCAN and has.get("fetchOrderWithClientOrderId"):
            self._lookup = ClientIdLookup.NATIVE
        self._serial: asyncio.Lock | None = None
        self._profile.apply_ccxt_options(exchange)

    def _shared_budget(self) -> RateBudget:
        """The budget every account of this exchange shares (or this key's, where per key)."""
        rate = self._profile.rate
        rate_limit_ms = float(getattr(self._ex, "rateLimit", 0) or 100)
        rate_per_s = rate.rate_per_s or 1000.0 / rate_limit_ms
        key = f"{self._ex.id}:{self._account_id}" if rate.per_account else str(self._ex.id)
        return RateBudget.for_exchange(key, rate_per_s, clock=self._clock,
                                       capacity=rate.capacity)

    @classmethod
    def from_config(
        cls,
        account: AccountConfig,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        budget: RateBudget | None = None,
        call_timeout_s: float = 10.0,
    ) -> CcxtExchange:
        """Build the ccxt exchange an account names, with its keys from the environment.

        ``account.ccxt`` goes to the ccxt constructor unchanged (urls, options,
        or ``enableRateLimit = false``), under the keys.
        """
        exchange_cls = getattr(ccxt, account.exchange, None)
        if exchange_cls is None or account.exchange not in ccxt.exchanges:
            raise ConfigError(
                f"account {account.id!r}: unknown ccxt exchange id {account.exchange!r}",
                key=f"accounts.{account.id}.exchange",
            )
        credentials = account.credentials(dict(environ) if environ is not None else None)
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            "timeout": int(call_timeout_s * 1000),
            **account.ccxt,
            **credentials,
        }
        exchange = exchange_cls(settings)
        if account.sandbox:
            try:
                # Some exchanges list urls['test'] = None, on which ccxt fails with a TypeError.
                if not (getattr(exchange, "urls", {}) or {}).get("test"):
                    raise ccxt.NotSupported(f"{account.exchange} has no test URLs")
                exchange.set_sandbox_mode(True)
            except ccxt.NotSupported as exc:
                raise ConfigError(
                    f"account {account.id!r}: {account.exchange} has no sandbox in ccxt",
                    key=f"accounts.{account.id}.sandbox",
                ) from exc
        return cls(exchange, account_id=account.id, clock=clock, budget=budget,
                   call_timeout_s=call_timeout_s)

    # -- identity -----------------------------------------------------------------------

    @property
    def account_id(self) -> str:
        return self._account_id

    @property
    def exchange_id(self) -> str:
        return str(self._ex.id)

    @property
    def budget(self) -> RateBudget:
        return self._budget

    @property
    def profile(self) -> ExchangeProfile:
        return self._profile

    @property
    def capabilities(self) -> Capabilities:
        has = getattr(self._ex, "has", {}) or {}
        return Capabilities(
            open_orders_without_symbol=self._open_orders_without_symbol,
            fetch_order_by_client_id=self._lookup is not ClientIdLookup.SCAN,
            watch_orders=bool(has.get("watchOrders")),
        )

    def _symbol(self, symbol: str) -> str:
        return self._profile.unified_symbol(symbol)

    def __repr__(self) -> str:  # no keys, ever
        return f"CcxtExchange(exchange={self.exchange_id!r}, account={self._account_id!r})"

    # -- calling ccxt -------------------------------------------------------------------

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_attempts),
                          _ClockDeadline(self._clock, self.max_retry_s)),
            # Exponential from retry_initial_s, capped, plus up to one initial step of
            # jitter so many accounts retrying together do not hit the exchange in step.
            wait=wait_exponential(multiplier=self.retry_initial_s, max=self.retry_max_wait_s)
            + wait_random(0, self.retry_initial_s),
            retry=retry_if_exception_type(TransientError),
            sleep=self._clock.sleep,
            reraise=True,
        )

    def _one_at_a_time(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Where nonces must arrive in order (Kraken), one request of this account at a time.

        ccxt signs each request with a growing nonce, but two requests in
        flight can overtake each other on the way; Kraken then refuses the
        later-arriving lower nonce as if another program used the key.
        """
        if not self._profile.serialize_requests:
            return contextlib.nullcontext()
        if self._serial is None:
            self._serial = asyncio.Lock()
        return self._serial

    async def _once(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """One request: budget, count, timeout, error mapping. No retry."""
        await self._budget.acquire(min(self._profile.rate.cost(action), self._budget.capacity))
        self.calls[action] += 1
        try:
            async with self._one_at_a_time(), asyncio.timeout(self.call_timeout_s):
                return await call()
        except (ccxt.BaseError, TimeoutError) as exc:
            if isinstance(exc, ccxt.ArgumentsRequired | ccxt.NotSupported):
                self.calls[action] -= 1  # ccxt refused locally: nothing was sent
            raise map_ccxt_error(exc, exchange_id=self.exchange_id, account_id=self._account_id,
                                 secrets=self._secrets, action=action,
                                 overrides=self._profile.error_overrides,
                                 nonce_advice=self._profile.nonce_advice) from exc

    def _gave_up(self, exc: TransientError, attempts: int) -> TransientError:
        again = type(exc)(f"{exc} (gave up after {attempts} attempt(s))",
                          exchange=exc.exchange, account_id=exc.account_id)
        again.__cause__ = exc.__cause__
        return again

    async def _read(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """A read, retried on transient errors."""
        attempts = 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    return await self._once(action, call)
        except TransientError as exc:
            raise self._gave_up(exc, attempts) from exc.__cause__
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _order(self, raw: Mapping[str, Any]) -> Order:
        return self._memo.convert(raw, self._clock.now())

    def _orders(self, raws: Iterable[Mapping[str, Any]]) -> list[Order]:
        now = self._clock.now()
        return [self._memo.convert(raw, now) for raw in raws]

    def _closed_orders_method(self) -> Callable[..., Awaitable[Any]]:
        has = getattr(self._ex, "has", {}) or {}
        if has.get("fetchCanceledAndClosedOrders"):
            return self._ex.fetch_canceled_and_closed_orders  # type: ignore[no-any-return]
        return self._ex.fetch_closed_orders  # type: ignore[no-any-return]

    @staticmethod
    def _since_ms(since: datetime | None) -> int | None:
        return to_ms(since) if since is not None else None

    # -- reads --------------------------------------------------------------------------

    async def load_markets(self) -> Mapping[str, Market]:
        if self._markets is None:
            raw = await self._read("load_markets", lambda: self._ex.load_markets())
            mode = int(getattr(self._ex, "precisionMode", ccxt.TICK_SIZE))
            markets = [convert_market(m, mode) for m in raw.values() if is_spot_market(m)]
            self._markets = {m.symbol: m for m in markets}
        return dict(self._markets)

    async def fetch_open_orders(self, symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        """Every open order in one call where the exchange allows; else one call per symbol.

        ``calls`` counts the requests actually sent, retries included. Where a
        symbol is needed and none is given, the page is empty and incomplete.
        """
        before = self.calls["fetch_open_orders"]
        if self._open_orders_without_symbol:
            try:
                raw = await self._read("fetch_open_orders", lambda: self._ex.fetch_open_orders())
            except ExchangeError as exc:
                if not isinstance(exc.__cause__, ccxt.ArgumentsRequired):
                    raise
                _log.info("%s needs a symbol to list open orders; asking per symbol",
                          self.exchange_id)
                self._open_orders_without_symbol = False
            else:
                return OpenOrdersPage(orders=self._orders(raw),
                                      calls=self.calls["fetch_open_orders"] - before)
        wanted = sorted({self._symbol(s) for s in symbols or ()})
        orders: list[Order] = []
        for symbol in wanted:
            raw = await self._read("fetch_open_orders",
                                   partial(self._ex.fetch_open_orders, symbol))
            orders.extend(self._orders(raw))
        return OpenOrdersPage(orders=orders, calls=self.calls["fetch_open_orders"] - before,
                              complete=bool(wanted))

    async def fetch_order(self, order_id: str, symbol: str) -> Order:
        symbol = self._symbol(symbol)
        raw = await self._read("fetch_order", lambda: self._ex.fetch_order(order_id, symbol))
        return self._order(raw)

    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order:
        """Look an order up by our id: directly where ccxt can, else among open and closed."""
        return await self._by_client_id(client_order_id, self._symbol(symbol), self._read)

    async def _by_client_id(self, client_order_id: str, symbol: str,
                            call: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
                            ) -> Order:
        """The look-up behind :meth:`fetch_order_by_client_id`; ``call`` is _read or _once."""
        sent_as = self._profile.client_ids.to_exchange(client_order_id) or client_order_id
        if self._lookup is ClientIdLookup.NATIVE:
            raw = await call("fetch_order_by_client_id", partial(
                self._ex.fetch_order, sent_as, symbol, {"clientOrderId": sent_as}))
            return self._order(raw)
        filtered = self._lookup is ClientIdLookup.FILTER
        for action, method in (("fetch_open_orders", self._ex.fetch_open_orders),
                               ("fetch_closed_orders", self._closed_orders_method())):
            if filtered:  # the exchange filters by client id: a short answer, not a page
                listing = partial(method, symbol, None, None, {"clientOrderId": sent_as})
                action = "fetch_order_by_client_id"
            else:
                listing = partial(method, symbol)
            for raw in await call(action, listing):
                if raw.get("clientOrderId") == sent_as:
                    return self._order(raw)
        raise OrderNotFound(
            f"{self.exchange_id} account {self._account_id}: no order with client id "
            f"{client_order_id!r} on {symbol}",
            exchange=self.exchange_id, account_id=self._account_id,
        )

    async def fetch_closed_orders(self, symbol: str | None, since: datetime | None) -> list[Order]:
        """Orders that ended (filled, cancelled, expired, rejected) since ``since``.

        ccxt's ``fetch_closed_orders`` means *filled* on several exchanges
        (Binance filters on status 'closed'); where ccxt offers
        ``fetch_canceled_and_closed_orders`` that is asked instead, so a
        cancellation is seen too. Binance needs a symbol here.
        """
        wanted = self._symbol(symbol) if symbol is not None else None
        since_ms = self._since_ms(since)
        raw = await self._read("fetch_closed_orders",
                               partial(self._closed_orders_method(), wanted, since_ms))
        return [o for o in self._orders(raw) if o.is_terminal]

    async def fetch_my_trades(self, symbol: str | None, since: datetime | None) -> list[Fill]:
        wanted = self._symbol(symbol) if symbol is not None else None
        since_ms = self._since_ms(since)
        raw = await self._read("fetch_my_trades",
                               lambda: self._ex.fetch_my_trades(wanted, since_ms))
        now = self._clock.now()
        return [convert_trade(t, account_id=self._account_id, now=now) for t in raw]

    async def fetch_balance(self) -> Mapping[str, Balance]:
        raw = await self._read("fetch_balance", lambda: self._ex.fetch_balance())
        balances = convert_balance(raw)
        unified = {self._profile.unified_currency(c): b for c, b in balances.items()}
        return {c: b if b.currency == c else b.replace(currency=c) for c, b in unified.items()}

    async def fetch_tickers(self, symbols: Sequence[str]) -> Mapping[str, Ticker]:
        wanted = sorted({self._symbol(s) for s in symbols})
        if not wanted:
            return {}
        has = getattr(self._ex, "has", {}) or {}
        if has.get("fetchTickers"):
            raw = await self._read("fetch_tickers", lambda: self._ex.fetch_tickers(wanted))
            tickers = [convert_ticker(t) for t in raw.values()]
        else:
            tickers = []
            for symbol in wanted:
                one = await self._read("fetch_tickers", partial(self._ex.fetch_ticker, symbol))
                tickers.append(convert_ticker(one))
        return {t.symbol: t for t in tickers if t.symbol in wanted}

    # -- orders -------------------------------------------------------------------------

    def _ccxt_order_args(self, request: OrderRequest) -> tuple[str, float | None, dict[str, Any]]:
        """ccxt's unified (type, price, params) for a request."""
        params: dict[str, Any] = {}
        if request.client_order_id:
            client_ids = self._profile.client_ids
            sent_as = client_ids.to_exchange(request.client_order_id)
            if sent_as is None:
                raise InvalidOrder(
                    f"{self.exchange_id} account {self._account_id}: create_order: client "
                    f"order id {request.client_order_id!r} does not fit {self.exchange_id}'s "
                    f"{client_ids.param} ({client_ids.rule}); nothing was sent",
                    exchange=self.exchange_id, account_id=self._account_id)
            params["clientOrderId"] = sent_as
        if request.post_only:
            params["postOnly"] = True
        # Spot has no reduce-only flag; sending it makes Binance reject the order.
        kind = request.type
        if kind in (OrderType.STOP, OrderType.STOP_LIMIT):
            params["stopLossPrice"] = request.stop_price
        elif kind is OrderType.TAKE_PROFIT:
            params["takeProfitPrice"] = request.stop_price
        if kind is OrderType.MARKET or (kind in (OrderType.STOP, OrderType.TAKE_PROFIT)
                                        and request.price is None):
            return "market", None, params
        return "limit", request.price, params

    def _created(self, raw: Mapping[str, Any], request: OrderRequest) -> Order:
        """The order as the exchange answered; exchanges that answer only an id get PENDING."""
        try:
            order = convert_order(raw, account_id=self._account_id, now=self._clock.now(),
                                  role=request.role,
                                  client_id=self._profile.client_ids.from_exchange)
        except ExchangeError:
            if not raw.get("id"):
                raise
            return Order(
                id=str(raw["id"]), client_order_id=request.client_order_id,
                account_id=self._account_id, symbol=request.symbol, side=request.side,
                type=request.type, role=request.role, price=request.price,
                stop_price=request.stop_price, amount=request.amount,
                status=OrderStatus.PENDING, created_at=self._clock.now(),
                reduce_only=request.reduce_only,
            )
        changes: dict[str, Any] = {}
        if order.client_order_id is None and request.client_order_id:
            changes["client_order_id"] = request.client_order_id
        if request.reduce_only and not order.reduce_only:
            changes["reduce_only"] = True
        return order.replace(**changes) if changes else order

    async def _find_by_client_id(self, request: OrderRequest) -> Order | None:
        """One look-up of ``request`` by its client id (one attempt): the order, or None."""
        assert request.client_order_id is not None
        try:
            order = await self._by_client_id(request.client_order_id, request.symbol, self._once)
        except OrderNotFound:
            return None
        return order.replace(role=request.role)

    async def create_order(self, request: OrderRequest) -> Order:
        """Send an order. Retried only with a client order id, and never sent twice.

        Before each re-send the order is looked up by its client id; if the
        exchange already has it, that order is returned. If a re-send is
        refused as a duplicate while the look-up still cannot see the order,
        the outcome is unknown and reported as a :class:`TransientError`
        (retried in turn, then raised): the caller must not assume either way.

        Where the exchange answers with an acknowledgement only (Kraken: an id
        and a description), the order is fetched once for its state; if that
        fails the acknowledged order is returned as PENDING.
        """
        request = replace(request, symbol=self._symbol(request.symbol))
        order = await self._place(request)
        if order.status is not OrderStatus.PENDING or not self._profile.create_answer_is_ack:
            return order
        try:
            fetched = await self.fetch_order(order.id, request.symbol)
        except ExchangeError as exc:
            _log.info("%s: created order %s not readable yet (%s); reporting it pending",
                      self.exchange_id, order.id, type(exc).__name__)
            return order
        changes: dict[str, Any] = {"role": request.role}
        if fetched.client_order_id is None and order.client_order_id:
            changes["client_order_id"] = order.client_order_id
        if request.reduce_only:
            changes["reduce_only"] = True
        return fetched.replace(**changes)

    async def _place(self, request: OrderRequest) -> Order:
        """The sending half of :meth:`create_order` (``request.symbol`` already unified)."""
        ccxt_type, price, params = self._ccxt_order_args(request)
        side = request.side.value

        async def send() -> Any:
            # A fresh params dict each time: a re-send must not see ccxt's edits of the last.
            return await self._ex.create_order(request.symbol, ccxt_type, side, request.amount,
                                               price, dict(params))

        if not request.client_order_id:
            return self._created(await self._once("create_order", send), request)
        attempts = 0
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    if attempts > 1:
                        found = await self._find_by_client_id(request)
                        if found is not None:
                            return found
                    try:
                        raw = await self._once("create_order", send)
                    except OrderError as exc:
                        if attempts == 1 or not is_duplicate_order(exc):
                            raise
                        found = await self._find_by_client_id(request)
                        if found is not None:
                            return found
                        raise TransientError(
                            f"{self.exchange_id} account {self._account_id}: create_order: "
                            f"client order id {request.client_order_id!r} is taken but the "
                            "order cannot be seen yet; its state is unknown",
                            exchange=self.exchange_id, account_id=self._account_id,
                        ) from exc
                    return self._created(raw, request)
        except TransientError as exc:
            raise self._gave_up(exc, attempts) from exc.__cause__
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def cancel_order(self, order_id: str, symbol: str) -> Order:
        """Cancel, retried; "not found" after a lost cancel is settled by fetching the order."""
        symbol = self._symbol(symbol)
        attempts = 0
        saw_transient = False
        try:
            async for attempt in self._retrying():
                with attempt:
                    attempts += 1
                    try:
                        raw = await self._once("cancel_order",
                                               lambda: self._ex.cancel_order(order_id, symbol))
                    except TransientError:
                        saw_transient = True
                        raise
                    except OrderNotFound:
                        if not saw_transient:
                            raise
                        # Our earlier cancel may have reached the exchange: ask for the order.
                        order = self._order(await self._once(
                            "fetch_order", lambda: self._ex.fetch_order(order_id, symbol)))
                        if order.is_terminal:
                            return order
                        raise
                    return await self._after_cancel(raw, order_id, symbol)
        except TransientError as exc:
            raise self._gave_up(exc, attempts) from exc.__cause__
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _after_cancel(self, raw: Mapping[str, Any], order_id: str, symbol: str) -> Order:
        """The cancelled order; fetched when the cancel answer is partial (some exchanges)."""
        try:
            order = self._order(raw)
        except ExchangeError:
            order = None
        if order is not None and order.is_terminal:
            return order
        return await self.fetch_order(order_id, symbol)

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close ccxt's HTTP session. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._ex.close()

    async def __aenter__(self) -> CcxtExchange:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
