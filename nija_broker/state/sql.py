"""Rows and statements of the store's model tables: orders, fills, trades, positions, equity.

Models are stored whole as JSON next to the few columns that queries filter
on, and converted outside the store's lock where possible. Every function
here runs inside a transaction opened by :class:`nija_broker.state.store.Store`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from nija_broker.core.models import EquityPoint, Fill, Order, OrderStatus, Position, TradeRecord
from nija_broker.state.schema import ts_parse, ts_text

Row = tuple[Any, ...]

OPEN_STATUSES: tuple[str, ...] = tuple(s.value for s in OrderStatus if s.is_open)
# ``remaining`` is computed; Order forbids extra input, so it must not be stored.
_ORDER_COMPUTED: set[str] = set(Order.model_computed_fields)
# SQLite limits bound parameters per statement; stay far below it.
_IN_CHUNK = 500

UPSERT_ORDER = """
INSERT INTO orders (account_id, order_id, client_order_id, symbol, status, terminal,
                    created_at, updated_at, json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (account_id, order_id) DO UPDATE SET
    client_order_id = excluded.client_order_id, symbol = excluded.symbol,
    status = excluded.status, terminal = excluded.terminal,
    created_at = excluded.created_at, updated_at = excluded.updated_at, json = excluded.json
"""
INSERT_FILL = """
INSERT INTO fills (account_id, fill_key, order_id, symbol, ts, json, amount, covered)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (account_id, fill_key) DO NOTHING
"""
INSERT_TRADE = """
INSERT INTO trades (account_id, trade_id, symbol, exit_time, json) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (account_id, trade_id) DO NOTHING
"""
UPSERT_POSITION = """
INSERT INTO positions (account_id, symbol, updated_at, json) VALUES (?, ?, ?, ?)
ON CONFLICT (account_id, symbol) DO UPDATE SET
    updated_at = excluded.updated_at, json = excluded.json
"""
DELETE_POSITION = "DELETE FROM positions WHERE account_id = ? AND symbol = ?"
INSERT_EQUITY = "INSERT INTO equity_points (account_id, ts, equity) VALUES (?, ?, ?)"


def order_row(order: Order) -> Row:
    return (
        order.account_id,
        order.id,
        order.client_order_id,
        order.symbol,
        order.status.value,
        int(order.is_terminal),
        ts_text(order.created_at),
        ts_text(order.last_change),
        order.model_dump_json(exclude=_ORDER_COMPUTED),
    )


def fill_row(fill: Fill, *, covered: bool = False) -> Row:
    return (
        fill.account_id,
        fill.key,
        fill.order_id,
        fill.symbol,
        ts_text(fill.timestamp),
        fill.model_dump_json(),
        fill.amount,
        int(covered),
    )


def trade_row(trade: TradeRecord) -> Row:
    return (
        trade.account_id,
        trade.trade_id,
        trade.symbol,
        ts_text(trade.exit_time),
        trade.model_dump_json(),
    )


def position_row(position: Position) -> Row:
    return (
        position.account_id,
        position.symbol,
        ts_text(position.updated_at),
        position.model_dump_json(),
    )


def equity_row(point: EquityPoint) -> Row:
    return (point.account_id, ts_text(point.timestamp), point.equity)


def insert_new(
    conn: sqlite3.Connection, table: str, column: str, sql: str, rows: Sequence[Row]
) -> list[str]:
    """Insert rows ``(account_id, key, ...)``, skipping stored keys; return the new keys.

    The stored keys are looked up first (in the same transaction, under the
    store's lock) because ``executemany`` cannot say which rows it skipped.
    """
    by_account: dict[str, list[Row]] = {}
    for row in rows:
        by_account.setdefault(row[0], []).append(row)
    new_keys: list[str] = []
    for account_id, account_rows in by_account.items():
        seen = _existing(conn, table, column, account_id, [r[1] for r in account_rows])
        fresh: list[Row] = []
        for row in account_rows:
            if row[1] not in seen:
                seen.add(row[1])  # a key repeated inside the batch counts once
                fresh.append(row)
        conn.executemany(sql, fresh)
        new_keys.extend(r[1] for r in fresh)
    return new_keys


def _existing(
    conn: sqlite3.Connection, table: str, column: str, account_id: str, keys: Sequence[str]
) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {column} FROM {table} WHERE account_id = ? AND {column} IN ({marks})",
            (account_id, *chunk),
        )
        found.update(r[0] for r in rows)
    return found


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def select_orders(
    conn: sqlite3.Connection,
    account_id: str,
    *,
    open_only: bool = False,
    since: datetime | None = None,
) -> list[Order]:
    if open_only:
        marks = ",".join("?" * len(OPEN_STATUSES))
        rows = conn.execute(
            f"SELECT json FROM orders WHERE account_id = ? AND status IN ({marks})"
            " ORDER BY created_at, order_id",
            (account_id, *OPEN_STATUSES),
        )
    elif since is not None:
        # Two ranges of orders_by_account_state, never a scan of the account's whole
        # order history: named, because without statistics SQLite prefers the client-id
        # index, and an OR of the two ranges would be planned as one scan.
        rows = conn.execute(
            "SELECT json, created_at, order_id FROM orders INDEXED BY orders_by_account_state"
            " WHERE account_id = ?1 AND terminal = 0"
            " UNION ALL SELECT json, created_at, order_id FROM orders"
            " INDEXED BY orders_by_account_state"
            " WHERE account_id = ?1 AND terminal = 1 AND updated_at >= ?2"
            " ORDER BY 2, 3",
            (account_id, ts_text(since)),
        )
    else:
        rows = conn.execute(
            "SELECT json FROM orders WHERE account_id = ? ORDER BY created_at, order_id",
            (account_id,),
        )
    return [Order.model_validate_json(r[0]) for r in rows]


def select_trades(
    conn: sqlite3.Connection, account_id: str, limit: int | None
) -> list[TradeRecord]:
    """Trades in booking order; with ``limit``, the last ``limit`` (one index range)."""
    if limit is None:
        rows = conn.execute(
            "SELECT json FROM trades WHERE account_id = ? ORDER BY id", (account_id,)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT json FROM trades WHERE account_id = ? ORDER BY id DESC LIMIT ?",
            (account_id, max(limit, 0)),
        ).fetchall()[::-1]
    return [TradeRecord.model_validate_json(r[0]) for r in rows]


def select_fills(conn: sqlite3.Connection, account_id: str) -> list[Fill]:
    """The fills booked into positions (not the trades recognised as already booked)."""
    rows = conn.execute(
        "SELECT json FROM fills WHERE account_id = ? AND covered = 0 ORDER BY id", (account_id,)
    )
    return [Fill.model_validate_json(r[0]) for r in rows]


_ORDER_FILLS = (
    "SELECT order_id,"
    " SUM(CASE WHEN covered = 0 THEN amount ELSE 0 END),"
    " SUM(CASE WHEN covered = 0 AND json_extract(json, '$.trade_id') IS NULL"
    "     THEN amount ELSE 0 END),"
    " SUM(CASE WHEN covered = 1 THEN amount ELSE 0 END)"
    " FROM fills WHERE account_id = ?"
)


def select_order_fills(
    conn: sqlite3.Connection, account_id: str, order_ids: Sequence[str] | None = None
) -> dict[str, tuple[float, float, float]]:
    """Per order: (amount booked, of which under cumulative keys, amount of covered trades).

    Every order of the account, or only ``order_ids`` (through ``fills_by_order``).
    """
    if order_ids is None:
        rows: Iterable[Row] = conn.execute(f"{_ORDER_FILLS} GROUP BY order_id", (account_id,))
    else:
        rows = [
            row
            for chunk in _chunks(order_ids)
            for row in conn.execute(
                f"{_ORDER_FILLS} AND order_id IN ({','.join('?' * len(chunk))}) GROUP BY order_id",
                (account_id, *chunk),
            )
        ]
    return {r[0]: (float(r[1] or 0.0), float(r[2] or 0.0), float(r[3] or 0.0)) for r in rows}


def select_recent_fill_keys(
    conn: sqlite3.Connection, account_id: str, since: datetime, order_ids: Sequence[str]
) -> dict[str, datetime]:
    """Keys (with their fill's time) of the fills stamped at or after ``since``, and of
    every fill of ``order_ids``: each through its own index, whatever the account's age."""
    found: dict[str, datetime] = {}
    rows = conn.execute(
        "SELECT fill_key, ts FROM fills WHERE account_id = ? AND ts >= ?",
        (account_id, ts_text(since)),
    )
    found.update((key, ts_parse(ts)) for key, ts in rows)
    for chunk in _chunks(order_ids):
        rows = conn.execute(
            "SELECT fill_key, ts FROM fills WHERE account_id = ?"
            f" AND order_id IN ({','.join('?' * len(chunk))})",
            (account_id, *chunk),
        )
        found.update((key, ts_parse(ts)) for key, ts in rows if key not in found)
    return found


def has_key(conn: sqlite3.Connection, table: str, column: str, account_id: str, key: str) -> bool:
    """Whether ``key`` is stored: one probe of the table's UNIQUE (account_id, key)."""
    return (
        conn.execute(
            f"SELECT 1 FROM {table} WHERE account_id = ? AND {column} = ?", (account_id, key)
        ).fetchone()
        is not None
    )


def select_symbols(conn: sqlite3.Connection, account_id: str) -> set[str]:
    """Every symbol the account ever ordered, filled, held or reserved."""
    symbols: set[str] = set()
    for table in ("orders", "fills", "trades", "positions"):
        rows = conn.execute(
            f"SELECT DISTINCT symbol FROM {table} WHERE account_id = ?", (account_id,)
        )
        symbols.update(r[0] for r in rows)
    rows = conn.execute(
        "SELECT DISTINCT coalesce(json_extract(request_json, '$.intent.symbol'),"
        " json_extract(request_json, '$.request.symbol'), json_extract(request_json, '$.symbol'))"
        " FROM intents WHERE account_id = ? AND json_valid(request_json)",
        (account_id,),
    )
    symbols.update(r[0] for r in rows if isinstance(r[0], str) and r[0])
    return symbols


def select_fill_keys(conn: sqlite3.Connection, account_id: str) -> set[str]:
    rows = conn.execute("SELECT fill_key FROM fills WHERE account_id = ?", (account_id,))
    return {r[0] for r in rows}


def select_positions(conn: sqlite3.Connection, account_id: str) -> list[Position]:
    rows = conn.execute(
        "SELECT json FROM positions WHERE account_id = ? ORDER BY symbol", (account_id,)
    )
    return [Position.model_validate_json(r[0]) for r in rows]


def select_equity(
    conn: sqlite3.Connection, account_id: str, limit: int | None = None
) -> list[EquityPoint]:
    """Equity points in order; with ``limit``, the last ``limit`` (one index range)."""
    if limit is None:
        rows = conn.execute(
            "SELECT ts, equity FROM equity_points WHERE account_id = ? ORDER BY id", (account_id,)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT ts, equity FROM equity_points WHERE account_id = ? ORDER BY id DESC LIMIT ?",
            (account_id, max(limit, 0)),
        ).fetchall()[::-1]
    return [
        EquityPoint(account_id=account_id, timestamp=ts_parse(ts), equity=eq) for ts, eq in rows
    ]


def select_symbol_fills(conn: sqlite3.Connection, account_id: str, symbol: str) -> list[Fill]:
    rows = conn.execute(
        "SELECT json FROM fills WHERE account_id = ? AND symbol = ? AND covered = 0 ORDER BY id",
        (account_id, symbol),
    )
    return [Fill.model_validate_json(r[0]) for r in rows]


def select_last_fills(conn: sqlite3.Connection, account_id: str) -> list[Fill]:
    """Per symbol, the fills of its latest timestamp (the head of its exchange time order).

    A skip scan of ``fills_by_symbol_time``: the symbols one index probe each, then each
    symbol's latest time one probe more, so the cost grows with the symbols traded,
    not with the fills ever booked.
    """
    rows = conn.execute(
        "WITH RECURSIVE s(symbol) AS ("
        " SELECT MIN(symbol) FROM fills WHERE account_id = ?1 AND covered = 0"
        " UNION ALL SELECT (SELECT MIN(f.symbol) FROM fills AS f WHERE f.account_id = ?1"
        "  AND f.covered = 0 AND f.symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL),"
        " m(symbol, ts) AS (SELECT symbol, (SELECT MAX(f.ts) FROM fills AS f"
        "  WHERE f.account_id = ?1 AND f.covered = 0 AND f.symbol = s.symbol)"
        "  FROM s WHERE s.symbol IS NOT NULL)"
        " SELECT f.json FROM m JOIN fills AS f ON f.account_id = ?1 AND f.covered = 0"
        " AND f.symbol = m.symbol AND f.ts = m.ts",
        (account_id,),
    )
    return [Fill.model_validate_json(r[0]) for r in rows]
