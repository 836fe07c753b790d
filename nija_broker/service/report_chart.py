"""The report's charts: an equity curve over its drawdown, as inline SVG drawn here.

No script and no external asset: the page stays one file that opens offline.
Above :data:`MAX_CHART_POINTS` points each interval keeps its low and high, so
the dip a drawdown chart is for is never skipped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime

from nija_broker.core.models import EquityPoint

__all__ = ["MAX_CHART_POINTS", "charts", "downsample", "drawdown_series", "nice_ticks", "tick_time"]

MAX_CHART_POINTS = 2_000
"""Above this many equity points the chart keeps each bucket's low and high."""

_Series = list[tuple[float, float]]  # (unix seconds, value), time ascending

_W = 860
_LEFT, _RIGHT, _TOP, _BOTTOM = 84, 16, 24, 30


def charts(points: Sequence[EquityPoint], quote: str | None) -> str:
    """The equity curve over the drawdown chart, in ``quote`` (its code, never ``$``)."""
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
        label=f"Equity curve ({quote})" if quote else "Equity curve",
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
            f"{html.escape(tick_time(t, t1 - t0))}</text>"
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


def tick_time(t: float, span_s: float) -> str:
    when = datetime.fromtimestamp(t, UTC)
    if span_s <= 600:  # a short run: minutes alone would label every tick the same
        return when.strftime("%H:%M:%S")
    if span_s <= 2 * 86_400:
        return when.strftime("%m-%d %H:%M")
    return when.strftime("%Y-%m-%d")


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


_axis_money = _Fmt("", "")  # the caption names the currency
_axis_pct = _Fmt("", "%")
