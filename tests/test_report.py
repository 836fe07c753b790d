"""The HTML report: self-contained, escaped, with an SVG equity chart and the newest trades."""

from __future__ import annotations

import html
import itertools
import json
import math
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nija_broker.core.models import EquityPoint, Fill, Side, TradeRecord
from nija_broker.service.cli import main
from nija_broker.service.positions_view import PositionView
from nija_broker.service.report import (
    MAX_CHART_POINTS,
    MAX_REPORT_TRADES,
    downsample,
    drawdown_series,
    nice_ticks,
    report_filename,
    write_report,
)
from nija_broker.service.report_chart import tick_time
from nija_broker.service.status import AccountStatus
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.records import DecisionRecord
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
    # Axis ticks are labelled: amounts on the equity chart (never "$": the quote is not
    # known here), dates along the bottom.
    assert re.search(r">\d{1,2},\d{3}</text>", page)
    assert "$" not in page
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
    equity_chart = page.split("</svg>", 1)[0]
    labels = re.findall(r'text-anchor="end">([\d.,]+)</text>', equity_chart)
    assert labels == ["42.00", "42.25", "42.50", "42.75", "43.00"]


def test_time_ticks_of_a_short_run_show_seconds() -> None:
    start = datetime(2026, 3, 1, 9, 15, tzinfo=UTC).timestamp()
    labels = {tick_time(start + s, 40.0) for s in (0, 10, 20, 30, 40)}
    assert len(labels) == 5
    assert tick_time(start, 86_400.0) == "03-01 09:15"


# ---------------------------------------------------------------------------- what the account is


def _status(account: str, **changes: object) -> AccountStatus:
    fields: dict[str, object] = {
        "account_id": account,
        "tier": "MICRO_CAP",
        "equity_usd": 100.5,
        "held_capital_usd": 20.0,
        "held_share_pct": 19.9,
        "open_orders": 1,
        "stale_orders": 0,
        "double_reservations": 0,
        "fragmented": False,
        "drawdown_pct": 0.0,
        "max_drawdown_pct": 1.0,
        "expectancy_usd": 0.5,
        "trades": 1,
        "sync": "ok",
        "last_sync": NOW.isoformat(),
        "consecutive_failures": 0,
        "exchange": "binance",
        "quote_currency": "USDT",
        "positions": 1,
    }
    return AccountStatus.model_validate({**fields, **changes})


def _fill(account: str, symbol: str, amount: float, price: float) -> Fill:
    return Fill(
        account_id=account,
        order_id=f"O-{symbol}",
        trade_id=f"F-{symbol}",
        symbol=symbol,
        side=Side.BUY,
        amount=amount,
        price=price,
        timestamp=T0,
    )


def test_the_report_names_tier_exchange_and_quote_and_counts_money_in_its_code(
    tmp_path: Path,
) -> None:
    book = Books().get("USER:alice")
    book.record_trade(_trade("USER:alice", 0, 2.5))
    book.update_equity(100.5, T0)

    page = write_report(book, tmp_path, now=NOW, status=_status("USER:alice")).read_text(
        encoding="utf-8"
    )

    _check_html(page)
    for fact in ("tier <b>MICRO_CAP</b>", "exchange <b>binance</b>", "quote currency <b>USDT</b>"):
        assert fact in page
    assert "100.50&nbsp;USDT" in page  # equity now
    assert "+2.50&nbsp;USDT" in page  # the trade's net
    assert "Equity curve (USDT)" in page
    assert "Expectancy per USDT risked" in page
    assert "$" not in page  # USDT is not the dollar


def test_a_status_row_of_another_account_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PLATFORM"):
        write_report(Books().get("USER:alice"), tmp_path, now=NOW, status=_status("PLATFORM"))


def test_open_positions_come_from_the_ledger_when_no_sidecar_gives_them(tmp_path: Path) -> None:
    book = Books().get("USER:alice")
    book.book_fills([_fill("USER:alice", "BTC/USDT", 0.5, 100.0)])

    page = write_report(book, tmp_path, now=NOW, status=_status("USER:alice")).read_text(
        encoding="utf-8"
    )

    _check_html(page)
    section = page.split("<h2>Open positions</h2>", 1)[1].split("</section>", 1)[0]
    assert "From the fills booked (the ledger)" in section
    assert "<td>BTC/USDT</td><td>0.5</td><td>100</td>" in section
    assert "<td>ledger</td>" in section
    assert '<th scope="row">Open positions</th><td>1</td>' in page


