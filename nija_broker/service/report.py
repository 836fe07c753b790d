"""A one-account HTML report a trader opens in a browser, on a desktop or a phone.

What the account is (tier, exchange, quote currency), where it stands (equity,
orders, positions, pause, stale cancels), how it performed (key figures, equity
and drawdown charts, trades) and what the guard refused it (blocks). Money is
shown with the account's quote code (``1,234.56 USDT``): USDT is not the dollar.

The page is self-contained: inline CSS and inline SVG charts
(:mod:`nija_broker.service.report_chart`), no scripts, no external assets, so it
can be mailed or opened offline. It reads from 360 px up: every table sits in a
wrapper that scrolls sideways, so nothing is cut off. Every piece of text that
came from data (account id, symbols, reasons) goes through ``html.escape``.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from nija_broker.core.clock import utc
from nija_broker.core.models import AccountMetrics, TradeRecord
from nija_broker.service.positions_view import PositionView, account_positions
from nija_broker.service.report_chart import (
    MAX_CHART_POINTS,
    charts,
    downsample,
    drawdown_series,
    nice_ticks,
)
from nija_broker.service.status import AccountStatus
from nija_broker.state.book import AccountBook
from nija_broker.state.records import DecisionRecord
from nija_broker.state.store import Store

__all__ = [
    "MAX_CHART_POINTS",
    "MAX_REPORT_BLOCKS",
    "MAX_REPORT_TRADES",
    "downsample",
    "drawdown_series",
    "nice_ticks",
    "render_report",
    "report_filename",
    "write_report",
]

MAX_REPORT_TRADES = 500
MAX_REPORT_BLOCKS = 200
"""The newest guard blocks listed (each is one journaled decision)."""


def write_report(
    book: AccountBook,
    out_dir: Path,
    *,
    store: Store | None = None,
    now: datetime,
    status: AccountStatus | None = None,
    positions: Sequence[PositionView] | None = None,
) -> Path:
    """Write the report of ``book``'s account into ``out_dir`` and return its path.

    With ``store``, the chart, trades and guard blocks cover everything stored;
    without, what the book keeps in memory (and no blocks). ``status`` is the
    account's status row (tier, exchange, quote currency, pause, stale cancels);
    ``positions`` its positions as the running sidecar sees them, else the book's
    ledger gives them. The file is replaced atomically, so a browser refreshing it
    never sees half a page.
    """
    page = render_report(book, store=store, now=now, status=status, positions=positions)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / report_filename(book.account_id)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def report_filename(account_id: str) -> str:
    """``report-<id>.html`` with the id made safe for any filesystem.

    Ids such as ``USER:alice`` hold characters Windows refuses; when the id had
    to change, a short hash of the original keeps ``USER:alice`` and
    ``USER_alice`` from overwriting each other.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", account_id)[:80]
    if safe != account_id:
        digest = hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:8]
        safe = f"{safe}-{digest}"
    return f"report-{safe}.html"


def render_report(
    book: AccountBook,
    *,
    store: Store | None = None,
    now: datetime,
    status: AccountStatus | None = None,
    positions: Sequence[PositionView] | None = None,
) -> str:
    """The report page of one account as a string (see :func:`write_report`)."""
    account_id = book.account_id
    if status is not None and status.account_id != account_id:
        raise ValueError(
            f"status row of account {status.account_id!r} given for account {account_id!r}"
        )
    metrics = book.metrics()
    if store is not None:
        points = store.equity_points(account_id)
        trades = store.trades(account_id, limit=MAX_REPORT_TRADES)
        blocks: list[DecisionRecord] | None = store.decisions(
            account_id, limit=MAX_REPORT_BLOCKS, blocked_only=True
        )
    else:
        points = book.performance.equity_points()
        trades = book.performance.trade_history(MAX_REPORT_TRADES)
        blocks = None
    held = list(positions) if positions is not None else account_positions(book, None)
    quote = status.quote_currency if status is not None else None
    money = _Money(quote)
    newest_first = sorted(trades, key=lambda t: t.exit_time, reverse=True)
    e = html.escape
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>nija_broker report: {e(account_id)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<header>",
            f"<h1>Account report: {e(account_id)}</h1>",
            _identity(status),
            f'<p class="muted">Generated {e(_when(now))}. Figures are this account\'s only.</p>',
            "</header>",
            "<section>",
            "<h2>Now</h2>",
            _now_table(status, held, blocks, money, now),
            "</section>",
            "<section>",
            "<h2>Key figures</h2>",
            _metrics_table(metrics, money),
            "</section>",
            "<section>",
            "<h2>Equity and drawdown</h2>",
            f'<div class="chart">{charts(points, quote)}</div>',
            "</section>",
            "<section>",
            "<h2>Open positions</h2>",
            _positions_table(held, money, from_ledger=positions is None),
            "</section>",
            "<section>",
            "<h2>Guard blocks</h2>",
            _blocks_table(blocks),
            "</section>",
            "<section>",
            "<h2>Trades</h2>",
            _trades_table(newest_first, metrics.total_trades, money),
            "</section>",
            "</body>",
            "</html>",
            "",
        ]
    )


