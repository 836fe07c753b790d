"""Per-account performance: exact figures, isolation, drawdown, idempotence, restore."""

from __future__ import annotations

import math
import statistics
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nija_broker.core.errors import StateError
from nija_broker.core.models import EquityPoint, Side, TradeRecord
from nija_broker.core.performance import PerformanceRegistry, PerformanceTracker, compute_metrics

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def trade(
    trade_id: str,
    pnl: float,
    *,
    fees: float = 0.0,
    account: str = "PLATFORM",
    risk_usd: float | None = None,
    minutes: int = 0,
) -> TradeRecord:
    """A long of 1 unit bought at 100 (size $100), sold at 100 + pnl."""
    return TradeRecord(
        trade_id=trade_id,
        account_id=account,
        symbol="BTC/USD",
        side=Side.BUY,
        entry_price=100.0,
        exit_price=100.0 + pnl,
        quantity=1.0,
        pnl=pnl,
        fees=fees,
        entry_time=T0 + timedelta(minutes=minutes),
        exit_time=T0 + timedelta(minutes=minutes + 30),
        risk_usd=risk_usd,
    )


# Net P&L: +9 (W), -5 (L), 0 (breakeven), +18 (W), +8 (W), -11 (L)
SAMPLE = [
    trade("t1", 10.0, fees=1.0, risk_usd=5.0),
    trade("t2", -4.0, fees=1.0, risk_usd=5.0),
    trade("t3", 1.0, fees=1.0),
    trade("t4", 20.0, fees=2.0, risk_usd=10.0),
    trade("t5", 8.0),
    trade("t6", -10.0, fees=1.0),
]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("total_trades", 6),
        ("winning_trades", 3),
        ("losing_trades", 2),
        ("breakeven_trades", 1),
        ("win_rate", 50.0),
        ("gross_profit", 35.0),
        ("gross_loss", 16.0),
        ("total_pnl", 19.0),
        ("total_fees", 6.0),
        ("average_win", 35.0 / 3),
        ("average_loss", 8.0),
        ("largest_win", 18.0),
        ("largest_loss", 11.0),
        ("expectancy", 19.0 / 6),  # 0.5 * 35/3 - 2/6 * 8
        ("expectancy_per_dollar_risked", (9 / 5 - 5 / 5 + 18 / 10) / 3),
        ("trades_with_risk", 3),
        ("risk_note", "3 of 6 trades recorded their risk"),
        ("profit_factor", 35.0 / 16.0),
        ("current_win_streak", 0),
        ("current_loss_streak", 1),
        ("max_win_streak", 2),
        ("max_loss_streak", 1),
        # returns 0.09, -0.05, 0, 0.18, 0.08, -0.11: sum 0.19, sum of squares 0.0615
        ("sharpe_ratio", (0.19 / 6) / math.sqrt((0.0615 - 0.19**2 / 6) / 5)),
    ],
)
def test_hand_computed_metrics_of_a_small_trade_list(field: str, expected: object) -> None:
    metrics = compute_metrics("PLATFORM", SAMPLE)
    actual = getattr(metrics, field)
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-6)
    else:
        assert actual == expected


def test_per_trade_sharpe_is_mean_over_sample_stdev_of_net_returns() -> None:
    returns = [0.09, -0.05, 0.0, 0.18, 0.08, -0.11]
    expected = statistics.mean(returns) / statistics.stdev(returns)
    assert compute_metrics("PLATFORM", SAMPLE).sharpe_ratio == pytest.approx(expected, rel=1e-12)


def test_no_trades_gives_zero_figures_and_no_sharpe() -> None:
    metrics = compute_metrics("PLATFORM", [])
    assert metrics.total_trades == 0
    assert metrics.win_rate == 0.0
    assert metrics.expectancy == 0.0
    assert metrics.profit_factor == 0.0
    assert metrics.sharpe_ratio is None
    assert metrics.sharpe_annualized is None
    assert metrics.expectancy_per_dollar_risked is None


def test_profit_factor_is_infinite_with_wins_and_no_losses() -> None:
    metrics = compute_metrics("PLATFORM", [trade("a", 5.0), trade("b", 3.0), trade("c", 0.0)])
    assert metrics.profit_factor == math.inf
    assert metrics.gross_profit == 8.0  # the seed reported this as the profit factor


@pytest.mark.parametrize(
    "pnls",
    [[-5.0, -1.0], [0.0, 0.0], [-2.0, 0.0]],
    ids=["losses only", "breakevens only", "loss and breakeven"],
)
def test_profit_factor_is_zero_with_no_wins(pnls: list[float]) -> None:
    trades = [trade(f"t{i}", pnl) for i, pnl in enumerate(pnls)]
    assert compute_metrics("PLATFORM", trades).profit_factor == 0.0


