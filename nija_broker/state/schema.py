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

Before anything is written to an existing file, :func:`check_file` asks
SQLite whether it is ours: ``PRAGMA quick_check`` for damage, ``PRAGMA
user_version`` for the version, and the file's tables and columns against
those the migrations up to that version create (built in memory, so the
check can never drift from the migrations). A damaged file, a file that is
not SQLite, or another program's database is refused, never migrated into.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nija_broker.core.clock import utc
from nija_broker.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    run: Callable[[sqlite3.Connection], None] | None = None
    """Python run after the statements, in the same transaction (data SQL cannot compute)."""


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
        "ALTER TABLE fills ADD COLUMN covered INTEGER NOT NULL DEFAULT 0 CHECK (covered IN (0, 1))",
        "UPDATE fills SET amount = json_extract(json, '$.amount')",
        "CREATE INDEX fills_by_order ON fills (account_id, order_id)",
    ),
)

_V4_BREAKERS = Migration(
    version=4,
    description="circuit breaker trips and resumes",
    statements=(
        """
        CREATE TABLE breaker_events (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            ts         TEXT NOT NULL,
            rule       TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('tripped', 'resumed', 'manual_resume')),
            reason     TEXT NOT NULL,
            figures    TEXT NOT NULL
        )
        """,
        "CREATE INDEX breaker_events_by_account ON breaker_events (account_id, id)",
    ),
)


def _fold_stored_history(conn: sqlite3.Connection) -> None:
    # Imported here: the fold needs the store's row helpers, which import this module.
    from nija_broker.state.totals import rebuild_all

    rebuild_all(conn)


_V5_BOUNDED_STARTUP = Migration(
    version=5,
    description="performance accumulators per account; fills indexed by time and symbol",
    statements=(
        # One row per account: the TradeStats and EquityCurve of its whole history, updated
        # in the transaction of every trade and equity point, so a restart reads one row
        # instead of replaying every trade (start-up flat in the age of the account).
        """
        CREATE TABLE performance_totals (
            account_id TEXT PRIMARY KEY,
            json       TEXT NOT NULL
        )
        """,
        # The fill keys a restart loads: those of recent fills.
        "CREATE INDEX fills_by_time ON fills (account_id, ts)",
        # Per symbol, the latest fill booked, found without reading every fill.
        "CREATE INDEX fills_by_symbol_time ON fills (account_id, covered, symbol, ts)",
    ),
    run=_fold_stored_history,
)

_V6_PAUSES = Migration(
    version=6,
    description="the trader's pauses and resumes of an account's entries",
    statements=(
        # Append-only: the last row of an account says whether it is paused now, and by
        # whom; the rows before it are the journal of who paused and resumed it when.
        """
        CREATE TABLE account_pauses (
            id         INTEGER PRIMARY KEY AUTOINCREMENT,
            account_id TEXT NOT NULL,
            ts         TEXT NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('paused', 'resumed')),
            by_whom    TEXT NOT NULL,
            reason     TEXT NOT NULL
        )
        """,
        "CREATE INDEX account_pauses_by_account ON account_pauses (account_id, id)",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _V1_STATE,
    _V2_GUARD,
    _V3_TRADE_FILLS,
    _V4_BREAKERS,
    _V5_BOUNDED_STARTUP,
    _V6_PAUSES,
)
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
            raise _newer(where, current, target)
        for step in migrations:
            if step.version <= current:
                continue
            for statement in step.statements:
                conn.execute(statement)
            if step.run is not None:
                step.run(conn)
            # PRAGMA takes no bound parameters; the version is our own int.
            conn.execute(f"PRAGMA user_version = {int(step.version)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return target


def _newer(where: str, version: int, target: int) -> ConfigError:
    return ConfigError(
        f"{where} has schema version {version}, newer than this code "
        f"understands (up to {target}); upgrade nija_broker or use another file",
        file=where,
    )


Layout = tuple[tuple[str, tuple[str, ...]], ...]
"""Every schema object but SQLite's own, sorted: ("table orders", its columns), ..."""


def layout(conn: sqlite3.Connection) -> Layout:
    objects = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger')"
        " AND substr(name, 1, 7) != 'sqlite_' ORDER BY type, name"
    ).fetchall()
    found: list[tuple[str, tuple[str, ...]]] = []
    for kind, name in objects:
        columns: tuple[str, ...] = ()
        if kind == "table":
            columns = tuple(
                r[0]
                for r in conn.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid", (name,))
            )
        found.append((f"{kind} {name}", columns))
    return tuple(found)


@functools.cache
def expected_layout(migrations: tuple[Migration, ...], version: int) -> Layout:
    """The layout the first ``version`` migrations create, built in an in-memory database."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn, migrations=migrations[:version])
        return layout(conn)
    finally:
        conn.close()


def check_file(
    conn: sqlite3.Connection,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    where: str = "database",
) -> int:
    """Refuse a damaged file, a file that is not SQLite, or another program's database.

    Reads only; call it before anything writes to the file (even ``PRAGMA
    journal_mode`` rewrites the header). Returns the file's schema version. An
    empty database (a new or zero-length file) is version 0 and passes.
    """
    target = migrations[-1].version if migrations else 0
    try:
        problems = [str(r[0]) for r in conn.execute("PRAGMA quick_check(3)")]
        version = schema_version(conn)
        found = layout(conn)
    except sqlite3.DatabaseError as exc:
        # SQLITE_NOTADB: no SQLite header at all; anything else here is damage.
        what = (
            "is not an SQLite database"
            if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB"
            else "is damaged"
        )
        raise ConfigError(f"cannot use store {where}: the file {what} ({exc})", file=where) from exc
    if problems != ["ok"]:
        detail = "; ".join(" ".join(p.split()) for p in problems)
        raise ConfigError(
            f"cannot use store {where}: the file is damaged (SQLite's quick_check: {detail})",
            file=where,
        )
    if version > target:
        raise _newer(where, version, target)
    expected = expected_layout(tuple(migrations), version)
    if found != expected:
        raise ConfigError(
            f"cannot use store {where}: {_foreign(found, expected, version)}; "
            "it is not a nija_broker store (use another store.path)",
            file=where,
        )
    return version


def _foreign(found: Layout, expected: Layout, version: int) -> str:
    have, want = dict(found), dict(expected)
    parts = [f"schema version {version}"]
    if extra := sorted(set(have) - set(want)):
        parts.append("not ours: " + ", ".join(extra))
    if missing := sorted(set(want) - set(have)):
        parts.append("missing: " + ", ".join(missing))
    if changed := sorted(k for k in set(have) & set(want) if have[k] != want[k]):
        parts.append("other columns: " + ", ".join(changed))
    return "the file holds another schema (" + "; ".join(parts) + ")"


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