# ---------------------------------------------------------------------------- sections


def _identity(status: AccountStatus | None) -> str:
    """``MICRO_CAP · binance · quote USDT``, and a pause, under the title."""
    if status is None:
        return '<p class="facts muted">Tier, exchange and quote currency not known here.</p>'
    parts = [
        f"tier <b>{html.escape(status.tier or 'not known')}</b>",
        f"exchange <b>{html.escape(status.exchange or 'not known')}</b>",
        f"quote currency <b>{html.escape(status.quote_currency or 'not known')}</b>",
    ]
    paused = ' <span class="badge warn">PAUSED</span>' if status.paused else ""
    return f'<p class="facts">{" &middot; ".join(parts)}{paused}</p>'


def _now_table(
    status: AccountStatus | None,
    held: Sequence[PositionView],
    blocks: Sequence[DecisionRecord] | None,
    money: _Money,
    now: datetime,
) -> str:
    e = html.escape
    rows: list[tuple[str, str]] = []
    if status is not None:
        sync = e(status.sync or "offline (no sidecar running this account)")
        if status.last_sync is not None:
            sync += f", last {e(_when(datetime.fromisoformat(status.last_sync)))}"
        held_share = (
            f" ({status.held_share_pct:.1f}% of equity)"
            if status.held_share_pct is not None
            else ""
        )
        rows += [
            ("Equity", money(status.equity_usd)),
            ("Held in open orders", money(status.held_capital_usd) + held_share),
            ("Open orders", f"{status.open_orders} ({status.stale_orders} stale now)"),
            ("Sync", sync),
            ("Paused", _pause(status)),
        ]
    rows.append(("Open positions", str(len(held))))
    if status is None or status.stale_cancels is None:
        # The sidecar counts them while it runs the account; the store keeps no count.
        rows.append(("Stale orders cancelled", "not known (counted by the running sidecar)"))
    else:
        rows.append(
            ("Stale orders cancelled", f"{status.stale_cancels} (each confirmed by the exchange)")
        )
    if blocks is None:
        rows.append(("Guard blocks", "not known (read from the store)"))
    else:
        more = "+" if len(blocks) >= MAX_REPORT_BLOCKS else ""
        last = f", last {e(_when(blocks[0].ts))}: rule {e(blocks[0].rule or '?')}" if blocks else ""
        rows.append(("Guard blocks", f"{len(blocks)}{more}{last}"))
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<div class="scroll"><table class="facts"><tbody>{body}</tbody></table></div>'


def _pause(status: AccountStatus) -> str:
    if not status.paused:
        return "no"
    e = html.escape
    by = f" by {e(status.paused_by)}" if status.paused_by else ""
    at = f" at {e(_when(datetime.fromisoformat(status.paused_at)))}" if status.paused_at else ""
    why = f": {e(status.pause_reason)}" if status.pause_reason else ""
    return f'<span class="warn">yes{by}{at}{why}</span> (entries blocked, exits pass)'


