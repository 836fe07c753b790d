"""The performance accumulators of each account, kept in the store next to what they fold.

A restart must give the figures of the account's whole history (expectancy,
win rate, streaks, drawdown, Sharpe: DESIGN's "Words and formulas") without
reading that history. Every write that adds trades or equity points folds them
into the account's :class:`~nija_broker.core.perf_stats.Totals` in the same
transaction, in the order they are inserted (which is the order a replay reads
them: by id), so the stored accumulators are always exactly those a full replay
builds. A write that replaces a symbol's trades (a late fill booked again in
exchange time order) folds the account's trades again from the start, the one
way streaks and extremes can come out exact; that path is rare and already
replays the symbol's fills.

Every function here runs inside a transaction opened by the store.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from nija_broker.core.models import EquityPoint, TradeRecord
from nija_broker.core.perf_stats import Totals, TradeStats
from nija_broker.state.schema import ts_parse

__all__ = ["fold", "read", "rebuild_all", "write"]


def read(conn: sqlite3.Connection, account_id: str) -> Totals:
    """The stored accumulators of ``account_id`` (empty ones if it has none yet)."""
    row = conn.execute(
        "SELECT json FROM performance_totals WHERE account_id = ?", (account_id,)
    ).fetchone()
    return Totals() if row is None else Totals.from_dict(json.loads(row[0]))


def write(conn: sqlite3.Connection, account_id: str, totals: Totals) -> None:
    conn.execute(
        "INSERT INTO performance_totals (account_id, json) VALUES (?, ?)"
        " ON CONFLICT (account_id) DO UPDATE SET json = excluded.json",
        (account_id, json.dumps(totals.to_dict(), sort_keys=True)),
    )


def _all_trades(conn: sqlite3.Connection, account_id: str) -> Iterable[TradeRecord]:
    rows = conn.execute("SELECT json FROM trades WHERE account_id = ? ORDER BY id", (account_id,))
    return (TradeRecord.model_validate_json(r[0]) for r in rows)


def fold(
    conn: sqlite3.Connection,
    account_id: str,
    trades: Sequence[TradeRecord],
    points: Sequence[EquityPoint],
    *,
    trades_replaced: bool = False,
) -> None:
    """Fold the trades and points just inserted for ``account_id`` into its accumulators.

    ``trades`` are those the insert took as new, in insertion order. With
    ``trades_replaced`` the trade figures are folded again from every stored trade.
    """
    if not trades and not points and not trades_replaced:
        return
    totals = read(conn, account_id)
    if trades_replaced:
        totals.stats = TradeStats()
        trades = list(_all_trades(conn, account_id))
    for trade in trades:
        totals.stats.add(trade)
    for point in points:
        totals.curve.add(point.timestamp, point.equity)
    write(conn, account_id, totals)


def rebuild_all(conn: sqlite3.Connection) -> None:
    """Migration step: the accumulators of every account from the rows already stored."""
    accounts = [
        r[0]
        for r in conn.execute(
            "SELECT account_id FROM trades UNION SELECT account_id FROM equity_points"
        )
    ]
    for account_id in accounts:
        totals = Totals()
        for trade in _all_trades(conn, account_id):
            totals.stats.add(trade)
        rows = conn.execute(
            "SELECT ts, equity FROM equity_points WHERE account_id = ? ORDER BY id", (account_id,)
        )
        for ts, equity in rows:
            totals.curve.add(ts_parse(ts), equity)
        write(conn, account_id, totals)
