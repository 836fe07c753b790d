"""How :class:`~adapters.ccxt_adapter.CcxtExchange` finds an order by our id, and writes once.

:class:`CcxtOrders` adds to the request machinery of :mod:`adapters._ccxt_calls`
the look-up of an order by its client id, and the two writes that lean on it:

- a create re-sent only after looking the order up, so an order whose answer
  was lost is found, not placed twice; a re-send refused as a duplicate while
  the order cannot be seen yet is an unknown outcome, reported as transient;
- a cancel retried, where an "order not found" after a lost cancel is settled
  by fetching the order.

Like :class:`~adapters._ccxt_calls.CcxtCalls`, it reads the state set by
``CcxtExchange.__init__`` and holds no public method of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from nija_broker.core.errors import (
    ExchangeError,
    InvalidOrder,
    OrderError,
    OrderNotFound,
    TransientError,
)
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import Order, OrderStatus, OrderType

from ._ccxt_calls import CcxtCalls
from ._ccxt_convert import convert_order
from ._ccxt_errors import is_duplicate_order
from .profiles import ClientIdLookup

__all__ = ["CcxtOrders"]


class CcxtOrders(CcxtCalls):
    """Look-up by client id, idempotent create and retried cancel; a base of ``CcxtExchange``."""

    _lookup: ClientIdLookup

    if TYPE_CHECKING:  # defined by CcxtExchange, with the public API

        async def fetch_order(self, order_id: str, symbol: str) -> Order: ...

    async def _by_client_id(
        self,
        client_order_id: str,
        symbol: str,
        call: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]],
    ) -> Order:
        """The look-up behind :meth:`fetch_order_by_client_id`; ``call`` is _read or _once."""
        sent_as = self._profile.client_ids.to_exchange(client_order_id) or client_order_id
        if self._lookup is ClientIdLookup.NATIVE:
            raw = await call(
                "fetch_order_by_client_id",
                partial(self._ex.fetch_order, sent_as, symbol, {"clientOrderId": sent_as}),
            )
            return self._order(raw)
        filtered = self._lookup is ClientIdLookup.FILTER
        for action, method in (
            ("fetch_open_orders", self._ex.fetch_open_orders),
            ("fetch_closed_orders", self._closed_orders_method()),
        ):
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
            exchange=self.exchange_id,
            account_id=self._account_id,
        )

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
                    exchange=self.exchange_id,
                    account_id=self._account_id,
                )
            params["clientOrderId"] = sent_as
            if client_ids.send_native:
                params[client_ids.param] = sent_as
        if request.post_only:
            params["postOnly"] = True
        # Spot has no reduce-only flag; sending it makes Binance reject the order.
        kind = request.type
        if kind in (OrderType.STOP, OrderType.STOP_LIMIT):
            params["stopLossPrice"] = request.stop_price
        elif kind is OrderType.TAKE_PROFIT:
            params["takeProfitPrice"] = request.stop_price
        if kind is OrderType.MARKET or (
            kind in (OrderType.STOP, OrderType.TAKE_PROFIT) and request.price is None
        ):
            return "market", None, params
        return "limit", request.price, params

    def _created(self, raw: Mapping[str, Any], request: OrderRequest) -> Order:
        """The order as the exchange answered; exchanges that answer only an id get PENDING."""
        try:
            order = convert_order(
                raw,
                account_id=self._account_id,
                now=self._clock.now(),
                role=request.role,
                client_id=self._profile.client_ids.from_exchange,
            )
        except ExchangeError:
            if not raw.get("id"):
                raise
            return Order(
                id=str(raw["id"]),
                client_order_id=request.client_order_id,
                account_id=self._account_id,
                symbol=request.symbol,
                side=request.side,
                type=request.type,
                role=request.role,
                price=request.price,
                stop_price=request.stop_price,
                amount=request.amount,
                status=OrderStatus.PENDING,
                created_at=self._clock.now(),
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

    async def _place(self, request: OrderRequest) -> Order:
        """The sending half of :meth:`create_order` (``request.symbol`` already unified)."""
        ccxt_type, price, params = self._ccxt_order_args(request)
        side = request.side.value

        async def send() -> Any:
            # A fresh params dict each time: a re-send must not see ccxt's edits of the last.
            return await self._ex.create_order(
                request.symbol, ccxt_type, side, request.amount, price, dict(params)
            )

        if not request.client_order_id:
            return self._created(await self._once("create_order", send), request)

        async def attempt(attempts: int) -> Order:
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
                    exchange=self.exchange_id,
                    account_id=self._account_id,
                ) from exc
            return self._created(raw, request)

        return await self._retried("create_order", attempt)

    async def _cancel(self, order_id: str, symbol: str) -> Order:
        """The retried half of ``cancel_order`` (``symbol`` already unified)."""
        saw_transient = False

        async def attempt(_attempts: int) -> Order:
            nonlocal saw_transient
            try:
                raw = await self._once(
                    "cancel_order", lambda: self._ex.cancel_order(order_id, symbol)
                )
            except TransientError:
                saw_transient = True
                raise
            except OrderNotFound:
                if not saw_transient:
                    raise
                # Our earlier cancel may have reached the exchange: ask for the order.
                order = self._order(
                    await self._once("fetch_order", lambda: self._ex.fetch_order(order_id, symbol))
                )
                if order.is_terminal:
                    return order
                raise
            return await self._after_cancel(raw, order_id, symbol)

        return await self._retried("cancel_order", attempt)

    async def _after_cancel(self, raw: Mapping[str, Any], order_id: str, symbol: str) -> Order:
        """The cancelled order; fetched when the cancel answer is partial (some exchanges)."""
        try:
            order = self._order(raw)
        except ExchangeError:
            order = None
        if order is not None and order.is_terminal:
            return order
        return await self.fetch_order(order_id, symbol)