def test_a_trade_that_only_fees_turned_red_is_a_loss() -> None:
    metrics = compute_metrics("PLATFORM", [trade("t", 1.0, fees=1.2)])
    assert metrics.losing_trades == 1
    assert metrics.winning_trades == 0
    assert metrics.largest_loss == pytest.approx(0.2)


def test_per_dollar_expectancy_says_so_when_no_trade_recorded_its_risk() -> None:
    metrics = compute_metrics("PLATFORM", [trade("a", 5.0), trade("b", -2.0)])
    assert metrics.expectancy_per_dollar_risked is None
    assert metrics.trades_with_risk == 0
    assert metrics.risk_note == "no trade recorded its risk"


def test_breakeven_breaks_both_streaks() -> None:
    trades = [trade("w1", 1.0), trade("w2", 1.0), trade("b", 0.0), trade("w3", 1.0)]
    metrics = compute_metrics("PLATFORM", trades)
    assert metrics.current_win_streak == 1
    assert metrics.max_win_streak == 2
    after_loss = compute_metrics("PLATFORM", [trade("l1", -1.0), trade("b", 0.0)])
    assert after_loss.current_loss_streak == 0
    assert after_loss.max_loss_streak == 1


def test_drawdown_peak_current_and_max_in_money_and_percent() -> None:
    tracker = PerformanceTracker("PLATFORM")
    # 100 -> 50 is the deepest fall in percent (50%); 1000 -> 800 the deepest in money ($200).
    for hour, equity in enumerate([100.0, 50.0, 1000.0, 800.0, 900.0]):
        tracker.update_balance(equity, T0 + timedelta(hours=hour))

    metrics = tracker.metrics()
    assert metrics.peak_balance == 1000.0
    assert metrics.current_balance == 900.0
    assert metrics.current_drawdown == 100.0
    assert metrics.current_drawdown_pct == 10.0
    assert metrics.max_drawdown == 200.0
    assert metrics.max_drawdown_pct == 50.0


def test_drawdown_survives_new_trades() -> None:
    tracker = PerformanceTracker("PLATFORM")
    tracker.update_balance(1000.0, T0)
    tracker.update_balance(700.0, T0 + timedelta(minutes=1))
    before = tracker.metrics()

    tracker.record_trade(trade("w", 50.0))
    tracker.record_trade(trade("l", -20.0))
    after = tracker.metrics()

    assert after.total_trades == 2
    for name in (
        "peak_balance",
        "current_balance",
        "current_drawdown",
        "max_drawdown",
        "max_drawdown_pct",
        "current_drawdown_pct",
    ):
        assert getattr(after, name) == getattr(before, name), name
    assert after.max_drawdown == 300.0


def test_a_recovery_keeps_the_maximum_drawdown() -> None:
    tracker = PerformanceTracker("PLATFORM")
    for minute, equity in enumerate([500.0, 400.0, 650.0]):
        tracker.update_balance(equity, T0 + timedelta(minutes=minute))
    metrics = tracker.metrics()
    assert metrics.current_drawdown == 0.0
    assert metrics.max_drawdown == 100.0
    assert metrics.max_drawdown_pct == 20.0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -0.01])
def test_update_balance_rejects_impossible_equity_naming_it(bad: float) -> None:
    tracker = PerformanceTracker("PLATFORM")
    tracker.update_balance(100.0, T0)
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        tracker.update_balance(bad, T0 + timedelta(minutes=1))
    assert tracker.metrics().current_balance == 100.0
    assert len(tracker.equity_points()) == 1


def test_annualised_sharpe_uses_the_last_equity_of_each_utc_day() -> None:
    tracker = PerformanceTracker("PLATFORM")
    new_york = timezone(timedelta(hours=-5))
    points = [
        (datetime(2026, 1, 1, 8, tzinfo=UTC), 90.0),
        (datetime(2026, 1, 1, 23, tzinfo=UTC), 100.0),  # close of Jan 1
        (datetime(2026, 1, 2, 12, tzinfo=UTC), 130.0),
        (datetime(2026, 1, 2, 18, 30, tzinfo=new_york), 110.0),  # 23:30 UTC: close of Jan 2
        (datetime(2026, 1, 2, 19, 30, tzinfo=new_york), 99.0),  # 00:30 UTC Jan 3: its close
        (datetime(2026, 1, 4, 6, tzinfo=UTC), 108.9),  # Jan 4 (consecutive recorded days)
    ]
    for ts, equity in points:
        tracker.update_balance(equity, ts)

    returns = [110 / 100 - 1, 99 / 110 - 1, 108.9 / 99 - 1]
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)
    assert tracker.metrics().sharpe_annualized == pytest.approx(expected, rel=1e-9)


