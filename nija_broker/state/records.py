"""The store's values: what goes in (:class:`StoreBatch`, intents, journal rows) and what
comes out (:class:`AccountSnapshot`), with the SQL of the intent and decision tables.

Plain data, checked when built: a batch never mixes accounts (DESIGN invariant 1).
:mod:`nija_broker.state.store` re-exports every public name here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from nija_broker.core.errors import StateError
from nija_broker.core.models import EquityPoint, Fill, Order, Position, Side, TradeRecord
from nija_broker.core.perf_stats import Totals
from nija_broker.core.symbols import normalize_symbol
from nija_broker.state.schema import ts_parse, ts_text

__all__ = [
    "INTENT_STATUSES",
    "AccountSnapshot",
    "BatchResult",
    "BreakerRecord",
    "DecisionRecord",
    "Intent",
    "IntentStatus",
    "IntentUpdate",
    "PauseRecord",
    "StoreBatch",
    "check_intent_status",
    "decision_row",
    "intent_row",
    "select_pending",
    "update_intent",
]

IntentStatus = Literal["pending", "sent", "resolved", "released"]
INTENT_STATUSES: frozenset[str] = frozenset(get_args(IntentStatus))
# "sent" is still unresolved: the request left, but the exchange's answer was
# never recorded, so a restart must look the order up by its clientOrderId.
_UNRESOLVED: tuple[str, ...] = ("pending", "sent")
_INTENT_NEXT: dict[str, frozenset[str]] = {
    "pending": frozenset(INTENT_STATUSES),
    "sent": frozenset({"sent", "resolved", "released"}),
    "resolved": frozenset({"resolved"}),
    "released": frozenset({"released"}),
}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """An order the guard let through, journaled before the request left."""

    account_id: str
    client_order_id: str
    status: IntentStatus
    request_json: str
    created_at: datetime
    updated_at: datetime
    order_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentUpdate:
    """A status change of one intent, applied as part of a :class:`StoreBatch`."""

    client_order_id: str
    status: IntentStatus
    at: datetime
    order_id: str | None = None

    def __post_init__(self) -> None:
        check_intent_status(self.status)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord:
    """One guard decision. ``id`` is assigned by the store (``None`` until read back)."""

    account_id: str
    ts: datetime
    allowed: bool
    client_order_id: str | None = None
    symbol: str | None = None
    side: Side | None = None
    rule: str | None = None
    reason: str | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerRecord:
    """One circuit breaker event: ``kind`` is ``tripped``, ``resumed`` (its figures
    recovered or its time ran out) or ``manual_resume`` (``figures`` hold the mark)."""

    account_id: str
    ts: datetime
    rule: str
    kind: str
    reason: str
    figures: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseRecord:
    """The trader paused (``kind`` ``paused``) or resumed (``resumed``) an account's
    entries: who (``by``), when, and why."""

    account_id: str
    ts: datetime
    kind: str
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreBatch:
    """Everything one reconcile step of one account changed, written in one transaction.

    Every item must belong to ``account_id``; a batch that mixes accounts
    cannot be built (:class:`StateError`). Positions are upserted, then the
    positions of ``closed_symbols`` deleted; a symbol may not be in both.
    """

    account_id: str
    orders: Sequence[Order] = ()
    fills: Sequence[Fill] = ()
    covered_fills: Sequence[Fill] = ()
    """Trades recognised as already booked under a cumulative key: stored as seen only."""
    replace_trades_of: Sequence[str] = ()
    """Symbols whose stored trades are deleted before ``trades`` are inserted (a symbol
    re-booked in exchange time order after a late fill)."""
    trades: Sequence[TradeRecord] = ()
    positions: Sequence[Position] = ()
    closed_symbols: Sequence[str] = ()
    equity_points: Sequence[EquityPoint] = ()
    intents: Sequence[IntentUpdate] = ()
    decisions: Sequence[DecisionRecord] = ()

    def __post_init__(self) -> None:
        if not self.account_id.strip():
            raise StateError("a store batch needs an account_id")
        for name in (
            "orders",
            "fills",
            "covered_fills",
            "trades",
            "positions",
            "equity_points",
            "decisions",
        ):
            items = tuple(getattr(self, name))
            object.__setattr__(self, name, items)
            for item in items:
                if item.account_id != self.account_id:
                    raise StateError(
                        f"batch for account {self.account_id!r} holds {name[:-1]} of account "
                        f"{item.account_id!r}; accounts are never written together"
                    )
        object.__setattr__(self, "intents", tuple(self.intents))
        closed = tuple(normalize_symbol(s) for s in self.closed_symbols)
        object.__setattr__(self, "closed_symbols", closed)
        both = set(closed) & {p.symbol for p in self.positions}
        if both:
            raise StateError(
                f"batch for account {self.account_id!r} both updates and closes {sorted(both)}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """What a batch actually added: replays come back with empty tuples."""

    new_fill_keys: tuple[str, ...] = ()
    new_trade_ids: tuple[str, ...] = ()
    orders_saved: int = 0
    equity_points_added: int = 0
    decisions_journaled: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSnapshot:
    """Stored state of one account, enough to rebuild its trackers after a restart.

    Whole (``Store.load_account`` without ``since``), or bounded: the orders live
    or changed since ``since``, the fill keys of fills since then and of those
    orders, the last ``recent`` trades and equity points, and ``totals``, the
    accumulators of the whole history, so the figures stay those of all of it.
    """

    account_id: str
    orders: tuple[Order, ...]
    fill_keys: frozenset[str]
    order_fills: Mapping[str, tuple[float, float, float]]
    """Per order id: base amount booked, of which under cumulative keys, and covered trades."""
    trades: tuple[TradeRecord, ...]
    positions: tuple[Position, ...]
    equity_points: tuple[EquityPoint, ...]
    pending_intents: tuple[Intent, ...]
    totals: Totals = field(default_factory=Totals)
    """The accumulators of every trade and equity point ever stored (not only those here)."""
    fill_key_times: Mapping[str, datetime] = field(default_factory=dict, compare=False)
    """``fill_keys`` with the time of each fill."""
    since: datetime | None = None
    """Bounded: every stored key of a fill stamped at or after this is in ``fill_keys``."""
    complete: bool = True
    """Whether trades and equity points are the whole history (not only the last ones)."""


# --------------------------------------------------------------------------- intents, journal

INSERT_DECISION = """
INSERT INTO guard_decisions (account_id, ts, client_order_id, symbol, side, allowed, rule,
                             reason, figures)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
