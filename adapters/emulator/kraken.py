"""Kraken spot REST over a :class:`~adapters.sim.SimEngine`, for real ``ccxt.async_support.kraken``.

Kraken has no spot sandbox, so this is where Kraken accounts rehearse::

    async with KrakenEmulatorServer(engine, {"USER:alice": (key, b64_secret)}) as server:
        exchange = ccxt.async_support.kraken(kraken_ccxt_config(server.url, key, b64_secret))

This module is the transport: routes, authentication, faults, the public and
balance endpoints, and ``GetWebSocketsToken``. The order and trade endpoints, and the
venue behaviours they emulate (``pending``, post-only, IOC, self-trade prevention), are
:mod:`._kraken_trading`'s; the JSON is :mod:`._kraken_wire`'s; the ccxt settings
(:func:`kraken_ccxt_config`, :func:`kraken_urls`) are :mod:`._kraken_config`'s,
re-exported here. The private WebSocket v2 feeds ccxt.pro reads (``executions``,
``balances`` on ``/v2``, authenticated by ``GetWebSocketsToken``'s token, with their
own faults: ``stream_faults``) are :mod:`._kraken_stream`'s, reachable as
:attr:`KrakenEmulatorServer.stream`::

    exchange = ccxt.pro.kraken(kraken_ccxt_config(server.url, key, b64_secret))
    orders = await exchange.watch_orders()

Paths are Kraken's (``/0/public/...``, ``/0/private/...``). Private calls are
``POST`` with a form body carrying ``nonce``, and are checked as Kraken does:

- ``API-Key`` names a known key, else ``EAPI:Invalid key``;
- ``API-Sign`` is ``base64(HMAC-SHA512(base64decode(secret), path +
  SHA256(nonce + body)))``, else ``EAPI:Invalid signature``;
- the nonce is an integer above every nonce this key sent before, else
  ``EAPI:Invalid nonce`` (what a second program on the same key causes).

Every answer, errors included, is HTTP 200 with ``{"error": [...], "result": ...}``.
Faults come from the same :class:`~adapters.sim.FaultInjector` as the
Binance dialect, under the same method names:

==============  ===============================================================
TIMEOUT         held ``plan.timeout_s``, then 504; the engine was not touched
RATE_LIMIT      ``EAPI:Rate limit exceeded``
SERVER_ERROR    ``EService:Unavailable``
LOST_RESPONSE   the request TAKES EFFECT, is held ``plan.timeout_s``, then 504
TRUNCATED_PAGE  ``OpenOrders`` answers half its orders
LATENCY         the right answer, ``plan.latency_s`` late
==============  ===============================================================

``OpenOrders``/``ClosedOrders`` asked for one ``cl_ord_id`` count as
``fetch_order_by_client_id``. Orders younger than
``plan.hidden_after_create_s`` are missing from listings and unknown to
``QueryOrders``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections import defaultdict
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
from nija_broker.core.clock import Clock
from nija_broker.core.errors import OrderNotFound
from nija_broker.core.models import Market, Order

from . import _kraken_wire as kw
from ._kraken_config import kraken_ccxt_config, kraken_urls
from ._kraken_stream import TOKEN_EXPIRES_S, KrakenStream
from ._kraken_trading import KrakenTradingServer
from .server import Handler, Params

__all__ = ["KrakenEmulatorServer", "kraken_ccxt_config", "kraken_urls"]

_log = logging.getLogger(__name__)


class KrakenEmulatorServer(KrakenTradingServer):
    """Kraken spot REST over ``engine``; ``accounts`` maps an account id to ``(key, b64 secret)``.

    Lifecycle, fault drawing and the request counters (``requests``,
    ``not_found``) are the Binance server's; only the dialect differs. The
    ``pending`` knobs (``hold_pending``, :meth:`release_pending`, :meth:`mark_pending`)
    and :meth:`engine_order_id` come with the order endpoints, from
    :class:`~adapters.emulator._kraken_trading.KrakenTradingServer`.

    ``stream_faults`` (a plan, or an injector a test keeps to :meth:`force` faults) is
    for the websocket's updates, apart from the REST ``faults``; ``heartbeat_s`` spaces
    the websocket's heartbeats (``None``: none).
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
        stream_faults: StreamFaultInjector | StreamFaultPlan | None = None,
        heartbeat_s: float | None = 1.0,
    ) -> None:
        self._last_nonce: dict[str, int] = {}
        if not isinstance(stream_faults, StreamFaultInjector):
            stream_faults = StreamFaultInjector(stream_faults)
        # The base's Binance WebSocket API is never routed here; it shares the injector so
        # ``ws_api.faults`` and ``stream.faults`` are one, whichever name a test uses.
        super().__init__(
            engine,
            accounts,
            host=host,
            port=port,
            faults=faults,
            clock=clock,
            stream_faults=stream_faults,
        )
        self.stream = KrakenStream(
            engine, self, clock=self.clock, faults=stream_faults, heartbeat_s=heartbeat_s
        )
        """The private websocket: its tokens, connections, counters and fault knobs."""

    async def start(self) -> Self:
        await super().start()
        self.stream.start()
        return self

    async def aclose(self) -> None:
        """Close the websocket's connections, then stop serving. Safe to call twice."""
        await self.stream.aclose()
        await super().aclose()

    async def close_streams(self, account_id: str | None = None, *, terminated: bool = True) -> int:
        """Close the websocket connections of ``account_id`` (every account's when ``None``),
        as a server restart does; returns how many were closed.

        Kraken says nothing before it closes (no ``eventStreamTerminated`` as on Binance):
        ``terminated`` is accepted so both dialects take the same call, and changes nothing.
        """
        return await self.stream.close_connections(account_id)

    def add_account(self, account_id: str, api_key: str, secret: str) -> None:
        """Give ``account_id`` a key pair; Kraken secrets are base64, as Kraken issues them."""
        try:
            base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a Kraken API secret must be base64") from None
        if account_id in self.engine.accounts and not self.engine.fee_mode(account_id).is_quote:
            # Kraken charges spot fees in quote unless an order asks otherwise (fcib, not
            # emulated); its trades carry no fee currency to say anything else.
            raise ValueError(
                f"account {account_id!r} does not pay fees in quote, as Kraken "
                f"accounts do (fee mode {self.engine.fee_mode(account_id).name})"
            )
        super().add_account(account_id, api_key, secret)

    def _app(self) -> web.Application:
        app = web.Application()
        public: list[tuple[str, Handler, str | None]] = [
            ("Time", self._time, None),
            ("Assets", self._assets, "load_markets"),
            ("AssetPairs", self._asset_pairs, "load_markets"),
            ("Ticker", self._ticker, "fetch_tickers"),
        ]
        private: list[tuple[str, Handler, str | None]] = [
            ("Balance", self._balance, "fetch_balance"),
            ("BalanceEx", self._balance_ex, "fetch_balance"),
            ("OpenOrders", self._open_orders, "fetch_open_orders"),
            ("ClosedOrders", self._closed_orders, "fetch_closed_orders"),
            ("QueryOrders", self._query_orders, "fetch_order"),
            ("AddOrder", self._add_order, "create_order"),
            ("CancelOrder", self._cancel_order, "cancel_order"),
            ("TradesHistory", self._trades_history, "fetch_my_trades"),
            ("QueryTrades", self._query_trades, "fetch_my_trades"),
            ("GetWebSocketsToken", self._ws_token, "fetch_ws_token"),
        ]
        for name, handler, fault_name in public:
            for method in ("GET", "POST"):
                app.router.add_route(
                    method, f"/0/public/{name}", self._kraken_endpoint(handler, False, fault_name)
                )
        for name, handler, fault_name in private:
            app.router.add_route(
                "POST", f"/0/private/{name}", self._kraken_endpoint(handler, True, fault_name)
            )
        # ccxt.pro's privateV2 (and publicV2) URL, host rewritten: the websocket.
        app.router.add_get("/v2", self.stream.handle)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    # ------------------------------------------------------------ plumbing

    def _kraken_endpoint(
        self,
        handler: Handler,
        private: bool,
        fault_name: str | None,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.requests[f"{request.method} {request.path}"] += 1
            try:
                body_raw = (await request.text()) if request.can_read_body else ""
                params = _params(request, body_raw)
                name = fault_name
                if name in ("fetch_open_orders", "fetch_closed_orders") and params.get("cl_ord_id"):
                    name = "fetch_order_by_client_id"
                # Delays come before the nonce check, as network delays do: a slow request
                # that arrives after a later-signed one is refused, as on Kraken.
                fault = await self._fault_before(name)
                account_id = (
                    self._authenticate_kraken(request, body_raw, params) if private else None
                )
                if fault is FaultKind.TIMEOUT:
                    return web.Response(status=504, text="Gateway Time-out")
                if fault is FaultKind.RATE_LIMIT:
                    raise kw.KrakenError("EAPI:Rate limit exceeded")
                if fault is FaultKind.SERVER_ERROR:
                    raise kw.KrakenError("EService:Unavailable")
                result = await handler(account_id, params, fault)
                if fault is FaultKind.LOST_RESPONSE and self.faults is not None:
                    await self.clock.sleep(self.faults.plan.timeout_s)
                    return web.Response(status=504, text="Gateway Time-out")
                return web.json_response({"error": [], "result": result})
            except kw.KrakenError as exc:
                return web.json_response(exc.body(), status=exc.status)

        return serve

    def _authenticate_kraken(self, request: web.Request, body_raw: str, params: Params) -> str:
        """Key, then signature, then nonce: a forged request cannot burn the key's nonce."""
        entry = self._keys.get(request.headers.get("API-Key", ""))
        if entry is None:
            raise kw.KrakenError("EAPI:Invalid key")
        account_id, secret = entry
        api_key = request.headers["API-Key"]
        nonce_raw = params.get("nonce", "")
        digest = hashlib.sha256((nonce_raw + body_raw).encode()).digest()
        mac = hmac.new(base64.b64decode(secret), request.path.encode() + digest, hashlib.sha512)
        expected = base64.b64encode(mac.digest()).decode()
        if not hmac.compare_digest(expected, request.headers.get("API-Sign", "")):
            raise kw.KrakenError("EAPI:Invalid signature")
        try:
            nonce = int(nonce_raw)
        except ValueError:
            raise kw.KrakenError("EAPI:Invalid nonce") from None
        if nonce <= self._last_nonce.get(api_key, 0):
            raise kw.KrakenError("EAPI:Invalid nonce")
        self._last_nonce[api_key] = nonce
        return account_id

    def _markets(self, params: Params) -> list[Market]:
        pairs = [p for p in params.get("pair", "").split(",") if p]
        if not pairs:
            return list(self.engine.markets.values())
        return [self._market(p) for p in pairs]

    # ----------------------------------------------------------- public

    async def _time(self, account_id: str | None, params: Params, fault: FaultKind | None) -> Any:
        return kw.server_time(self._now_ms())

    async def _assets(self, account_id: str | None, params: Params, fault: FaultKind | None) -> Any:
        return kw.assets(self.engine.markets)

    async def _asset_pairs(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        return {
            kw.pair_id(m): kw.asset_pair(
                m, maker_fee=self.engine.maker_fee, taker_fee=self.engine.taker_fee
            )
            for m in self._markets(params)
        }

    async def _ticker(self, account_id: str | None, params: Params, fault: FaultKind | None) -> Any:
        result = {}
        for market in self._markets(params):
            tick = self.engine.ticker(market.symbol)
            result[kw.pair_id(market)] = kw.ticker(market, tick.last or 0.0, tick.bid, tick.ask)
        return result

    # ------------------------------------------------ private: websocket

    async def _ws_token(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        """A token for this key's account only; use it within ``expires`` seconds."""
        assert account_id is not None
        return {"token": self.stream.issue_token(account_id), "expires": TOKEN_EXPIRES_S}

    def _order_refused(self, account_id: str, order: Order) -> None:
        self.stream.push(account_id, self.stream.feed.refused(order))

    def _orders_released(self, keys: list[tuple[str, str]]) -> None:
        by_account: defaultdict[str, list[Order]] = defaultdict(list)
        for account_id, order_id in keys:
            try:
                by_account[account_id].append(self.engine.get_order(account_id, order_id))
            except OrderNotFound:
                continue
        for account_id, orders in by_account.items():
            self.stream.push(account_id, self.stream.feed.released(orders))

    # ------------------------------------------------ private: balances

    async def _balance(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        return kw.balance(self.engine.balances(account_id))

    async def _balance_ex(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        return kw.balance_ex(self.engine.balances(account_id))


def _params(request: web.Request, body_raw: str) -> Params:
    """Query string and body; ccxt sends a JSON body for a few private calls."""
    params: Params = dict(parse_qsl(request.raw_path.partition("?")[2], keep_blank_values=True))
    if request.content_type == "application/json" and body_raw:
        try:
            decoded = json.loads(body_raw)
        except ValueError:
            raise kw.invalid_arguments() from None
        if not isinstance(decoded, dict):
            raise kw.invalid_arguments()
        params.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()})
    else:
        params.update(parse_qsl(body_raw, keep_blank_values=True))
    return params
