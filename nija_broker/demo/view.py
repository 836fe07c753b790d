"""What the demo shows: an event log a trader can read, a live per-account table, a summary.

:func:`describe` turns a reconciler event into one log line (or ``None`` for
events not worth a line); it is pure. :class:`DemoView` owns the terminal: on a
TTY it redraws the table and the latest events in place, otherwise it prints
log lines as they come and the table every few seconds, so a captured run
(a CI log, a test) reads top to bottom.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from nija_broker.core.events import (
    BalancesUpdated,
    Event,
    HealthChanged,
    OrderAdopted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    StaleOrderFound,
)
from nija_broker.core.models import AccountMetrics, Order, OrderType, TradeRecord
from nija_broker.service.status import AccountStatus, render_table
from nija_broker.service.terminal import (
    BOLD,
    CYAN,
    DEFAULT_WIDTH,
    GREEN,
    MAGENTA,
    RED,
    YELLOW,
    clean,
    display_width,
    paint,
    terminal_size,
    truncate,
)

__all__ = [
    "AccountTally",
    "DemoView",
    "describe",
    "line",
    "order_text",
    "summary_lines",
    "trade_line",
]

_LABEL_WIDTH = 9


def _amount(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".")


def _price(value: float | None) -> str:
    return "market" if value is None else f"{value:,.2f}"


def order_text(order: Order) -> str:
    """``buy 0.0005 BTC/USDT @ 51,000.00 limit`` — what an order is, in one phrase."""
    kind = order.type.value.replace("_", " ")
    price = order.price if order.type is not OrderType.MARKET else None
    return f"{order.side.value} {_amount(order.amount)} {order.symbol} @ {_price(price)} {kind}"


def line(label: str, account_id: str, text: str) -> str:
    return f"{label:<{_LABEL_WIDTH}} {account_id:<11} {text}"


def trade_line(trade: TradeRecord) -> str:
    """A closed round trip: what, entry and exit, net result after fees."""
    net = trade.net_pnl if trade.net_pnl is not None else trade.pnl - trade.fees
    return line(
        "TRADE",
        trade.account_id,
        f"{trade.symbol} {_amount(trade.quantity)} closed "
        f"{trade.entry_price:,.2f} -> {trade.exit_price:,.2f}: net {net:+,.2f} after "
        f"{trade.fees:,.2f} fees",
    )


def describe(event: Event, tiers: dict[str, str]) -> str | None:
    """One log line for ``event``; ``tiers`` (account -> last tier seen) is updated in place."""
    account = event.account_id
    if isinstance(event, OrderAdopted):
        return line(
            "ADOPTED",
            account,
            f"{order_text(event.order)} [{event.order.role.value}] "
            f"placed outside nija_broker (order {event.order.id}); now tracked",
        )
    if isinstance(event, OrderFilled):
        average = event.order.average or event.order.price
        return line(
            "FILLED",
            account,
            f"{order_text(event.order)}, filled at {_price(average)} (order {event.order.id})",
        )
    if isinstance(event, OrderPartiallyFilled):
        return line(
            "PARTIAL",
            account,
            f"{order_text(event.order)}, "
            f"{_amount(event.order.filled)} filled so far (order {event.order.id})",
        )
    if isinstance(event, OrderCancelled | OrderExpired | OrderRejected):
        status = event.order.status.value.upper()
        return line(
            status,
            account,
            f"{order_text(event.order)} (order {event.order.id}), confirmed by the exchange",
        )
    if isinstance(event, StaleOrderFound):
        age_s = (event.at - event.order.created_at).total_seconds()
        # What is done first: on a narrow screen the line is cut at its end.
        verb = "cancelling" if event.action == "cancel" else "alerting on"
        return line(
            "STALE",
            account,
            f"{verb} {order_text(event.order)}: rested {age_s:.1f}s, "
            f"past the tier's {event.max_age_s:g}s limit (order {event.order.id})",
        )
    if isinstance(event, BalancesUpdated):
        if tiers.get(account) == event.tier:
            return None
        tiers[account] = event.tier
        return line("TIER", account, f"{event.tier} at equity {event.equity_usd:,.2f}")
    if isinstance(event, HealthChanged):
        health = event.health
        error = f" ({health.last_error})" if health.last_error else ""
        return line("SYNC", account, f"{health.state.value}{error}")
    return None


@dataclass
class AccountTally:
    """What the demo saw happen to one account (never summed across accounts)."""

    blocked: Counter[str] = field(default_factory=Counter)
    adopted: int = 0
    stale_cancelled: int = 0
    cancelled: int = 0

    def count(self, event: Event) -> None:
        if isinstance(event, OrderAdopted):
            self.adopted += 1
        elif isinstance(event, OrderCancelled):
            self.cancelled += 1
        elif isinstance(event, StaleOrderFound) and event.action == "cancel":
            self.stale_cancelled += 1


@dataclass(frozen=True)
class _Entry:
    label: str
    text: str  # stamped: ``[  3.5s] BLOCKED   USER:alice  ...``


_KEY_LABELS = frozenset(
    {"BLOCKED", "REFUSED", "STALE", "ADOPTED", "CANCELLED", "EXPIRED", "REJECTED"}
    | {"FILLED", "PARTIAL", "TRADE", "PAUSED", "RESUMED"}
)
"""What the trader must not miss: the guard's answers, the reconciler's actions, fills."""
_PINNED_LABELS = frozenset(
    {"BLOCKED", "REFUSED", "STALE", "ADOPTED", "CANCELLED", "PAUSED", "RESUMED"}
)
"""Key events kept on screen first: rare, and a flurry of fills must not push them off."""
_LABEL_STYLES = {
    "BLOCKED": f"{BOLD};{MAGENTA}",
    "REFUSED": f"{BOLD};{RED}",
    "STALE": f"{BOLD};{YELLOW}",
    "CANCELLED": YELLOW,
    "EXPIRED": YELLOW,
    "REJECTED": RED,
    "ADOPTED": f"{BOLD};{CYAN}",
    "FILLED": GREEN,
    "PARTIAL": GREEN,
    "TRADE": BOLD,
    "PAUSED": f"{BOLD};{YELLOW}",
    "RESUMED": YELLOW,
    "SYNC": YELLOW,
    "NOTE": YELLOW,
}
_HOME = "\x1b[H"  # cursor home; each line is then erased and written
_ERASE_LINE = "\x1b[K"
_ERASE_BELOW = "\x1b[J"
_STAMP_WIDTH = len("[  0.0s] ")
_FALLBACK_SIZE = (DEFAULT_WIDTH, 24)


class DemoView:
    """The demo's terminal: a log of events and a per-account table, redrawn or printed.

    On a TTY each redraw fills the screen from the top and never scrolls: the
    ``keep`` lines of the intro, the table fitted to the terminal's width, a pane of
    the key events (blocks, stale cancels, adoptions first, then fills and trades)
    and a pane of the latest other lines, every line cut to the width. At 80x24 or
    100 columns the blocks stay in view however many fills follow. :meth:`replay`
    prints the whole log at the end. Off a TTY, log lines are printed whole as they
    come and the table (100 columns) every ``table_every_s``, so a captured run (a CI
    log, a test) reads top to bottom. ``color`` paints labels and table cells.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool,
        table_every_s: float,
        color: bool = False,
        size: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.stream = stream
        self.interactive = interactive
        self.table_every_s = table_every_s
        self.color = color
        self._size = size or (lambda: terminal_size(stream) or _FALLBACK_SIZE)
        self._heading: list[str] = []
        self._log: list[_Entry] = []
        self._last_table_at = -math.inf

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def intro(self, text: str, *, keep: bool = False) -> None:
        """Print ``text`` now; with ``keep`` it also heads every redraw on a TTY."""
        if keep:
            self._heading.append(text)
        self.write(text)

    def log(self, elapsed_s: float, text: str) -> None:
        # Cleaned once: reasons come from exchanges, and an escape in one must not
        # redraw the trader's terminal.
        entry = _Entry(text[:_LABEL_WIDTH].strip(), clean(f"[{elapsed_s:5.1f}s] {text}"))
        self._log.append(entry)
        if not self.interactive:
            self.write(self._painted(entry.text, entry.label))  # on a TTY: at the next redraw

    def table(
        self,
        rows: Sequence[AccountStatus],
        elapsed_s: float,
        *,
        force: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Redraw (TTY) or print the table, the latter at most every ``table_every_s``.
        ``now`` shows the last sync and the last block as ages."""
        if self.interactive:
            self.stream.write(self.screen(rows, elapsed_s, now=now))
            self.stream.flush()
            return
        if not force and elapsed_s - self._last_table_at < self.table_every_s:
            return
        self._last_table_at = elapsed_s
        self.write(f"\n--- accounts at {elapsed_s:.1f}s ---")
        self.write(render_table(rows, width=DEFAULT_WIDTH, color=self.color, now=now))

    def screen(
        self, rows: Sequence[AccountStatus], elapsed_s: float, *, now: datetime | None = None
    ) -> str:
        """One redraw of the whole screen, every line within the terminal's width and the
        last line left free, so nothing scrolls."""
        columns, height = self._size()
        columns = max(columns, 40)
        head = [*self._heading, f"accounts at {elapsed_s:.1f}s"]
        table = render_table(rows, width=columns, color=self.color, now=now).splitlines()
        plain = render_table(rows, width=columns, now=now).splitlines()
        if any(display_width(text) > columns for text in plain):
            # Ids and equities too wide for even the first columns: cut, uncoloured (a cut
            # through a colour code would paint the rest of the screen).
            table = [truncate(text, columns) for text in plain]
        room = max(height - 1 - len(head) - len(table) - 4, 2)  # two blanks, two titles
        key_rows = max(room - room * 2 // 5, 1)
        key = self._key_events(key_rows)
        shown = {id(e) for e in key}
        # Lines the key pane does not need yet go to the latest lines.
        latest = [e for e in self._log if id(e) not in shown][-max(room - max(len(key), 1), 1) :]
        lines = [truncate(text, columns) for text in head]
        lines += table
        lines += ["", self._title("key events: blocks, stale cancels, adoptions, fills", columns)]
        lines += [self._cut(e, columns) for e in key] or ["(none yet)"]
        lines += ["", self._title("latest", columns)]
        lines += [self._cut(e, columns) for e in latest] or ["(waiting for events)"]
        # Each line is erased before it is written: erasing after a line that fills the
        # width would take its last cell (the cursor waits on it to wrap).
        return _HOME + "".join(f"{_ERASE_LINE}{text}\n" for text in lines) + _ERASE_BELOW

    def _key_events(self, count: int) -> list[_Entry]:
        """The key events for a pane of ``count`` lines, in the order they happened: the
        newest pinned kinds first, the newest fills and trades in the lines left (at least
        one line for them while there are more key events than lines)."""
        key = [e for e in self._log if e.label in _KEY_LABELS]
        if len(key) <= count:
            return key
        pinned = [e for e in key if e.label in _PINNED_LABELS]
        room = count - 1 if count > 1 and len(pinned) < len(key) else count
        chosen = {id(e) for e in _newest(pinned, room)}
        rest = [e for e in key if id(e) not in chosen]
        chosen |= {id(e) for e in _newest(rest, count - len(chosen))}
        return [e for e in key if id(e) in chosen]

    def _title(self, text: str, columns: int) -> str:
        return paint(truncate(text, columns), BOLD, self.color)

    def _cut(self, entry: _Entry, columns: int) -> str:
        return self._painted(truncate(entry.text, columns), entry.label)

    def _painted(self, text: str, label: str) -> str:
        """``text`` with its label coloured (the stamp and the rest as they are)."""
        style = _LABEL_STYLES.get(label, "")
        at = text.find(label, 0, _STAMP_WIDTH + len(label) + 4) if label else -1
        if not self.color or not style or at < 0:
            return text
        return text[:at] + paint(label, style, True) + text[at + len(label) :]

    def replay(self) -> None:
        """On a TTY, the whole event log once the redraws are over; elsewhere it is printed."""
        if self.interactive and self._log:
            self.write("\nevery event of the run")
            for entry in self._log:
                self.write(self._painted(entry.text, entry.label))
        self.write()


def _newest(entries: list[_Entry], count: int) -> list[_Entry]:
    return entries[max(len(entries) - count, 0) :] if count > 0 else []


def _money(value: float | None, quote: str) -> str:
    return "-" if value is None else f"{value:,.2f} {quote}"


def summary_lines(
    row: AccountStatus, metrics: AccountMetrics, tally: AccountTally, quote: str, fills_booked: int
) -> list[str]:
    """The end-of-run summary of ONE account (DESIGN invariant 1: no totals across accounts)."""
    factor = "inf" if math.isinf(metrics.profit_factor) else f"{metrics.profit_factor:.2f}"
    blocked = ", ".join(f"{rule} x{n}" for rule, n in sorted(tally.blocked.items())) or "none"
    return [
        f"{row.account_id} ({row.tier or 'tier unknown'})",
        f"  equity {_money(row.equity_usd, quote)}, held in orders "
        f"{_money(row.held_capital_usd, quote)}, open orders {row.open_orders}, "
        f"stale {row.stale_orders}, sync {row.sync or 'offline'}",
        f"  trades {metrics.total_trades} (won {metrics.winning_trades}, lost "
        f"{metrics.losing_trades}), net P&L {metrics.total_pnl:+,.2f} {quote} after "
        f"{metrics.total_fees:,.2f} fees",
        f"  expectancy {metrics.expectancy:+,.2f}, profit factor {factor}, drawdown now "
        f"{metrics.current_drawdown_pct:.2f}%, max {metrics.max_drawdown_pct:.2f}%",
        f"  fills booked {fills_booked}, orders adopted {tally.adopted}, stale cancelled "
        f"{tally.stale_cancelled}",
        f"  blocked entries: {blocked}",
    ]
