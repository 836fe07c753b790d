from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from nija_broker.core.models import Fill, Order, OrderStatus, TradeRecord

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _order(**changes: Any) -> Order:
    fields: dict[str, Any] = dict(
        id="O-1",
        account_id="PLATFORM",
        symbol="BTC-USD",
        side="buy",
        price=45_000.0,
        amount=0.01,
        created_at=T0,
    )
    fields.update(changes)
    return Order(**fields)


def test_symbols_are_stored_in_ccxt_form() -> None:
    assert _order(symbol="btc-usd").symbol == "BTC/USD"
    assert _order(symbol="ETH/USDT").symbol == "ETH/USDT"


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = datetime(2026, 1, 1, 12)  # noqa: DTZ001 - the point of the test
    assert _order(created_at=naive).created_at == T0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("price", math.nan, "price"),
        ("price", math.inf, "price"),
        ("price", -1.0, "price"),
        ("amount", 0.0, "amount"),
        ("amount", -0.5, "amount"),
        ("side", "long", "side"),
        ("account_id", "", "account_id"),
        ("account_id", "   ", "account_id"),
        ("symbol", "BTCUSD", "symbol"),
        ("filled", 0.02, "filled (0.02) must not exceed amount (0.01)"),
        ("status", "done", "status"),
    ],
)
def test_bad_order_values_raise_naming_field_and_value(
    field: str, value: object, fragment: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _order(**{field: value})
    message = str(info.value)
    assert fragment in message
    assert repr(value) in message or str(value) in message


def test_remaining_is_amount_minus_filled() -> None:
    order = _order(filled=0.004, status=OrderStatus.PARTIALLY_FILLED)
    assert order.remaining == pytest.approx(0.006)


def test_replace_validates_the_new_value() -> None:
    order = _order()
    with pytest.raises(ValidationError, match="filled"):
        order.replace(filled=1.0)
    assert order.filled == 0.0


def test_orders_are_frozen() -> None:
    order = _order()
    with pytest.raises(ValidationError):
        order.filled = 0.5  # type: ignore[misc]


def test_fill_needs_a_trade_id_or_cumulative_amount() -> None:
    with pytest.raises(ValidationError, match="trade_id or a cumulative_filled"):
        Fill(
            account_id="A",
            order_id="O",
            symbol="BTC/USD",
            side="buy",
            amount=1,
            price=1,
            timestamp=T0,
        )
    by_trade = Fill(
        account_id="A",
        order_id="O",
        trade_id="7",
        symbol="BTC/USD",
        side="buy",
        amount=1,
        price=1,
        timestamp=T0,
    )
    by_cumulative = by_trade.replace(trade_id=None, cumulative_filled=1.0)
    assert by_trade.key != by_cumulative.key


def _trade(**changes: Any) -> TradeRecord:
    fields: dict[str, Any] = dict(
        trade_id="T-1",
        account_id="PLATFORM",
        symbol="BTC-USD",
        side="buy",
        entry_price=45_000.0,
        exit_price=46_000.0,
        quantity=0.01,
        size_usd=450.0,
        pnl=10.0,
        pnl_pct=2.22,
        fees=2.0,
        net_pnl=8.0,
        entry_time=T0,
        exit_time=T0 + timedelta(hours=2),
        hold_time_seconds=7200,
        is_win=True,
    )
    fields.update(changes)
    return TradeRecord(**fields)


def test_seed_trade_record_is_accepted_unchanged() -> None:
    trade = _trade()
    assert (trade.net_pnl, trade.is_win, trade.symbol) == (8.0, True, "BTC/USD")


def test_trade_record_derives_what_it_is_not_given() -> None:
    trade = TradeRecord(
        trade_id="T",
        account_id="A",
        symbol="SOL/USD",
        side="buy",
        entry_price=100,
        exit_price=90,
        quantity=2,
        pnl=-20,
        fees=1,
        entry_time=T0,
        exit_time=T0 + timedelta(minutes=30),
    )
    assert trade.net_pnl == -21
    assert trade.is_win is False
    assert trade.size_usd == 200
    assert trade.hold_time_seconds == 1800


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"net_pnl": 9.0}, "net_pnl (9.0) must equal pnl (10.0) - fees (2.0)"),
        ({"is_win": False}, "is_win (False) contradicts net_pnl (8.0)"),
        ({"exit_time": T0 - timedelta(seconds=1)}, "exit_time"),
        ({"fees": math.nan}, "fees"),
        ({"quantity": 0}, "quantity"),
        ({"account_id": ""}, "account_id"),
    ],
)
def test_inconsistent_trade_records_are_refused(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        _trade(**changes)
