"""SQLite schema of the store, as an ordered list of migrations.

The database's ``PRAGMA user_version`` is the number of migrations applied.
Opening a file runs the missing ones, all in one ``BEGIN IMMEDIATE``
transaction: SQLite's DDL and ``user_version`` are transactional, so a crash
or a failing step leaves the file exactly at its old version. A file whose
version is higher than this code knows is refused: older code must not write
into a layout it does not understand.

Every table is keyed by ``account_id`` first (isolation, DESIGN invariant 1),
so each per-account read is a prefix scan of the primary key or an index.

Timestamps are ISO-8601 UTC text with microseconds and a fixed ``+00:00``
offset (see :func:`ts_text`), which sorts lexically in time order.

Append-only tables (fills, trades, equity points, guard decisions) carry an
``INTEGER PRIMARY KEY AUTOINCREMENT`` id: replay order is exactly insertion
order, and unlike a hidden rowid it survives ``VACUUM``. Their natural key
(``(account_id, fill_key)``, ``(account_id, trade_id)``) is a ``UNIQUE``
constraint, which conflicts exactly as a primary key would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .clock import utc
from .errors import ConfigError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1_STATE = Migration(
    version=1,
    description="orders, fills, trades, positions, equity points",
    statements=(
        """
        CREATE TABLE orders (
            account_id      TEXT    NOT NULL,
            order_id        TEXT    NOT NULL,
            client_order_id TEXT,
            symbol          TEXT    NOT NULL,
            status          TEXT    NOT NULL,
            terminal        INTEGER NOT NULL CHECK (terminal IN (0, 1)),
            created_at      TEXT    NOT NULL,
            updated_at      TEXT    NOT NULL,
            json            TEXT    NOT NULL,
            PRIMARY KEY (account_id, order_id)
        )
        """,
        # load_account(since=...) reads live orders plus recently finished ones.
        "CREATE INDEX orders_by_account_state ON orders (account_id, terminal, updated_at)",
        "CREATE INDEX orders_by_client_id ON orders (account_id, client_order_id)",
        """
        CREATE TABLE fills (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            fill_key   TEXT NOT NULL,
            order_id   TEXT NOT NULL,
            symbol     TEXT NOT NULL,
            ts         TEXT NOT NULL,
            json       TEXT NOT NULL,
            UNIQUE (account_id, fill_key)
        )
        """,
        "CREATE INDEX fills_by_account ON fills (account_id, id)",
        """
        CREATE TABLE trades (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            trade_id   TEXT NOT NULL,
            symbol     TEXT NOT NULL,
            exit_time  TEXT NOT NULL,
            json       TEXT NOT NULL,
            UNIQUE (account_id, trade_id)
        )
        """,
        "CREATE INDEX trades_by_account ON trades (account_id, id)",
        """
        CREATE TABLE positions (
            account_id TEXT NOT NULL,
            symbol     TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            json       TEXT NOT NULL,
            PRIMARY KEY (account_id, symbol)
        )
        """,
        """
        CREATE TABLE equity_points (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            ts         TEXT NOT NULL,
            equity     REAL NOT NULL
        )
        """,
        "CREATE INDEX equity_points_by_account ON equity_points (account_id, id)",
    ),
)

_V2_GUARD = Migration(
    version=2,
    description="order intents and the guard's decision journal",
    statements=(
        """
        CREATE TABLE intents (
            account_id      TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            status          TEXT NOT NULL
                CHECK (status IN ('pending', 'sent', 'resolved', 'released')),
            order_id        TEXT,
            request_json    TEXT NOT NULL,
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL,
            PRIMARY KEY (account_id, client_order_id)
        )
        """,
        "CREATE INDEX intents_by_account_status ON intents (account_id, status, created_at)",
        """
        CREATE TABLE guard_decisions (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id      TEXT    NOT NULL,
            ts              TEXT    NOT NULL,
            client_order_id TEXT,
            symbol          TEXT,
            side            TEXT,
            allowed         INTEGER NOT NULL CHECK (allowed IN (0, 1)),
            rule            TEXT,
            reason          TEXT,
            figures         TEXT    NOT NULL
        )
        """,
        "CREATE INDEX guard_decisions_by_account ON guard_decisions (account_id, allowed, id)",
    ),
)

_V3_TRADE_FILLS = Migration(
    version=3,
    description="fills carry their amount; trades already booked under a cumulative key",
    statements=(
        # Fills used to be keyed by (order, cumulative filled); they are now keyed by the
        # exchange's trade id. A trade that an old cumulative fill already booked is kept
        # with covered = 1: recognised as seen, never booked into a position again.
        "ALTER TABLE fills ADD COLUMN amount REAL",
        "ALTER TABLE fills ADD COLUMN covered INTEGER NOT NULL DEFAULT 0 "
        "CHECK (covered IN (0, 1))",
        "UPDATE fills SET amount = json_extract(json, '$.amount')",
        "CREATE INDEX fills_by_order ON fills (account_id, order_id)",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1_STATE, _V2_GUARD, _V3_TRADE_FILLS)
SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    return int(version)


def migrate(
    conn: sqlite3.Connection,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    where: str = "database",
) -> int:
    """Bring ``conn`` to the last version of ``migrations``; return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): the
    transaction here is explicit. ``where`` names the file in error messages.
    """
    _check_ordered(migrations)
    target = migrations[-1].version if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read inside the write lock so two processes cannot both migrate.
        current = schema_version(conn)
        if current > target:
            raise ConfigError(
                f"{where} has schema version {current}, newer than this code "
                f"understands (up to {target}); upgrade nija_broker or use another file",
                file=where,
            )
        for step in migrations:
            if step.version <= current:
                continue
            for statement in step.statements:
                conn.execute(statement)
            # PRAGMA takes no bound parameters; the version is our own int.
            conn.execute(f"PRAGMA user_version = {int(step.version)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return target


def _check_ordered(migrations: Sequence[Migration]) -> None:
    for expected, step in enumerate(migrations, start=1):
        if step.version != expected:
            raise ConfigError(
                f"migration {step.description!r} has version {step.version}, expected {expected}"
            )


def ts_text(dt: datetime) -> str:
    """Aware UTC ISO-8601 with a fixed width, so text order is time order."""
    return utc(dt).isoformat(timespec="microseconds")


def ts_parse(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
