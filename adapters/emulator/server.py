"""An aiohttp server that speaks Binance spot REST over a :class:`~adapters.sim.SimEngine`.

Real ``ccxt.async_support.binance`` talks to it over loopback (see
:func:`adapters.emulator.binance_ccxt_config`). Paths are Binance's own
(``/api/v3/...``): ccxt picks its error handling by URL, and code that works
here should work against the real thing unchanged.

Signed endpoints check, in Binance's order: the ``X-MBX-APIKEY`` header
(-2014 / -2015), the ``timestamp`` against ``recvWindow`` (-1021), and the
HMAC-SHA256 signature of the query string followed by the form body (-1022).
Each key pair belongs to one account of the engine.

Faults come from a :class:`~adapters.sim.FaultInjector`, per endpoint, under
the same method names as :class:`~adapters.sim.SimExchange` uses:

==============  ===============================================================
TIMEOUT         held ``plan.timeout_s``, then 504; the engine was not touched
RATE_LIMIT      429 with Binance's -1003 body and ``Retry-After``
SERVER_ERROR    503 with a plain-text body, as Binance's front end sends it
LOST_RESPONSE   the request TAKES EFFECT, is held ``plan.timeout_s``, then 504
TRUNCATED_PAGE  ``openOrders`` answers half its list
LATENCY         the right answer, ``plan.latency_s`` late
==============  ===============================================================

Venue situations come from the engine (see :mod:`adapters.sim.engine`): IOC and FOK
limit orders, ``selfTradePreventionMode`` (``EXPIRED_IN_MATCH``), pending cancels
(``PENDING_CANCEL``). ``allOrders`` and ``myTrades`` answer as Binance documents: with
``orderId``/``fromId`` or ``startTime`` the first ``limit`` rows from there, otherwise the
most recent ``limit``, oldest first within the page; a ``startTime``..``endTime`` span over
24 hours is refused (-1127).

Orders younger than ``plan.hidden_after_create_s`` are missing from
``openOrders``/``allOrders`` and unknown to ``GET /api/v3/order`` (-2013), as
Binance documents for orders its engine has not yet published.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web

from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultInjector, FaultKind, FaultPlan
from nija_broker.core.clock import Clock, SystemClock, from_ms, to_ms
from nija_broker.core.errors import ExchangeError
from nija_broker.core.models import Order, OrderType

from . import binance as bn

_log = logging.getLogger(__name__)

Params = dict[str, str]
Handler = Callable[[str | None, Params, FaultKind | None], Awaitable[Any]]

_DEFAULT_RECV_WINDOW_MS = 5000
_MAX_RECV_WINDOW_MS = 60000
# Binance refuses requests stamped more than a second ahead of its clock.
_MAX_AHEAD_MS = 1000
_LIST_LIMIT_DEFAULT = 500
_LIST_LIMIT_MAX = 1000


def _strip_signature(raw: str) -> str:
    return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))


class EmulatorServer:
    """Binance spot REST over ``engine``, on ``host:port`` (port 0 picks a free one).

    ``accounts`` maps an engine account id to its ``(api_key, secret)``.
    ``clock`` is the server's clock for ``timestamp``/``recvWindow`` and
    ``/api/v3/time`` (real time by default, since ccxt stamps requests with
    real time); order times come from the engine's clock.
    """

    def __init__(
        self,
        engine: SimEngine,
        accounts: Mapping[str, tuple[str, str]] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultInjector | FaultPlan | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.clock: Clock = clock or SystemClock()
        self.faults = FaultInjector(faults, self.clock) if isinstance(faults, FaultPlan) else faults
        self._keys: dict[str, tuple[str, str]] = {}
        for account_id, (api_key, secret) in (accounts or {}).items():
            self.add_account(account_id, api_key, secret)
        self.requests: Counter[str] = Counter()
        """Requests per ``METHOD /path``, every answer included."""
        self.not_found: Counter[str] = Counter()
        """Requests for paths this emulator does not serve (what ccxt asked that we lack)."""
        self._post_only: set[tuple[str, str]] = set()
        self._next_client_id = 1
        self._next_cancel_id = 1
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------- lifecycle

    def add_account(self, account_id: str, api_key: str, secret: str) -> None:
        """Give ``account_id`` (an engine account) the key pair ``api_key``/``secret``."""
        if api_key in self._keys:
            raise ValueError("this API key is already given to an account")
        if account_id not in self.engine.accounts:
            raise ValueError(f"no account {account_id!r} in the engine")
        self._keys[api_key] = (account_id, secret)

    @property
    def url(self) -> str:
        """``http://host:port``; Binance's paths (``/api/v3/...``) hang below it."""
        if self._runner is None:
            raise RuntimeError("the emulator is not started")
        return f"http://{self.host}:{self.port}"

    def _app(self) -> web.Application:
        app = web.Application()
        routes: list[tuple[str, str, Handler, bool, str | None]] = [
            ("GET", "/api/v3/ping", self._ping, False, None),
            ("GET", "/api/v3/time", self._time, False, None),
            ("GET", "/api/v3/exchangeInfo", self._exchange_info, False, "load_markets"),
            ("GET", "/api/v3/ticker/price", self._ticker_price, False, "fetch_tickers"),
            ("GET", "/api/v3/ticker/24hr", self._ticker_24hr, False, "fetch_tickers"),
            ("GET", "/api/v3/ticker/bookTicker", self._book_ticker, False, "fetch_tickers"),
            ("GET", "/api/v3/account", self._account, True, "fetch_balance"),
            ("GET", "/api/v3/openOrders", self._open_orders, True, "fetch_open_orders"),
            ("GET", "/api/v3/order", self._get_order, True, "fetch_order"),
            ("POST", "/api/v3/order", self._new_order, True, "create_order"),
            ("DELETE", "/api/v3/order", self._cancel_order, True, "cancel_order"),
            ("GET", "/api/v3/allOrders", self._all_orders, True, "fetch_closed_orders"),
            ("GET", "/api/v3/myTrades", self._my_trades, True, "fetch_my_trades"),
        ]
        for method, path, handler, signed, fault_name in routes:
            app.router.add_route(method, path, self._endpoint(handler, signed, fault_name))
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self) -> Self:
        if self._runner is not None:
            return self
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        sockets = [s for s in runner.addresses if isinstance(s, tuple)]
        if sockets:
            self.port = int(sockets[0][1])
        return self

    async def aclose(self) -> None:
        """Stop serving. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------ plumbing

    def _endpoint(
        self, handler: Handler, signed: bool, fault_name: str | None
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.requests[f"{request.method} {request.path}"] += 1
            try:
                query_raw = request.raw_path.partition("?")[2]
                body_raw = (await request.text()) if request.can_read_body else ""
                params: Params = dict(parse_qsl(query_raw, keep_blank_values=True))
                params.update(parse_qsl(body_raw, keep_blank_values=True))
                account_id = (
                    self._authenticate(request, query_raw, body_raw, params) if signed else None
                )
                name = fault_name
                if name == "fetch_order" and "orderId" not in params:
                    name = "fetch_order_by_client_id"
                fault = await self._fault_before(name)
                if fault is FaultKind.TIMEOUT:
                    return web.Response(status=504, text="Gateway Time-out")
                if fault is FaultKind.RATE_LIMIT:
                    return web.json_response(
                        {
                            "code": -1003,
                            "msg": "Too many requests; current limit of IP is "
                            "exceeded. Please use WebSocket Streams for live updates.",
                        },
                        status=429,
                        headers={"Retry-After": "1"},
                    )
                if fault is FaultKind.SERVER_ERROR:
                    return web.Response(status=503, text="Service Unavailable")
                result = await handler(account_id, params, fault)
                if fault is FaultKind.LOST_RESPONSE and self.faults is not None:
                    await self.clock.sleep(self.faults.plan.timeout_s)
                    return web.Response(status=504, text="Gateway Time-out")
                return web.json_response(result)
            except bn.BinanceError as exc:
                return web.json_response(exc.body(), status=exc.status)

        return serve

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        self.requests[key] += 1
        self.not_found[key] += 1
        _log.warning("emulator: no such endpoint %s", key)
        return web.Response(
            status=404,
            text="<html><body><h2>404 Not found</h2></body></html>",
            content_type="text/html",
        )

    async def _fault_before(self, name: str | None) -> FaultKind | None:
        """Draw this call's fault; wait out the delays that come before the answer."""
        if self.faults is None or name is None:
            return None
        fault = self.faults.next(name)
        plan = self.faults.plan
        if plan.base_latency_s > 0:
            await self.clock.sleep(plan.base_latency_s)
        if fault is FaultKind.LATENCY:
            await self.clock.sleep(plan.latency_s)
        elif fault is FaultKind.TIMEOUT:
            await self.clock.sleep(plan.timeout_s)
        return fault

    def _authenticate(
        self, request: web.Request, query_raw: str, body_raw: str, params: Params
    ) -> str:
        api_key = request.headers.get("X-MBX-APIKEY", "")
        if not api_key:
            raise bn.bad_api_key_format()
        entry = self._keys.get(api_key)
        if entry is None:
            raise bn.invalid_api_key()
        account_id, secret = entry
        timestamp_ms = bn.number(params, "timestamp", required=True)
        recv_window_ms = bn.number(params, "recvWindow") or _DEFAULT_RECV_WINDOW_MS
        if recv_window_ms > _MAX_RECV_WINDOW_MS:
            raise bn.BinanceError(400, -1131, "recvWindow must be less than 60000")
        assert timestamp_ms is not None
        now_ms = to_ms(self.clock.now())
        if timestamp_ms > now_ms + _MAX_AHEAD_MS or now_ms - timestamp_ms > recv_window_ms:
            raise bn.outside_recv_window()
        signature = params.get("signature", "")
        if not signature:
            raise bn.mandatory("signature")
        payload = _strip_signature(query_raw) + _strip_signature(body_raw)
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise bn.bad_signature()
        return account_id

    def _now_ms(self) -> int:
        return to_ms(self.clock.now())

    def _symbol(self, params: Params, *, required: bool) -> str | None:
        raw = params.get("symbol")
        if not raw:
            if required:
                raise bn.mandatory("symbol")
            return None
        for symbol in self.engine.markets:
            if bn.market_id(symbol) == raw:
                return symbol
        raise bn.invalid_symbol()

    def _symbols(self, params: Params) -> list[str]:
        """``symbol=X``, ``symbols=["X","Y"]`` or neither (every market)."""
        if "symbols" in params:
            try:
                ids = json.loads(params["symbols"])
            except ValueError:
                raise bn.illegal("symbols") from None
            if not isinstance(ids, list):
                raise bn.illegal("symbols")
            return [self._symbol({"symbol": str(i)}, required=True) or "" for i in ids]
        one = self._symbol(params, required=False)
        return [one] if one is not None else list(self.engine.markets)

    def _hidden(self, order: Order) -> bool:
        if self.faults is None:
            return False
        age_s = (self.engine.clock.now() - order.created_at).total_seconds()
        return self.faults.is_hidden(age_s)

    def _order_json(self, account_id: str, order: Order) -> dict[str, Any]:
        post_only = (account_id, order.id) in self._post_only
        kind = bn.binance_type(order.type, has_price=order.price is not None, post_only=post_only)
        waiting = (
            order.type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT)
            and order.filled == 0
            and order.is_open
        )
        return bn.order_json(
            order,
            type_name=kind,
            is_working=not waiting,
            flags=self.engine.order_flags(account_id, order.id),
        )

    def _engine_call(self, call: Callable[[], Any], *, cancelling: bool = False) -> Any:
        try:
            return call()
        except ExchangeError as exc:
            raise bn.engine_error(exc, cancelling=cancelling) from exc

    def _find_order(
        self, account_id: str, params: Params, symbol: str, *, cancelling: bool
    ) -> Order:
        order_id = params.get("orderId")
        client_id = params.get("origClientOrderId")
        if not order_id and not client_id:
            raise bn.BinanceError(
                400,
                -1102,
                "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
            )
        order: Order
        if order_id:
            order = self._engine_call(
                lambda: self.engine.get_order(account_id, order_id), cancelling=cancelling
            )
        else:
            assert client_id is not None
            order = self._engine_call(
                lambda: self.engine.get_order_by_client_id(account_id, client_id),
                cancelling=cancelling,
            )
        if order.symbol != symbol or (not cancelling and self._hidden(order)):
            raise (
                bn.BinanceError(400, -2011, "Unknown order sent.")
                if cancelling
                else bn.BinanceError(400, -2013, "Order does not exist.")
            )
        return order

    @staticmethod
    def _since(params: Params, name: str = "startTime") -> datetime | None:
        start_ms = bn.number(params, name)
        return from_ms(start_ms) if start_ms is not None else None

    @staticmethod
    def _limit(params: Params) -> int:
        limit = bn.number(params, "limit")
        return min(int(limit), _LIST_LIMIT_MAX) if limit else _LIST_LIMIT_DEFAULT

    # ----------------------------------------------------------- endpoints

    async def _ping(self, account_id: str | None, params: Params, fault: FaultKind | None) -> Any:
        return {}

    async def _time(self, account_id: str | None, params: Params, fault: FaultKind | None) -> Any:
        return {"serverTime": self._now_ms()}

    async def _exchange_info(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        wanted = set(self._symbols(params))
        markets = {s: m for s, m in self.engine.markets.items() if s in wanted}
        return bn.exchange_info(markets, self._now_ms())

    def _tickers(self, params: Params, render: Callable[[Any], dict[str, Any]]) -> Any:
        rendered = [render(self.engine.ticker(s)) for s in self._symbols(params)]
        return rendered[0] if "symbol" in params else rendered

    async def _ticker_price(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        return self._tickers(params, bn.ticker_price)

    async def _ticker_24hr(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        now_ms = self._now_ms()
        return self._tickers(params, lambda t: bn.ticker_24hr(t, now_ms=now_ms))

    async def _book_ticker(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        return self._tickers(params, bn.book_ticker)

    async def _account(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        return bn.account_json(
            self.engine.balances(account_id),
            update_ms=self._now_ms(),
            maker_fee=self.engine.maker_fee,
            taker_fee=self.engine.taker_fee,
        )

    async def _open_orders(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        symbol = self._symbol(params, required=False)
        orders = [o for o in self.engine.open_orders(account_id, symbol) if not self._hidden(o)]
        if fault is FaultKind.TRUNCATED_PAGE:
            orders = orders[: len(orders) // 2]
        return [self._order_json(account_id, o) for o in orders]

    async def _get_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        symbol = self._symbol(params, required=True)
        assert symbol is not None
        order = self._find_order(account_id, params, symbol, cancelling=False)
        return self._order_json(account_id, order)

    async def _new_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        symbol = self._symbol(params, required=True)
        assert symbol is not None
        client_id = params.get("newClientOrderId") or self._generated_client_id()
        market = self.engine.markets[symbol]
        request = bn.order_request(
            params, symbol, client_id, self.engine.price(symbol), market.amount_step
        )
        trades_before = len(self.engine.trades(account_id, symbol))
        tif, stp = bn.time_in_force(params), bn.stp_mode(params)
        order = self._engine_call(
            lambda: self.engine.place_order(account_id, request, time_in_force=tif, stp_mode=stp)
        )
        if request.post_only:
            self._post_only.add((account_id, order.id))
        fills = [
            f
            for f in self.engine.trades(account_id, symbol)[trades_before:]
            if f.order_id == order.id
        ]
        kind = params["type"]
        resp_type = params.get("newOrderRespType") or (
            "FULL" if kind in bn._FULL_BY_DEFAULT else "ACK"
        )
        return bn.new_order_response(
            order,
            fills,
            resp_type,
            type_name=kind,
            transact_ms=self._now_ms(),
            flags=self.engine.order_flags(account_id, order.id),
        )

    def _generated_client_id(self) -> str:
        self._next_client_id += 1
        return f"emu{self._next_client_id - 1:016d}"

    async def _cancel_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        symbol = self._symbol(params, required=True)
        assert symbol is not None
        order = self._find_order(account_id, params, symbol, cancelling=True)
        cancelled = self._engine_call(
            lambda: self.engine.cancel_order(account_id, order.id), cancelling=True
        )
        self._next_cancel_id += 1
        cancel_id = params.get("newClientOrderId") or f"emucancel{self._next_cancel_id:012d}"
        kind = bn.binance_type(
            cancelled.type,
            has_price=cancelled.price is not None,
            post_only=(account_id, cancelled.id) in self._post_only,
        )
        return bn.cancel_response(
            cancelled,
            type_name=kind,
            cancel_client_id=cancel_id,
            transact_ms=self._now_ms(),
            flags=self.engine.order_flags(account_id, cancelled.id),
        )

    async def _all_orders(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        """``allOrders``: "If orderId is set, it will get orders >= that orderId. Otherwise
        most recent orders are returned" (spot API docs, Account endpoints, "All orders")."""
        assert account_id is not None
        symbol = self._symbol(params, required=True)
        bn.history_window(params)
        start = self._since(params)
        orders = self.engine.all_orders(account_id, symbol, start)
        end = self._since(params, "endTime")
        from_id = bn.number(params, "orderId")
        orders = [
            o
            for o in orders
            if not self._hidden(o)
            and (end is None or o.created_at <= end)
            and (from_id is None or int(o.id) >= from_id)
        ]
        limit = self._limit(params)
        page = orders[:limit] if from_id is not None or start is not None else orders[-limit:]
        return [self._order_json(account_id, o) for o in page]

    async def _my_trades(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        """``myTrades``: the symbol's trades, oldest first; ``orderId`` keeps one order's.

        As Binance documents: with ``fromId`` (trades from that id on) or a
        ``startTime`` the first ``limit`` rows, otherwise the most recent ones.
        """
        assert account_id is not None
        symbol = self._symbol(params, required=True)
        bn.history_window(params)
        start = self._since(params)
        fills = self.engine.trades(account_id, symbol, start)
        end = self._since(params, "endTime")
        from_id = bn.number(params, "fromId")
        order_id = params.get("orderId")
        fills = [
            f
            for f in fills
            if (from_id is None or int(f.trade_id or 0) >= from_id)
            and (end is None or f.timestamp <= end)
            and (not order_id or f.order_id == order_id)
        ]
        limit = self._limit(params)
        page = fills[:limit] if from_id is not None or start is not None else fills[-limit:]
        return [bn.trade_json(f, is_maker=self.engine.is_maker(f.trade_id or "")) for f in page]
