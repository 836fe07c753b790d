"""The store's read side: every query :class:`~nija_broker.state.store.Store` answers.

Each call reads in one deferred transaction (``Store._read``), so its
SELECTs see one consistent snapshot even while another process writes. The
connection, its lock and every write stay in :mod:`nija_broker.state.store`;
:class:`StoreReads` is the base class that gives ``Store`` these methods, so
callers keep calling them on the store.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from nija_broker.core.models import EquityPoint, Fill, Order, Position, Side, TradeRecord
from nija_broker.core.perf_stats import Totals
from nija_broker.core.symbols import normalize_symbol
from nija_broker.state import sql as sql
from nija_broker.state import totals as totals_sql
from nija_broker.state.records import (
    AccountSnapshot,
    BreakerRecord,
    DecisionRecord,
    Intent,
    PauseRecord,
    intent_row,
    select_pending,
)
from nija_broker.state.schema import ts_parse

__all__ = ["StoreReads"]


class StoreReads(ABC):
    """The queries of a :class:`~nija_broker.state.store.Store`, which owns the connection."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot to read from: one deferred transaction under the store's lock."""

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

    def pause_events(self, account_id: str, *, limit: int = 100) -> list[PauseRecord]:
        """The account's most recent ``limit`` pauses and resumes, newest first: the first
        says whether it is paused now."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT account_id, ts, kind, by_whom, reason FROM account_pauses"
                " WHERE account_id = ? ORDER BY id DESC LIMIT ?",
                (account_id, limit),
            ).fetchall()
        return [
            PauseRecord(account_id=r[0], ts=ts_parse(r[1]), kind=r[2], by=r[3], reason=r[4])
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

    def order_fills_of(
        self, account_id: str, order_ids: Sequence[str]
    ) -> dict[str, tuple[float, float, float]]:
        """Fill figures of these orders, in one read (see :class:`AccountSnapshot`); an
        order without a fill is left out."""
        with self._read() as conn:
            return sql.select_order_fills(conn, account_id, order_ids)

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
