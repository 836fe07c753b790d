"""Durable state in SQLite: orders, fills, trades, positions, equity, intents, guard journal.

One connection, one writer. :class:`Store` is synchronous and safe to call
from many threads (the live bot is thread-based): every call holds one lock,
and every write is one explicit ``BEGIN IMMEDIATE ... COMMIT`` that is rolled
back whole on any error, so a failed batch leaves nothing half-written
(DESIGN invariant 8). :class:`AsyncStore` runs the same calls on one
dedicated thread so the event loop never waits on the disk.

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
that is not SQLite, another program's database (``_store_schema.check_file``)
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
from nija_broker.core.models import EquityPoint, Fill, Order, Position, Side, TradeRecord
from nija_broker.core.perf_stats import Totals
from nija_broker.core.symbols import normalize_symbol
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
    StoreBatch,
    decision_row,
    intent_row,
    select_pending,
    update_intent,
)
from nija_broker.state.schema import check_file, migrate, ts_parse, ts_text
from nija_broker.state.store_lock import StoreLock, StoreLocked, check_location

__all__ = [
    "AccountSnapshot",
    "BatchResult",
    "BreakerRecord",
    "DecisionRecord",
    "Intent",
    "IntentStatus",
    "IntentUpdate",
    "Store",
    "StoreBatch",
    "StoreLock",
    "StoreLocked",
]

# --------------------------------------------------------------------------- the writer lock


class Store:
    """SQLite state of every account. Thread-safe; see the module docstring.

    ``exclusive=True`` takes the store's :class:`StoreLock` first, held until
    :meth:`close`: what every long-lived writer opens its store with.
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

    # ----------------------------------------------------------------- reads

    def breaker_events(
        self, account_id: str, *, limit: int = 100, kind: str | None = None
    ) -> list[BreakerRecord]:
        """The most recent ``limit`` breaker trips and resumes (of ``kind``), newest first."""
        where = "account_id = ?" + (" AND kind = ?" if kind is not None else "")
        args: tuple[object, ...] = (account_id, kind) if kind is not None else (account_id,)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT account_id, ts, rule, kind, reason, figures FROM breaker_events"
                f" WHERE {where} ORDER BY id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [
            BreakerRecord(
                account_id=r[0],
                ts=ts_parse(r[1]),
                rule=r[2],
                kind=r[3],
                reason=r[4],
                figures=json.loads(r[5]),
            )
            for r in rows
        ]

    def accounts(self) -> list[str]:
        """Every account with any stored row, sorted."""
        tables = (
            "orders",
            "fills",
            "trades",
            "positions",
            "equity_points",
            "intents",
            "guard_decisions",
        )
        sql = " UNION ".join(f"SELECT DISTINCT account_id FROM {t}" for t in tables)
        with self._read() as conn:
            return sorted(r[0] for r in conn.execute(sql))

    def load_account(
        self, account_id: str, *, since: datetime | None = None, recent: int | None = None
    ) -> AccountSnapshot:
        """One account's state, read as one consistent snapshot.

        With ``since``, finished orders whose last change is older are left out
        (live orders are always included), and so are the fill keys and per-order
        fill figures of anything else: only the fills stamped since then and those
        of the orders loaded. With ``recent``, only the last ``recent`` trades and
        equity points. ``totals`` always covers the whole history. A restart reads
        both bounds (:meth:`nija_broker.state.book.AccountBook.reload`), so its cost
        does not grow with the age of the account.
        """
        with self._read() as conn:
            orders = tuple(sql.select_orders(conn, account_id, since=since))
            if since is None:
                key_times = {
                    k: ts_parse(t)
                    for k, t in conn.execute(
                        "SELECT fill_key, ts FROM fills WHERE account_id = ?", (account_id,)
                    )
                }
                order_fills = sql.select_order_fills(conn, account_id)
            else:
                ids = [o.id for o in orders]
                key_times = sql.select_recent_fill_keys(conn, account_id, since, ids)
                order_fills = sql.select_order_fills(conn, account_id, ids)
            return AccountSnapshot(
                account_id=account_id,
                orders=orders,
                fill_keys=frozenset(key_times),
                order_fills=order_fills,
                trades=tuple(sql.select_trades(conn, account_id, recent)),
                positions=tuple(sql.select_positions(conn, account_id)),
                equity_points=tuple(sql.select_equity(conn, account_id, recent)),
                pending_intents=tuple(select_pending(conn, account_id)),
                totals=totals_sql.read(conn, account_id),
                fill_key_times=key_times,
                since=since,
                complete=recent is None,
            )

    def totals(self, account_id: str) -> Totals:
        """The accumulators of every trade and equity point of the account."""
        with self._read() as conn:
            return totals_sql.read(conn, account_id)

    def has_fill_key(self, account_id: str, fill_key: str) -> bool:
        """Whether a fill with this key was ever stored (booked or covered)."""
        with self._read() as conn:
            return sql.has_key(conn, "fills", "fill_key", account_id, fill_key)

    def has_trade(self, account_id: str, trade_id: str) -> bool:
        """Whether a trade with this id was ever stored."""
        with self._read() as conn:
            return sql.has_key(conn, "trades", "trade_id", account_id, trade_id)

    def order_fills(self, account_id: str, order_id: str) -> tuple[float, float, float] | None:
        """One order's fill figures (see :class:`AccountSnapshot`); ``None``: no fill."""
        with self._read() as conn:
            return sql.select_order_fills(conn, account_id, [order_id]).get(order_id)

    def orders(self, account_id: str, *, open_only: bool = False) -> list[Order]:
        """Orders of one account; ``open_only`` keeps open and partially filled ones."""
        with self._read() as conn:
            return sql.select_orders(conn, account_id, open_only=open_only)

    def trades(self, account_id: str, *, limit: int | None = None) -> list[TradeRecord]:
        """Trades in booking order; with ``limit``, the most recent ``limit`` of them."""
        with self._read() as conn:
            return sql.select_trades(conn, account_id, limit)

    def fills(self, account_id: str) -> list[Fill]:
        """Fills in booking order, to replay into a ledger."""
        with self._read() as conn:
            return sql.select_fills(conn, account_id)

    def fill_keys(self, account_id: str) -> set[str]:
        with self._read() as conn:
            return sql.select_fill_keys(conn, account_id)

    def positions(self, account_id: str) -> list[Position]:
        with self._read() as conn:
            return sql.select_positions(conn, account_id)

    def equity_points(self, account_id: str) -> list[EquityPoint]:
        with self._read() as conn:
            return sql.select_equity(conn, account_id)

    def symbol_fills(self, account_id: str, symbol: str) -> list[Fill]:
        """Every fill of one symbol booked into positions."""
        with self._read() as conn:
            return sql.select_symbol_fills(conn, account_id, normalize_symbol(symbol))

    def last_fills(self, account_id: str) -> list[Fill]:
        """Per symbol, the fills at its latest timestamp."""
        with self._read() as conn:
            return sql.select_last_fills(conn, account_id)

    def symbols(self, account_id: str) -> set[str]:
        """Every symbol the account ever ordered, filled, held or reserved."""
        with self._read() as conn:
            return {normalize_symbol(s) for s in sql.select_symbols(conn, account_id)}

    def unfollowed_intents(self, account_id: str) -> list[Intent]:
        """Resolved intents whose order is not in the store: confirmed, never seen since."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT i.account_id, i.client_order_id, i.status, i.request_json, i.created_at,"
                " i.updated_at, i.order_id FROM intents AS i WHERE i.account_id = ? AND"
                " i.status = 'resolved' AND NOT EXISTS (SELECT 1 FROM orders AS o WHERE"
                " o.account_id = i.account_id AND (o.order_id = i.order_id OR"
                " o.client_order_id = i.client_order_id)) ORDER BY i.created_at",
                (account_id,),
            ).fetchall()
        return [intent_row(row) for row in rows]

    def pending_intents(self, account_id: str) -> list[Intent]:
        """Intents not yet resolved (``pending`` or ``sent``), oldest first."""
        with self._read() as conn:
            return select_pending(conn, account_id)

    def decisions(
        self, account_id: str, *, limit: int = 100, blocked_only: bool = False
    ) -> list[DecisionRecord]:
        """The most recent ``limit`` guard decisions, newest first."""
        where = "account_id = ? AND allowed = 0" if blocked_only else "account_id = ?"
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, account_id, ts, client_order_id, symbol, side, allowed, rule,"
                f" reason, figures FROM guard_decisions WHERE {where} ORDER BY id DESC LIMIT ?",
                (account_id, limit),
            ).fetchall()
        return [
            DecisionRecord(
                id=r[0],
                account_id=r[1],
                ts=ts_parse(r[2]),
                client_order_id=r[3],
                symbol=r[4],
                side=Side(r[5]) if r[5] is not None else None,
                allowed=bool(r[6]),
                rule=r[7],
                reason=r[8],
                figures=json.loads(r[9]),
            )
            for r in rows
        ]


def _inserted(trades: Sequence[TradeRecord], new_ids: Sequence[str]) -> list[TradeRecord]:
    """The trades the insert took, in its order (a trade id repeated in a batch counts once)."""
    wanted = set(new_ids)
    taken: list[TradeRecord] = []
    for trade in trades:
        if trade.trade_id in wanted:
            wanted.discard(trade.trade_id)
            taken.append(trade)
    return taken
