"""The seed's scenarios, through the seed's API, as behaviour — and the seed's bugs gone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nija_broker import compat
from nija_broker.compat import (
    AccountOrderTracker,
    AccountPerformanceTracker,
    OrderInfo,
    TradeRecord,
    get_order_tracker,
    get_performance_tracker,
)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "data")
    compat._close_all()


def _now() -> datetime:
    return datetime.now(UTC)


def _order(order_id: str, account_id: str, **changes: Any) -> OrderInfo:
    fields: dict[str, Any] = dict(
        order_id=order_id,
        account_id=account_id,
        symbol="BTC-USD",
        side="buy",
        price=45_000.0,
        quantity=0.01,
        size_usd=450.0,
        status="open",
        created_at=_now(),
        reserved_capital=450.0,
    )
    fields.update(changes)
    return OrderInfo(**fields)


def _trade(
    trade_id: str, account_id: str, net: float, fees: float = 1.0, **changes: Any
) -> TradeRecord:
    entry = datetime(2026, 2, 17, 10, tzinfo=UTC)
    fields: dict[str, Any] = dict(
        trade_id=trade_id,
        account_id=account_id,
        symbol="BTC-USD",
        side="buy",
        entry_price=45_000.0,
        exit_price=45_000.0 + (net + fees) * 100,
        quantity=0.01,
        size_usd=450.0,
        pnl=net + fees,
        pnl_pct=(net + fees) / 450 * 100,
        fees=fees,
        net_pnl=net,
        entry_time=entry,
        exit_time=entry + timedelta(hours=2),
        hold_time_seconds=7200,
        is_win=net > 0,
    )
    fields.update(changes)
    return TradeRecord(**fields)


def test_seed_usage_example_runs_unchanged(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(
        OrderInfo(
            order_id="ORDER-123",
            account_id="PLATFORM",
            symbol="BTC-USD",
            side="buy",
            price=45000.0,
            quantity=0.01,
            size_usd=450.0,
            status="open",
            created_at=datetime.now(),  # noqa: DTZ005 - the bot passes naive local time
            reserved_capital=450.0,
        )
    )
    assert tracker.get_order_count("PLATFORM") == 1
    held = tracker.get_held_capital("PLATFORM")
    assert held == 450.0  # the reserved_capital the bot declared
    fragmented, message = tracker.detect_order_fragmentation(
        "PLATFORM", account_balance=100.0, warn_threshold=0.30
    )
    assert fragmented
    assert "100" in message


def test_orders_are_counted_per_account(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    for i in range(3):
        tracker.add_order(_order(f"P-{i}", "PLATFORM"))
    tracker.add_order(_order("A-1", "USER:alice"))
    assert tracker.get_order_count("PLATFORM") == 3
    assert tracker.get_order_count("USER:alice") == 1
    assert tracker.get_order_count("USER:bob") == 0


def test_held_capital_is_tracked_per_account_and_a_fill_releases_it(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    # Declared nothing (None): held is computed, remaining x price + 0.4% fee.
    tracker.add_order(_order("P-1", "PLATFORM", quantity=0.02, reserved_capital=None))
    tracker.add_order(_order("A-1", "USER:alice", price=100.0, quantity=0.5, reserved_capital=None))
    assert tracker.get_held_capital("PLATFORM") == pytest.approx(900.0 * 1.004)
    assert tracker.get_held_capital("USER:alice") == pytest.approx(50.0 * 1.004)
    # Each open order reports its own share of the account's held capital.
    assert sum(o.reserved_capital for o in tracker.get_open_orders("PLATFORM")) == pytest.approx(
        tracker.get_held_capital("PLATFORM")
    )
    assert tracker.mark_order_filled("P-1", "PLATFORM") is True
    assert tracker.get_held_capital("PLATFORM") == 0.0
    assert tracker.get_held_capital("USER:alice") == pytest.approx(50.0 * 1.004)
    assert tracker.mark_order_filled("missing", "PLATFORM") is False


def test_cancelled_order_cannot_be_marked_filled_afterwards(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(_order("P-1", "PLATFORM"))
    assert tracker.mark_order_cancelled("P-1", "PLATFORM") is True
    assert tracker.mark_order_filled("P-1", "PLATFORM") is False
    assert tracker.get_order_count("PLATFORM") == 0


def test_stop_and_target_of_one_position_are_a_double_reservation(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    common: dict[str, Any] = dict(side="sell", quantity=0.01, parent_position_id="POS-1")
    tracker.add_order(_order("STOP-1", "PLATFORM", order_type="stop", price=44_000.0, **common))
    tracker.add_order(_order("TGT-1", "PLATFORM", order_type="target", price=47_000.0, **common))
    found, message = tracker.check_double_reservation("POS-1", "PLATFORM")
    assert found
    assert "DOUBLE RESERVATION" in message
    assert tracker.check_double_reservation("POS-2", "PLATFORM")[0] is False
    assert tracker.check_double_reservation("POS-1", "USER:alice")[0] is False


def test_fragmentation_is_flagged_at_100_dollars_and_not_at_5000(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(_order("M-1", "USER:micro", price=50.0, quantity=1.0))
    assert tracker.detect_order_fragmentation("USER:micro", 100.0)[0] is True
    assert tracker.detect_order_fragmentation("USER:micro", 5_000.0)[0] is False


def test_two_hour_old_entry_is_stale_and_force_cancel_does_not_fake_a_cancel(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(_order("OLD", "PLATFORM", created_at=_now() - timedelta(hours=2)))
    tracker.add_order(_order("NEW", "PLATFORM"))
    assert tracker.get_account_stats("PLATFORM").stale_orders_count == 1
    assert tracker.cleanup_stale_orders("PLATFORM", force_cancel=True) == 1
    # Still open: only the exchange's answer may close it.
    assert {o.order_id for o in tracker.get_open_orders("PLATFORM")} == {"OLD", "NEW"}


def test_account_stats_have_the_seed_fields(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(_order("E-1", "PLATFORM", order_type="limit"))
    tracker.add_order(_order("S-1", "PLATFORM", side="sell", order_type="stop", price=40_000.0))
    tracker.add_order(_order("T-1", "PLATFORM", side="sell", order_type="target", price=50_000.0))
    stats = tracker.get_account_stats("PLATFORM")
    assert (stats.total_open_orders, stats.stop_orders, stats.target_orders) == (3, 1, 1)
    assert stats.to_dict()["account_id"] == "PLATFORM"
    assert set(tracker.get_all_accounts_summary()) == {"PLATFORM"}


def test_filled_orders_are_cleaned_up_after_retention_only(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(_order("F-1", "PLATFORM"))
    tracker.mark_order_filled("F-1", "PLATFORM")
    assert tracker.cleanup_filled_orders("PLATFORM", max_age_hours=24) == 0
    assert tracker.cleanup_filled_orders("PLATFORM", max_age_hours=0) == 1


def test_bad_order_input_names_the_seed_field_and_changes_nothing(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    with pytest.raises(ValueError, match=r"quantity: .*value: -1"):
        tracker.add_order(_order("BAD", "PLATFORM", quantity=-1))
    with pytest.raises(ValueError, match=r"price: .*nan"):
        tracker.add_order(_order("BAD", "PLATFORM", price=float("nan")))
    with pytest.raises(ValueError, match="order_type"):
        tracker.add_order(_order("BAD", "PLATFORM", order_type="iceberg"))
    with pytest.raises(ValueError, match="account_id"):
        tracker.add_order(_order("BAD", ""))
    assert tracker.get_order_count("PLATFORM") == 0


def test_trade_histories_expectancy_and_drawdown_are_separate_per_account(data_dir: str) -> None:
    perf = get_performance_tracker(data_dir)
    for i, net in enumerate([10.0, -5.0, 20.0]):
        perf.record_trade(_trade(f"P-{i}", "PLATFORM", net))
    perf.record_trade(_trade("A-1", "USER:alice", -8.0))
    perf.update_balance("PLATFORM", 1_000.0)
    perf.update_balance("PLATFORM", 900.0)
    perf.update_balance("USER:alice", 100.0)
    platform, alice = perf.get_metrics("PLATFORM"), perf.get_metrics("USER:alice")
    assert (platform.total_trades, alice.total_trades) == (3, 1)
    assert platform.expectancy == pytest.approx(25.0 / 3)
    assert alice.expectancy == pytest.approx(-8.0)
    assert platform.max_drawdown == pytest.approx(100.0)
    assert alice.max_drawdown == 0.0
    assert [t.trade_id for t in perf.get_trade_history("USER:alice")] == ["A-1"]
    assert set(perf.verify_no_aggregation()) == {"PLATFORM", "USER:alice"}
    assert all(v.startswith("Clean") for v in perf.verify_no_aggregation().values())


def test_drawdown_survives_new_trades_and_a_restart(data_dir: str) -> None:
    perf = get_performance_tracker(data_dir)
    perf.update_balance("PLATFORM", 1_000.0)
    perf.update_balance("PLATFORM", 700.0)
    perf.record_trade(_trade("T-1", "PLATFORM", 50.0))
    assert perf.get_metrics("PLATFORM").max_drawdown == pytest.approx(300.0)
    compat._close_all()
    again = get_performance_tracker(data_dir)
    metrics = again.get_metrics("PLATFORM")
    assert metrics.max_drawdown == pytest.approx(300.0)
    assert metrics.max_drawdown_pct == pytest.approx(30.0)
    assert metrics.total_trades == 1


def test_profit_factor_with_no_losses_is_infinite(data_dir: str) -> None:
    perf = get_performance_tracker(data_dir)
    perf.record_trade(_trade("W-1", "PLATFORM", 10.0))
    perf.record_trade(_trade("W-2", "PLATFORM", 30.0))
    assert perf.get_metrics("PLATFORM").profit_factor == float("inf")


def test_recording_the_same_trade_twice_counts_it_once(data_dir: str) -> None:
    perf = get_performance_tracker(data_dir)
    perf.record_trade(_trade("T-1", "PLATFORM", 10.0))
    perf.record_trade(_trade("T-1", "PLATFORM", 10.0))
    assert perf.get_metrics("PLATFORM").total_trades == 1


def test_print_account_summary_shows_the_figures(
    data_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    perf = get_performance_tracker(data_dir)
    perf.record_trade(_trade("W-1", "PLATFORM", 10.0))
    perf.print_account_summary("PLATFORM")
    out = capsys.readouterr().out
    assert "PERFORMANCE SUMMARY: PLATFORM" in out
    assert "inf (no losses)" in out


def test_data_dir_is_honoured(tmp_path: Path) -> None:
    try:
        first = get_order_tracker(str(tmp_path / "one"))
        second = get_order_tracker(str(tmp_path / "two"))
        first.add_order(_order("O-1", "PLATFORM"))
        assert (tmp_path / "one" / compat.STORE_FILE).exists()
        assert second.get_order_count("PLATFORM") == 0
        assert get_order_tracker(str(tmp_path / "one")) is first
    finally:
        compat._close_all()


def test_both_trackers_of_one_directory_share_the_store(data_dir: str) -> None:
    orders = AccountOrderTracker(data_dir)
    perf = AccountPerformanceTracker(data_dir)
    orders.add_order(_order("O-1", "PLATFORM"))
    perf.record_trade(_trade("T-1", "USER:alice", 5.0))
    assert set(perf.get_all_accounts()) == {"PLATFORM", "USER:alice"}


def test_eight_threads_writing_orders_for_eight_accounts_lose_nothing(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)

    def work(account: str) -> None:
        for i in range(100):
            tracker.add_order(_order(f"{account}-{i}", account))
            if i % 3 == 0:
                tracker.mark_order_filled(f"{account}-{i}", account)

    threads = [threading.Thread(target=work, args=(f"USER:{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = {f"USER:{n}": tracker.get_order_count(f"USER:{n}") for n in range(8)}
    assert counts == {f"USER:{n}": 66 for n in range(8)}
    compat._close_all()
    again = get_order_tracker(data_dir)
    assert {a: again.get_order_count(a) for a in counts} == counts