def _metrics_table(m: AccountMetrics, money: _Money) -> str:
    if m.total_trades == 0:
        pf = "n/a (no trades)"
    elif math.isinf(m.profit_factor):
        pf = "&infin; (no losses)"
    else:
        pf = f"{m.profit_factor:.2f}"
    if m.expectancy_per_dollar_risked is not None:
        per_risk = (
            f"{m.expectancy_per_dollar_risked:.3f} "
            f"(over {m.trades_with_risk} trade(s) with recorded risk)"
        )
    else:
        per_risk = html.escape(m.risk_note or "n/a: no trade recorded its risk")
    rows = [
        (
            "Trades",
            f"{m.total_trades} ({m.winning_trades} won, {m.losing_trades} lost, "
            f"{m.breakeven_trades} even)",
        ),
        ("Win rate", f"{m.win_rate:.1f}%"),
        ("Net P&amp;L (after fees)", money(m.total_pnl, signed=True)),
        ("Fees", money(m.total_fees)),
        ("Expectancy per trade", money(m.expectancy, signed=True)),
        (f"Expectancy per {money.unit} risked", per_risk),
        ("Profit factor", pf),
        ("Average win / loss", f"{money(m.average_win)} / {money(m.average_loss)}"),
        ("Largest win / loss", f"{money(m.largest_win)} / {money(m.largest_loss)}"),
        ("Equity peak / current", f"{money(m.peak_balance)} / {money(m.current_balance)}"),
        ("Drawdown now", f"{money(m.current_drawdown)} ({m.current_drawdown_pct:.2f}%)"),
        ("Maximum drawdown", f"{money(m.max_drawdown)} ({m.max_drawdown_pct:.2f}%)"),
        ("Streak now", f"{m.current_win_streak} win(s), {m.current_loss_streak} loss(es)"),
        ("Longest streaks", f"{m.max_win_streak} wins, {m.max_loss_streak} losses"),
        ("Sharpe per trade", _ratio(m.sharpe_ratio)),
        ("Sharpe annualised (daily equity, &radic;365)", _ratio(m.sharpe_annualized)),
    ]
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<div class="scroll"><table class="metrics"><tbody>{body}</tbody></table></div>'