def test_positions_from_the_running_sidecar_show_value_pnl_and_where_they_are_known_from(
    tmp_path: Path,
) -> None:
    held = [
        PositionView(
            symbol="ETH/USDT",
            asset="ETH",
            amount=2.0,
            average_cost=1_500.0,
            value=3_200.0,
            unrealized_pnl=200.0,
            source="both",
            ledger_amount=2.0,
            exchange_amount=2.0,
        ),
        PositionView(
            symbol="JUNK/USDT",
            asset="JUNK",
            amount=7.0,
            average_cost=None,
            value=None,
            unrealized_pnl=None,
            source="exchange",
            ledger_amount=0.0,
            exchange_amount=7.0,
        ),
    ]
    page = write_report(
        Books().get("PLATFORM"),
        tmp_path,
        now=NOW,
        status=_status("PLATFORM", tier="STANDARD"),
        positions=held,
    ).read_text(encoding="utf-8")

    section = page.split("<h2>Open positions</h2>", 1)[1].split("</section>", 1)[0]
    assert "As the running sidecar sees them" in section
    assert "3,200.00&nbsp;USDT" in section
    assert "+200.00&nbsp;USDT" in section
    assert "<td>both</td>" in section
    assert "<td>no price</td>" in section  # never a guessed value
    assert "<td>exchange</td>" in section


def test_guard_blocks_are_listed_from_the_store_newest_first_and_allowed_entries_are_not(
    tmp_path: Path,
) -> None:
    account = "USER:alice"
    with Store(tmp_path / "state.sqlite3") as store:
        for minutes, allowed, rule, reason in (
            (1, False, "dca", "already holds BTC <no DCA>"),
            (2, True, None, None),
            (3, False, "duplicate_symbol_entry", "one entry per symbol"),
        ):
            store.journal_decision(
                DecisionRecord(
                    account_id=account,
                    ts=T0 + timedelta(minutes=minutes),
                    allowed=allowed,
                    symbol="BTC/USDT",
                    side=Side.BUY,
                    rule=rule,
                    reason=reason,
                )
            )
        book = Books(store).get(account)
        page = write_report(
            book, tmp_path / "out", store=store, now=NOW, status=_status(account)
        ).read_text(encoding="utf-8")

    _check_html(page)
    section = page.split("<h2>Guard blocks</h2>", 1)[1].split("</section>", 1)[0]
    rules = re.findall(r"<td>\d{4}-\d\d-\d\d [\d:]+ UTC</td><td>([a-z_]+)</td>", section)
    assert rules == ["duplicate_symbol_entry", "dca"]
    assert "already holds BTC &lt;no DCA&gt;" in section  # the reason, escaped
    assert (
        '<th scope="row">Guard blocks</th><td>2, last 2026-01-01 00:03:00 UTC: rule '
        "duplicate_symbol_entry</td>"
    ) in page


def test_without_a_store_the_blocks_are_not_known_rather_than_none(tmp_path: Path) -> None:
    page = write_report(Books().get("USER:a"), tmp_path, now=NOW).read_text(encoding="utf-8")
    assert "Guard decisions are journaled in the store; none given." in page
    assert "The guard blocked no entry" not in page


def test_stale_cancels_come_from_the_running_sidecar_and_are_unknown_without_one(
    tmp_path: Path,
) -> None:
    book = Books().get("USER:alice")
    live = write_report(
        book, tmp_path / "live", now=NOW, status=_status("USER:alice", stale_cancels=3)
    ).read_text(encoding="utf-8")
    assert "<td>3 (each confirmed by the exchange)</td>" in live

    # Read from the store alone no sidecar counted them: not known, never a zero.
    offline = write_report(
        book,
        tmp_path / "offline",
        now=NOW,
        status=_status("USER:alice", sync=None, last_sync=None),
    ).read_text(encoding="utf-8")
    assert "not known (counted by the running sidecar)" in offline


def test_a_paused_account_says_who_paused_it_when_and_why(tmp_path: Path) -> None:
    status = _status(
        "USER:alice",
        paused=True,
        paused_by="ops",
        paused_at=(NOW - timedelta(hours=1)).isoformat(),
        pause_reason="CPI print <14:30>",
    )
    page = write_report(Books().get("USER:alice"), tmp_path, now=NOW, status=status).read_text(
        encoding="utf-8"
    )
    _check_html(page)
    assert '<span class="badge warn">PAUSED</span>' in page
    assert "yes by ops at 2026-06-01 11:30:00 UTC: CPI print &lt;14:30&gt;" in page
    assert "(entries blocked, exits pass)" in page


