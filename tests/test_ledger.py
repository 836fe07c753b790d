"""The ledger: average-cost positions per account and symbol, trades from reductions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nija_broker.core.errors import StateError
from nija_broker.core.ledger import Ledger, apply_fill
from nija_broker.core.models import Fill, Side

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
_counter = iter(range(1, 1_000_000))


def fill(
    side: str,
    amount: float,
    price: float,
    *,
    fee: float = 0.0,
    minutes: float = 0.0,
    account: str = "PLATFORM",
    symbol: str = "BTC/USD",
    trade_id: str | None = None,
    order_id: str | None = None,
    risk_usd: float | None = None,
) -> Fill:
    n = next(_counter)
    return Fill(
        account_id=account,
        order_id=order_id or f"O{n}",
        trade_id=trade_id or f"T{n}",
        symbol=symbol,
        side=Side(side),
        amount=amount,
        price=price,
        fee=fee,
        timestamp=T0 + timedelta(minutes=minutes),
        risk_usd=risk_usd,
    )


def test_buys_average_their_prices_and_keep_fees_out_of_the_average() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, fee=1.0, minutes=0))
    result = ledger.book(fill("buy", 3.0, 200.0, fee=2.0, minutes=5))

    position = result.position
    assert position is not None
    assert position.quantity == 4.0
    assert position.avg_price == 175.0
    assert position.entry_fees == 3.0
    assert position.opened_at == T0
    assert position.updated_at == T0 + timedelta(minutes=5)
    assert result.trades == ()
    assert result.unmatched_amount == 0.0


def test_partial_sell_yields_a_trade_for_the_reduced_quantity_with_fees_pro_rata() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 4.0, 175.0, fee=4.0))
    result = ledger.book(fill("sell", 1.0, 200.0, fee=0.5, minutes=60))

    (trade,) = result.trades
    assert trade.side is Side.BUY  # the long that was closed
    assert trade.quantity == 1.0
    assert trade.entry_price == 175.0
    assert trade.exit_price == 200.0
    assert trade.size_usd == 175.0
    assert trade.pnl == 25.0
    assert trade.fees == 1.5  # a quarter of the entry fees + the whole sell fee
    assert trade.net_pnl == 23.5
    assert trade.entry_time == T0
    assert trade.exit_time == T0 + timedelta(minutes=60)
    assert trade.hold_time_seconds == 3600.0
    remaining = result.position
    assert remaining is not None
    assert remaining.quantity == 3.0
    assert remaining.avg_price == 175.0  # a sale never moves the average cost
    assert remaining.entry_fees == 3.0
    assert ledger.position("BTC/USD") == remaining


def test_closing_sell_releases_the_remaining_fees_and_leaves_no_position() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 2.0, 50.0, fee=0.3))
    ledger.book(fill("sell", 0.5, 60.0, fee=0.1))
    result = ledger.book(fill("sell", 1.5, 40.0, fee=0.2))

    (trade,) = result.trades
    assert trade.quantity == 1.5
    assert trade.pnl == pytest.approx(-15.0)
    assert trade.fees == pytest.approx(0.3 * 0.75 + 0.2)
    assert result.position is None
    assert ledger.position("BTC/USD") is None
    assert ledger.positions() == []


def test_oversell_is_reported_as_unmatched_and_no_trade_is_invented_for_it() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, fee=1.0))
    result = ledger.book(fill("sell", 3.0, 110.0, fee=3.0))

    (trade,) = result.trades
    assert trade.quantity == 1.0
    assert trade.pnl == 10.0
    assert trade.fees == 2.0  # all entry fees + one third of the sell fee
    assert result.unmatched_amount == 2.0
    assert result.position is None


def test_sell_with_nothing_held_is_all_unmatched_and_makes_no_trade() -> None:
    ledger = Ledger("PLATFORM")
    result = ledger.book(fill("sell", 0.7, 110.0, fee=0.1))

    assert result.trades == ()
    assert result.unmatched_amount == 0.7
    assert result.position is None
    assert ledger.positions() == []


def test_replayed_fill_is_booked_once_and_changes_nothing() -> None:
    ledger = Ledger("PLATFORM")
    buy = fill("buy", 1.0, 100.0, fee=0.1)
    sell = fill("sell", 0.4, 120.0, fee=0.1)
    ledger.book(buy)
    first = ledger.book(sell)
    before = ledger.positions()

    again_buy = ledger.book(buy)
    again_sell = ledger.book(sell.replace())  # an equal fill from a second report

    assert first.duplicate is False
    assert len(first.trades) == 1
    for replay in (again_buy, again_sell):
        assert replay.duplicate is True
        assert replay.trades == ()
        assert replay.unmatched_amount == 0.0
    assert again_sell.position == before[0]
    assert ledger.positions() == before


def test_fill_keys_given_back_after_a_restart_keep_replays_out() -> None:
    ledger = Ledger("USER:alice")
    buy = fill("buy", 2.0, 10.0, account="USER:alice")
    sell = fill("sell", 1.0, 12.0, account="USER:alice")
    ledger.book(buy)
    ledger.book(sell)

    restarted = Ledger("USER:alice", ledger.positions(), ledger.fill_keys())
    assert restarted.book(buy).duplicate is True
    assert restarted.book(sell).duplicate is True
    assert restarted.positions() == ledger.positions()
    assert restarted.is_booked(sell)


def test_fill_keyed_by_cumulative_amount_is_also_booked_once() -> None:
    ledger = Ledger("PLATFORM")
    report = Fill(
        account_id="PLATFORM",
        order_id="O-cum",
        symbol="ETH/USD",
        side=Side.BUY,
        amount=0.5,
        price=2000.0,
        timestamp=T0,
        cumulative_filled=0.5,
    )
    assert ledger.book(report).duplicate is False
    assert ledger.book(report).duplicate is True
    position = ledger.position("ETH/USD")
    assert position is not None
    assert position.quantity == 0.5


def test_fill_of_another_account_is_refused_and_changes_nothing() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0))
    stranger = fill("buy", 5.0, 1.0, account="USER:alice")

    with pytest.raises(StateError, match="USER:alice"):
        ledger.book(stranger)
    position = ledger.position("BTC/USD")
    assert position is not None
    assert position.quantity == 1.0
    assert not ledger.is_booked(stranger)


def test_ledger_refuses_positions_of_another_account_at_restore() -> None:
    other = Ledger("USER:bob")
    other.book(fill("buy", 1.0, 100.0, account="USER:bob"))
    with pytest.raises(StateError, match="USER:bob"):
        Ledger("PLATFORM", other.positions())


@pytest.mark.parametrize(
    ("buys", "sells"),
    [
        ([0.1, 0.2], [0.3]),
        ([0.3], [0.1, 0.2]),
        ([0.7], [0.1] * 7),
        ([0.1] * 10, [1.0]),
        ([1 / 3] * 3, [0.5, 0.5]),
    ],
)
def test_float_dust_leaves_no_phantom_position(buys: list[float], sells: list[float]) -> None:
    ledger = Ledger("PLATFORM")
    for amount in buys:
        ledger.book(fill("buy", amount, 100.0))
    sold = 0.0
    unmatched = 0.0
    for amount in sells:
        result = ledger.book(fill("sell", amount, 101.0))
        sold += sum(t.quantity for t in result.trades)
        unmatched += result.unmatched_amount

    assert ledger.positions() == []
    assert ledger.position("BTC/USD") is None
    assert unmatched == 0.0
    assert sold == pytest.approx(sum(buys), rel=1e-12)


def test_risk_accumulates_over_buys_and_is_released_pro_rata() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, risk_usd=10.0))
    ledger.book(fill("buy", 1.0, 100.0, risk_usd=5.0))
    first = ledger.book(fill("sell", 0.5, 110.0))
    last = ledger.book(fill("sell", 1.5, 110.0))

    assert first.trades[0].risk_usd == pytest.approx(3.75)
    assert first.position is not None
    assert first.position.risk_usd == pytest.approx(11.25)
    assert last.trades[0].risk_usd == pytest.approx(11.25)


def test_trade_without_recorded_risk_has_none() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0))
    (trade,) = ledger.book(fill("sell", 1.0, 90.0)).trades
    assert trade.risk_usd is None


def test_trade_id_is_the_fill_key_so_a_rebuild_gives_the_same_trade() -> None:
    buy = fill("buy", 1.0, 100.0)
    sell = fill("sell", 1.0, 105.0, order_id="S-1", trade_id="x9")
    first, second = Ledger("PLATFORM"), Ledger("PLATFORM")
    for ledger in (first, second):
        ledger.book(buy)
    (a,) = first.book(sell).trades
    (b,) = second.book(sell).trades
    assert a.trade_id == sell.key == "S-1:t:x9"
    assert a == b


def test_positions_are_per_symbol_and_both_symbol_forms_find_them() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, symbol="BTC-USD"))
    ledger.book(fill("buy", 2.0, 10.0, symbol="ETH/USD"))
    ledger.book(fill("sell", 1.0, 12.0, symbol="ETH/USD"))

    btc = ledger.position("btc-usd")
    assert btc is not None
    assert btc.symbol == "BTC/USD"
    assert [p.symbol for p in ledger.positions()] == ["BTC/USD", "ETH/USD"]
    eth = ledger.position("ETH-USD")
    assert eth is not None
    assert eth.quantity == 1.0


def test_reopening_after_flat_starts_a_new_position_with_its_own_open_time() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, fee=1.0, minutes=0))
    ledger.book(fill("sell", 1.0, 100.0, minutes=10))
    result = ledger.book(fill("buy", 2.0, 50.0, fee=0.2, minutes=20))

    position = result.position
    assert position is not None
    assert position.opened_at == T0 + timedelta(minutes=20)
    assert position.avg_price == 50.0
    assert position.entry_fees == 0.2  # the closed position's fees do not carry over


def test_sell_reported_with_a_time_before_its_buy_still_makes_a_valid_trade() -> None:
    ledger = Ledger("PLATFORM")
    ledger.book(fill("buy", 1.0, 100.0, minutes=10))
    (trade,) = ledger.book(fill("sell", 1.0, 101.0, minutes=9)).trades
    assert trade.entry_time <= trade.exit_time
    assert trade.hold_time_seconds == 0.0


def test_apply_fill_is_pure_and_leaves_its_input_unchanged() -> None:
    opened, _, _ = apply_fill(None, fill("buy", 2.0, 100.0, fee=0.2))
    assert opened is not None
    after, trades, unmatched = apply_fill(opened, fill("sell", 0.5, 120.0))

    assert opened.quantity == 2.0
    assert opened.entry_fees == 0.2
    assert after is not None
    assert after.quantity == 1.5
    assert len(trades) == 1
    assert unmatched == 0.0
