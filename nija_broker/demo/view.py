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
from collections.abc import Sequence
from dataclasses import dataclass, field
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

__all__ = [
    "AccountTally",
    "DemoView",
    "describe",
    "line",
    "order_text",
    "summary_lines",
    "trade_line",
]

# ANSI: cursor home, clear screen. Only ever written to a TTY.
_CLEAR = "\x1b[H\x1b[2J"
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
        verb = "cancelling it" if event.action == "cancel" else "alerting"
        return line(
            "STALE",
            account,
            f"{order_text(event.order)} has rested {age_s:.1f}s, "
            f"past the tier's {event.max_age_s:g}s limit: {verb} (order "
            f"{event.order.id})",
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


class DemoView:
    """The demo's terminal: a log of events and a per-account table, redrawn or printed.

    ``intro`` lines are printed at once; on a TTY they also head every redraw,
    and :meth:`replay` prints the whole log at the end, since the redraw only
    ever shows the latest events.
    """

    RECENT_LINES = 16

    def __init__(self, stream: TextIO, *, interactive: bool, table_every_s: float) -> None:
        self.stream = stream
        self.interactive = interactive
        self.table_every_s = table_every_s
        self._intro: list[str] = []
        self._log: list[str] = []
        self._last_table_at = -math.inf

    def write(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def intro(self, text: str) -> None:
        self._intro.append(text)
        self.write(text)

    def log(self, elapsed_s: float, text: str) -> None:
        stamped = f"[{elapsed_s:5.1f}s] {text}"
        self._log.append(stamped)
        if not self.interactive:
            self.write(stamped)  # on a TTY it shows at the next redraw

    def table(
        self, rows: Sequence[AccountStatus], elapsed_s: float, *, force: bool = False
    ) -> None:
        """Redraw (TTY) or print the table, the latter at most every ``table_every_s``."""
        if self.interactive:
            recent = "\n".join(self._log[-self.RECENT_LINES :]) or "(waiting for events)"
            intro = "\n".join(self._intro)
            self.stream.write(
                f"{_CLEAR}{intro}\n\naccounts at {elapsed_s:.1f}s\n"
                f"{render_table(rows)}\nlatest events\n{recent}\n"
            )
            self.stream.flush()
            return
        if not force and elapsed_s - self._last_table_at < self.table_every_s:
            return
        self._last_table_at = elapsed_s
        self.write(f"\n--- accounts at {elapsed_s:.1f}s ---")
        self.write(render_table(rows))

    def replay(self) -> None:
        """On a TTY, the whole event log once the redraws are over; elsewhere it is printed."""
        if self.interactive and self._log:
            self.write("\nevery event of the run")
            for text in self._log:
                self.write(text)
        self.write()


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
        f"{metrics.total_fees:,.2f} fees, expectancy {metrics.expectancy:+,.2f}, "
        f"profit factor {factor}",
        f"  drawdown now {metrics.current_drawdown_pct:.2f}%, max {metrics.max_drawdown_pct:.2f}%",
        f"  fills booked {fills_booked}, orders adopted {tally.adopted}, stale cancelled "
        f"{tally.stale_cancelled}, blocked entries: {blocked}",
    ]
