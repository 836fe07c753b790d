"""How :class:`~adapters.ccxt_adapter.CcxtExchange` reads the trades of one order.

Exchanges offer three routes to an order's trades, and :class:`CcxtTrades`
picks one from ccxt's ``has`` and the exchange's profile:

- ccxt's ``fetch_order_trades`` (Binance: ``myTrades`` with ``orderId``);
- Kraken: QueryOrders with ``trades=true`` gives the order's trade ids, which
  QueryTrades then reads. The ids come with each fetch of the order and are
  kept (:meth:`~CcxtTrades._remember_trade_ids`), so the look-up that usually
  follows a confirmation costs one call, not two;
- else the symbol's trades since the order was created.

Kraken also says, on the order only (``oflags`` ``fcib``), that its fee was
charged in the base currency; that too is kept per order, and the order's
trades are relabelled with it before conversion. Both memories are bounded.

Like :class:`~adapters._ccxt_calls.CcxtCalls`, it reads the state set by
``CcxtExchange.__init__`` and holds no public method of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from nija_broker.core.clock import to_ms
from nija_broker.core.errors import Unsupported
from nija_broker.core.models import Order
from nija_broker.core.symbols import base_of

from ._ccxt_calls import CcxtCalls

__all__ = ["CcxtTrades"]


class CcxtTrades(CcxtCalls):
    """The routes to one order's trades, and the per-order facts Kraken's route needs; a base
    of ``CcxtExchange``."""

    _trade_ids: dict[str, tuple[float, list[str]]]
    _fee_in_base: dict[str, str]

    if TYPE_CHECKING:  # defined by CcxtExchange, with the public API

        async def fetch_order(self, order_id: str, symbol: str) -> Order: ...

    def _remember_trade_ids(self, order: Order, raw: Mapping[str, Any]) -> None:
        """Kraken's QueryOrders (trades=true) lists the order's trade ids: kept for the
        trades look-up that usually follows a confirmation, saving it one call."""
        if not self._profile.order_trades_need_ids:
            return
        ids = [t.get("id") if isinstance(t, Mapping) else t for t in raw.get("trades") or ()]
        _remember(self._trade_ids, order.id, (order.filled, [str(i) for i in ids if i]))
        info = raw.get("info")
        if isinstance(info, Mapping) and "fcib" in str(info.get("oflags") or ""):
            # ccxt labels every Kraken trade fee in the quote; an fcib order paid it in
            # the base, and the trades themselves do not say so.
            _remember(self._fee_in_base, order.id, base_of(order.symbol))

    async def _order_trade_rows(self, order: Order, symbol: str) -> list[Any]:
        """ccxt's trade rows for ``order`` (``symbol`` already unified), by the route its
        exchange offers; they may include other orders' trades, for the caller to filter."""
        has = getattr(self._ex, "has", {}) or {}
        if self._profile.order_trades_need_ids:
            filled, ids = self._trade_ids.pop(order.id, (0.0, []))
            if not ids or filled < order.filled:
                # Not known at the order's current filled amount: ask for them.
                await self.fetch_order(order.id, symbol)
                _, ids = self._trade_ids.pop(order.id, (0.0, []))
            if not ids:
                return []
            raw = await self._read(
                "fetch_my_trades",
                lambda: self._ex.fetch_order_trades(order.id, symbol, None, None, {"trades": ids}),
                "fetch_order_trades",
            )
        elif has.get("fetchOrderTrades"):
            # Binance: myTrades with orderId, which weighs 5 where a symbol's trades weigh 20.
            raw = await self._read(
                "fetch_my_trades",
                lambda: self._ex.fetch_order_trades(order.id, symbol),
                "fetch_order_trades",
            )
        elif has.get("fetchMyTrades"):
            since_ms = to_ms(order.created_at)
            raw = await self._read(
                "fetch_my_trades", lambda: self._ex.fetch_my_trades(symbol, since_ms)
            )
        else:
            raise Unsupported(
                f"{self.exchange_id} reports no trades through ccxt",
                exchange=self.exchange_id,
                account_id=self._account_id,
            )
        base = self._fee_in_base.get(order.id)
        if base is not None:
            raw = [_fee_relabelled(t, base) for t in raw]
        rows: list[Any] = raw
        return rows


_V = TypeVar("_V")
_REMEMBERED = 10_000
"""Orders an adapter remembers per-order facts for (oldest forgotten first)."""


def _remember(memory: dict[str, _V], order_id: str, value: _V) -> None:
    if len(memory) >= _REMEMBERED and order_id not in memory:
        memory.pop(next(iter(memory)))
    memory[order_id] = value


def _fee_relabelled(trade: Mapping[str, Any], currency: str) -> dict[str, Any]:
    """A ccxt trade whose fee is said to be charged in ``currency`` (same cost)."""
    fees = [dict(f, currency=currency) for f in trade.get("fees") or () if isinstance(f, Mapping)]
    fee = trade.get("fee")
    relabelled = dict(trade, fees=fees)
    if isinstance(fee, Mapping):
        relabelled["fee"] = dict(fee, currency=currency)
    return relabelled