def test_the_cli_report_takes_tier_exchange_and_quote_from_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        book = Books(store).get("USER:alice")
        book.update_equity(120.0, T0)
        book.book_fills([_fill("USER:alice", "BTC/USDT", 0.001, 50_000.0)])
    config = tmp_path / "broker.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "state.sqlite3"}"\n'
        "[[accounts]]\nid = 'USER:alice'\nexchange = 'binance'\nquote_currency = 'USDT'\n"
        "api_key_env = 'NB_KEY'\nsecret_env = 'NB_SECRET'\n",
        encoding="utf-8",
    )
    argv = ["report", "--account", "USER:alice", "--out", str(tmp_path / "out")]
    assert main([*argv, "--config", str(config)]) == 0

    (page_path,) = (tmp_path / "out").glob("report-*.html")
    page = page_path.read_text(encoding="utf-8")
    _check_html(page)
    assert "tier <b>MICRO_CAP</b>" in page  # the band of its last equity, 120 USDT
    assert "exchange <b>binance</b>" in page
    assert "120.00&nbsp;USDT" in page
    assert "<td>BTC/USDT</td>" in page  # the ledger's position
    assert "not known (counted by the running sidecar)" in page
    assert "$" not in page
    assert str(page_path) in capsys.readouterr().out


# ---------------------------------------------------------------------------- on a phone

PHONE_PX = 360


def _busy_page(tmp_path: Path) -> str:
    """A report with everything wide in it: a long id, many trades, long reasons."""
    account = "USER:alexandra-with-a-rather-long-account-name"
    with Store(tmp_path / "state.sqlite3") as store:
        for i in range(3):
            store.journal_decision(
                DecisionRecord(
                    account_id=account,
                    ts=T0 + timedelta(minutes=i),
                    allowed=False,
                    symbol="BTC/USDT",
                    side=Side.BUY,
                    rule="duplicate_symbol_entry",
                    reason="USER:alexandra already has 1 entry order(s) on BTC open or on "
                    "their way to the exchange; MICRO_CAP allows one entry per symbol.",
                )
            )
        store.apply(
            StoreBatch(
                account_id=account,
                trades=[_trade(account, i, 1_234_567.0 if i % 2 else -4.0) for i in range(40)],
                equity_points=[
                    EquityPoint(
                        account_id=account,
                        timestamp=T0 + timedelta(hours=i),
                        equity=1_234_567.89 + i,
                    )
                    for i in range(50)
                ],
            )
        )
        book = Books(store).get(account)
        book.book_fills([_fill(account, "BTC/USDT", 0.123456, 51_234.5)])
        status = _status(
            account,
            paused=True,
            paused_by="ops",
            paused_at=NOW.isoformat(),
            pause_reason="a long reason " * 6,
        )
        return write_report(book, tmp_path / "out", store=store, now=NOW, status=status).read_text(
            encoding="utf-8"
        )


def test_every_table_of_the_report_scrolls_inside_a_wrapper_under_a_viewport(
    tmp_path: Path,
) -> None:
    page = _busy_page(tmp_path)
    _check_html(page)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    tables = page.count("<table")
    assert tables == 5  # now, key figures, positions, blocks, trades
    assert page.count('<div class="scroll"><table') == tables
    assert '<div class="chart">' in page


_HARNESS = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{src}" style="width:{px}px;height:900px;border:0"></iframe>
<pre id="out">pending</pre>
<script>
document.getElementById("f").addEventListener("load", () => {{
  const d = document.getElementById("f").contentDocument;
  const root = d.documentElement;
  const over = [];
  for (const el of d.body.querySelectorAll("*")) {{
    if (el.closest(".scroll, .chart")) continue;  // scrolls sideways on its own
    const r = el.getBoundingClientRect();
    if (r.right > root.clientWidth + 0.5) over.push(el.tagName + ":" + el.textContent.slice(0, 30));
  }}
  document.getElementById("out").textContent = JSON.stringify(
    {{scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, over: over}});
}});
</script></body></html>
"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (.ci/run installs it)")
def test_nothing_of_the_report_is_cut_off_on_a_360_px_phone(tmp_path: Path) -> None:
    page = _busy_page(tmp_path)
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    harness = tmp_path / "harness.html"
    harness.write_text(_HARNESS.format(src=report.name, px=PHONE_PX), encoding="utf-8")
    result = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--allow-file-access-from-files",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            harness.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    found = re.search(r'<pre id="out">([^<]*)</pre>', result.stdout)
    assert found is not None, result.stderr[-2000:]
    measured = json.loads(html.unescape(found.group(1)))
    # The page is no wider than the phone: whatever is wider scrolls inside its wrapper.
    assert measured["scrollWidth"] <= measured["clientWidth"] <= PHONE_PX
    assert measured["over"] == []
