"""A one-account HTML report a trader opens in a browser: key figures, equity chart, trades.

The page is self-contained: inline CSS and an inline SVG chart drawn here, no
scripts, no external assets, so it can be mailed or opened offline. Every
piece of text that came from data (account id, symbols) goes through
``html.escape``: account ids are free strings from configuration.
"""

from __future__ import annotations

import hashlib
import html
import math
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from nija_broker.core.clock import utc
from nija_broker.core.models import AccountMetrics, EquityPoint, TradeRecord
from nija_broker.state.book import AccountBook
from nija_broker.state.store import Store

__all__ = [
    "MAX_CHART_POINTS",
    "MAX_REPORT_TRADES",
    "render_report",
    "report_filename",
    "write_report",
]

MAX_CHART_POINTS = 2_000
"""Above this many equity points the chart keeps each bucket's low and high."""
MAX_REPORT_TRADES = 500

_Series = list[tuple[float, float]]  # (unix seconds, value), time ascending


def write_report(
    book: AccountBook, out_dir: Path, *, store: Store | None = None, now: datetime
) -> Path:
    """Write the report of ``book``'s account into ``out_dir`` and return its path.

    With ``store``, the chart and trade list cover everything stored; without,
    what the book keeps in memory. The file is replaced atomically, so a browser
    refreshing it never sees half a page.
    """
    page = render_report(book, store=store, now=now)
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


def render_report(book: AccountBook, *, store: Store | None = None, now: datetime) -> str:
    """The report page of one account as a string."""
    account_id = book.account_id
    metrics = book.metrics()
    if store is not None:
        points = store.equity_points(account_id)
        trades = store.trades(account_id, limit=MAX_REPORT_TRADES)
    else:
        points = book.performance.equity_points()
        trades = book.performance.trade_history(MAX_REPORT_TRADES)
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
            f'<p class="muted">Generated {e(_when(now))}. Figures are this account\'s only.</p>',
            "</header>",
            "<section>",
            "<h2>Key figures</h2>",
            _metrics_table(metrics),
            "</section>",
            "<section>",
            "<h2>Equity and drawdown</h2>",
            _charts(points),
            "</section>",
            "<section>",
            "<h2>Trades</h2>",
            _trades_table(newest_first, metrics.total_trades),
            "</section>",
            "</body>",
            "</html>",
            "",
        ]
    )


# ---------------------------------------------------------------------------- figures


def _metrics_table(m: AccountMetrics) -> str:
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
        ("Net P&amp;L (after fees)", _money(m.total_pnl, signed=True)),
        ("Fees", _money(m.total_fees)),
        ("Expectancy per trade", _money(m.expectancy, signed=True)),
        ("Expectancy per dollar risked", per_risk),
        ("Profit factor", pf),
        ("Average win / loss", f"{_money(m.average_win)} / {_money(m.average_loss)}"),
        ("Largest win / loss", f"{_money(m.largest_win)} / {_money(m.largest_loss)}"),
        ("Equity peak / current", f"{_money(m.peak_balance)} / {_money(m.current_balance)}"),
        ("Drawdown now", f"{_money(m.current_drawdown)} ({m.current_drawdown_pct:.2f}%)"),
        ("Maximum drawdown", f"{_money(m.max_drawdown)} ({m.max_drawdown_pct:.2f}%)"),
        ("Streak now", f"{m.current_win_streak} win(s), {m.current_loss_streak} loss(es)"),
        ("Longest streaks", f"{m.max_win_streak} wins, {m.max_loss_streak} losses"),
        ("Sharpe per trade", _ratio(m.sharpe_ratio)),
        ("Sharpe annualised (daily equity, &radic;365)", _ratio(m.sharpe_annualized)),
    ]
    body = "".join(f'<tr><th scope="row">{k}</th><td>{v}</td></tr>' for k, v in rows)
    return f'<table class="metrics"><tbody>{body}</tbody></table>'