INTENT_COLUMNS = (
    "account_id, client_order_id, status, request_json, created_at, updated_at, order_id"
)


def decision_row(d: DecisionRecord) -> tuple[Any, ...]:
    # Figures may hold inf (a profit factor with no losses); json writes it as
    # Infinity and reads it back.
    figures = json.dumps(dict(d.figures), sort_keys=True)
    side = d.side.value if d.side is not None else None
    symbol = normalize_symbol(d.symbol) if d.symbol is not None else None
    return (
        d.account_id,
        ts_text(d.ts),
        d.client_order_id,
        symbol,
        side,
        int(d.allowed),
        d.rule,
        d.reason,
        figures,
    )


def intent_row(row: tuple[Any, ...]) -> Intent:
    return Intent(
        account_id=row[0],
        client_order_id=row[1],
        status=row[2],
        request_json=row[3],
        created_at=ts_parse(row[4]),
        updated_at=ts_parse(row[5]),
        order_id=row[6],
    )


def check_intent_status(status: str) -> None:
    if status not in INTENT_STATUSES:
        raise StateError(f"intent status must be one of {sorted(INTENT_STATUSES)}, not {status!r}")


def update_intent(conn: sqlite3.Connection, account_id: str, update: IntentUpdate) -> None:
    row = conn.execute(
        "SELECT status FROM intents WHERE account_id = ? AND client_order_id = ?",
        (account_id, update.client_order_id),
    ).fetchone()
    if row is None:
        raise StateError(
            f"no intent {update.client_order_id!r} journaled for account {account_id!r}"
        )
    if update.status not in _INTENT_NEXT[row[0]]:
        raise StateError(
            f"intent {update.client_order_id!r} of account {account_id!r} cannot go from "
            f"{row[0]!r} to {update.status!r}"
        )
    conn.execute(
        "UPDATE intents SET status = ?, updated_at = ?, order_id = COALESCE(?, order_id)"
        " WHERE account_id = ? AND client_order_id = ?",
        (update.status, ts_text(update.at), update.order_id, account_id, update.client_order_id),
    )


def select_pending(conn: sqlite3.Connection, account_id: str) -> list[Intent]:
    rows = conn.execute(
        f"SELECT {INTENT_COLUMNS} FROM intents WHERE account_id = ? AND status IN (?, ?)"
        " ORDER BY created_at, client_order_id",
        (account_id, *_UNRESOLVED),
    )
    return [intent_row(r) for r in rows]
