"""Kraken spot REST over a :class:`~adapters.sim.SimEngine`, for real ``ccxt.async_support.kraken``.

Kraken has no spot sandbox, so this is where Kraken accounts rehearse::

    async with KrakenEmulatorServer(engine, {"USER:alice": (key, b64_secret)}) as server:
        exchange = ccxt.async_support.kraken(kraken_ccxt_config(server.url, key, b64_secret))

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

Venue behaviours ccxt's recorded payloads lack, after Kraken's documentation:

- ``pending`` ("order pending book entry", the first of OrderInfo's five statuses):
  while ``hold_pending`` is set, an order AddOrder rests reads ``pending`` until
  :meth:`KrakenEmulatorServer.release_pending` (a knob, so no test races a clock);
- a post-only order that would take is not refused by AddOrder: Kraken answers its
  ``txid`` and the order ends ``canceled`` with ``reason`` "Post only order", unfilled,
  funds never held. The engine refuses such an order, so this layer keeps the record;
- ``timeinforce`` IOC (limit orders; GTC the default, GTD refused): what crosses fills and
  the rest is dropped. Kraken then reads the order ``canceled``, not ``expired`` (which is
  GTD's end only), with what filled (docs.kraken.com guide "Order lifecycle");
- self-trade prevention is always on: ``stptype`` ``cancel-newest`` (the default),
  ``cancel-oldest`` or ``cancel-both`` is the engine's EXPIRE_TAKER, EXPIRE_MAKER or
  EXPIRE_BOTH, and an order it ends reads ``canceled`` with ``reason`` "Cannot trade
  with self" (support.kraken.com, "Self-trading prevention"). The engine checks it only
  while :meth:`SimEngine.set_liquidity` limits what a taker finds, as it does for Binance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache, partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from adapters.base import OrderRequest
from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultInjector, FaultKind, FaultPlan
from nija_broker.clock import Clock, to_ms
from nija_broker.errors import ExchangeError, InvalidOrder, OrderNotFound
from nija_broker.models import Fill, Market, Order, OrderStatus

from . import _kraken_wire as kw
from .server import EmulatorServer, Handler, Params

__all__ = ["KrakenEmulatorServer", "kraken_ccxt_config", "kraken_urls"]

_log = logging.getLogger(__name__)
_QUERY_MAX_IDS = 50
_REFUSED_IDS = 10**15


class KrakenEmulatorServer(EmulatorServer):
    """Kraken spot REST over ``engine``; ``accounts`` maps an account id to ``(key, b64 secret)``.

    Lifecycle, fault drawing and the request counters (``requests``,
    ``not_found``) are the Binance server's; only the dialect differs.
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
        self._last_nonce: dict[str, int] = {}
        self._userrefs: dict[tuple[str, str], int] = {}
        self.hold_pending = False
        """New resting orders read ``pending`` until :meth:`release_pending`."""
        self._pending: set[tuple[str, str]] = set()
        self._refused: dict[tuple[str, str], Order] = {}
        """Post-only orders Kraken took and cancelled at once, by (account, engine-style id)."""
        super().__init__(engine, accounts, host=host, port=port, faults=faults, clock=clock)

    def add_account(self, account_id: str, api_key: str, secret: str) -> None:
        """Give ``account_id`` a key pair; Kraken secrets are base64, as Kraken issues them."""
        try:
            base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a Kraken API secret must be base64") from None
        if account_id in self.engine.accounts and not self.engine.fee_mode(account_id).is_quote:
            # Kraken charges spot fees in quote unless an order asks otherwise (fcib, not
            # emulated); its trades carry no fee currency to say anything else.
            raise ValueError(f"account {account_id!r} does not pay fees in quote, as Kraken "
                             f"accounts do (fee mode {self.engine.fee_mode(account_id).name})")
        super().add_account(account_id, api_key, secret)

    def release_pending(self) -> None:
        """Every order held ``pending`` enters the book: it reads ``open`` from now on."""
        self._pending.clear()

    def mark_pending(self, account_id: str, txid: str) -> None:
        """Hold an order placed straight on the engine ``pending`` too (until released)."""
        self._pending.add((account_id, self.engine_order_id(txid)))

    @staticmethod
    def engine_order_id(txid: str) -> str:
        """The engine's id of the order Kraken calls ``txid`` (for tests that drive the engine)."""
        engine_id = kw.engine_order_id(txid)
        if engine_id is None:
            raise ValueError(f"{txid!r} is not an order id of this emulator")
        return engine_id

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
        ]
        for name, handler, fault_name in public:
            for method in ("GET", "POST"):
                app.router.add_route(method, f"/0/public/{name}",
                                     self._kraken_endpoint(handler, False, fault_name))
        for name, handler, fault_name in private:
            app.router.add_route("POST", f"/0/private/{name}",
                                 self._kraken_endpoint(handler, True, fault_name))
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    # ------------------------------------------------------------ plumbing

    def _kraken_endpoint(self, handler: Handler, private: bool, fault_name: str | None,
                         ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            self.requests[f"{request.method} {request.path}"] += 1
            try:
                body_raw = (await request.text()) if request.can_read_body else ""
                params = _params(request, body_raw)
                name = fault_name
                if name in ("fetch_open_orders", "fetch_closed_orders") and params.get(
                        "cl_ord_id"):
                    name = "fetch_order_by_client_id"
                # Delays come before the nonce check, as network delays do: a slow request
                # that arrives after a later-signed one is refused, as on Kraken.
                fault = await self._fault_before(name)
                account_id = self._authenticate_kraken(request, body_raw, params) \
                    if private else None
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

    def _market(self, pair: str) -> Market:
        for market in self.engine.markets.values():
            if pair in kw.pair_names(market):
                return market
        raise kw.KrakenError("EQuery:Unknown asset pair")

    def _markets(self, params: Params) -> list[Market]:
        pairs = [p for p in params.get("pair", "").split(",") if p]
        if not pairs:
            return list(self.engine.markets.values())
        return [self._market(p) for p in pairs]

    def _kraken_call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ExchangeError as exc:
            raise kw.engine_error(exc) from exc

    def _info(self, account_id: str, order: Order, *, trades: bool = False) -> dict[str, Any]:
        market = self.engine.markets[order.symbol]
        trade_ids = None
        if trades:
            trade_ids = [kw.trade_txid(f.trade_id or "0")
                         for f in self.engine.trades(account_id, order.symbol)
                         if f.order_id == order.id]
        key = (account_id, order.id)
        ended = None
        if key not in self._refused:
            flags = self.engine.order_flags(account_id, order.id)
            ended = kw.closing(order, time_in_force=flags.time_in_force,
                               expired_in_match=flags.expired_in_match)
        return kw.order_info(order, market, userref=self._userrefs.get(key),
                             post_only=key in self._post_only or key in self._refused,
                             trade_ids=trade_ids, fee_decimals=self.engine.fee_decimals,
                             pending=key in self._pending,
                             reason="Post only order" if key in self._refused else None,
                             ended=ended)

    def _matches(self, account_id: str, order: Order, params: Params) -> bool:
        """The ``userref`` / ``cl_ord_id`` filters of OpenOrders and ClosedOrders."""
        wanted_ref = kw.userref(params)
        if wanted_ref is not None and self._userrefs.get((account_id, order.id)) != wanted_ref:
            return False
        wanted_cid = params.get("cl_ord_id")
        return not wanted_cid or order.client_order_id == wanted_cid

    def _bound_s(self, account_id: str, params: Params, name: str) -> float | None:
        """``start``/``end``: Unix seconds, or an order id standing for its open time."""
        raw = params.get(name)
        if not raw:
            return None
        engine_id = kw.engine_order_id(raw)
        if engine_id is not None:
            order = self._kraken_call(lambda: self.engine.get_order(account_id, engine_id))
            return to_ms(order.created_at) / 1000
        return kw.number(params, name)

    def _page(self, items: list[tuple[str, dict[str, Any]]], params: Params, key: str,
              ) -> dict[str, Any]:
        offset = int(kw.number(params, "ofs") or 0)
        page = items[offset: offset + kw.PAGE_SIZE]
        return {key: dict(page), "count": len(items)}

    # ----------------------------------------------------------- public

    async def _time(self, account_id: str | None, params: Params,
                    fault: FaultKind | None) -> Any:
        return kw.server_time(self._now_ms())

    async def _assets(self, account_id: str | None, params: Params,
                      fault: FaultKind | None) -> Any:
        return kw.assets(self.engine.markets)

    async def _asset_pairs(self, account_id: str | None, params: Params,
                           fault: FaultKind | None) -> Any:
        return {kw.pair_id(m): kw.asset_pair(m, maker_fee=self.engine.maker_fee,
                                             taker_fee=self.engine.taker_fee)
                for m in self._markets(params)}

    async def _ticker(self, account_id: str | None, params: Params,
                      fault: FaultKind | None) -> Any:
        result = {}
        for market in self._markets(params):
            tick = self.engine.ticker(market.symbol)
            result[kw.pair_id(market)] = kw.ticker(market, tick.last or 0.0, tick.bid, tick.ask)
        return result

    # ----------------------------------------------------------- private

    async def _balance(self, account_id: str | None, params: Params,
                       fault: FaultKind | None) -> Any:
        assert account_id is not None
        return kw.balance(self.engine.balances(account_id))

    async def _balance_ex(self, account_id: str | None, params: Params,
                          fault: FaultKind | None) -> Any:
        assert account_id is not None
        return kw.balance_ex(self.engine.balances(account_id))

    async def _open_orders(self, account_id: str | None, params: Params,
                           fault: FaultKind | None) -> Any:
        assert account_id is not None
        trades = params.get("trades") in ("true", "True", "1")
        orders = [o for o in self.engine.open_orders(account_id)
                  if not self._hidden(o) and self._matches(account_id, o, params)]
        if fault is FaultKind.TRUNCATED_PAGE:
            orders = orders[: len(orders) // 2]
        return {"open": {kw.order_txid(o.id): self._info(account_id, o, trades=trades)
                         for o in orders}}

    async def _closed_orders(self, account_id: str | None, params: Params,
                             fault: FaultKind | None) -> Any:
        assert account_id is not None
        start_s = self._bound_s(account_id, params, "start")
        end_s = self._bound_s(account_id, params, "end")
        trades = params.get("trades") in ("true", "True", "1")
        refused = [o for (a, _), o in self._refused.items() if a == account_id]
        closed = [o for o in [*self.engine.all_orders(account_id), *refused]
                  if o.is_terminal and not self._hidden(o)
                  and self._matches(account_id, o, params)
                  and (start_s is None or to_ms(o.created_at) / 1000 > start_s)
                  and (end_s is None or to_ms(o.created_at) / 1000 <= end_s)]
        closed.sort(key=lambda o: (o.created_at, int(o.id)), reverse=True)  # newest first
        items = [(kw.order_txid(o.id), self._info(account_id, o, trades=trades)) for o in closed]
        return self._page(items, params, "closed")

    async def _query_orders(self, account_id: str | None, params: Params,
                            fault: FaultKind | None) -> Any:
        assert account_id is not None
        txids = [t for t in params.get("txid", "").split(",") if t]
        if not txids or len(txids) > _QUERY_MAX_IDS:
            raise kw.invalid_arguments("txid")
        trades = params.get("trades") in ("true", "True", "1")
        result = {}
        for txid in txids:
            engine_id = kw.engine_order_id(txid)
            order: Order | None
            try:
                order = self.engine.get_order(account_id, engine_id or "")
            except OrderNotFound:
                order = self._refused.get((account_id, engine_id or ""))
            if order is None or self._hidden(order):
                # Kraken's answer to an id it does not know (for this account).
                raise kw.KrakenError("EOrder:Invalid order")
            if self._matches(account_id, order, {"userref": params.get("userref", "")}):
                result[txid] = self._info(account_id, order, trades=trades)
        return result

    async def _add_order(self, account_id: str | None, params: Params,
                         fault: FaultKind | None) -> Any:
        assert account_id is not None
        market = self._market(params.get("pair", ""))
        request = kw.order_request(params, market.symbol)
        time_in_force = kw.time_in_force(params, request.type)
        stp_mode = kw.stp_mode(params)
        ref = kw.userref(params)
        if params.get("validate") in ("true", "True", "1"):
            return {"descr": {"order": f"{request.side.value} {kw.fmt(request.amount)} "
                              f"{kw.pair_altname(market)} @ {params.get('ordertype')}"}}
        try:
            order = self.engine.place_order(account_id, request, time_in_force=time_in_force,
                                            stp_mode=stp_mode)
        except InvalidOrder as exc:
            if not (request.post_only and "would cross" in str(exc)):
                raise kw.engine_error(exc) from exc
            order = self._take_and_cancel(account_id, request)
        except ExchangeError as exc:
            raise kw.engine_error(exc) from exc
        if request.post_only:
            self._post_only.add((account_id, order.id))
        if self.hold_pending and order.status is OrderStatus.OPEN:
            self._pending.add((account_id, order.id))
        if ref is not None:
            self._userrefs[(account_id, order.id)] = ref
        return kw.add_order_result(order, market)

    def _take_and_cancel(self, account_id: str, request: OrderRequest) -> Order:
        """What Kraken does with a post-only order that would take: an id, then cancelled."""
        # Ids far above the engine's sequence numbers: a txid like any other, never the
        # engine's, so every engine look-up of it finds nothing, as for a closed order.
        order_id = str(_REFUSED_IDS + len(self._refused))
        now = self.engine.clock.now()
        order = Order(
            id=order_id, client_order_id=request.client_order_id, account_id=account_id,
            symbol=request.symbol, side=request.side, type=request.type, role=request.role,
            price=request.price, amount=request.amount, status=OrderStatus.CANCELLED,
            created_at=now, updated_at=now)
        self._refused[(account_id, order_id)] = order
        return order

    async def _cancel_order(self, account_id: str | None, params: Params,
                            fault: FaultKind | None) -> Any:
        """By ``txid``, by ``cl_ord_id``, or by a ``userref`` given as ``txid`` (all its orders)."""
        assert account_id is not None
        raw = params.get("txid", "")
        client_id = params.get("cl_ord_id")
        if client_id:
            targets = [o for o in self.engine.open_orders(account_id)
                       if o.client_order_id == client_id]
        elif raw.lstrip("-").isdigit():
            ref = int(raw)
            targets = [o for o in self.engine.open_orders(account_id)
                       if self._userrefs.get((account_id, o.id)) == ref]
        elif raw:
            engine_id = kw.engine_order_id(raw)
            if engine_id is None:
                raise kw.KrakenError("EOrder:Invalid order")
            targets = [self._kraken_call(lambda: self.engine.get_order(account_id, engine_id))]
        else:
            raise kw.invalid_arguments("txid")
        if not targets:
            raise kw.KrakenError("EOrder:Unknown order")
        for order_id in [o.id for o in targets]:
            self._kraken_call(partial(self.engine.cancel_order, account_id, order_id))
        return {"count": len(targets), "pending": False}

    def _trade(self, account_id: str, fill: Fill) -> dict[str, Any]:
        order = self.engine.get_order(account_id, fill.order_id)
        kind = kw.kraken_order_type(order.type, has_price=order.price is not None)
        return kw.trade_info(fill, self.engine.markets[fill.symbol], order_type=kind,
                             is_maker=self.engine.is_maker(fill.trade_id or ""),
                             fee_decimals=self.engine.fee_decimals)

    async def _trades_history(self, account_id: str | None, params: Params,
                              fault: FaultKind | None) -> Any:
        assert account_id is not None
        start_s, end_s = kw.number(params, "start"), kw.number(params, "end")
        fills = [f for f in self.engine.trades(account_id)
                 if (start_s is None or to_ms(f.timestamp) / 1000 > start_s)
                 and (end_s is None or to_ms(f.timestamp) / 1000 <= end_s)]
        fills.reverse()
        items = [(kw.trade_txid(f.trade_id or "0"), self._trade(account_id, f)) for f in fills]
        return self._page(items, params, "trades")

    async def _query_trades(self, account_id: str | None, params: Params,
                            fault: FaultKind | None) -> Any:
        assert account_id is not None
        txids = [t for t in params.get("txid", "").split(",") if t]
        if not txids or len(txids) > 20:
            raise kw.invalid_arguments("txid")
        by_id = {f.trade_id: f for f in self.engine.trades(account_id)}
        result = {}
        for txid in txids:
            fill = by_id.get(kw.engine_trade_id(txid) or "")
            if fill is None:
                raise kw.invalid_arguments("txid")
            result[txid] = self._trade(account_id, fill)
        return result


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
        params.update({k: v if isinstance(v, str) else json.dumps(v)
                       for k, v in decoded.items()})
    else:
        params.update(parse_qsl(body_raw, keep_blank_values=True))
    return params


@lru_cache(maxsize=1)
def _kraken_api_urls() -> dict[str, str]:
    import ccxt  # the sync build: only its URL table is read, no session is opened

    urls: dict[str, str] = dict(ccxt.kraken().urls["api"])
    return urls


def kraken_urls(server_url: str) -> dict[str, str]:
    """ccxt's ``kraken.urls['api']`` with every host replaced by ``server_url`` (paths kept)."""
    base = server_url.rstrip("/")
    return {key: base + urlsplit(url).path for key, url in _kraken_api_urls().items()}


def kraken_ccxt_config(server_url: str, api_key: str | None = None,
                       secret: str | None = None) -> dict[str, Any]:
    """Settings for ``ccxt.async_support.kraken(...)`` that talk to the emulator.

    - ``urls.api``: ``public`` and ``private`` (and the help-centre entry ccxt
      also lists) rewritten to the emulator; ccxt appends ``/0/public/...``;
    - ccxt's own limiter off: the server is local (nija_broker's shared
      :class:`~adapters.ratelimit.RateBudget` still applies).

    Without keys the dict can stand in an account's ``[accounts.ccxt]`` table.
    """
    config: dict[str, Any] = {
        "urls": {"api": kraken_urls(server_url)},
        "enableRateLimit": False,
        "options": {"adjustForTimeDifference": False},
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    return config
