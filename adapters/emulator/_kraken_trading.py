"""The order and trade endpoints of the Kraken emulator, with what Kraken records beyond the engine.

:class:`KrakenTradingServer` serves ``OpenOrders``, ``ClosedOrders``, ``QueryOrders``,
``AddOrder``, ``CancelOrder``, ``TradesHistory`` and ``QueryTrades``, and keeps
per order what the engine does not: its ``userref``, whether it is held
``pending``, and the post-only orders Kraken took and cancelled at once.
:class:`~adapters.emulator.kraken.KrakenEmulatorServer` adds transport,
authentication and the public endpoints on top.

Venue behaviours ccxt's recorded payloads lack, after Kraken's documentation:

- ``pending`` ("order pending book entry", the first of OrderInfo's five statuses):
  while ``hold_pending`` is set, an order AddOrder rests reads ``pending`` until
  :meth:`KrakenTradingServer.release_pending` (a knob, so no test races a clock);
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

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from adapters.sim.engine import SimEngine
from adapters.sim.faults import (
    FaultInjector,
    FaultKind,
    FaultPlan,
    StreamFaultInjector,
    StreamFaultPlan,
)
from nija_broker.core.clock import Clock, to_ms
from nija_broker.core.errors import ExchangeError, InvalidOrder, OrderNotFound
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import Fill, Market, Order, OrderStatus

from . import _kraken_wire as kw
from .server import EmulatorServer, Params

__all__ = ["KrakenTradingServer"]

_QUERY_MAX_IDS = 50
_REFUSED_IDS = 10**15


class KrakenTradingServer(EmulatorServer):
    """Kraken's order and trade endpoints over ``engine``; the base of the Kraken server.

    Not served on its own: :class:`~adapters.emulator.kraken.KrakenEmulatorServer`
    routes requests here and authenticates them.
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
    ) -> None:
        self._userrefs: dict[tuple[str, str], int] = {}
        self.hold_pending = False
        """New resting orders read ``pending`` until :meth:`release_pending`."""
        self._pending: set[tuple[str, str]] = set()
        self._refused: dict[tuple[str, str], Order] = {}
        """Post-only orders Kraken took and cancelled at once, by (account, engine-style id)."""
        super().__init__(
            engine,
            accounts,
            host=host,
            port=port,
            faults=faults,
            clock=clock,
            stream_faults=stream_faults,
        )

    def release_pending(self) -> None:
        """Every order held ``pending`` enters the book: it reads ``open`` from now on."""
        released = sorted(self._pending)
        self._pending.clear()
        self._orders_released(released)

    def mark_pending(self, account_id: str, txid: str) -> None:
        """Hold an order placed straight on the engine ``pending`` too (until released)."""
        self._pending.add((account_id, self.engine_order_id(txid)))

    # What Kraken records beside an order, read by the websocket stream too.

    def order_userref(self, account_id: str, order_id: str) -> int | None:
        return self._userrefs.get((account_id, order_id))

    def is_post_only(self, account_id: str, order_id: str) -> bool:
        key = (account_id, order_id)
        return key in self._post_only or key in self._refused

    def is_pending(self, account_id: str, order_id: str) -> bool:
        return (account_id, order_id) in self._pending

    def _order_refused(self, account_id: str, order: Order) -> None:
        """A post-only order was taken and cancelled without the engine (the stream tells)."""

    def _orders_released(self, keys: list[tuple[str, str]]) -> None:
        """Orders held ``pending`` entered the book (the stream tells)."""

    @staticmethod
    def engine_order_id(txid: str) -> str:
        """The engine's id of the order Kraken calls ``txid`` (for tests that drive the engine)."""
        engine_id = kw.engine_order_id(txid)
        if engine_id is None:
            raise ValueError(f"{txid!r} is not an order id of this emulator")
        return engine_id

    # ------------------------------------------------------------ helpers

    def _market(self, pair: str) -> Market:
        for market in self.engine.markets.values():
            if pair in kw.pair_names(market):
                return market
        raise kw.KrakenError("EQuery:Unknown asset pair")

    def _kraken_call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except ExchangeError as exc:
            raise kw.engine_error(exc) from exc

    def _info(self, account_id: str, order: Order, *, trades: bool = False) -> dict[str, Any]:
        market = self.engine.markets[order.symbol]
        trade_ids = None
        if trades:
            trade_ids = [
                kw.trade_txid(f.trade_id or "0")
                for f in self.engine.trades(account_id, order.symbol)
                if f.order_id == order.id
            ]
        key = (account_id, order.id)
        ended = None
        if key not in self._refused:
            flags = self.engine.order_flags(account_id, order.id)
            ended = kw.closing(
                order, time_in_force=flags.time_in_force, expired_in_match=flags.expired_in_match
            )
        return kw.order_info(
            order,
            market,
            userref=self._userrefs.get(key),
            post_only=key in self._post_only or key in self._refused,
            trade_ids=trade_ids,
            fee_decimals=self.engine.fee_decimals,
            pending=key in self._pending,
            reason="Post only order" if key in self._refused else None,
            ended=ended,
        )

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

    def _page(
        self,
        items: list[tuple[str, dict[str, Any]]],
        params: Params,
        key: str,
    ) -> dict[str, Any]:
        offset = int(kw.number(params, "ofs") or 0)
        page = items[offset : offset + kw.PAGE_SIZE]
        return {key: dict(page), "count": len(items)}

    # ------------------------------------------------------------ orders

    async def _open_orders(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        trades = params.get("trades") in ("true", "True", "1")
        orders = [
            o
            for o in self.engine.open_orders(account_id)
            if not self._hidden(o) and self._matches(account_id, o, params)
        ]
        if fault is FaultKind.TRUNCATED_PAGE:
            orders = orders[: len(orders) // 2]
        return {
            "open": {kw.order_txid(o.id): self._info(account_id, o, trades=trades) for o in orders}
        }

    async def _closed_orders(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        start_s = self._bound_s(account_id, params, "start")
        end_s = self._bound_s(account_id, params, "end")
        trades = params.get("trades") in ("true", "True", "1")
        refused = [o for (a, _), o in self._refused.items() if a == account_id]
        closed = [
            o
            for o in [*self.engine.all_orders(account_id), *refused]
            if o.is_terminal
            and not self._hidden(o)
            and self._matches(account_id, o, params)
            and (start_s is None or to_ms(o.created_at) / 1000 > start_s)
            and (end_s is None or to_ms(o.created_at) / 1000 <= end_s)
        ]
        closed.sort(key=lambda o: (o.created_at, int(o.id)), reverse=True)  # newest first
        items = [(kw.order_txid(o.id), self._info(account_id, o, trades=trades)) for o in closed]
        return self._page(items, params, "closed")

    async def _query_orders(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
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

    async def _add_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        market = self._market(params.get("pair", ""))
        request = kw.order_request(params, market.symbol)
        time_in_force = kw.time_in_force(params, request.type)
        stp_mode = kw.stp_mode(params)
        ref = kw.userref(params)
        if params.get("validate") in ("true", "True", "1"):
            return {
                "descr": {
                    "order": f"{request.side.value} {kw.fmt(request.amount)} "
                    f"{kw.pair_altname(market)} @ {params.get('ordertype')}"
                }
            }
        try:
            order = self.engine.place_order(
                account_id, request, time_in_force=time_in_force, stp_mode=stp_mode
            )
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
        if (account_id, order.id) in self._refused:
            self._order_refused(account_id, order)
        return kw.add_order_result(order, market)

    def _take_and_cancel(self, account_id: str, request: OrderRequest) -> Order:
        """What Kraken does with a post-only order that would take: an id, then cancelled."""
        # Ids far above the engine's sequence numbers: a txid like any other, never the
        # engine's, so every engine look-up of it finds nothing, as for a closed order.
        order_id = str(_REFUSED_IDS + len(self._refused))
        now = self.engine.clock.now()
        order = Order(
            id=order_id,
            client_order_id=request.client_order_id,
            account_id=account_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            role=request.role,
            price=request.price,
            amount=request.amount,
            status=OrderStatus.CANCELLED,
            created_at=now,
            updated_at=now,
        )
        self._refused[(account_id, order_id)] = order
        return order

    async def _cancel_order(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        """By ``txid``, by ``cl_ord_id``, or by a ``userref`` given as ``txid`` (all its orders)."""
        assert account_id is not None
        raw = params.get("txid", "")
        client_id = params.get("cl_ord_id")
        if client_id:
            targets = [
                o for o in self.engine.open_orders(account_id) if o.client_order_id == client_id
            ]
        elif raw.lstrip("-").isdigit():
            ref = int(raw)
            targets = [
                o
                for o in self.engine.open_orders(account_id)
                if self._userrefs.get((account_id, o.id)) == ref
            ]
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

    # ------------------------------------------------------------ trades

    def _trade(self, account_id: str, fill: Fill) -> dict[str, Any]:
        order = self.engine.get_order(account_id, fill.order_id)
        kind = kw.kraken_order_type(order.type, has_price=order.price is not None)
        return kw.trade_info(
            fill,
            self.engine.markets[fill.symbol],
            order_type=kind,
            is_maker=self.engine.is_maker(fill.trade_id or ""),
            fee_decimals=self.engine.fee_decimals,
        )

    async def _trades_history(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
        assert account_id is not None
        start_s, end_s = kw.number(params, "start"), kw.number(params, "end")
        fills = [
            f
            for f in self.engine.trades(account_id)
            if (start_s is None or to_ms(f.timestamp) / 1000 > start_s)
            and (end_s is None or to_ms(f.timestamp) / 1000 <= end_s)
        ]
        fills.reverse()
        items = [(kw.trade_txid(f.trade_id or "0"), self._trade(account_id, f)) for f in fills]
        return self._page(items, params, "trades")

    async def _query_trades(
        self, account_id: str | None, params: Params, fault: FaultKind | None
    ) -> Any:
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