def _trades_table(trades: Sequence[TradeRecord], total: int) -> str:
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
            _money(size),
            _money(t.pnl, signed=True),
            _money(t.fees),
            _money(t.net, signed=True),
            f"{net_pct:+.2f}%",
            _duration(t.hold_time_seconds or 0.0),
            _money(t.risk_usd) if t.risk_usd is not None else "-",
        ]
        css = "win" if t.net > 0 else ("loss" if t.net < 0 else "")
        rows.append(f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f'<p class="muted">{shown}.</p><table class="trades"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ---------------------------------------------------------------------------- chart

_W = 860
_LEFT, _RIGHT, _TOP, _BOTTOM = 84, 16, 24, 30


def _charts(points: Sequence[EquityPoint]) -> str:
    ordered = sorted(points, key=lambda p: p.timestamp)
    equity: _Series = [(p.timestamp.timestamp(), p.equity) for p in ordered]
    if not equity:
        return _empty_chart(
            "No equity recorded yet: the curve starts with the first balance update."
        )
    drawdown = drawdown_series(equity)
    note = f"{len(equity):,} equity point(s)"
    if len(equity) > MAX_CHART_POINTS:
        note += f", drawn as {MAX_CHART_POINTS:,} (each interval's low and high kept)"
    equity_svg = _line_chart(
        downsample(equity, MAX_CHART_POINTS),
        height=280,
        label="Equity curve",
        y_format=_axis_money,
        area=False,
    )
    # Drawdown hangs below zero so that deeper reads lower, as traders draw it.
    under = [(t, -dd) for t, dd in downsample(drawdown, MAX_CHART_POINTS)]
    drawdown_svg = _line_chart(
        under,
        height=150,
        label="Drawdown from peak (%)",
        y_format=_axis_pct,
        area=True,
        y_max=0.0,
        y_min=-1.0,
    )
    return f'{equity_svg}\n{drawdown_svg}\n<p class="muted">{note}.</p>'


def drawdown_series(equity: _Series) -> _Series:
    """Percent below the running peak at each point (0 at a new high)."""
    out: _Series = []
    peak = -math.inf
    for t, value in equity:
        peak = max(peak, value)
        out.append((t, (peak - value) / peak * 100 if peak > 0 else 0.0))
    return out


def downsample(series: _Series, max_points: int) -> _Series:
    """At most ``max_points`` points, in time order, keeping each bucket's low and high.

    Plain striding would skip the very dip a drawdown chart is for; keeping the
    extremes of each bucket draws the same envelope with far fewer points.
    """
    if len(series) <= max_points:
        return list(series)
    buckets = max(max_points // 2, 1)
    size = len(series) / buckets
    out: _Series = []
    for b in range(buckets):
        chunk = series[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        out.extend(sorted({low, high}))
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering ``[low, high]``."""
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(high) * 0.01 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step)
    last = max(math.ceil(high / step), first + 1)
    # Multiply rather than accumulate, so 0.1-steps do not drift into 0.30000000000000004.
    return [round(i * step, 10) for i in range(first, last + 1)]


def _line_chart(
    series: _Series,
    *,
    height: int,
    label: str,
    y_format: _Fmt,
    area: bool,
    y_max: float | None = None,
    y_min: float | None = None,
) -> str:
    plot_w = _W - _LEFT - _RIGHT
    plot_h = height - _TOP - _BOTTOM
    values = [v for _, v in series]
    hi = max(values) if y_max is None else max(y_max, *values)
    lo = min(values) if y_min is None else min(y_min, *values)
    ticks = nice_ticks(lo, hi)
    y_lo, y_hi = ticks[0], ticks[-1]
    t0, t1 = series[0][0], series[-1][0]

    def x(t: float) -> float:
        return _LEFT + (plot_w / 2 if t1 == t0 else (t - t0) / (t1 - t0) * plot_w)

    def y(v: float) -> float:
        return _TOP + (y_hi - v) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" '
        f'width="100%" role="img" aria-label="{html.escape(label)}">',
        f"<title>{html.escape(label)}</title>",
        f'<text x="{_LEFT}" y="{_TOP - 8}" class="cap">{html.escape(label)}</text>',
    ]
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{html.escape(y_format(tick, ticks))}</text>"
        )
    times = _time_ticks(t0, t1)
    for i, t in enumerate(times):
        tx = x(t)
        # The end labels sit inside the picture rather than centred past its edges.
        anchor = (
            "middle"
            if len(times) == 1 or 0 < i < len(times) - 1
            else ("start" if i == 0 else "end")
        )
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" class="grid"/>'
        )
        parts.append(
            f'<text x="{tx:.1f}" y="{height - 10}" text-anchor="{anchor}">'
            f"{html.escape(_tick_time(t, t1 - t0))}</text>"
        )
    parts.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>')
    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series)
    if area and len(series) > 1:
        base = y(min(max(0.0, y_lo), y_hi))
        parts.append(
            f'<path d="M{x(t0):.1f},{base:.1f} L{coords.replace(" ", " L")} '
            f'L{x(t1):.1f},{base:.1f} Z" class="area"/>'
        )
    parts.append(f'<polyline points="{coords}" class="{"dd" if area else "line"}"/>')
    last_t, last_v = series[-1]
    parts.append(
        f'<circle cx="{x(last_t):.1f}" cy="{y(last_v):.1f}" r="3" '
        f'class="{"dd" if area else "dot"}"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _empty_chart(message: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} 80" width="100%" '
        f'role="img" aria-label="Equity curve"><rect x="1" y="1" width="{_W - 2}" '
        f'height="78" class="frame"/><text x="{_W / 2}" y="45" text-anchor="middle">'
        f"{html.escape(message)}</text></svg>"
    )


def _time_ticks(t0: float, t1: float, count: int = 5) -> list[float]:
    if t1 <= t0:
        return [t0]
    return [t0 + (t1 - t0) * i / (count - 1) for i in range(count)]


def _tick_time(t: float, span_s: float) -> str:
    when = datetime.fromtimestamp(t, UTC)
    if span_s <= 600:  # a short run: minutes alone would label every tick the same
        return when.strftime("%H:%M:%S")
    if span_s <= 2 * 86_400:
        return when.strftime("%m-%d %H:%M")
    return when.strftime("%Y-%m-%d")


# ---------------------------------------------------------------------------- formats


class _Fmt:
    """Formats an axis value knowing all the ticks (to pick the decimals once)."""

    def __init__(self, prefix: str, suffix: str) -> None:
        self.prefix, self.suffix = prefix, suffix

    def __call__(self, value: float, ticks: Sequence[float]) -> str:
        step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
        # As many decimals as the step needs: 0.25-steps print 42.75, not 42.8.
        decimals = next((d for d in range(9) if math.isclose(round(step, d), step)), 8)
        sign = "-" if value < 0 else ""
        return f"{sign}{self.prefix}{abs(value):,.{decimals}f}{self.suffix}"


_axis_money = _Fmt("$", "")
_axis_pct = _Fmt("", "%")


def _money(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "&infin;"
    sign = "-" if value < 0 else ("+" if signed and value > 0 else "")
    return f"{sign}${abs(value):,.2f}"


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
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;"
    "padding:0 16px;color:#1d232b;background:#fff}"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}"
    ".muted{color:#5b6673}"
    "table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #e3e7ec}"
    "table.metrics th{text-align:left;font-weight:500;color:#3a4450}"
    "table.trades{width:100%;font-variant-numeric:tabular-nums}"
    "table.trades td{text-align:right;white-space:nowrap}"
    "table.trades td:nth-child(2),table.trades td:nth-child(3){text-align:left}"
    "tr.win td:nth-child(10){color:#11804a}tr.loss td:nth-child(10){color:#c0322b}"
    "svg{display:block;margin:6px 0;font-size:11px;fill:#5b6673}"
    "svg .grid{stroke:#eceff3}svg .frame{fill:none;stroke:#c9d0d8}"
    "svg .line{fill:none;stroke:#1f6feb;stroke-width:1.6}svg .dot{fill:#1f6feb}"
    "svg .area{fill:#c0322b;fill-opacity:.18;stroke:none}"
    "svg .dd{fill:none;stroke:#c0322b;stroke-width:1.2}svg circle.dd{fill:#c0322b}"
    "svg .cap{fill:#3a4450;font-size:12px}"
)
