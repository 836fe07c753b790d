"""One account's books: order tracker, ledger and performance, kept in step with the store.

Every change goes through :class:`AccountBook`, on the :class:`~nija_broker.state.owner.Owner`'s
thread (each public method is sent there; on that thread it runs at once): it
is computed in memory, written to SQLite in one transaction, and only then
visible to readers (DESIGN invariant 8). If the write fails, the account is
rebuilt from the store, so memory never holds what the store does not. A
rebuild is built on the side and swapped in whole; one that cannot read the
store keeps the last good state and marks the book degraded
(:attr:`AccountBook.degraded_reason`): the guard then fails closed for it.

:class:`~nija_broker.state.books.Books` hands out one :class:`AccountBook` per
account id. No method of either takes two accounts' data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from nija_broker.core.book_fills import (
    AMOUNT_REL,
    Followed,
    ImpossibleFills,
    OrderFills,
    UnknownOrders,
    check_trade_totals,
    implied_fills,
    split_covered,
)
from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import StateError
from nija_broker.core.ledger import BookResult, Ledger, fill_sort_key, replay
from nija_broker.core.models import (
    AccountMetrics,
    EquityPoint,
    Fill,
    Order,
    Position,
    TradeRecord,
)
from nija_broker.core.orders import OrderTracker, check_update
from nija_broker.core.performance import PerformanceTracker
from nija_broker.state.owner import Owner, owned
from nija_broker.state.restart import StoredOrderFills, load_books
from nija_broker.state.store import IntentUpdate, Store, StoreBatch

__all__ = [
    "AccountBook",
    "BookSettings",
    "FillsBooked",
    "Followed",
    "ImpossibleFills",
    "OrderFills",
    "UnknownOrders",
]

log = logging.getLogger("nija_broker.book")


@dataclass(frozen=True, slots=True)
class BookSettings:
    fee_rate: float = 0.004
    retention_s: float = 86_400.0
    history_size: int = 1_000


@dataclass(frozen=True, slots=True)
class FillsBooked:
    """What booking a batch of fills changed: replays come back with no trades."""

    results: tuple[BookResult, ...]
    trades: tuple[TradeRecord, ...]
    unmatched: tuple[tuple[str, float], ...]
    """(fill key, base amount) sold beyond the known position: no trade was invented."""


class AccountBook:
    """Everything nija_broker knows about one account."""

    def __init__(
        self,
        account_id: str,
        store: Store | None = None,
        *,
        settings: BookSettings | None = None,
        clock: Clock | None = None,
        owner: Owner | None = None,
    ) -> None:
        if not account_id.strip():
            raise ValueError(f"account_id must not be empty, got {account_id!r}")
        self.account_id = account_id
        self.settings = settings or BookSettings()
        self.clock: Clock = clock or SystemClock()
        self.owner = owner if owner is not None else Owner()
        """The thread that runs every change (and every read) of this book."""
        self._store = store
        self.orders: OrderTracker
        self.ledger: Ledger
        self.performance: PerformanceTracker
        self.fills_from_trades = False
        """True where the exchange reports trades: fills are then booked from the trades
        (by trade id) only, never derived from an order's filled amount. False: the
        cumulative rule (a fill is the growth of the filled amount), the fallback for
        venues that give no trades. Set once, by the account's reconciler, at start."""
        self._order_fills: dict[str, OrderFills] = {}
        self._head: dict[str, tuple[object, ...]] = {}
        """Per symbol, the exchange-time sort key of the latest fill booked."""
        self._followed: dict[tuple[str | None, str | None], Followed] = {}
        self.unknown_orders = UnknownOrders()
        """Followed orders the exchange said it does not know (see :class:`UnknownOrders`)."""
        self._load()

    # ------------------------------------------------------------------ loading

    degraded_reason: str | None = None
    """Why the book could not be read back from the store (``None`` while it could).

    Set when a reload fails: the trackers keep their last good state, the guard
    reports the account's health as failed (entries of fail-closed tiers are
    blocked), and the book refuses changes until a reload succeeds (each change
    tries one first; the reconciler's next balance refresh makes one)."""

    def _load(self) -> None:
        """Rebuild every tracker from the store; swap them in only once all of it was read.

        A read that fails raises and leaves the book exactly as it was: never an
        empty tracker that would show the guard no open entries.
        """
        # Bounded by the retention windows, not the account's age (state/restart.py).
        loaded = load_books(self.account_id, self._store, self.settings, self.clock.now())
        self.orders, self.ledger = loaded.orders, loaded.ledger
        self.performance = loaded.performance
        self._order_fills, self._head = loaded.order_fills, loaded.head
        if self.degraded_reason is not None:
            log.warning(
                "account %s: the book was read back from the store; it is no longer degraded",
                self.account_id,
            )
        self.degraded_reason = None

    @owned
    def reload(self) -> None:
        """Rebuild every tracker from the store (what a restart does).

        If the store cannot be read, the last good state stays, the book is
        marked degraded (:attr:`degraded_reason`) and the error is raised.
        """
        try:
            self._load()
        except Exception as exc:
            self._degrade(exc)
            raise

    def _restore(self) -> None:
        """After a failed change: read the store back (memory may hold part of the change),
        or, if even that fails, keep what memory holds and mark the book degraded. Never
        raises: the change's own error is what the caller raises."""
        try:
            self._load()
        except Exception as exc:
            self._degrade(exc)

    def _degrade(self, exc: BaseException) -> None:
        self.degraded_reason = f"the store could not be read back: {type(exc).__name__}: {exc}"
        log.error(
            "account %s: %s; the book keeps its last good state and refuses changes "
            "until the store reads again",
            self.account_id,
            self.degraded_reason,
        )

    def _write(self, batch: StoreBatch) -> None:
        if self._store is None:
            return
        if self.degraded_reason is not None:
            # Memory may hold what the store does not (a write and the reload after it
            # both failed): a batch computed from it could store positions without the
            # fills behind them. Read the store back first, and refuse this batch either
            # way; whoever reported the change reports it again, from what the store holds.
            try:
                self._load()
            except Exception as exc:
                self._degrade(exc)
                raise StateError(
                    f"account {self.account_id!r}: the book is degraded "
                    f"({self.degraded_reason}); the change is refused"
                ) from exc
            raise StateError(
                f"account {self.account_id!r}: the book was read back from the "
                "store after being degraded; the change, computed before, is "
                "refused: report it again"
            )
        try:
            self._store.apply(batch)
        except BaseException:
            # Memory may already hold the change; the store is the truth.
            self._restore()
            raise

    # ------------------------------------------------------------------ writes

    @owned
    def apply_orders(
        self, orders: Sequence[Order], intents: Sequence[IntentUpdate] = ()
    ) -> list[Order | None]:
        """Validate every update, persist them together, then apply. Returns previous versions.

        An illegal update (e.g. filled -> open) raises before anything is written.
        ``intents`` (status changes of journaled submissions) commit in the same
        transaction.
        """
        self._check_orders(orders)
        self._write(
            StoreBatch(account_id=self.account_id, orders=tuple(orders), intents=tuple(intents))
        )
        return [self.orders.apply(order) for order in orders]

    def _check_orders(self, orders: Sequence[Order]) -> None:
        """Refuse the batch if any update is illegal (a batch may update one order twice)."""
        staged: dict[str, Order] = {}
        for order in orders:
            previous = staged.get(order.id)
            if previous is not None:
                check_update(previous, order)
            else:
                self.orders.check(order)
            staged[order.id] = order

    def apply_order(self, order: Order) -> Order | None:
        return self.apply_orders([order])[0]

    def book_fills(self, fills: Iterable[Fill]) -> FillsBooked:
        """Book fills into positions once each; persist fills, trades and positions together."""
        return self.apply_changes((), fills)

    @owned
    def apply_changes(
        self,
        orders: Sequence[Order],
        fills: Iterable[Fill] = (),
        intents: Sequence[IntentUpdate] = (),
    ) -> FillsBooked:
        """Apply order updates with the fills they imply and ``fills`` given, in ONE transaction.

        This is the one place a fill is computed (DESIGN invariant 3): under the
        account's lock, from what the book holds at this moment, whichever path
        reports the order (reconciler, guard confirm, startup). With the cumulative
        rule, an order's new fill is its filled amount less what was already booked
        for it; with trades (``fills_from_trades``) an order update books nothing and
        its trades come in ``fills``, each once by trade id. Two reports of the same
        order (0.4 filled, then 0.6) therefore book 0.6 in all, in either order.

        Order update and fill are written together: a crash between them would lose
        the fill or book it twice.
        """
        self._check_orders(orders)
        given = list(fills)
        if isinstance(self._order_fills, StoredOrderFills):
            self._order_fills.recall([*(o.id for o in orders), *(f.order_id for f in given)])
        staged = {o.id: f.booked for o in orders if (f := self._order_fills.get(o.id)) is not None}
        implied: list[Fill] = []
        if not self.fills_from_trades:
            implied = implied_fills(orders, staged, self.orders.get, self.clock.now())
        covered, to_book = split_covered(given, self._order_fills, self.ledger.is_booked)
        check_trade_totals(
            orders, to_book, self._order_fills, self.orders.get, self.ledger.is_booked
        )
        replays: list[BookResult] = []
        new: list[Fill] = []
        for fill in [*implied, *to_book]:
            if self.ledger.is_booked(fill):
                replays.append(BookResult(fill, True, (), self.ledger.position(fill.symbol), 0.0))
            else:
                new.append(fill)
        new.sort(key=fill_sort_key)
        late = {
            f.symbol
            for f in new
            if f.symbol in self._head and fill_sort_key(f) < self._head[f.symbol]
        }
        if late and self._store is not None:
            return self._rebook(orders, new, covered, intents, late)
        try:
            results = (*replays, *(self.ledger.book(fill) for fill in new))
        except BaseException:
            self._restore()  # the ledger may hold part of the batch
            raise
        fresh = [r for r in results if not r.duplicate]
        if not fresh and not orders and not intents and not covered:
            return FillsBooked(results, (), ())
        trades = tuple(t for r in fresh for t in r.trades)
        touched = {r.fill.symbol for r in fresh}
        positions = [p for p in self.ledger.positions() if p.symbol in touched]
        closed = sorted(touched - {p.symbol for p in positions})
        self._write(
            StoreBatch(
                account_id=self.account_id,
                orders=tuple(orders),
                fills=[r.fill for r in fresh],
                covered_fills=covered,
                trades=trades,
                positions=positions,
                closed_symbols=closed,
                intents=tuple(intents),
            )
        )
        for result in fresh:
            self._advance_head(result.fill)
        for order in orders:
            self.orders.apply(order)
            self._followed.pop((order.id, None), None)
            if order.client_order_id is not None:
                self._followed.pop((None, order.client_order_id), None)
        for result in fresh:
            figures = self._order_fills.setdefault(result.fill.order_id, OrderFills())
            figures.booked += result.fill.amount
            if result.fill.trade_id is None:
                figures.cumulative += result.fill.amount
        self.ledger.mark_seen(covered)
        for fill in covered:
            self._order_fills.setdefault(fill.order_id, OrderFills()).covered += fill.amount
        for trade in trades:
            self.performance.record_trade(trade)
        unmatched = tuple((r.fill.key, r.unmatched_amount) for r in fresh if r.unmatched_amount > 0)
        return FillsBooked(results, trades, unmatched)

    def _advance_head(self, fill: Fill) -> None:
        self._advance(self._head, fill)

    @staticmethod
    def _advance(head: dict[str, tuple[object, ...]], fill: Fill) -> None:
        key = fill_sort_key(fill)
        if fill.symbol not in head or key > head[fill.symbol]:
            head[fill.symbol] = key

    def _rebook(
        self,
        orders: Sequence[Order],
        new: Sequence[Fill],
        covered: Sequence[Fill],
        intents: Sequence[IntentUpdate],
        late: set[str],
    ) -> FillsBooked:
        """Book ``new`` where some fill came after a later one of its symbol was booked.

        A sell reported before the buy it closes (its trades fetched first, or found by
        a sweep after a restart) would have been booked as a sale of coins of unknown
        cost, and the buy would then open a position the exchange does not hold. The
        late symbols are booked again from all their fills in exchange time order;
        their trades and positions are replaced in the same transaction, and the book
        is reloaded from the store.
        """
        assert self._store is not None
        positions: list[Position] = []
        closed: list[str] = []
        trades: list[TradeRecord] = []
        for symbol in sorted(late):
            stored = self._store.symbol_fills(self.account_id, symbol)
            position, symbol_trades, _ = replay([*stored, *(f for f in new if f.symbol == symbol)])
            trades.extend(symbol_trades)
            if position is None:
                closed.append(symbol)
            else:
                positions.append(position)
        on_time = [f for f in new if f.symbol not in late]
        results = [self.ledger.book(fill) for fill in on_time]
        fresh_on_time = [r for r in results if not r.duplicate]
        touched = {r.fill.symbol for r in fresh_on_time}
        positions += [p for p in self.ledger.positions() if p.symbol in touched]
        closed += sorted(touched - {p.symbol for p in positions})
        trades += [t for r in fresh_on_time for t in r.trades]
        before = {t.trade_id for t in self.performance.trade_history()}
        try:
            self._write(
                StoreBatch(
                    account_id=self.account_id,
                    orders=tuple(orders),
                    fills=list(new),
                    covered_fills=covered,
                    trades=trades,
                    positions=positions,
                    closed_symbols=closed,
                    intents=tuple(intents),
                    replace_trades_of=sorted(late),
                )
            )
        finally:
            self._restore()
        log.warning(
            "account %s: a fill on %s arrived after later ones; those symbols were "
            "booked again in exchange time order",
            self.account_id,
            ", ".join(sorted(late)),
        )
        results_all = tuple(BookResult(f, False, (), None, 0.0) for f in new)
        return FillsBooked(results_all, tuple(t for t in trades if t.trade_id not in before), ())

    # ------------------------------------------------------------------ what is owed

    @owned
    def booked_amount(self, order_id: str) -> float:
        """Base amount of ``order_id`` booked into positions (all keys)."""
        figures = self._order_fills.get(order_id)
        # Covered trades are the executions a cumulative fill already booked.
        return figures.booked if figures is not None else 0.0

    @owned
    def unbooked_orders(self) -> list[tuple[Order, float]]:
        """Orders whose filled amount exceeds what was booked for them, oldest first.

        Where fills come from trades, these are the orders whose trades are owed.
        """
        owed = []
        for order in self.orders.orders():
            if order.filled <= 0:
                continue
            missing = order.filled - self.booked_amount(order.id)
            if missing > order.amount * AMOUNT_REL:
                owed.append((order, missing))
        owed.sort(key=lambda item: (item[0].created_at, item[0].id))
        return owed

    @owned
    def follow(self, item: Followed) -> None:
        """Remember an order the exchange accepted that the book has not seen; any thread."""
        if item.order_id is not None and self.orders.get(item.order_id) is not None:
            return
        if item.client_order_id is not None and (
            self.orders.by_client_id(item.client_order_id) is not None
        ):
            return
        key = (item.order_id, None) if item.order_id is not None else (None, item.client_order_id)
        self._followed[key] = item

    @owned
    def followed(self) -> list[Followed]:
        """Orders to look up by id (or client id) until the book has them."""
        return list(self._followed.values())

    @owned
    def unfollow(self, item: Followed) -> None:
        for key, value in list(self._followed.items()):
            if value == item:
                del self._followed[key]

    @owned
    def record_trade(self, trade: TradeRecord) -> bool:
        """Record a round trip given directly (idempotent by trade id)."""
        if trade.account_id != self.account_id:
            raise StateError(
                f"trade {trade.trade_id!r} of account {trade.account_id!r} recorded on "
                f"account {self.account_id!r}"
            )
        if self.performance.has_trade(trade.trade_id):
            return False
        self._write(StoreBatch(account_id=self.account_id, trades=(trade,)))
        return self.performance.record_trade(trade)

    @owned
    def update_equity(self, equity_usd: float, timestamp: datetime | None = None) -> None:
        """Add a point to the equity curve (drawdown, daily Sharpe)."""
        point = EquityPoint(
            account_id=self.account_id, timestamp=timestamp or self.clock.now(), equity=equity_usd
        )
        self._write(StoreBatch(account_id=self.account_id, equity_points=(point,)))
        self.performance.update_balance(point.equity, point.timestamp)

    @owned
    def cleanup_terminal(self, now: datetime | None = None) -> list[str]:
        """Drop terminal orders past retention from memory, with what was booked for them
        where the store keeps it (read back if such an order is reported again): memory
        stays flat however long the process runs."""
        removed = self.orders.cleanup_terminal(now or self.clock.now())
        if isinstance(self._order_fills, StoredOrderFills):
            self._order_fills.forget(removed)
        return removed

    # ------------------------------------------------------------------ reads

    @owned
    def metrics(self) -> AccountMetrics:
        return self.performance.metrics()

    @owned
    def positions(self) -> list[Position]:
        return self.ledger.positions()
