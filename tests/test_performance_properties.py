"""Properties: accounts never mix, incremental equals batch, booked fills conserve quantity."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from nija_broker.core.ledger import Ledger
from nija_broker.core.models import EquityPoint, Fill, Side, TradeRecord
from nija_broker.core.performance import PerformanceRegistry, PerformanceTracker, compute_metrics

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ACCOUNTS = ["PLATFORM", "USER:alice", "USER:bob"]

money = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False, allow_infinity=False)
fees = st.sampled_from([0.0, 0.0, 0.1, 0.25, 1.0])
risks = st.one_of(st.none(), st.floats(min_value=0.5, max_value=50.0))
# A trade: (account index, gross pnl, fee, risk); an equity point: (account index, hours, equity).
trade_events = st.tuples(
    st.just("trade"), st.integers(0, 2), money, fees, risks, st.integers(0, 29)
)
equity_events = st.tuples(
    st.just("equity"),
    st.integers(0, 2),
    st.floats(min_value=0.0, max_value=100_000.0, allow_nan=False),
    st.integers(0, 24 * 20),
)
events = st.lists(st.one_of(trade_events, equity_events), max_size=60)


def make_trade(
    n: int, account: str, pnl: float, fee: float, risk: float | None, trade_no: int
) -> TradeRecord:
    entry = 1_000.0
    return TradeRecord(
        trade_id=f"{account}-{trade_no}",
        account_id=account,
        symbol="ETH/USD",
        side=Side.BUY,
        entry_price=entry,
        exit_price=entry + pnl,
        quantity=1.0,
        pnl=pnl,
        fees=fee,
        entry_time=T0 + timedelta(minutes=n),
        exit_time=T0 + timedelta(minutes=n + 5),
        risk_usd=risk,
    )


@settings(max_examples=60, deadline=None)
@given(events)
def test_every_accounts_metrics_equal_those_of_its_own_trades_alone(
    stream: list[tuple[object, ...]],
) -> None:
    registry = PerformanceRegistry()
    own_trades: dict[str, list[TradeRecord]] = {a: [] for a in ACCOUNTS}
    own_points: dict[str, list[EquityPoint]] = {a: [] for a in ACCOUNTS}
    for n, event in enumerate(stream):
        if event[0] == "trade":
            _, idx, pnl, fee, risk, trade_no = event
            account = ACCOUNTS[idx]  # type: ignore[index]
            t = make_trade(n, account, pnl, fee, risk, trade_no)  # type: ignore[arg-type]
            # trade_no repeats on purpose: a repeated id is a replay for both sides
            registry.get(account).record_trade(t)
            own_trades[account].append(t)
        else:
            _, idx, equity, hours = event
            account = ACCOUNTS[idx]  # type: ignore[index]
            ts = T0 + timedelta(hours=hours)  # type: ignore[arg-type]
            registry.get(account).update_balance(equity, ts)  # type: ignore[arg-type]
            own_points[account].append(
                EquityPoint(account_id=account, timestamp=ts, equity=equity)  # type: ignore[arg-type]
            )

    for account in ACCOUNTS:
        expected = compute_metrics(account, own_trades[account], own_points[account])
        assert registry.get(account).metrics() == expected
        assert registry.get(account).metrics().account_id == account


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(money, fees, risks, st.integers(0, 40)), max_size=80),
    st.integers(1, 20),
)
def test_incremental_tracker_and_its_restore_equal_compute_metrics(
    specs: list[tuple[float, float, float | None, int]], history_size: int
) -> None:
    trades = [make_trade(n, "PLATFORM", *spec) for n, spec in enumerate(specs)]
    points = [(T0 + timedelta(hours=7 * i), 6_000.0 + 10 * spec[0]) for i, spec in enumerate(specs)]
    tracker = PerformanceTracker("PLATFORM", history_size=history_size)
    for checked, (t, (ts, equity)) in enumerate(zip(trades, points, strict=True), start=1):
        tracker.record_trade(t)
        tracker.update_balance(equity, ts)
        if checked % 10 == 0:  # also equal midway, not only at the end
            assert tracker.metrics() == compute_metrics(
                "PLATFORM", trades[:checked], points[:checked]
            )

    expected = compute_metrics("PLATFORM", trades, points)
    assert tracker.metrics() == expected
    restored = PerformanceTracker.restore("PLATFORM", trades, points, history_size=history_size)
    assert restored.metrics() == expected
    unique = {t.trade_id for t in trades}
    assert expected.total_trades == len(unique)
    assert len(tracker.trade_history()) == min(len(unique), history_size)
    assert (
        expected.winning_trades + expected.losing_trades + expected.breakeven_trades
        == expected.total_trades
    )
    assert expected.max_drawdown >= expected.current_drawdown >= 0.0
    assert 0.0 <= expected.max_drawdown_pct <= 100.0


amounts = st.sampled_from([0.1, 0.2, 0.3, 0.05, 1 / 3, 0.7, 1.0, 2.5, 0.001])
prices = st.floats(min_value=1.0, max_value=50_000.0)
fills = st.lists(
    st.tuples(
        st.sampled_from([Side.BUY, Side.SELL]), amounts, prices, fees, st.booleans()
    ),  # the last flag replays an earlier fill
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(fills)
def test_booked_fills_conserve_quantity_fees_and_count_once(
    specs: list[tuple[Side, float, float, float, bool]],
) -> None:
    ledger = Ledger("USER:alice")
    booked: list[Fill] = []
    bought = sold_in_trades = unmatched = 0.0
    sold = 0.0
    all_fees = trade_fees = unmatched_fees = 0.0
    for n, (side, amount, price, fee, replay) in enumerate(specs):
        if replay and booked:
            again = ledger.book(booked[n % len(booked)])
            assert again.duplicate
            assert again.trades == ()
            continue
        f = Fill(
            account_id="USER:alice",
            order_id=f"O{n}",
            trade_id="1",
            symbol="SOL/USD",
            side=side,
            amount=amount,
            price=price,
            fee=fee,
            timestamp=T0 + timedelta(seconds=n),
        )
        result = ledger.book(f)
        booked.append(f)
        assert not result.duplicate
        all_fees += fee
        if side is Side.BUY:
            bought += amount
        else:
            sold += amount
            matched = sum(t.quantity for t in result.trades)
            sold_in_trades += matched
            unmatched += result.unmatched_amount
            unmatched_fees += fee * result.unmatched_amount / amount
            assert math.isclose(matched + result.unmatched_amount, amount, rel_tol=1e-9)
        for t in result.trades:
            trade_fees += t.fees
            assert t.trade_id == f.key
            assert math.isclose(
                t.pnl, (t.exit_price - t.entry_price) * t.quantity, rel_tol=1e-9, abs_tol=1e-9
            )
        position = ledger.position("SOL/USD")
        # No phantom: a held position is never float dust.
        assert position is None or position.quantity > 1e-9

    position = ledger.position("SOL/USD")
    held = position.quantity if position else 0.0
    held_fees = position.entry_fees if position else 0.0
    tol = 1e-9 * max(1.0, bought, sold)
    assert math.isclose(sold_in_trades + held, bought, rel_tol=1e-9, abs_tol=tol)
    assert math.isclose(sold_in_trades + unmatched, sold, rel_tol=1e-9, abs_tol=tol)
    assert math.isclose(
        trade_fees + held_fees + unmatched_fees, all_fees, rel_tol=1e-9, abs_tol=1e-9
    )
    assert ledger.fill_keys() == frozenset(f.key for f in booked)
