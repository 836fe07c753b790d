"""The order and trade endpoints of the Binance emulator, and the lookups they stand on.

:class:`BinanceTradingEndpoints` serves ``openOrders``, ``GET``/``POST``/``DELETE
/api/v3/order``, ``allOrders`` and ``myTrades``, and resolves what their parameters
name: the ``symbol``, the order (``orderId`` or ``origClientOrderId``), the history
page. :class:`~adapters.emulator.server.EmulatorServer` mixes it in and adds
transport, authentication, faults and the public endpoints on top; the Kraken
server inherits it from there and overrides the endpoints it speaks differently.

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

from collections.abc import Callable
from datetime import datetime
from typing import Any

from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultInjector, FaultKind
from nija_broker.core.clock import Clock, from_ms, to_ms
from nija_broker.core.errors import ExchangeError
from nija_broker.core.models import Order, OrderType

from . import binance as bn

__all__ = ["BinanceTradingEndpoints", "Params"]

Params = dict[str, str]
"""A request's query string and form body, merged (the body wins)."""

_LIST_LIMIT_DEFAULT = 500
_LIST_LIMIT_MAX = 1000


class BinanceTradingEndpoints:
    """Binance's order and trade endpoints over ``engine``; a mixin of the emulator server.

    Not served on its own: :class:`~adapters.emulator.server.EmulatorServer`
    routes requests here, authenticates them and owns the state declared below.
    """

    # Declared, not assigned: EmulatorServer.__init__ sets them. The declarations let
    # mypy check this half of the server on its own.
    engine: SimEngine
    clock: Clock
    faults: FaultInjector | None
    _post_only: set[tuple[str, str]]
    """(account, order id) of the post-only orders placed: an engine order does not say."""
    _next_client_id: int
    _next_cancel_id: int

    # ------------------------------------------------------------- lookups

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

    # ------------------------------------------------- order and trade endpoints

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
