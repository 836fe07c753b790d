"""Any ccxt exchange, one account, behind the :class:`~nija_broker.core.exchange.Exchange` protocol.

What this layer adds to ccxt:

- nija_broker models out (:mod:`adapters._ccxt_convert`), nija_broker errors
  out, mapped once (:mod:`adapters._ccxt_errors`), never carrying a key;
- one deadline per call, its retries included (the caller's, such as the
  reconciler's, else ``call_timeout_s``): see :mod:`adapters._ccxt_calls`;
- retries of transient errors with exponential backoff and jitter, bounded
  in attempts and by that deadline, sleeping on the injected clock. Reads are
  always retried. An order is re-sent only when it carries a client order
  id, and only after looking it up by that id: an order whose answer was
  lost is found, not placed twice. A cancel is retried, and an "order not
  found" after a lost cancel is settled by fetching the order;
- one request budget shared by every account on the same exchange
  (:mod:`adapters.ratelimit`);
- a count of requests per method (``calls``) for the reconciler's benchmarks;
- what differs per exchange (symbol aliases, client order ids, rate costs,
  ccxt quirks) read from one :class:`~adapters.profiles.ExchangeProfile`.

The public methods are here, each one call with one deadline. Under them:
the request machinery (budget, deadline, error mapping, retries, paging) in
:mod:`adapters._ccxt_calls`; the look-up by client id and the idempotent
create and cancel in :mod:`adapters._ccxt_orders`; the routes to one order's
trades, with the per-order facts Kraken's needs, in :mod:`adapters._ccxt_trades`.

Each account needs its own API key. NIJA's bot drives the nonce of its
Kraken keys; a second program on the same key gets "invalid nonce" errors,
which this adapter reports as :class:`~nija_broker.core.errors.AuthenticationFailed`
saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import ccxt.async_support as ccxt

from nija_broker.core.clock import DEFAULT_CALL_TIMEOUT_S, Clock, SystemClock, to_ms
from nija_broker.core.errors import (
    ConfigError,
    ExchangeError,
    ImpossibleAnswer,
    InvalidOrder,
)
from nija_broker.core.exchange import Capabilities, ExchangeSpec, OpenOrdersPage, OrderRequest
from nija_broker.core.models import Balance, Fill, Market, Order, OrderStatus, Ticker

from ._ccxt_calls import one_deadline
from ._ccxt_clone import build as build_ccxt
from ._ccxt_convert import (
    OrderMemo,
    convert_market,
    convert_ticker,
    convert_trade,
    is_spot_market,
)
from ._ccxt_listing import ROWS_DIRECT, ListingMemo, RawRows, install_raw_listing, raw_rows
from ._ccxt_orders import CcxtOrders
from ._ccxt_streams import CcxtStreams, streaming_class
from ._ccxt_trades import CcxtTrades
from ._shared import MarketsEntry, SessionPool, SharedMarkets
from ._tls import share_tls
from .profiles import ClientIdLookup, ExchangeProfile, profile_for
from .ratelimit import AccountBudget, RateBudget

__all__ = ["CcxtExchange", "SpecSource"]

_log = logging.getLogger(__name__)

_SECRET_ATTRS = ("apiKey", "secret", "password", "uid", "privateKey", "token")


class SpecSource(Protocol):
    """An account's configuration (``AccountConfig``), as far as this adapter reads it: named
    by shape so that adapters never import the configuration module."""

    def exchange_spec(self, environ: Mapping[str, str] | None = None) -> ExchangeSpec: ...


class CcxtExchange(CcxtOrders, CcxtTrades, CcxtStreams):
    """One account on one ccxt exchange. Build with :meth:`from_config`, or wrap a ccxt object."""

    def __init__(
        self,
        exchange: Any,
        *,
        account_id: str,
        clock: Clock | None = None,
        budget: RateBudget | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        max_attempts: int = 4,
        retry_initial_s: float = 0.2,
        retry_max_wait_s: float = 5.0,
        profile: ExchangeProfile | None = None,
        rate_budget: str = "venue",
    ) -> None:
        if not call_timeout_s > 0 or max_attempts < 1:
            raise ValueError("call_timeout_s must be > 0 and max_attempts >= 1")
        self._ex = exchange
        self._account_id = account_id
        self._clock: Clock = clock or SystemClock()
        self._profile = profile or profile_for(str(exchange.id))
        self._spending = AccountBudget.for_account(
            self._profile.rate,
            str(exchange.id),
            account_id,
            clock=self._clock,
            rate_limit_ms=float(getattr(exchange, "rateLimit", 0) or 100),
            bucket=budget,
            mode=rate_budget,
        )
        self._budget = self._spending.bucket
        self.call_timeout_s = call_timeout_s
        self.max_attempts = max_attempts
        self.retry_initial_s = retry_initial_s
        self.retry_max_wait_s = retry_max_wait_s
        self.calls: Counter[str] = Counter()
        """Requests sent per protocol method, retries included."""
        self._secrets = tuple(
            str(v) for v in (getattr(exchange, a, None) for a in _SECRET_ATTRS) if v
        )
        self._markets: dict[str, Market] | None = None
        self._trade_ids: dict[str, tuple[float, list[str]]] = {}
        """Order id -> (filled, trade ids) from the last QueryOrders (Kraken)."""
        self._fee_in_base: dict[str, str] = {}
        """Order id -> base currency, for Kraken orders flagged ``fcib`` (fee in base)."""
        self._memo = OrderMemo(account_id, client_id=self._profile.client_ids.from_exchange)
        self._listed = ListingMemo()
        self._parse_orders = (
            install_raw_listing(exchange) if self._profile.name in ROWS_DIRECT else None
        )
        """ccxt's own ``parse_orders``, where listings are parsed only where a row changed."""
        self._closed = False
        has = getattr(exchange, "has", {}) or {}
        # Otherwise learned at run time: ccxt raises ArgumentsRequired where a symbol is needed.
        known = self._profile.open_orders_without_symbol
        self._open_orders_without_symbol = (
            bool(has.get("fetchOpenOrders"))
            if known is None
            else known and bool(has.get("fetchOpenOrders"))
        )
        self._lookup = self._profile.client_ids.lookup
        if self._lookup is ClientIdLookup.SCAN and has.get("fetchOrderWithClientOrderId"):
            self._lookup = ClientIdLookup.NATIVE
        self._serial: asyncio.Lock | None = None
        self._profile.apply_ccxt_options(exchange)
        self._market_entry: MarketsEntry | None = None
        """Where set (built by :meth:`from_spec`), markets shared with every account of the
        same exchange and ccxt settings."""
        self._pooled = False
        """Whether this account's requests go through the process's shared session."""
        self._session_key: tuple[int, int] | None = None
        self._stream_terms: dict[str, dict[str, Any]] = {}
        self._stream_seen_orders: dict[str, tuple[Any, ...]] = {}
        self._stream_seen_trades: dict[str, None] = {}

    @classmethod
    def from_config(
        cls,
        account: SpecSource,
        *,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        budget: RateBudget | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> CcxtExchange:
        """Build the ccxt exchange an account's configuration names, with its keys read from
        ``environ`` (default: the process environment). See :meth:`from_spec`."""
        spec = account.exchange_spec(dict(environ) if environ is not None else None)
        return cls.from_spec(spec, clock=clock, budget=budget, call_timeout_s=call_timeout_s)

    @classmethod
    def from_spec(
        cls,
        spec: ExchangeSpec,
        *,
        clock: Clock | None = None,
        budget: RateBudget | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> CcxtExchange:
        """Build the ccxt exchange ``spec`` names. Nothing is sent.

        ``spec.options`` (the account's ``[accounts.ccxt]`` table) goes to the ccxt
        constructor unchanged (urls, options, or ``enableRateLimit = false``), under the keys.
        """
        exchange_cls = getattr(ccxt, spec.exchange_id, None)
        if exchange_cls is None or spec.exchange_id not in ccxt.exchanges:
            raise ConfigError(
                f"account {spec.account_id!r}: unknown ccxt exchange id {spec.exchange_id!r}",
                key=f"accounts.{spec.account_id}.exchange",
            )
        # Streaming: ccxt.pro's class of the venue, the same REST methods and settings.
        streaming = streaming_class(spec.exchange_id) if spec.stream else None
        if streaming is not None:
            exchange_cls = streaming
        keys = {"apiKey": spec.api_key, "secret": spec.secret, "password": spec.password}
        settings: dict[str, Any] = {
            "enableRateLimit": spec.rate_budget != "off",
            "timeout": int(call_timeout_s * 1000),
            **spec.options,
        }
        # A copy of the one instance built with these settings: ccxt's constructor is
        # the same 8 ms for every account but their keys (adapters/_ccxt_clone.py).
        exchange = build_ccxt(
            exchange_cls, settings, {k: v for k, v in keys.items() if v is not None}
        )
        share_tls(exchange)  # one TLS context per CA file, not one per account
        if spec.sandbox:
            try:
                # Some exchanges list urls['test'] = None, on which ccxt fails with a TypeError.
                if not (getattr(exchange, "urls", {}) or {}).get("test"):
                    raise ccxt.NotSupported(f"{spec.exchange_id} has no test URLs")
                exchange.set_sandbox_mode(True)
            except ccxt.NotSupported as exc:
                raise ConfigError(
                    f"account {spec.account_id!r}: {spec.exchange_id} has no sandbox in ccxt",
                    key=f"accounts.{spec.account_id}.sandbox",
                ) from exc
        adapter = cls(
            exchange,
            account_id=spec.account_id,
            clock=clock,
            budget=budget,
            call_timeout_s=call_timeout_s,
            rate_budget=spec.rate_budget,
        )
        adapter._market_entry = SharedMarkets.entry(spec.exchange_id, spec.sandbox, spec.options)
        # A websocket holds its connection for as long as it streams: on the shared pool's
        # bounded connections a fleet's streams would starve every account's requests.
        adapter._pooled = streaming is None
        return adapter

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
            order_trades=bool(has.get("fetchOrderTrades") or has.get("fetchMyTrades")),
            open_orders_without_symbol=self._open_orders_without_symbol,
            fetch_order_by_client_id=self._lookup is not ClientIdLookup.SCAN,
            watch_orders=bool(has.get("watchOrders")) and hasattr(self._ex, "watch_orders"),
            weights=self._profile.rate.weights,
        )

    def weight_spent(self, window_s: float = 60.0) -> float:
        """What this account's requests spent of the venue's limit in the last minute."""
        return self._spending.weight_spent(window_s)

    def _symbol(self, symbol: str) -> str:
        return self._profile.unified_symbol(symbol)

    def __repr__(self) -> str:  # no keys, ever
        return f"CcxtExchange(exchange={self.exchange_id!r}, account={self._account_id!r})"

    @staticmethod
    def _since_ms(since: datetime | None) -> int | None:
        return to_ms(since) if since is not None else None

    # -- reads --------------------------------------------------------------------------

    @one_deadline
    async def load_markets(self) -> Mapping[str, Market]:
        """The exchange's spot markets. Loaded once per exchange and ccxt settings where
        the adapter was built from a spec (:class:`~adapters._shared.SharedMarkets`)."""
        if self._markets is None:
            if self._market_entry is None:
                self._markets = await self._load_markets()
            else:
                self._markets = await SharedMarkets.load(
                    self._market_entry, self._ex, self._load_markets
                )
        return dict(self._markets)

    async def _load_markets(self) -> dict[str, Market]:
        raw = await self._read("load_markets", lambda: self._ex.load_markets())
        mode = int(getattr(self._ex, "precisionMode", ccxt.TICK_SIZE))
        markets = [convert_market(m, mode) for m in raw.values() if is_spot_market(m)]
        return {m.symbol: m for m in markets}

    @one_deadline
    async def fetch_open_orders(self, symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        """The open orders: of every symbol in one call (``symbols`` None, where the
        exchange allows it), else one call per symbol given, the page complete for
        exactly those symbols.

        ``calls`` counts the requests actually sent, retries included. Where a
        symbol is needed and none is given, the page is empty and incomplete.
        Rows unchanged since the last listing of the same scope are not parsed
        again (:mod:`adapters._ccxt_listing`).
        """
        before = self.calls["fetch_open_orders"]
        problems: list[ImpossibleAnswer] = []
        if symbols is None:
            if self._open_orders_without_symbol:
                try:
                    orders = await self._listing(None, problems)
                except ExchangeError as exc:
                    if not isinstance(exc.__cause__, ccxt.ArgumentsRequired):
                        raise
                    _log.info(
                        "%s needs a symbol to list open orders; asking per symbol",
                        self.exchange_id,
                    )
                    self._open_orders_without_symbol = False
                else:
                    return OpenOrdersPage(
                        orders=orders,
                        problems=problems,
                        complete=not problems,
                        calls=self.calls["fetch_open_orders"] - before,
                    )
            return OpenOrdersPage(orders=[], complete=False, calls=0)
        wanted = sorted({self._symbol(s) for s in symbols})
        orders = []
        for symbol in wanted:
            orders.extend(await self._listing(symbol, problems))
        return OpenOrdersPage(
            orders=orders,
            calls=self.calls["fetch_open_orders"] - before,
            complete=bool(wanted) and not problems,
            problems=problems,
            symbols=tuple(wanted),
        )

    async def _listing(self, symbol: str | None, problems: list[ImpossibleAnswer]) -> list[Order]:
        """One open-orders request (of ``symbol``, or of all), its changed rows parsed."""
        call = partial(self._ex.fetch_open_orders, symbol)
        cost_key = "fetch_open_orders" if symbol is None else "fetch_open_orders_symbol"
        if self._parse_orders is None:
            rows = await self._read("fetch_open_orders", call, cost_key)
            return self._orders(rows, problems, polled=True)
        with raw_rows():
            raw = await self._read("fetch_open_orders", call, cost_key)
        if not isinstance(raw, RawRows):  # ccxt parsed after all: convert as any listing
            return self._orders(raw, problems, polled=True)
        return self._listed.orders(
            symbol, raw, self._parse_orders, self._convert, self._clock.now(), problems
        )

    @one_deadline
    async def fetch_order(self, order_id: str, symbol: str) -> Order:
        symbol = self._symbol(symbol)
        raw = await self._read("fetch_order", lambda: self._ex.fetch_order(order_id, symbol))
        order = self._order(raw)
        self._remember_trade_ids(order, raw)
        return order

    @one_deadline
    async def fetch_order_by_client_id(self, client_order_id: str, symbol: str) -> Order:
        """Look an order up by our id: directly where ccxt can, else among open and closed."""
        return await self._by_client_id(client_order_id, self._symbol(symbol), self._read)

    @one_deadline
    async def fetch_closed_orders(self, symbol: str | None, since: datetime | None) -> list[Order]:
        """Orders that ended (filled, cancelled, expired, rejected) since ``since``.

        ccxt's ``fetch_closed_orders`` means *filled* on several exchanges
        (Binance filters on status 'closed'); where ccxt offers
        ``fetch_canceled_and_closed_orders`` that is asked instead, so a
        cancellation is seen too. Binance needs a symbol here, and is read from
        ``fetch_orders`` page by page (:meth:`_all_orders_pages`).
        """
        wanted = self._symbol(symbol) if symbol is not None else None
        since_ms = self._since_ms(since)
        params = dict(self._profile.closed_orders_params)
        raw = await self._closed_order_rows(wanted, since_ms, params)
        problems: list[ImpossibleAnswer] = []
        orders = [o for o in self._orders(raw, problems) if o.is_terminal]
        by_id = {str(r.get("id")): r for r in raw if isinstance(r, Mapping)}
        for order in orders:
            if order.filled > 0 and order.id in by_id:
                self._remember_trade_ids(order, by_id[order.id])
        for problem in problems:
            # Left out of the sweep; the order is asked about by id, where the
            # reconciler raises the attention event.
            _log.warning("%s: %s", self.exchange_id, problem)
        return orders

    @one_deadline
    async def fetch_my_trades(self, symbol: str | None, since: datetime | None) -> list[Fill]:
        wanted = self._symbol(symbol) if symbol is not None else None
        since_ms = self._since_ms(since)
        raw = await self._read(
            "fetch_my_trades", lambda: self._ex.fetch_my_trades(wanted, since_ms)
        )
        now = self._clock.now()
        return [convert_trade(t, account_id=self._account_id, now=now) for t in raw]

    @one_deadline
    async def fetch_order_trades(self, order: Order) -> list[Fill]:
        """The trades of one order (fills with their fees, keyed by trade id).

        Binance and most others: ccxt's ``fetch_order_trades`` (Binance: ``myTrades``
        with ``orderId``, one call). Kraken: QueryOrders with ``trades=true`` gives the
        order's trade ids, QueryTrades reads them (two calls). Without either, the
        symbol's trades since the order was created, filtered to the order.
        """
        raw = await self._order_trade_rows(order, self._symbol(order.symbol))
        now = self._clock.now()
        fills = [convert_trade(t, account_id=self._account_id, now=now) for t in raw]
        return [f for f in fills if f.order_id == order.id]

    @one_deadline
    async def fetch_balance(self) -> Mapping[str, Balance]:
        return self._balances(await self._read("fetch_balance", lambda: self._ex.fetch_balance()))

    @one_deadline
    async def fetch_tickers(self, symbols: Sequence[str]) -> Mapping[str, Ticker]:
        wanted = sorted({self._symbol(s) for s in symbols})
        if not wanted:
            return {}
        has = getattr(self._ex, "has", {}) or {}
        if has.get("fetchTickers"):
            raw = await self._read(
                "fetch_tickers", lambda: self._ex.fetch_tickers(wanted), count=len(wanted)
            )
            tickers = [convert_ticker(t) for t in raw.values()]
        else:
            tickers = []
            for symbol in wanted:
                one = await self._read("fetch_tickers", partial(self._ex.fetch_ticker, symbol))
                tickers.append(convert_ticker(one))
        return {t.symbol: t for t in tickers if t.symbol in wanted}

    # -- orders -------------------------------------------------------------------------

    @one_deadline
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
            _log.info(
                "%s: created order %s not readable yet (%s); reporting it pending",
                self.exchange_id,
                order.id,
                type(exc).__name__,
            )
            return order
        changes: dict[str, Any] = {"role": request.role}
        if fetched.client_order_id is None and order.client_order_id:
            changes["client_order_id"] = order.client_order_id
        if request.reduce_only:
            changes["reduce_only"] = True
        if (
            request.post_only
            and fetched.is_terminal
            and fetched.filled == 0
            and fetched.status is not OrderStatus.FILLED
        ):
            # Kraken takes a post-only order that would cross, then cancels it ("reason":
            # "Post only order"): for the caller that is a refusal, not an order to follow.
            raise InvalidOrder(
                f"{self.exchange_id} account {self._account_id}: create_order: post-only "
                f"order {fetched.id} would have taken liquidity (Post only order); the "
                f"exchange cancelled it unfilled ({fetched.status.value})",
                exchange=self.exchange_id,
                account_id=self._account_id,
            )
        return fetched.replace(**changes)

    @one_deadline
    async def cancel_order(self, order_id: str, symbol: str) -> Order:
        """Cancel, retried; "not found" after a lost cancel is settled by fetching the order."""
        return await self._cancel(order_id, self._symbol(symbol))

    # -- lifecycle ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close ccxt's HTTP session. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._ex.close()
        finally:
            if self._session_key is not None:
                key, self._session_key = self._session_key, None
                await SessionPool.release(key)

    async def __aenter__(self) -> CcxtExchange:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