def _positions_table(held: Sequence[PositionView], money: _Money, *, from_ledger: bool) -> str:
    where = (
        "From the fills booked (the ledger); the exchange's balances are read by the running "
        "sidecar (nija-broker positions)."
        if from_ledger
        else "As the running sidecar sees them: booked fills and the exchange's balances."
    )
    if not held:
        return f'<p class="muted">No open position. {where}</p>'
    head = (
        "<tr><th>Symbol</th><th>Amount</th><th>Average cost</th><th>Value</th>"
        "<th>Unrealised P&amp;L</th><th>Known from</th></tr>"
    )
    rows = []
    for p in held:
        cells = [
            html.escape(p.symbol),
            f"{p.amount:.8g}",
            f"{p.average_cost:,.8g}" if p.average_cost is not None else "-",
            money(p.value) if p.value is not None else "no price",
            money(p.unrealized_pnl, signed=True) if p.unrealized_pnl is not None else "-",
            html.escape(p.source),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f'<p class="muted">{where}</p><div class="scroll"><table class="grid">'
        f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _blocks_table(blocks: Sequence[DecisionRecord] | None) -> str:
    if blocks is None:
        return '<p class="muted">Guard decisions are journaled in the store; none given.</p>'
    if not blocks:
        return '<p class="muted">The guard blocked no entry of this account.</p>'
    e = html.escape
    head = "<tr><th>When (UTC)</th><th>Rule</th><th>Symbol</th><th>Side</th></tr>"
    # The reason gets a row of its own under its block: it is a sentence, and on a
    # phone a column of sentences would be a column of single words.
    rows = [
        "<tr>"
        f"<td>{e(_when(b.ts))}</td><td>{e(b.rule or '?')}</td><td>{e(b.symbol or '-')}</td>"
        f"<td>{e(b.side.value if b.side is not None else '-')}</td>"
        "</tr>"
        f'<tr class="reason"><td colspan="4">{e(b.reason or "")}</td></tr>'
        for b in blocks
    ]
    latest = f", the latest {len(blocks)}" if len(blocks) >= MAX_REPORT_BLOCKS else ""
    return (
        f'<p class="muted">newest first{latest}.</p><div class="scroll">'
        f'<table class="grid blocks"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _trades_table(trades: Sequence[TradeRecord], total: int, money: _Money) -> str:
    if not trades:
        return '<p class="muted">No trades recorded yet.</p>'
    shown = f"newest first, {len(trades)} of {max(total, len(trades))}"
    head = (
        "<tr><th>Closed (UTC)</th><th>Symbol</th><th>Position</th><th>Quantity</th>"
        "<th>Entry</th><th>Exit</th><th>Size</th><th>P&amp;L</th><th>Fees</th>"
        "<th>Net</th><th>Net %</th><th>Held</th><th>Risk</th></tr>"
    )
    rows = []
    for t in trades:
        size = t.size_usd or 0.0
        net_pct = t.net / size * 100 if size else 0.0
        cells = [
            html.escape(_when(t.exit_time)),
            html.escape(t.symbol),
            "long" if t.side == "buy" else "short",
            f"{t.quantity:.8g}",
            f"{t.entry_price:,.8g}",
            f"{t.exit_price:,.8g}",
            money(size),
            money(t.pnl, signed=True),
            money(t.fees),
            money(t.net, signed=True),
            f"{net_pct:+.2f}%",
            _duration(t.hold_time_seconds or 0.0),
            money(t.risk_usd) if t.risk_usd is not None else "-",
        ]
        css = "win" if t.net > 0 else ("loss" if t.net < 0 else "")
        rows.append(f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f'<p class="muted">{shown}.</p><div class="scroll"><table class="grid trades">'
        f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# ---------------------------------------------------------------------------- formats


class _Money:
    """Amounts in the account's quote currency, named by its code (``1,234.56 USDT``);
    a bare figure while the quote is not known, never a ``$`` that may be wrong."""

    def __init__(self, quote: str | None) -> None:
        self.suffix = f"&nbsp;{html.escape(quote)}" if quote else ""
        self.unit = html.escape(quote) if quote else "unit"

    def __call__(self, value: float | None, *, signed: bool = False) -> str:
        if value is None:
            return "-"
        if math.isinf(value):
            return "&infin;"
        sign = "-" if value < 0 else ("+" if signed and value > 0 else "")
        return f"{sign}{abs(value):,.2f}{self.suffix}"


def _ratio(value: float | None) -> str:
    return "n/a (not enough data)" if value is None else f"{value:.2f}"


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{int(seconds)}s"


def _when(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


_CSS = (
    "*{box-sizing:border-box}"
    "body{font:14px/1.45 system-ui,sans-serif;margin:20px auto;max-width:1100px;"
    "padding:0 12px;color:#1d232b;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px;overflow-wrap:anywhere}h2{font-size:17px;margin:28px 0 8px}"
    ".muted{color:#5b6673}.facts{margin:4px 0}.warn{color:#9a5b00;font-weight:600}"
    ".badge{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px}"
    ".badge.warn{background:#fff1d6;border:1px solid #e7b24d}"
    # Tables never widen the page: they scroll sideways inside their wrapper.
    ".scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}"
    "table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #e3e7ec}"
    "table.metrics th,table.facts th{text-align:left;font-weight:500;color:#3a4450}"
    "table.grid{width:100%;font-variant-numeric:tabular-nums}"
    "table.grid th{text-align:left;white-space:nowrap}"
    "table.grid td{text-align:right;white-space:nowrap}"
    "table.grid td:first-child,table.grid td:nth-child(2){text-align:left}"
    "table.trades td:nth-child(3),table.blocks td{text-align:left}"
    "table.blocks tr:not(.reason) td{border-bottom:0}"
    "table.blocks tr.reason td{white-space:normal;color:#3a4450;padding-bottom:8px}"
    "tr.win td:nth-child(10){color:#11804a}tr.loss td:nth-child(10){color:#c0322b}"
    ".chart{overflow-x:auto}"
    "svg{display:block;margin:6px 0;font-size:13px;fill:#5b6673}"
    "svg .grid{stroke:#eceff3}svg .frame{fill:none;stroke:#c9d0d8}"
    "svg .line{fill:none;stroke:#1f6feb;stroke-width:1.6}svg .dot{fill:#1f6feb}"
    "svg .area{fill:#c0322b;fill-opacity:.18;stroke:none}"
    "svg .dd{fill:none;stroke:#c0322b;stroke-width:1.2}svg circle.dd{fill:#c0322b}"
    "svg .cap{fill:#3a4450;font-size:14px}"
    # A phone: tighter cells; the charts keep a readable size and scroll sideways.
    "@media (max-width:600px){body{margin:12px auto;padding:0 10px}"
    "th,td{padding:3px 6px}.chart svg{min-width:600px}}"
)