def test_annualised_sharpe_needs_two_daily_returns_and_some_dispersion() -> None:
    tracker = PerformanceTracker("PLATFORM")
    tracker.update_balance(100.0, T0)
    tracker.update_balance(110.0, T0 + timedelta(days=1))
    assert tracker.metrics().sharpe_annualized is None  # one daily return
    flat = PerformanceTracker("PLATFORM")
    for day in range(4):
        flat.update_balance(100.0, T0 + timedelta(days=day))
    assert flat.metrics().sharpe_annualized is None  # zero stdev


def test_per_trade_sharpe_needs_two_trades_and_some_dispersion() -> None:
    assert compute_metrics("PLATFORM", [trade("a", 5.0)]).sharpe_ratio is None
    same = [trade(f"t{i}", 5.0) for i in range(3)]
    assert compute_metrics("PLATFORM", same).sharpe_ratio is None


def test_an_earlier_stamped_point_counts_on_the_previous_points_day() -> None:
    tracker = PerformanceTracker("PLATFORM")
    tracker.update_balance(100.0, T0)
    tracker.update_balance(110.0, T0 + timedelta(days=1))
    tracker.update_balance(120.0, T0)  # clock stepped back: still day 2's close
    tracker.update_balance(126.0, T0 + timedelta(days=2))

    returns = [120 / 100 - 1, 126 / 120 - 1]
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(365)
    assert tracker.metrics().sharpe_annualized == pytest.approx(expected, rel=1e-9)


def test_platform_and_user_keep_separate_histories_expectancy_and_drawdown() -> None:
    registry = PerformanceRegistry()
    platform, alice = registry.get("PLATFORM"), registry.get("USER:alice")
    platform.record_trade(trade("p1", 30.0, account="PLATFORM"))
    platform.record_trade(trade("p2", -10.0, account="PLATFORM"))
    alice.record_trade(trade("a1", -4.0, account="USER:alice"))
    platform.update_balance(10_000.0, T0)
    platform.update_balance(9_000.0, T0 + timedelta(hours=1))
    alice.update_balance(100.0, T0)
    alice.update_balance(96.0, T0 + timedelta(hours=1))

    p, a = platform.metrics(), alice.metrics()
    assert [t.trade_id for t in platform.trade_history()] == ["p1", "p2"]
    assert [t.trade_id for t in alice.trade_history()] == ["a1"]
    assert p.expectancy == 10.0
    assert a.expectancy == -4.0
    assert (p.max_drawdown, p.max_drawdown_pct) == (1000.0, 10.0)
    assert (a.max_drawdown, a.max_drawdown_pct) == (4.0, 4.0)
    assert registry.accounts() == ["PLATFORM", "USER:alice"]
    assert [m.account_id for m in registry.all_metrics()] == ["PLATFORM", "USER:alice"]


def test_nothing_leaks_between_accounts() -> None:
    registry = PerformanceRegistry()
    registry.get("USER:alice").record_trade(trade("a1", 50.0, account="USER:alice"))
    registry.get("USER:alice").update_balance(500.0, T0)

    bob = registry.get("USER:bob").metrics()
    assert bob == compute_metrics("USER:bob", [])
    assert registry.get("USER:bob").trade_history() == []


def test_trade_of_another_account_is_refused_by_tracker_and_by_compute_metrics() -> None:
    tracker = PerformanceTracker("PLATFORM")
    stranger = trade("x", 5.0, account="USER:alice")
    with pytest.raises(StateError, match="USER:alice"):
        tracker.record_trade(stranger)
    assert tracker.metrics().total_trades == 0
    with pytest.raises(StateError, match="USER:alice"):
        compute_metrics("PLATFORM", [stranger])
    point = EquityPoint(account_id="USER:alice", timestamp=T0, equity=10.0)
    with pytest.raises(StateError, match="USER:alice"):
        compute_metrics("PLATFORM", [], [point])


def test_record_trade_is_idempotent_by_trade_id() -> None:
    tracker = PerformanceTracker("PLATFORM")
    assert tracker.record_trade(trade("t1", 5.0)) is True
    assert tracker.record_trade(trade("t1", 5.0)) is False
    assert tracker.metrics().total_trades == 1
    assert len(tracker.trade_history()) == 1


def test_a_replayed_trade_is_refused_even_after_it_left_the_bounded_history() -> None:
    tracker = PerformanceTracker("PLATFORM", history_size=2)
    for i in range(3):
        tracker.record_trade(trade(f"t{i}", 1.0))
    assert [t.trade_id for t in tracker.trade_history()] == ["t1", "t2"]
    assert tracker.record_trade(trade("t0", 1.0)) is False
    assert tracker.metrics().total_trades == 3


