"""Status rows: one per account, exact figures, a stable JSON schema and a readable table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.models import Fill, Order, OrderRole, OrderStatus, TradeRecord
from nija_broker.core.tiers import DEFAULT_TIERS, MICRO_CAP, TierTable
from nija_broker.service.status import (
    SCHEMA_VERSION,
    AccountStatus,
    account_status,
    render_table,
    status_document,
    status_rows,
)
from nija_broker.state.books import Books

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)

STATUS_KEYS = {
    "account_id",
    "tier",
    "equity_usd",
    "held_capital_usd",
    "held_share_pct",
    "open_orders",
    "stale_orders",
    "double_reservations",
    "fragmented",
    "drawdown_pct",
    "max_drawdown_pct",
    "expectancy_usd",
    "trades",
    "sync",
    "last_sync",
    "consecutive_failures",
    "unvalued_holdings",
    "breakers_armed",
    "breakers_tripped",
    "weight_planned_per_min",
    "weight_spent_last_min",
    "weight_unit",
    "exchange",
    "quote_currency",
    "positions",
    "paused",
    "paused_by",
    "paused_at",
    "pause_reason",
    "last_block",
    "stale_cancels",
}


def _order(account: str, oid: str, **changes: Any) -> Order:
    fields: dict[str, Any] = dict(
        id=oid,
        account_id=account,
        symbol="BTC/USD",
        side="buy",
        price=100.0,
        amount=0.1,
        created_at=T0,
    )
    fields.update(changes)
    return Order(**fields)


def _live(
    account: str, equity_usd: float | None, table: TierTable | None = None, **health: Any
) -> AccountLive:
    live = AccountLive.create(account, table or TierTable())
    if equity_usd is not None:
        live.tier.update(equity_usd)
        live.equity_usd = equity_usd
    live.health = AccountHealth(**health)
    return live


def _micro_books(books: Books, account: str = "USER:micro") -> None:
    """$100 account: one stale entry, one fresh entry, a position with stop + target."""
    book = books.get(account)
    book.apply_orders(
        [
            _order(account, "old", created_at=T0),
            _order(account, "fresh", symbol="ETH/USD", created_at=NOW - timedelta(minutes=5)),
        ]
    )
    book.book_fills(
        [
            Fill(
                account_id=account,
                order_id="B0",
                trade_id="f1",
                symbol="SOL/USD",
                side="buy",
                amount=1.0,
                price=10.0,
                timestamp=T0,
            )
        ]
    )
    book.apply_orders(
        [
            _order(
                account,
                "stop",
                symbol="SOL/USD",
                side="sell",
                type="stop",
                price=None,
                stop_price=9.0,
                amount=1.0,
                role=OrderRole.STOP,
                parent_position_id="p1",
            ),
            _order(
                account,
                "target",
                symbol="SOL/USD",
                side="sell",
                price=12.0,
                amount=1.0,
                role=OrderRole.TARGET,
                parent_position_id="p1",
            ),
        ]
    )


def test_micro_account_row_carries_exact_figures() -> None:
    books = Books()
    _micro_books(books)
    live = _live("USER:micro", 100.0, state=SyncState.OK, last_success=T0, consecutive_failures=0)

    row = account_status(books.get("USER:micro"), live, NOW)

    buys = 2 * 0.1 * 100.0 * 1.004  # two open entries, fee held too
    sells = 1.0 * 9.0 + 1.0 * 12.0  # stop valued at its trigger, target at its limit
    assert row.tier == MICRO_CAP
    assert row.equity_usd == 100.0
    assert row.held_capital_usd == pytest.approx(buys + sells)
    assert row.held_share_pct == pytest.approx((buys + sells) / 100.0 * 100.0)
    assert row.open_orders == 4
    assert row.stale_orders == 1  # only the 2-hour-old entry; exits are never stale
    assert row.double_reservations == 2  # over-reserved position and stop + target pair
    assert row.fragmented is True  # 41% held against MICRO_CAP's 30% limit
    assert row.sync == "ok"
    assert row.last_sync == T0.isoformat()
    assert row.consecutive_failures == 0


def test_stale_count_follows_the_tiers_max_age() -> None:
    tiers = tuple(
        t.model_copy(update={"stale_max_age_s": 600.0}) if t.name == MICRO_CAP else t
        for t in DEFAULT_TIERS
    )
    books = Books()
    _micro_books(books)
    live = _live("USER:micro", 100.0, table=TierTable(tiers))

    row = account_status(books.get("USER:micro"), live, NOW + timedelta(minutes=10))

    assert row.stale_orders == 2  # the fresh entry is 15 minutes old: past 10 minutes


def test_offline_row_takes_equity_from_the_curve_and_leaves_sync_unknown() -> None:
    books = Books()
    book = books.get("PLATFORM")
    book.update_equity(10_000.0, T0)
    book.update_equity(9_000.0, T0 + timedelta(hours=1))
    book.record_trade(
        TradeRecord(
            trade_id="T1",
            account_id="PLATFORM",
            symbol="ETH/USD",
            side="buy",
            entry_price=2_000,
            exit_price=2_100,
            quantity=1,
            pnl=100,
            fees=2,
            entry_time=T0,
            exit_time=NOW,
        )
    )

    row = account_status(book, None, NOW)

    assert row.tier is None
    assert row.equity_usd == 9_000.0
    assert row.drawdown_pct == pytest.approx(10.0)
    assert row.max_drawdown_pct == pytest.approx(10.0)
    assert row.expectancy_usd == pytest.approx(98.0)
    assert row.trades == 1
    assert row.sync is None
    assert row.last_sync is None
    assert row.held_share_pct == 0.0
    assert row.fragmented is False


def test_unknown_equity_is_unknown_not_zero() -> None:
    books = Books()
    book = books.get("USER:new")
    book.apply_order(_order("USER:new", "o1"))

    row = account_status(book, _live("USER:new", None), NOW)

    assert row.equity_usd is None
    assert row.held_share_pct is None
    assert row.fragmented is None
    assert row.tier is None
    assert row.sync == "syncing"


def test_unvalued_holdings_are_listed_and_equity_stays_what_is_valued() -> None:
    books = Books()
    live = _live("USER:a", 100.0, state=SyncState.OK, last_success=T0)
    live.unvalued_holdings = ("JUNK",)

    row = account_status(books.get("USER:a"), live, NOW)

    assert row.unvalued_holdings == ("JUNK",)
    assert row.equity_usd == 100.0
    assert row.sync == "ok"  # something is valued: equity is established


def test_equity_that_cannot_be_established_is_unknown_and_degraded() -> None:
    books = Books()
    book = books.get("USER:a")
    book.update_equity(500.0, T0)  # an old point must not stand in for the unknown figure
    live = _live("USER:a", None, state=SyncState.OK, last_success=T0)
    live.unvalued_holdings = ("JUNK", "LDBTC")
    live.valuation_problem = "equity cannot be established in USD: the account holds JUNK"

    row = account_status(book, live, NOW)

    assert row.sync == "degraded"
    assert row.equity_usd is None
    assert row.unvalued_holdings == ("JUNK", "LDBTC")
    assert live.health.state is SyncState.OK  # the reconciler's own record is untouched
    assert json.loads(json.dumps(status_document([row], NOW)))["accounts"][0][
        "unvalued_holdings"
    ] == ["JUNK", "LDBTC"]
    lines = render_table([row]).splitlines()  # every column
    assert lines[0].split()[-2:] == ["UNVALUED", "BREAKERS"]
    assert lines[1].split()[-2:] == ["JUNK,LDBTC", "-"]  # no guard: no breakers known
    assert "degraded" in lines[1]
    # Fitted to 100 columns the UNVALUED column gives way, and NOTES names the holdings.
    header, fitted = render_table([row], width=100).splitlines()
    assert "UNVALUED" not in header
    assert fitted.endswith("unvalued JUNK,LDBTC")
    assert "degraded" in fitted


def test_a_failing_sync_is_not_hidden_by_the_valuation() -> None:
    live = _live(
        "USER:a", None, state=SyncState.FAILED, consecutive_failures=5, last_error="timeout"
    )
    live.valuation_problem = "equity cannot be established"
    row = account_status(Books().get("USER:a"), live, NOW)
    assert row.sync == "failed"


def test_held_capital_on_zero_equity_is_fragmented_without_a_share() -> None:
    books = Books()
    book = books.get("USER:empty")
    book.apply_order(_order("USER:empty", "o1"))

    row = account_status(book, _live("USER:empty", 0.0), NOW)

    assert row.held_share_pct is None
    assert row.fragmented is True


def test_rows_are_per_account_and_never_mix_accounts() -> None:
    books = Books()
    _micro_books(books, "USER:micro")
    books.get("PLATFORM").apply_order(_order("PLATFORM", "big", amount=5.0))
    lives = {
        "USER:micro": _live("USER:micro", 100.0),
        "PLATFORM": _live("PLATFORM", 10_000.0),
        "USER:configured": _live("USER:configured", None),
    }

    rows = status_rows(books, lives, NOW)

    assert [r.account_id for r in rows] == ["PLATFORM", "USER:configured", "USER:micro"]
    for row in rows:
        alone = account_status(books.get(row.account_id), lives[row.account_id], NOW)
        assert row == alone
    platform = rows[0]
    assert platform.held_capital_usd == pytest.approx(5.0 * 100.0 * 1.004)
    assert platform.open_orders == 1
    assert rows[1].open_orders == 0


def test_one_account_can_be_asked_for_and_an_unknown_one_is_an_error() -> None:
    books = Books()
    _micro_books(books)
    rows = status_rows(books, {}, NOW, account_id="USER:micro")
    assert [r.account_id for r in rows] == ["USER:micro"]
    with pytest.raises(KeyError, match="USER:nobody"):
        status_rows(books, {}, NOW, account_id="USER:nobody")


def test_live_view_of_another_account_is_refused() -> None:
    books = Books()
    with pytest.raises(ValueError, match="PLATFORM"):
        account_status(books.get("USER:a"), _live("PLATFORM", 10.0), NOW)


def test_json_document_schema_is_pinned() -> None:
    books = Books()
    _micro_books(books)
    rows = status_rows(books, {"USER:micro": _live("USER:micro", 100.0)}, NOW)

    doc = json.loads(json.dumps(status_document(rows, NOW)))

    assert set(doc) == {"schema_version", "generated_at", "accounts"}
    assert doc["schema_version"] == SCHEMA_VERSION == 5
    assert doc["generated_at"] == NOW.isoformat()
    assert set(AccountStatus.model_fields) == STATUS_KEYS
    assert [set(a) for a in doc["accounts"]] == [STATUS_KEYS]
    assert AccountStatus.model_validate(doc["accounts"][0]) == rows[0]


def test_table_has_a_header_and_one_line_per_account_and_no_total() -> None:
    books = Books()
    _micro_books(books)
    books.get("PLATFORM").update_equity(10_000.0, T0)
    rows = status_rows(
        books, {"USER:micro": _live("USER:micro", 100.0, state=SyncState.OK, last_success=T0)}, NOW
    )

    lines = render_table(rows).splitlines()

    assert len(lines) == 3
    assert lines[0].split()[:3] == ["ACCOUNT", "TIER", "EQUITY"]
    platform, micro = lines[1], lines[2]
    assert platform.startswith("PLATFORM ")
    # Equity in the account's own quote, never as "$": no live view names it here.
    assert "10,000.00" in platform
    assert "$" not in "".join(lines)
    assert "offline" in platform
    assert "never" in platform
    assert micro.startswith("USER:micro ")
    for cell in ("MICRO_CAP", "YES", "2026-03-01 09:00:00"):
        assert cell in micro
    # Fixed width: the TIER column starts at the same offset on every line.
    assert {
        line.index(tier) for line, tier in zip(lines, ["TIER", "-", "MICRO_CAP"], strict=True)
    } == {lines[0].index("TIER")}
    assert not any("total" in line.lower() for line in lines)


def test_table_neutralises_control_characters_in_account_ids() -> None:
    books = Books()
    books.get("USER:\x1b[2Jevil")

    table = render_table(status_rows(books, {}, NOW))

    assert "\x1b" not in table
    assert "USER:?[2Jevil" in table


def test_empty_table_says_so() -> None:
    assert render_table([]) == "no accounts\n"


def test_filled_orders_do_not_count_as_open() -> None:
    books = Books()
    book = books.get("USER:a")
    book.apply_order(_order("USER:a", "o1"))
    book.apply_order(_order("USER:a", "o1", status=OrderStatus.FILLED, filled=0.1))
    row = account_status(book, None, NOW)
    assert row.open_orders == 0
    assert row.held_capital_usd == 0.0
