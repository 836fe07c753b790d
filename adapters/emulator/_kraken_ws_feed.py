"""What the Kraken emulator's websocket says, account by account: engine events as updates.

:class:`KrakenFeed` turns :mod:`adapters.sim._events`' changes into the ``executions`` and
``balances`` messages Kraken's private WebSocket v2 pushes (their JSON is
:mod:`._kraken_ws_wire`'s), and builds each subscription's snapshot. It reads the engine
and what the REST side keeps beside an order (:class:`OrderNotes`), and decides nothing
about connections: :mod:`._kraken_stream` sends what it returns.

- an order placed: ``pending_new``, then ``new`` (held back while the REST side holds
  the order ``pending``; sent by :meth:`KrakenFeed.released`);
- a fill: its ``trade`` report; one that completes the order, then ``filled``;
- a cancel, expiry or rejection: the end the REST side reads (``canceled`` with its
  ``reason``: "User requested", "Cannot trade with self", ...; ``expired``);
- a stop reaching its trigger, a cancel the engine holds pending: nothing (the REST side
  still reads the order ``open``, and Kraken has no pending-cancel state);
- balances: one message per change of totals, a ledger entry per asset (``trade`` entries
  name the trade's txid in ``ref_id`` and carry its fee; ``deposit`` entries a deposit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from adapters.sim import BalanceChanged, EngineEvent, OrderChange, OrderChanged
from adapters.sim.engine import SimEngine
from nija_broker.core.clock import Clock
from nija_broker.core.errors import OrderNotFound
from nija_broker.core.models import Fill, Order

from . import _kraken_ws_wire as ww
from ._kraken_names import ledger_txid, trade_txid
from ._kraken_orders import closing, order_info

__all__ = ["SNAPSHOT_TRADES", "KrakenFeed", "OrderNotes", "Update"]

SNAPSHOT_TRADES = 50
"""``snap_trades``: "the last 50 order fills will be included in snapshot"."""

Update = tuple[str, list[dict[str, Any]]]
"""One message to push: its channel and its ``data`` entries."""


class OrderNotes(Protocol):
    """What the REST side keeps beside an order, which the stream reports too."""

    def order_userref(self, account_id: str, order_id: str) -> int | None: ...

    def is_post_only(self, account_id: str, order_id: str) -> bool: ...

    def is_pending(self, account_id: str, order_id: str) -> bool: ...


class KrakenFeed:
    """Engine events -> Kraken's private updates; snapshots. The event loop's thread only."""

    def __init__(self, engine: SimEngine, notes: OrderNotes, *, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._notes = notes
        self._totals: dict[str, dict[str, float]] = {}
        """Each account's totals as the ledger last told them."""
        self._last_fill: dict[str, Fill] = {}
        """The fill whose balance change comes next (the engine tells it right after)."""
        self._next_ledger = 1

    def start_from_now(self) -> None:
        """Take the engine's totals as told: changes from here on are ledger entries."""
        self._totals = {
            account_id: {c: b.total for c, b in self.engine.balances(account_id).items()}
            for account_id in self.engine.accounts
        }

    # ----------------------------------------------------------------- updates

    def updates(self, account_id: str, event: EngineEvent) -> list[Update]:
        """The messages ``event`` makes Kraken push to ``account_id``'s subscribers."""
        if isinstance(event, BalanceChanged):
            return self._balance_changed(account_id, event)
        return [("executions", [report]) for report in self._order_changed(account_id, event)]

    def refused(self, order: Order) -> list[Update]:
        """A post-only order Kraken took and cancelled at once: ``pending_new``, ``canceled``."""
        pending_new = self._full_report(order, "pending_new", post_only=True)
        cancelled = self._status_update(order, "canceled", "Post only order", order.updated_at)
        return [("executions", [pending_new]), ("executions", [cancelled])]

    def released(self, orders: Iterable[Order]) -> list[Update]:
        """Orders held ``pending`` entered the book: each one's ``new``."""
        now = self.clock.now()
        return [
            ("executions", [self._status_update(o, None, None, now)]) for o in orders if o.is_open
        ]

    def _order_changed(self, account_id: str, event: OrderChanged) -> list[dict[str, Any]]:
        order = event.order
        if event.change is OrderChange.NEW:
            reports = [self._full_report(order, "pending_new")]
            if not self._notes.is_pending(account_id, order.id):
                reports.append(self._status_update(order, None, None, None))
            return reports
        if event.change is OrderChange.TRADE and event.fill is not None:
            self._last_fill[account_id] = event.fill
            reports = [self._trade_report(event.fill, order, maker=event.maker)]
            if order.is_terminal:
                reports.append(self._ended(order, event))
            return reports
        if event.change in (OrderChange.CANCELLED, OrderChange.EXPIRED, OrderChange.REJECTED):
            return [self._ended(order, event)]
        return []  # TRIGGERED, CANCEL_PENDING: nothing the REST side shows changed

    def _ended(self, order: Order, event: OrderChanged) -> dict[str, Any]:
        ended = closing(
            order,
            time_in_force=event.flags.time_in_force,
            expired_in_match=event.flags.expired_in_match,
        )
        # The REST side's own status and reason for the order: both tell the same end.
        info = order_info(
            order,
            self.engine.markets[order.symbol],
            userref=None,
            post_only=False,
            fee_decimals=self.engine.fee_decimals,
            ended=ended,
        )
        return self._status_update(order, info["status"], info["reason"], event.timestamp)

    def _balance_changed(self, account_id: str, event: BalanceChanged) -> list[Update]:
        told = self._totals.setdefault(account_id, {})
        moved = {
            currency: event.balances[currency].total - told.get(currency, 0.0)
            for currency in event.changed
            if currency in event.balances
            and event.balances[currency].total != told.get(currency, 0.0)
        }
        for currency, balance in event.balances.items():
            told[currency] = balance.total
        fill = self._last_fill.pop(account_id, None)
        if not moved:
            return []  # a hold moved free and used, not the total: the ledger is silent
        ledger_ids = {}
        for currency in sorted(moved):
            ledger_ids[currency] = ledger_txid(self._next_ledger)
            self._next_ledger += 1
        fee: tuple[str, float] | None = None
        if event.deposit is None and fill is not None:
            kind, ref_id = "trade", trade_txid(fill.trade_id or "0")
            fee_cost = fill.fee_cost if fill.fee_cost is not None else fill.fee
            fee = (fill.fee_currency or self.engine.markets[fill.symbol].quote, fee_cost)
        else:
            kind = "deposit" if event.deposit is not None else "adjustment"
            ref_id = ledger_ids[min(ledger_ids)]
        entries = ww.balance_entries(
            event.balances,
            moved,
            ledger_ids=ledger_ids,
            kind=kind,
            ref_id=ref_id,
            fee=fee,
            fee_decimals=self.engine.fee_decimals,
            timestamp=event.timestamp,
        )
        return [("balances", entries)]

    # --------------------------------------------------------------- snapshots

    def open_orders(self, account_id: str) -> list[dict[str, Any]]:
        return [self._full_report(o, "new") for o in self.engine.open_orders(account_id)]

    def recent_trades(self, account_id: str) -> list[dict[str, Any]]:
        fills = self.engine.trades(account_id)[-SNAPSHOT_TRADES:]
        return [self._trade_report(f, self.engine.get_order(account_id, f.order_id)) for f in fills]

    def balances(self, account_id: str) -> list[dict[str, Any]]:
        return ww.balances_snapshot(self.engine.balances(account_id))

    # ----------------------------------------------------------------- reports

    def _usd_per_quote(self, quote: str) -> float | None:
        """What one unit of ``quote`` is worth in USD, where the engine can say."""
        if quote == "USD":
            return 1.0
        market = self.engine.markets.get(f"{quote}/USD")
        return self.engine.price(market.symbol) if market is not None else None

    def _full_report(
        self, order: Order, exec_type: str, *, post_only: bool = False
    ) -> dict[str, Any]:
        market = self.engine.markets[order.symbol]
        status = "partially_filled" if exec_type == "new" and order.filled > 0 else exec_type
        time_in_force = "GTC"
        with contextlib.suppress(OrderNotFound):  # post-only refusals never reached the engine
            time_in_force = self.engine.order_flags(order.account_id, order.id).time_in_force
        return ww.order_report(
            order,
            market,
            exec_type=exec_type,
            order_status=status,
            userref=self._notes.order_userref(order.account_id, order.id),
            time_in_force=time_in_force,
            post_only=post_only or self._notes.is_post_only(order.account_id, order.id),
            usd_per_quote=self._usd_per_quote(market.quote),
            fee_decimals=self.engine.fee_decimals,
            timestamp=order.created_at,
        )

    def _status_update(
        self, order: Order, rest_status: str | None, reason: str | None, at: datetime | None
    ) -> dict[str, Any]:
        market = self.engine.markets[order.symbol]
        return ww.order_update(
            order,
            market,
            rest_status=rest_status,
            reason=reason,
            userref=self._notes.order_userref(order.account_id, order.id),
            usd_per_quote=self._usd_per_quote(market.quote),
            fee_decimals=self.engine.fee_decimals,
            timestamp=at or order.last_change,
        )

    def _trade_report(self, fill: Fill, order: Order, maker: bool | None = None) -> dict[str, Any]:
        market = self.engine.markets[fill.symbol]
        if maker is None:
            maker = self.engine.is_maker(fill.trade_id or "")
        return ww.trade_report(
            fill,
            order,
            market,
            maker=maker,
            userref=self._notes.order_userref(order.account_id, order.id),
            usd_per_quote=self._usd_per_quote(market.quote),
            fee_decimals=self.engine.fee_decimals,
        )
