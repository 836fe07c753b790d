"""The status rows as a terminal table: what a trader reads first, fitted to a width.

Every column a row has is known here; ``width`` decides which are shown. The
columns a trader checks first (account, tier, equity in its quote currency,
held %, open orders, positions, drawdown, sync, and the ``NOTES`` on pauses,
tripped breakers, unvalued holdings and the last block) are always there; the
others join in a fixed order of importance while they fit, and ``NOTES`` takes
the room left. Without a width every column is shown (``status --wide``).

Widths are display cells (:mod:`nija_broker.service.terminal`); colour, when
asked for, is added after the padding so it never shifts a column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from nija_broker.core.clock import utc
from nija_broker.service.terminal import (
    BOLD,
    DIM,
    GREEN,
    MAGENTA,
    RED,
    YELLOW,
    clean,
    display_width,
    pad,
    paint,
    truncate,
)

if TYPE_CHECKING:
    from nija_broker.service.status import AccountStatus

__all__ = ["render_table"]

UNKNOWN = "-"
ACCOUNT_MAX = 16
"""Cells an account id may take in a fitted table (longer ones keep both ends)."""
NOTES_RESERVE = 32
"""Cells kept for ``NOTES`` before an optional column may join a fitted table."""
_GAP = "  "

_Segment = tuple[str, str]  # (text, SGR style; "" for none)
_Cell = tuple[_Segment, ...]


@dataclass(frozen=True)
class _Context:
    shown: frozenset[str]
    now: datetime | None
    quote_width: int


@dataclass(frozen=True)
class _Column:
    header: str
    right: bool
    cell: Callable[[AccountStatus, _Context], _Cell]
    priority: int | None = None
    """``None``: always shown; else the order in which optional columns join."""


def render_table(
    rows: Sequence[AccountStatus],
    *,
    width: int | None = None,
    color: bool = False,
    now: datetime | None = None,
) -> str:
    """One line per account under a header; unknown figures show ``-``.

    ``width``: the cells a line may take (every column when ``None``); the first
    columns always show, so only figures too wide for 80 cells (a seven-digit
    equity and a 16-cell id together) make a line wider. ``now`` turns times into
    ages (``12s ago``). ``color`` adds ANSI colour.
    """
    if not rows:
        return "no accounts\n"
    now = utc(now) if now is not None else None
    quote_width = max(display_width(clean(r.quote_currency or "")) for r in rows)
    shown = _fit(rows, width, now, quote_width)
    context = _Context(frozenset(c.header for c in shown), now, quote_width)
    header: list[_Cell] = [((c.header, BOLD),) for c in shown]
    cells = [header, *([c.cell(row, context) for c in shown] for row in rows)]
    widths = _widths(shown, cells, width)
    lines = []
    for line in cells:
        parts = []
        for column, cell, cells_wide in zip(shown, line, widths, strict=True):
            text, styled = _render_cell(cell, cells_wide, color, middle=column.header == "ACCOUNT")
            gap = cells_wide - display_width(text)
            parts.append(" " * gap + styled if column.right else styled + " " * gap)
        lines.append(_GAP.join(parts).rstrip())
    return "\n".join(lines) + "\n"


def _fit(
    rows: Sequence[AccountStatus], width: int | None, now: datetime | None, quote_width: int
) -> list[_Column]:
    """The columns shown: the required ones, then optional ones while they fit."""
    if width is None:
        return list(_COLUMNS)
    chosen = {c.header for c in _COLUMNS if c.priority is None}
    optional = sorted((c for c in _COLUMNS if c.priority is not None), key=_priority)
    for column in optional:
        trial = [c for c in _COLUMNS if c.header in chosen | {column.header}]
        context = _Context(frozenset(c.header for c in trial), now, quote_width)
        if _needed(trial, rows, context) <= width:
            chosen.add(column.header)
    return [c for c in _COLUMNS if c.header in chosen]


def _priority(column: _Column) -> int:
    return column.priority if column.priority is not None else -1


def _needed(columns: Sequence[_Column], rows: Sequence[AccountStatus], context: _Context) -> int:
    """Cells a line takes with ``columns``, ``NOTES`` counted at what it is kept."""
    total = len(_GAP) * (len(columns) - 1)
    for column in columns:
        natural = max(
            display_width(column.header),
            *(_cell_width(column.cell(row, context)) for row in rows),
        )
        if column.header == "ACCOUNT":
            natural = min(natural, max(ACCOUNT_MAX, len(column.header)))
        elif column.header == "NOTES":
            # A fixed share, not the notes' own width: which columns show must not
            # change from one redraw to the next because a block was noted.
            natural = NOTES_RESERVE
        total += natural
    return total


def _widths(columns: Sequence[_Column], cells: list[list[_Cell]], width: int | None) -> list[int]:
    widths = [max(_cell_width(line[i]) for line in cells) for i in range(len(columns))]
    if width is None:
        return widths
    for i, column in enumerate(columns):
        if column.header == "ACCOUNT":
            widths[i] = min(widths[i], ACCOUNT_MAX)
    notes = next(i for i, c in enumerate(columns) if c.header == "NOTES")
    others = sum(w for i, w in enumerate(widths) if i != notes) + len(_GAP) * (len(columns) - 1)
    widths[notes] = max(len("NOTES"), min(widths[notes], width - others))
    return widths


def _cell_width(cell: _Cell) -> int:
    return sum(display_width(text) for text, _ in cell)


def _render_cell(cell: _Cell, width: int, color: bool, *, middle: bool) -> tuple[str, str]:
    """The cell cut to ``width`` cells: its plain text and the same text painted."""
    plain = "".join(text for text, _ in cell)
    if display_width(plain) <= width:
        return plain, "".join(paint(text, style, color) for text, style in cell)
    if middle:  # one segment (an account id): cut inside it, painted whole
        cut = truncate(plain, width, middle=True)
        return cut, paint(cut, cell[0][1], color)
    cut = truncate(plain, width)
    # The kept head, painted segment by segment as far as it reaches, then the ellipsis.
    out, used = [], 0
    for text, style in cell:
        piece = cut[used : used + len(text)]
        if not piece:
            break
        out.append(paint(piece, style, color))
        used += len(piece)
    out.append(cut[used:])
    return cut, "".join(out)


# ---------------------------------------------------------------------------- cells


def _plain(text: str, style: str = "") -> _Cell:
    return ((text, style),)


def _account(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(clean(row.account_id))


def _tier(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(clean(row.tier) if row.tier else UNKNOWN)


def _equity(row: AccountStatus, ctx: _Context) -> _Cell:
    if row.equity_usd is None:
        return _plain(UNKNOWN)
    return _plain(_amount(row.equity_usd, row.quote_currency, ctx.quote_width))


def _held(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(_amount(row.held_capital_usd, row.quote_currency, ctx.quote_width))


def _amount(value: float, quote: str | None, quote_width: int) -> str:
    """``10,050.85 USDT``: the quote's own code, never ``$`` (USDT is not the dollar).
    Codes are padded to one width so the figures line up on their decimal point."""
    figure = f"{value:,.2f}"
    if not quote_width:
        return figure
    return f"{figure} {pad(clean(quote or ''), quote_width)}"


def _held_pct(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(UNKNOWN if row.held_share_pct is None else f"{row.held_share_pct:.1f}%")


def _open(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(str(row.open_orders))


def _stale(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(str(row.stale_orders), YELLOW if row.stale_orders else "")


def _stale_cancels(row: AccountStatus, ctx: _Context) -> _Cell:
    # Counted by a running sidecar; read from the store (no sync) it is not known.
    return _plain(UNKNOWN if row.stale_cancels is None else str(row.stale_cancels))


def _positions(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(UNKNOWN if row.positions is None else str(row.positions))


def _double(row: AccountStatus, ctx: _Context) -> _Cell:
    n = row.double_reservations
    return _plain(str(n), YELLOW if n else "")


def _fragmented(row: AccountStatus, ctx: _Context) -> _Cell:
    if row.fragmented is None:
        return _plain(UNKNOWN)
    return _plain("YES", YELLOW) if row.fragmented else _plain("no")


def _drawdown(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(f"{row.drawdown_pct:.1f}%")


def _max_drawdown(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(f"{row.max_drawdown_pct:.1f}%")


def _expectancy(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(f"{row.expectancy_usd:+,.2f}")


def _trades(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(str(row.trades))


_SYNC_STYLES = {"ok": GREEN, "failed": f"{BOLD};{RED}", "degraded": YELLOW, "syncing": YELLOW}


def _sync(row: AccountStatus, ctx: _Context) -> _Cell:
    state = row.sync or "offline"
    failures = f" x{row.consecutive_failures}" if row.consecutive_failures else ""
    return _plain(f"{clean(state)}{failures}", _SYNC_STYLES.get(state, DIM))


def _last_sync(row: AccountStatus, ctx: _Context) -> _Cell:
    if row.last_sync is None:
        return _plain("never", DIM)
    return _plain(_when(row.last_sync, ctx.now))


def _exchange(row: AccountStatus, ctx: _Context) -> _Cell:
    return _plain(clean(row.exchange) if row.exchange else UNKNOWN)


def _weight(row: AccountStatus, ctx: _Context) -> _Cell:
    """``planned/spent`` request weight a minute (``220/214``); ``-`` for what is unknown."""
    if row.weight_planned_per_min is None:
        return _plain(UNKNOWN)
    spent = row.weight_spent_last_min
    return _plain(
        f"{row.weight_planned_per_min:.0f}/{UNKNOWN if spent is None else f'{spent:.0f}'}"
    )


def _unvalued(row: AccountStatus, ctx: _Context) -> _Cell:
    if not row.unvalued_holdings:
        return _plain(UNKNOWN)
    return _plain(clean(",".join(row.unvalued_holdings)), YELLOW)


def _breakers(row: AccountStatus, ctx: _Context) -> _Cell:
    """The tripped breakers by name, else how many are armed (``armed 5``), else ``-``."""
    if row.breakers_tripped:
        return _plain(clean(",".join(row.breakers_tripped)), f"{BOLD};{RED}")
    return _plain(f"armed {len(row.breakers_armed)}" if row.breakers_armed else UNKNOWN)


def _notes(row: AccountStatus, ctx: _Context) -> _Cell:
    """What stops or stopped an entry, most pressing first: the pause, tripped breakers and
    unvalued holdings (when their own columns are not shown), the last block."""
    notes: list[_Segment] = []
    if row.paused:
        by = f" by {clean(row.paused_by)}" if row.paused_by else ""
        at = f" {_when(row.paused_at, ctx.now)}" if row.paused_at else ""
        why = f": {clean(row.pause_reason)}" if row.pause_reason else ""
        notes.append((f"PAUSED{by}{at}{why}", f"{BOLD};{YELLOW}"))
    if row.breakers_tripped and "BREAKERS" not in ctx.shown:
        notes.append((f"tripped {clean(','.join(row.breakers_tripped))}", f"{BOLD};{RED}"))
    if row.unvalued_holdings and "UNVALUED" not in ctx.shown:
        notes.append((f"unvalued {clean(','.join(row.unvalued_holdings))}", YELLOW))
    block = row.last_block
    if block:
        words = [
            "blocked",
            clean(str(block.get("rule") or "?")),
            *([clean(str(block["symbol"]))] if block.get("symbol") else []),
            *([_when(str(block["at"]), ctx.now)] if block.get("at") else []),
        ]
        notes.append((" ".join(words), f"{BOLD};{MAGENTA}"))
    if not notes:
        return _plain(UNKNOWN)
    joined: list[_Segment] = []
    for i, note in enumerate(notes):
        if i:
            joined.append(("; ", ""))
        joined.append(note)
    return tuple(joined)


def _when(iso: str, now: datetime | None) -> str:
    """An ISO time as an age (``12s ago``) when ``now`` is known, else in UTC
    (``2026-03-01 09:00:00Z``)."""
    try:
        moment = utc(datetime.fromisoformat(iso))
    except ValueError:
        return clean(iso)
    if now is None:
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


_COLUMNS: tuple[_Column, ...] = (
    _Column("ACCOUNT", False, _account),
    _Column("TIER", False, _tier),
    _Column("EQUITY", True, _equity),
    _Column("HELD", True, _held, priority=6),
    _Column("HELD%", True, _held_pct),
    _Column("OPEN", True, _open),
    _Column("STALE", True, _stale, priority=1),
    _Column("CXL", True, _stale_cancels, priority=7),
    _Column("POS", True, _positions),
    _Column("DOUBLE", True, _double, priority=10),
    _Column("FRAG", False, _fragmented, priority=11),
    _Column("DD%", True, _drawdown),
    _Column("MAX DD%", True, _max_drawdown, priority=3),
    _Column("EXPECT", True, _expectancy, priority=5),
    _Column("TRADES", True, _trades, priority=4),
    _Column("SYNC", False, _sync),
    _Column("LAST SYNC", False, _last_sync, priority=2),
    _Column("NOTES", False, _notes),
    _Column("EXCHANGE", False, _exchange, priority=12),
    _Column("WEIGHT/MIN", True, _weight, priority=13),
    _Column("UNVALUED", False, _unvalued, priority=8),
    _Column("BREAKERS", False, _breakers, priority=9),
)
