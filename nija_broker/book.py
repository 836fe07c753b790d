"""One account's books: order tracker, ledger and performance, kept in step with the store.

Every change goes through :class:`AccountBook`, under the account's lock: it
is computed in memory, written to SQLite in one transaction, and only then
visible to readers (DESIGN invariant 8). If the write fails, the account is
rebuilt from the store, so memory never holds what the store does not.

:class:`Books` hands out one :class:`AccountBook` per account id and loads it
from the store on first use. No method of either takes two accounts' data.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .clock import Clock, SystemClock
from .errors import StateError
from .ledger import BookResult, Ledger
from .models import AccountMetrics, EquityPoint, Fill, Order, Position, TradeRecord
from .orders import OrderTracker, check_update
from .performance import PerformanceTracker
from .store import IntentUpdate, Store, StoreBatch


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

    def __init__(self, account_id: str, store: Store | None = None, *,
                 settings: BookSettings | None = None, clock: Clock | None = None) -> None:
        if not account_id.strip():
            raise ValueError(f"account_id must not be empty, got {account_id!r}")
        self.account_id = account_id
        self.settings = settings or BookSettings()
        self.clock: Clock = clock or SystemClock()
        self._store = store
        self._lock = threading.RLock()
        self.orders: OrderTracker
        self.ledger: Ledger
        self.performance: PerformanceTracker
        self._load()

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        s = self.settings
        self.orders = OrderTracker(self.account_id, fee_rate=s.fee_rate, retention_s=s.retention_s)
        if self._store is None:
            self.ledger = Ledger(self.account_id)
            self.performance = PerformanceTracker(self.account_id, history_size=s.history_size)
            return
        snapshot = self._store.load_account(self.account_id)
        for order in snapshot.orders:
            self.orders.apply(order)
        self.ledger = Ledger(self.account_id, snapshot.positions, snapshot.fill_keys)
        self.performance = PerformanceTracker.restore(
            self.account_id, snapshot.trades, snapshot.equity_points, history_size=s.history_size
        )

    def reload(self) -> None:
        """Rebuild every tracker from the store (what a restart does)."""
        with self._lock:
            self._load()

    def _write(self, batch: StoreBatch) -> None:
        if self._store is None:
            return
        try:
            self._store.apply(batch)
        except BaseException:
            # Memory may already hold the change; the store is the truth.
            self._load()
            raise

    # ------------------------------------------------------------------ writes

    def apply_orders(self, orders: Sequence[Order],
                     intents: Sequence[IntentUpdate] = ()) -> list[Order | None]:
        """Validate every update, persist them together, then apply. Returns previous versions.

        An illegal update (e.g. filled -> open) raises before anything is written.
        ``intents`` (status changes of journaled submissions) commit in the same
        transaction.
        """
        with self._lock:
            self._check_orders(orders)
            self._write(StoreBatch(account_id=self.account_id, orders=tuple(orders),
                                   intents=tuple(intents)))
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

    def apply_changes(self, orders: Sequence[Order], fills: Iterable[Fill],
                      intents: Sequence[IntentUpdate] = ()) -> FillsBooked:
        """Apply order updates and book the fills they carry, in ONE store transaction.

        The reconciler derives a fill from the growth of an order's filled amount,
        keyed by the new cumulative amount: if the order update and its fill were
        written apart, a crash between them would lose the fill or, once the order
        grew further, book the same execution again under another key.
        """
        with self._lock:
            self._check_orders(orders)
            try:
                results = tuple(self.ledger.book(fill) for fill in fills)
            except BaseException:
                self._load()  # the ledger may hold part of the batch
                raise
            fresh = [r for r in results if not r.duplicate]
            if not fresh and not orders and not intents:
                return FillsBooked(results, (), ())
            trades = tuple(t for r in fresh for t in r.trades)
            touched = {r.fill.symbol for r in fresh}
            positions = [p for p in self.ledger.positions() if p.symbol in touched]
            closed = sorted(touched - {p.symbol for p in positions})
            self._write(StoreBatch(
                account_id=self.account_id, orders=tuple(orders), fills=[r.fill for r in fresh],
                trades=trades, positions=positions, closed_symbols=closed, intents=tuple(intents),
            ))
            for order in orders:
                self.orders.apply(order)
            for trade in trades:
                self.performance.record_trade(trade)
            unmatched = tuple(
                (r.fill.key, r.unmatched_amount) for r in fresh if r.unmatched_amount > 0
            )
            return FillsBooked(results, trades, unmatched)

    def record_trade(self, trade: TradeRecord) -> bool:
        """Record a round trip given directly (idempotent by trade id)."""
        if trade.account_id != self.account_id:
            raise StateError(
                f"trade {trade.trade_id!r} of account {trade.account_id!r} recorded on "
                f"account {self.account_id!r}"
            )
        with self._lock:
            if self.performance.has_trade(trade.trade_id):
                return False
            self._write(StoreBatch(account_id=self.account_id, trades=(trade,)))
            return self.performance.record_trade(trade)

    def update_equity(self, equity_usd: float, timestamp: datetime | None = None) -> None:
        """Add a point to the equity curve (drawdown, daily Sharpe)."""
        with self._lock:
            point = EquityPoint(account_id=self.account_id,
                                timestamp=timestamp or self.clock.now(), equity=equity_usd)
            self._write(StoreBatch(account_id=self.account_id, equity_points=(point,)))
            self.performance.update_balance(point.equity, point.timestamp)

    def cleanup_terminal(self, now: datetime | None = None) -> list[str]:
        """Drop terminal orders past retention from memory; the store keeps them."""
        with self._lock:
            return self.orders.cleanup_terminal(now or self.clock.now())

    # ------------------------------------------------------------------ reads

    def metrics(self) -> AccountMetrics:
        return self.performance.metrics()

    def positions(self) -> list[Position]:
        return self.ledger.positions()


class Books:
    """One :class:`AccountBook` per account id, loaded from the store on first use."""

    def __init__(self, store: Store | None = None, *, settings: BookSettings | None = None,
                 clock: Clock | None = None,
                 account_settings: Mapping[str, BookSettings] | None = None) -> None:
        self.store = store
        self.settings = settings or BookSettings()
        """For accounts without an entry in ``account_settings``."""
        self.account_settings = dict(account_settings or {})
        self.clock: Clock = clock or SystemClock()
        self._books: dict[str, AccountBook] = {}
        self._lock = threading.Lock()

    def get(self, account_id: str) -> AccountBook:
        book = self._books.get(account_id)
        if book is not None:
            return book
        with self._lock:
            book = self._books.get(account_id)
            if book is None:
                settings = self.account_settings.get(account_id, self.settings)
                book = AccountBook(account_id, self.store, settings=settings, clock=self.clock)
                self._books[account_id] = book
            return book

    def accounts(self) -> list[str]:
        """Accounts in memory plus every account the store knows, sorted."""
        known = set(self._books)
        if self.store is not None:
            known.update(self.store.accounts())
        return sorted(known)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._books
