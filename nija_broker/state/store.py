"""Durable state in SQLite: orders, fills, trades, positions, equity, intents, guard journal.

One connection, one writer. :class:`Store` is synchronous. In a running broker
every call comes from the account state's owner thread
(:mod:`nija_broker.state.owner`); its one lock keeps it safe for tools and
tests that use a store directly from several threads. Every write is one
explicit ``BEGIN IMMEDIATE ... COMMIT`` that is rolled back whole on any error,
so a failed batch leaves nothing half-written (DESIGN invariant 8).
:class:`~nija_broker.state.store_async.AsyncStore` runs the same calls for
asyncio code, on the owner's thread when given one.

Rows are keyed by account first and a batch belongs to one account
(invariant 1); fills and trades are inserted once by their natural key, so a
replayed reconcile step changes nothing and says so in its result
(invariant 3). Order intents are journaled before the request leaves and the
unresolved ones are listed after a restart (invariant 4).

Rows to write are built before the lock is taken, so threads serialise only
on SQLite itself; models are stored whole as JSON next to the few columns
that queries filter on.

Opening a file checks it before anything is written, and creates nothing
when a check fails: a read-only file or directory, a damaged file, a file
that is not SQLite, another program's database (``schema.check_file``)
are refused with one line naming the file (:class:`ConfigError`). A writer
that lives as long as its process (the sidecar, the demo, an embedded
broker) opens with ``exclusive=True``: the :class:`StoreLock` makes it the
only such process on that store; readers (``status``, ``report``) open
without it and keep working while it runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Self, cast

from nija_broker.core.errors import ConfigError, StateError
from nija_broker.core.models import EquityPoint, Fill, Order, Position, TradeRecord
from nija_broker.state import sql as sql
from nija_broker.state import totals as totals_sql
from nija_broker.state.records import (
    INSERT_DECISION,
    AccountSnapshot,
    BatchResult,
    BreakerRecord,
    DecisionRecord,
    Intent,
    IntentStatus,
    IntentUpdate,
    PauseRecord,
    StoreBatch,
    decision_row,
    update_intent,
)
from nija_broker.state.schema import check_file, migrate, ts_text
from nija_broker.state.store_lock import StoreLock, StoreLocked, check_location
from nija_broker.state.store_reads import StoreReads

__all__ = [
    "AccountSnapshot",
    "BatchResult",
    "BreakerRecord",
    "DecisionRecord",
    "Intent",
    "IntentStatus",
    "IntentUpdate",
    "PauseRecord",
    "Store",
    "StoreBatch",
    "StoreLock",
    "StoreLocked",
]

# --------------------------------------------------------------------------- the writer lock


class Store(StoreReads):
    """SQLite state of every account. Thread-safe; see the module docstring.

    ``exclusive=True`` takes the store's :class:`StoreLock` first, held until
    :meth:`close`: what every long-lived writer opens its store with. The writes are
    here; the queries come from :class:`~nija_broker.state.store_reads.StoreReads`.
    """

    def __init__(self, path: str | Path, *, exclusive: bool = False) -> None:
        self._where = str(path)
        self._lock = threading.Lock()
        self._file_lock: StoreLock | None = None
        target = self._where
        if self._where != ":memory:":
            exists = check_location(Path(path), self._where)
            if exclusive:
                self._file_lock = StoreLock.acquire(path)
            # A URI, to say whether SQLite may create the file: never in place of
            # one that vanished since it was checked.
            quoted = urllib.parse.quote(os.path.abspath(path))
            target = f"file:{quoted}?mode={'rw' if exists else 'rwc'}"
        try:
            self._conn: sqlite3.Connection | None = self._open(target)
        except BaseException:
            if self._file_lock is not None:
                self._file_lock.release()
            raise

    def _open(self, target: str) -> sqlite3.Connection:
        try:
            # isolation_level=None: the module never opens transactions behind
            # our back; every BEGIN/COMMIT here is explicit.
            conn = sqlite3.connect(
                target,
                isolation_level=None,
                check_same_thread=False,
                uri=target.startswith("file:"),
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open store {self._where}: {exc}", file=self._where) from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            # Before the first write: even the journal mode rewrites the file's header.
            check_file(conn, where=self._where)
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a power cut may lose the last commits but never
            # corrupts the file; a process crash loses nothing.
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(conn, where=self._where)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"cannot use store {self._where}: {exc}", file=self._where) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def path(self) -> str:
        return self._where

    @property
    def exclusive(self) -> bool:
        """True while this store holds its :class:`StoreLock`."""
        return self._file_lock is not None and self._file_lock.held

    def close(self) -> None:
        """Close the connection, then give up the writer lock (if held). Safe twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._file_lock is not None:
                self._file_lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StateError(f"store {self._where} is closed")
            conn = self._conn
            conn.execute(begin)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Some errors (disk full) already rolled the transaction back.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        # A deferred transaction gives a consistent snapshot across several
        # SELECTs even while another process writes.
        return self._transaction("BEGIN")

    # ----------------------------------------------------------------- writes

    def apply(self, batch: StoreBatch) -> BatchResult:
        """Write one account's reconcile step in one transaction; report what was new."""
        order_rows = [sql.order_row(o) for o in batch.orders]
        fill_rows = [sql.fill_row(f) for f in batch.fills]
        fill_rows += [sql.fill_row(f, covered=True) for f in batch.covered_fills]
        trade_rows = [sql.trade_row(t) for t in batch.trades]
        position_rows = [sql.position_row(p) for p in batch.positions]
        equity_rows = [sql.equity_row(e) for e in batch.equity_points]
        decision_rows = [decision_row(d) for d in batch.decisions]
        with self._transaction() as conn:
            conn.executemany(sql.UPSERT_ORDER, order_rows)
            conn.executemany(
                "DELETE FROM trades WHERE account_id = ? AND symbol = ?",
                [(batch.account_id, s) for s in batch.replace_trades_of],
            )
            new_fills = sql.insert_new(conn, "fills", "fill_key", sql.INSERT_FILL, fill_rows)
            new_trades = sql.insert_new(conn, "trades", "trade_id", sql.INSERT_TRADE, trade_rows)
            conn.executemany(sql.UPSERT_POSITION, position_rows)
            conn.executemany(
                sql.DELETE_POSITION, [(batch.account_id, s) for s in batch.closed_symbols]
            )
            conn.executemany(sql.INSERT_EQUITY, equity_rows)
            totals_sql.fold(
                conn,
                batch.account_id,
                _inserted(batch.trades, new_trades),
                batch.equity_points,
                trades_replaced=bool(batch.replace_trades_of),
            )
            for update in batch.intents:
                update_intent(conn, batch.account_id, update)
            conn.executemany(INSERT_DECISION, decision_rows)
        return BatchResult(
            new_fill_keys=tuple(new_fills),
            new_trade_ids=tuple(new_trades),
            orders_saved=len(order_rows),
            equity_points_added=len(equity_rows),
            decisions_journaled=len(decision_rows),
        )

    def save_orders(self, orders: Iterable[Order]) -> None:
        """Upsert orders (of any accounts: each row carries its own) in one transaction."""
        rows = [sql.order_row(o) for o in orders]
        with self._transaction() as conn:
            conn.executemany(sql.UPSERT_ORDER, rows)

    def record_fills(
        self,
        account_id: str,
        fills: Sequence[Fill],
        trades: Sequence[TradeRecord],
        positions: Sequence[Position],
        closed_symbols: Sequence[str] = (),
    ) -> list[str]:
        """Book fills with what they produced, in one transaction; return the new fill keys."""
        batch = StoreBatch(
            account_id=account_id,
            fills=fills,
            trades=trades,
            positions=positions,
            closed_symbols=closed_symbols,
        )
        return list(self.apply(batch).new_fill_keys)

    def save_trades(self, trades: Iterable[TradeRecord]) -> list[str]:
        """Insert trades once by (account, trade id); return the ids that were new."""
        given = list(trades)
        rows = [sql.trade_row(t) for t in given]
        with self._transaction() as conn:
            new = sql.insert_new(conn, "trades", "trade_id", sql.INSERT_TRADE, rows)
            for account_id in dict.fromkeys(t.account_id for t in given):
                mine = [t for t in given if t.account_id == account_id]
                totals_sql.fold(conn, account_id, _inserted(mine, new), ())
            return new

    def add_equity_points(self, points: Iterable[EquityPoint]) -> None:
        given = list(points)
        rows = [sql.equity_row(p) for p in given]
        with self._transaction() as conn:
            conn.executemany(sql.INSERT_EQUITY, rows)
            for account_id in dict.fromkeys(p.account_id for p in given):
                totals_sql.fold(
                    conn, account_id, (), [p for p in given if p.account_id == account_id]
                )

    def put_intent(
        self,
        account_id: str,
        client_order_id: str,
        request_json: str,
        now: datetime,
        decision: DecisionRecord | None = None,
    ) -> None:
        """Journal an order intent as ``pending`` before its request leaves.

        Journaling the same request again is a no-op (a retried call); the
        same clientOrderId with another request is refused: ids are never reused.
        ``decision``, if given, is journaled in the same transaction (one commit
        on the order's hot path instead of two).
        """
        if not account_id.strip() or not client_order_id.strip():
            raise StateError("an intent needs an account_id and a client_order_id")
        if decision is not None and decision.account_id != account_id:
            raise StateError(
                f"decision of account {decision.account_id!r} journaled with an intent of "
                f"{account_id!r}"
            )
        stamp = ts_text(now)
        with self._transaction() as conn:
            if decision is not None:
                conn.execute(INSERT_DECISION, decision_row(decision))
            inserted = conn.execute(
                "INSERT INTO intents (account_id, client_order_id, status, request_json,"
                " created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?)"
                " ON CONFLICT (account_id, client_order_id) DO NOTHING",
                (account_id, client_order_id, request_json, stamp, stamp),
            ).rowcount
            if inserted:
                return
            stored = conn.execute(
                "SELECT request_json FROM intents WHERE account_id = ? AND client_order_id = ?",
                (account_id, client_order_id),
            ).fetchone()[0]
            if stored != request_json:
                raise StateError(
                    f"clientOrderId {client_order_id!r} of account {account_id!r} is already "
                    "journaled with another request"
                )

    def set_intent_status(
        self,
        account_id: str,
        client_order_id: str,
        status: str,
        now: datetime,
        order_id: str | None = None,
    ) -> None:
        update = IntentUpdate(
            client_order_id=client_order_id,
            status=cast(IntentStatus, status),
            at=now,
            order_id=order_id,
        )
        with self._transaction() as conn:
            update_intent(conn, account_id, update)

    def journal_decision(self, decision: DecisionRecord) -> None:
        row = decision_row(decision)
        with self._transaction() as conn:
            conn.execute(INSERT_DECISION, row)

    def journal_breaker(self, record: BreakerRecord) -> None:
        """A circuit breaker tripped or resumed (by itself, or by the trader)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO breaker_events (account_id, ts, rule, kind, reason, figures)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.account_id,
                    ts_text(record.ts),
                    record.rule,
                    record.kind,
                    record.reason,
                    json.dumps(record.figures, sort_keys=True, default=str),
                ),
            )

    def journal_pause(self, record: PauseRecord) -> None:
        """The trader paused or resumed an account's entries."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO account_pauses (account_id, ts, kind, by_whom, reason)"
                " VALUES (?, ?, ?, ?, ?)",
                (record.account_id, ts_text(record.ts), record.kind, record.by, record.reason),
            )


def _inserted(trades: Sequence[TradeRecord], new_ids: Sequence[str]) -> list[TradeRecord]:
    """The trades the insert took, in its order (a trade id repeated in a batch counts once)."""
    wanted = set(new_ids)
    taken: list[TradeRecord] = []
    for trade in trades:
        if trade.trade_id in wanted:
            wanted.discard(trade.trade_id)
            taken.append(trade)
    return taken
