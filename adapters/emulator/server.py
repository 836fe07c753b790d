"""An aiohttp server that speaks Binance spot REST over a :class:`~adapters.sim.SimEngine`.

Real ``ccxt.async_support.binance`` talks to it over loopback (see
:func:`adapters.emulator.binance_ccxt_config`). Paths are Binance's own
(``/api/v3/...``): ccxt picks its error handling by URL, and code that works
here should work against the real thing unchanged.

Signed endpoints check, in Binance's order: the ``X-MBX-APIKEY`` header
(-2014 / -2015), the ``timestamp`` against ``recvWindow`` (-1021), and the
HMAC-SHA256 signature of the query string followed by the form body (-1022).
Each key pair belongs to one account of the engine.

Every request is counted at the weight Binance documents for it
(:mod:`._binance_weights`), per IP and calendar minute, and every answer carries
Binance's ``X-MBX-USED-WEIGHT-1M`` header; ``weight_limit_per_min`` (off by
default) refuses a request past it with Binance's 429 and -1003.

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

Spot user data is pushed over Binance's WebSocket API at ``/ws-api/v3``
(``userDataStream.subscribe.signature``, events from the engine, stream faults from a
:class:`~adapters.sim.faults.StreamFaultInjector`): :mod:`._binance_stream`, reached as
:attr:`EmulatorServer.ws_api`.

This module is the transport: routes, authentication, faults, and the public and
account endpoints. The order and trade endpoints, with the venue situations and
paging they emulate, are :mod:`._binance_trading`'s; the JSON and the error codes
are :mod:`.binance`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web

from adapters.sim.engine import SimEngine
from adapters.sim.faults import (
    FaultInjector,
    FaultKind,
    FaultPlan,
    StreamFaultInjector,
    StreamFaultPlan,
)
from nija_broker.core.clock import Clock, SystemClock, to_ms
from nija_broker.core.models import Order

from . import binance as bn
from ._binance_stream import BinanceUserStream
from ._binance_trading import BinanceTradingEndpoints, Params
from ._binance_weights import WeightCounter, request_weight

__all__ = ["EmulatorServer", "Handler", "Params"]

_log = logging.getLogger(__name__)

Handler = Callable[[str | None, Params, FaultKind | None], Awaitable[Any]]

_DEFAULT_RECV_WINDOW_MS = 5000
_MAX_RECV_WINDOW_MS = 60000
# Binance refuses requests stamped more than a second ahead of its clock.
_MAX_AHEAD_MS = 1000


def _strip_signature(raw: str) -> str:
    return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))


class EmulatorServer(BinanceTradingEndpoints):
    """Binance spot REST over ``engine``, on ``host:port`` (port 0 picks a free one).

    ``accounts`` maps an engine account id to its ``(api_key, secret)``.
    ``clock`` is the server's clock for ``timestamp``/``recvWindow`` and
    ``/api/v3/time`` (real time by default, since ccxt stamps requests with
    real time); order times come from the engine's clock. The order and trade
    endpoints are :class:`~adapters.emulator._binance_trading.BinanceTradingEndpoints`'s.
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
        weight_limit_per_min: int | None = None,
        stream_faults: StreamFaultInjector | StreamFaultPlan | None = None,
        ping_interval_s: float = 20.0,
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
        self.weights = WeightCounter()
        """Request weight as Binance would count it: per IP a minute, and in all."""
        self.weight_by_path: Counter[str] = Counter()
        """Request weight per ``METHOD /path``, every answer included."""
        self.weight_limit_per_min = weight_limit_per_min
        """Refuse requests past this weight a minute per IP (Binance: 6,000); ``None``: never."""
        self._post_only: set[tuple[str, str]] = set()
        self._next_client_id = 1
        self._next_cancel_id = 1
        self._cancel_ids: dict[tuple[str, str], str] = {}
        """(account, order id) -> the client id of the cancel that closed it."""
        self._runner: web.AppRunner | None = None
        self.ws_api = BinanceUserStream(
            engine,
            verify=self._verify,
            clock=self.clock,
            faults=(
                stream_faults
                if isinstance(stream_faults, StreamFaultInjector)
                else StreamFaultInjector(stream_faults)
            ),
            type_name=self._type_name,
            cancel_id=self._cancel_client_id,
            weigh=self._weigh,
            ping_interval_s=ping_interval_s,
        )
        """Binance's WebSocket API on ``/ws-api/v3``: the spot user data stream, its
        counters, fault injector (``ws_api.faults``) and knobs (see :mod:`._binance_stream`)."""

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
        app.router.add_route("GET", "/ws-api/v3", self.ws_api.handle)
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
            await self.ws_api.aclose()
            await runner.cleanup()

    async def close_streams(self, account_id: str | None = None, *, terminated: bool = True) -> int:
        """End the user data streams of ``account_id`` (every account's when ``None``): each
        connection carrying one gets ``eventStreamTerminated`` (unless not ``terminated``)
        and is closed; returns how many connections were closed."""
        return await self.ws_api.close_streams(account_id, terminated=terminated)

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
            query_raw = request.raw_path.partition("?")[2]
            body_raw = (await request.text()) if request.can_read_body else ""
            params: Params = dict(parse_qsl(query_raw, keep_blank_values=True))
            params.update(parse_qsl(body_raw, keep_blank_values=True))
            weight = request_weight(request.method, request.path, params)
            ip, minute = request.remote or "?", int(self.clock.now().timestamp() // 60)
            limit = self.weight_limit_per_min
            if limit is not None and self.weights.used(ip, minute) + weight > limit:
                refused = web.json_response(
                    {
                        "code": -1003,
                        "msg": f"Too much request weight used; current limit is {limit} "
                        "request weight per 1 MINUTE. Please use WebSocket Streams for live "
                        "updates to avoid polling the API.",
                    },
                    status=429,
                    headers={"Retry-After": str(60 - int(self.clock.now().timestamp()) % 60)},
                )
                refused.headers["X-MBX-USED-WEIGHT-1M"] = str(self.weights.used(ip, minute))
                return refused
            used = self.weights.add(ip, minute, weight)
            self.weight_by_path[f"{request.method} {request.path}"] += weight
            response = await answer(request, query_raw, body_raw, params)
            response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
            return response

        async def answer(
            request: web.Request, query_raw: str, body_raw: str, params: Params
        ) -> web.StreamResponse:
            try:
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
        payload = _strip_signature(query_raw) + _strip_signature(body_raw)
        return self._verify(api_key, params, payload)

    def _verify(self, api_key: str, params: Params, payload: str) -> str:
        """The account of a signed request (REST or WebSocket API), after Binance's checks:
        the key (-2015), ``timestamp`` against ``recvWindow`` (-1021), the HMAC-SHA256
        ``signature`` of ``payload`` (-1022)."""
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
        expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise bn.bad_signature()
        return account_id

    def _weigh(self, ip: str, weight: int) -> int:
        """Count a WebSocket API request's weight with the REST ones (one budget per IP)."""
        return self.weights.add(ip, int(self.clock.now().timestamp() // 60), weight)

    def _type_name(self, account_id: str, order: Order) -> str:
        post_only = (account_id, order.id) in self._post_only
        return bn.binance_type(order.type, has_price=order.price is not None, post_only=post_only)

    def _cancel_client_id(self, account_id: str, order: Order) -> str:
        """The client id of the cancel that closed ``order``: the REST cancel's, else a new
        one (a cancel the engine made on its own, as a test hook does)."""
        known = self._cancel_ids.get((account_id, order.id))
        if known is None:
            self._next_cancel_id += 1
            known = f"emucancel{self._next_cancel_id:012d}"
            self._cancel_ids[(account_id, order.id)] = known
        return known

    async def _cancel_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        answer = await super()._cancel_order(account_id, params, fault)
        # Before any await: the stream renders the CANCELED report after this returns.
        assert account_id is not None
        self._cancel_ids[(account_id, str(answer["orderId"]))] = answer["clientOrderId"]
        return answer

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