def test_metrics_cover_every_trade_while_history_is_bounded() -> None:
    trades = [trade(f"t{i}", (-1.0) ** i * i) for i in range(50)]
    tracker = PerformanceTracker("PLATFORM", history_size=10)
    for t in trades:
        tracker.record_trade(t)

    assert len(tracker.trade_history()) == 10
    assert tracker.trade_count == 50
    assert tracker.metrics() == compute_metrics("PLATFORM", trades)


def test_trade_history_is_newest_last_and_honours_the_limit() -> None:
    tracker = PerformanceTracker("PLATFORM")
    for i in range(5):
        tracker.record_trade(trade(f"t{i}", 1.0))
    assert [t.trade_id for t in tracker.trade_history(limit=2)] == ["t3", "t4"]
    assert tracker.trade_history(limit=0) == []
    assert [t.trade_id for t in tracker.trade_history()] == [f"t{i}" for i in range(5)]
    with pytest.raises(ValueError, match="-1"):
        tracker.trade_history(limit=-1)


def test_equity_points_are_bounded_and_newest_last() -> None:
    tracker = PerformanceTracker("PLATFORM", history_size=3)
    for minute in range(5):
        tracker.update_balance(100.0 + minute, T0 + timedelta(minutes=minute))
    points = tracker.equity_points()
    assert [p.equity for p in points] == [102.0, 103.0, 104.0]
    assert all(p.account_id == "PLATFORM" for p in points)
    assert tracker.metrics().peak_balance == 104.0


def test_restore_from_stored_trades_and_points_gives_identical_metrics() -> None:
    original = PerformanceTracker("USER:alice", history_size=4)
    pnls = [
        5.0,
        -3.0,
        -2.0,
        0.25,
        7.0,  # 0.25 gross is breakeven after fees
        7.0,
        -1.0,
        4.0,
        4.0,
        4.0,
    ]
    stored_trades = [
        trade(f"t{i}", p, fees=0.25, account="USER:alice", risk_usd=2.0 if i % 3 else None)
        for i, p in enumerate(pnls)
    ]
    stored_points: list[EquityPoint] = []
    for t in stored_trades:
        original.record_trade(t)
    for hour, equity in enumerate([200.0, 180.0, 240.0, 150.0, 210.0, 260.0, 255.0]):
        ts = T0 + timedelta(hours=hour * 9)
        original.update_balance(equity, ts)
        stored_points.append(EquityPoint(account_id="USER:alice", timestamp=ts, equity=equity))

    restored = PerformanceTracker.restore(
        "USER:alice", stored_trades, stored_points, history_size=4
    )
    before, after = original.metrics(), restored.metrics()
    assert after == before
    assert (after.max_win_streak, after.current_win_streak, after.max_loss_streak) == (3, 3, 2)
    assert after.max_drawdown == 90.0
    assert restored.trade_history() == original.trade_history()


def test_registry_hands_every_thread_the_same_tracker_and_counts_every_trade() -> None:
    registry = PerformanceRegistry()
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        tracker = registry.get("PLATFORM")
        for i in range(200):
            tracker.record_trade(trade(f"w{n}-{i}", 1.0 if i % 2 else -1.0))
            tracker.record_trade(trade(f"w{n}-{i}", 1.0 if i % 2 else -1.0))  # replay

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    metrics = registry.get("PLATFORM").metrics()
    assert registry.accounts() == ["PLATFORM"]
    assert metrics.total_trades == 1600
    assert metrics.winning_trades == metrics.losing_trades == 800


def test_registry_refuses_a_second_tracker_for_an_account() -> None:
    registry = PerformanceRegistry()
    registry.get("PLATFORM")
    with pytest.raises(StateError, match="PLATFORM"):
        registry.register(PerformanceTracker("PLATFORM"))
    restored = PerformanceTracker.restore("USER:carol", [], [])
    registry.register(restored)
    assert registry.get("USER:carol") is restored


def test_dust_equity_never_makes_the_annualised_sharpe_nan() -> None:
    tracker = PerformanceTracker("PLATFORM")
    for day, equity in enumerate([2.2e-311, 1.0, 0.0, 5.0, 6.0]):
        tracker.update_balance(equity, T0 + timedelta(days=day))
    sharpe = tracker.metrics().sharpe_annualized
    assert sharpe is None or math.isfinite(sharpe)
    points = tracker.equity_points()
    assert tracker.metrics() == compute_metrics("PLATFORM", [], points)  # nan != nan
