"""The HTML report: self-contained, escaped, with an SVG equity chart and the newest trades."""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nija_broker.core.models import EquityPoint, TradeRecord
from nija_broker.service.report import (
    MAX_CHART_POINTS,
    MAX_REPORT_TRADES,
    downsample,
    drawdown_series,
    nice_ticks,
    report_filename,
    write_report,
)
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.store import Store, StoreBatch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, 30, tzinfo=UTC)

_VOID = {"meta", "line", "circle", "rect", "path", "polyline", "br"}


class _TagChecker(HTMLParser):
    """Fails on tags closed out of order or left open; collects tag names and scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _check_html(page: str) -> _TagChecker:
    assert page.startswith("<!DOCTYPE html>")
    checker = _TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert "script" not in checker.tags
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"""(src|href)\s*=""", page)
    return checker


def _trade(account: str, i: int, net: float, risk: float | None = None) -> TradeRecord:
    exit_price = 100.0 + net
    return TradeRecord(
        trade_id=f"T{i}",
        account_id=account,
        symbol="BTC/USD",
        side="buy",
        entry_price=100.0,
        exit_price=exit_price,
        quantity=1.0,
        pnl=net,
        fees=0.0,
        entry_time=T0 + timedelta(hours=i),
        exit_time=T0 + timedelta(hours=i, minutes=30),
        risk_usd=risk,
    )


def _stored_book(
    tmp_path: Path, account: str, trades: int, points: int
) -> tuple[Store, AccountBook]:
    store = Store(tmp_path / "state.sqlite3")
    equity = [
        EquityPoint(
            account_id=account,
            timestamp=T0 + timedelta(minutes=10 * i),
            equity=10_000 + 500 * math.sin(i / 300) - (800 if i == 2_777 else 0),
        )
        for i in range(points)
    ]
    store.apply(
        StoreBatch(
            account_id=account,
            trades=[_trade(account, i, 5.0 if i % 3 else -4.0) for i in range(trades)],
            equity_points=equity,
        )
    )
    return store, Books(store).get(account)


def test_empty_account_renders_a_valid_page_saying_there_is_nothing_yet(tmp_path: Path) -> None:
    path = write_report(Books().get("USER:new"), tmp_path / "out", now=NOW)

    page = path.read_text(encoding="utf-8")
    checker = _check_html(page)
    assert path.parent == tmp_path / "out"
    assert "svg" in checker.tags
    assert "No equity recorded yet" in page
    assert "No trades recorded yet" in page
    assert "n/a (no trades)" in page
    assert "2026-06-01 12:30:00 UTC" in page


def test_many_trades_render_the_chart_and_the_newest_trades_first(tmp_path: Path) -> None:
    store, book = _stored_book(tmp_path, "PLATFORM", trades=600, points=5_000)
    with store:
        page = write_report(book, tmp_path, store=store, now=NOW).read_text(encoding="utf-8")

    checker = _check_html(page)
    assert checker.tags.count("svg") == 2  # equity, then drawdown
    assert "path" in checker.tags  # the shaded drawdown area
    equity_line = re.search(r'<polyline points="([^"]+)" class="line"', page)
    assert equity_line is not None
    assert 2 < len(equity_line.group(1).split()) <= MAX_CHART_POINTS
    assert "5,000 equity point(s), drawn as 2,000" in page
    # Axis ticks are labelled: dollars on the equity chart, dates along the bottom.
    assert re.search(r">\$\d{1,2},\d{3}</text>", page)
    assert ">2026-01-" in page
    rows = re.findall(r'<tr class="(?:win|loss|)"><td>([^<]+)</td>', page)
    assert len(rows) == MAX_REPORT_TRADES
    newest = _trade("PLATFORM", 599, 5.0).exit_time.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert rows[0] == newest
    assert rows == sorted(rows, reverse=True)
    assert f"{MAX_REPORT_TRADES} of 600" in page


def test_without_a_store_the_trade_list_is_the_in_memory_history(tmp_path: Path) -> None:
    book = Books().get("USER:bob")
    for i in range(3):
        book.record_trade(_trade("USER:bob", i, 2.0, risk=10.0))
    book.update_equity(100.0, T0)

    page = write_report(book, tmp_path, now=NOW).read_text(encoding="utf-8")

    _check_html(page)
    assert "3 of 3" in page
    assert "&infin; (no losses)" in page
    assert "0.200 (over 3 trade(s) with recorded risk)" in page


def test_per_dollar_risked_says_why_it_is_missing(tmp_path: Path) -> None:
    book = Books().get("USER:bob")
    book.record_trade(_trade("USER:bob", 0, -3.0))
    page = write_report(book, tmp_path, now=NOW).read_text(encoding="utf-8")
    note = book.metrics().risk_note
    assert note
    assert note in page or note.replace("'", "&#x27;") in page


def test_a_single_equity_point_still_draws_a_marked_chart(tmp_path: Path) -> None:
    book = Books().get("USER:one")
    book.update_equity(42.5, T0)

    page = write_report(book, tmp_path, now=NOW).read_text(encoding="utf-8")

    _check_html(page)
    assert re.search(r'<polyline points="[\d.]+,[\d.]+" class="line"', page)
    assert '<circle cx="' in page
    coords = re.findall(r'\s(?:cx|cy|x|y|x1|x2|y1|y2)="([^"]+)"', page)
    assert all(math.isfinite(float(c)) for c in coords)


def test_a_hostile_account_id_is_escaped_everywhere_and_makes_a_safe_filename(
    tmp_path: Path,
) -> None:
    hostile = '<script>alert("x")</script>/../..:&'
    book = Books().get(hostile)
    book.record_trade(_trade(hostile, 0, 1.0))

    path = write_report(book, tmp_path, now=NOW)
    page = path.read_text(encoding="utf-8")

    _check_html(page)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert path.parent == tmp_path
    assert re.fullmatch(r"report-[A-Za-z0-9._-]+\.html", path.name)


def test_filenames_of_distinct_ids_never_collide() -> None:
    assert report_filename("PLATFORM") == "report-PLATFORM.html"
    assert report_filename("USER:alice") != report_filename("USER_alice")
    assert ":" not in report_filename("USER:alice")


def test_rewriting_a_report_replaces_it_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    book = Books().get("PLATFORM")
    first = write_report(book, tmp_path, now=NOW)
    book.record_trade(_trade("PLATFORM", 0, 1.0))
    second = write_report(book, tmp_path, now=NOW)
    assert first == second
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    assert "1 of 1" in second.read_text(encoding="utf-8")


def test_downsampling_keeps_the_deepest_dip_and_time_order() -> None:
    series = [(float(t), 100.0) for t in range(10_000)]
    series[7_123] = (7_123.0, 1.0)
    series[2_001] = (2_001.0, 500.0)

    out = downsample(series, 2_000)

    assert len(out) <= 2_000
    assert (7_123.0, 1.0) in out
    assert (2_001.0, 500.0) in out
    assert [t for t, _ in out] == sorted(t for t, _ in out)
    assert downsample(series[:5], 2_000) == series[:5]


def test_drawdown_is_percent_below_the_running_peak() -> None:
    equity = [(0.0, 100.0), (1.0, 80.0), (2.0, 120.0), (3.0, 90.0)]
    assert drawdown_series(equity) == [(0.0, 0.0), (1.0, 20.0), (2.0, 0.0), (3.0, 25.0)]


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 1.0), (9_512.3, 10_498.0), (42.5, 42.5), (-37.0, 0.0), (0.013, 0.0171)]
)
def test_axis_ticks_are_round_and_cover_the_data(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert 2 <= len(ticks) <= 8
    assert ticks[0] <= low
    assert ticks[-1] >= high
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    mantissa = steps.pop() / 10 ** math.floor(math.log10(ticks[1] - ticks[0]))
    assert round(mantissa, 6) in (1.0, 2.0, 2.5, 5.0)


def test_axis_labels_show_every_tick_exactly(tmp_path: Path) -> None:
    book = Books().get("USER:one")
    book.update_equity(42.5, T0)
    page = write_report(book, tmp_path, now=NOW).read_text(encoding="utf-8")
    labels = re.findall(r'text-anchor="end">(\$[\d.,]+)</text>', page)
    assert labels == ["$42.00", "$42.25", "$42.50", "$42.75", "$43.00"]


def test_time_ticks_of_a_short_run_show_seconds() -> None:
    from nija_broker.service.report import _tick_time

    start = datetime(2026, 3, 1, 9, 15, tzinfo=UTC).timestamp()
    labels = {_tick_time(start + s, 40.0) for s in (0, 10, 20, 30, 40)}
    assert len(labels) == 5
    assert _tick_time(start, 86_400.0) == "03-01 09:15"
