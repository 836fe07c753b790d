"""The seed API as the live bot uses it: declared reservations, the seed's attributes, the
bot's own symbols. Scenarios follow the seed's own tests and documented examples
(public NIJA repository, ``bot/tests/test_order_management.py`` and
``bot/tests/test_account_performance.py``), written here in our words."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
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

# The seed's TradeRecord.to_dict() keys, in the seed's order.
SEED_TRADE_KEYS = [
    "trade_id",
    "account_id",
    "symbol",
    "side",
    "entry_price",
    "exit_price",
    "quantity",
    "size_usd",
    "pnl",
    "pnl_pct",
    "fees",
    "net_pnl",
    "entry_time",
    "exit_time",
    "hold_time_seconds",
    "is_win",
]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[str]:
    compat._close_all()
    yield str(tmp_path / "data")
    compat._close_all()


def local_now() -> datetime:
    return datetime.now()  # noqa: DTZ005 - the bot stamps its records this way


def order(order_id: str, account_id: str = "PLATFORM", **changes: Any) -> OrderInfo:
    """An order the way the bot builds one (the seed's README example)."""
    fields: dict[str, Any] = dict(
        order_id=order_id,
        account_id=account_id,
        symbol="BTC-USD",
        side="buy",
        price=45_000.0,
        quantity=0.01,
        size_usd=450.0,
        status="open",
        created_at=local_now(),
        order_type="market",
        reserved_capital=450.0,
    )
    fields.update(changes)
    return OrderInfo(**fields)


def trade(trade_id: str, account_id: str = "PLATFORM", **changes: Any) -> TradeRecord:
    entry = local_now() - timedelta(hours=2)
    fields: dict[str, Any] = dict(
        trade_id=trade_id,
        account_id=account_id,
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
        entry_time=entry,
        exit_time=local_now(),
        hold_time_seconds=7200,
        is_win=True,
    )
    fields.update(changes)
    return TradeRecord(**fields)


# ---------------------------------------------------------------------------- declared


def test_declared_450_and_300_read_750_and_300_once_the_450_fills(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("ORDER-1"))
    tracker.add_order(
        order(
            "ORDER-2",
            symbol="ETH-USD",
            price=3_000.0,
            quantity=0.1,
            size_usd=300.0,
            reserved_capital=300.0,
        )
    )
    assert tracker.get_held_capital("PLATFORM") == 750.0
    assert tracker.mark_order_filled("ORDER-1", "PLATFORM") is True
    assert tracker.get_held_capital("PLATFORM") == 300.0
    assert tracker.get_account_stats("PLATFORM").total_held_capital == 300.0


def test_declared_reservation_survives_a_restart(data_dir: str) -> None:
    get_order_tracker(data_dir).add_order(order("ORDER-1"))
    compat._close_all()
    assert get_order_tracker(data_dir).get_held_capital("PLATFORM") == 450.0
    assert AccountOrderTracker(data_dir).get_open_orders("PLATFORM")[0].reserved_capital == 450.0


def test_order_without_a_declared_reservation_holds_price_times_quantity_plus_fee(
    data_dir: str,
) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("ORDER-1", reserved_capital=None))
    assert tracker.get_held_capital("PLATFORM") == pytest.approx(450.0 * 1.004)
    assert tracker.get_open_orders("PLATFORM")[0].reserved_capital == pytest.approx(451.8)


def test_declared_zero_holds_nothing(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("TARGET-1", side="sell", order_type="target", reserved_capital=0.0))
    assert tracker.get_held_capital("PLATFORM") == 0.0


def test_eight_threads_of_200_orders_declaring_10_each_read_2000_per_account(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    accounts = [f"USER_t{n}_kraken" for n in range(8)]

    def work(account: str) -> None:
        for i in range(200):
            tracker.add_order(
                order(
                    f"{account}-{i}",
                    account,
                    price=100.0,
                    quantity=0.1,
                    size_usd=10.0,
                    reserved_capital=10.0,
                )
            )

    threads = [threading.Thread(target=work, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a: tracker.get_held_capital(a) for a in accounts} == dict.fromkeys(accounts, 2000.0)
    assert {a: len(tracker.orders_by_account[a]) for a in accounts} == dict.fromkeys(accounts, 200)


def test_a_bad_declared_reservation_names_the_field_and_is_not_tracked(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    for bad in (-1.0, float("nan"), "450"):
        with pytest.raises(ValueError, match="reserved_capital"):
            tracker.add_order(order("BAD", reserved_capital=bad))
    assert tracker.get_order_count("PLATFORM") == 0


# ---------------------------------------------------------------------------- double reservation


def _stop_and_target(tracker: AccountOrderTracker, stop: float, target: float) -> None:
    common: dict[str, Any] = dict(
        side="sell", quantity=0.01, parent_position_id="POS-123", symbol="BTC-USD"
    )
    tracker.add_order(
        order(
            "STOP-1",
            order_type="stop",
            price=44_000.0,
            size_usd=440.0,
            reserved_capital=stop,
            **common,
        )
    )
    tracker.add_order(
        order(
            "TARGET-1",
            order_type="target",
            price=46_000.0,
            size_usd=460.0,
            reserved_capital=target,
            **common,
        )
    )


def test_stop_reserving_440_and_target_reserving_0_is_not_a_double_reservation(
    data_dir: str,
) -> None:
    tracker = get_order_tracker(data_dir)
    _stop_and_target(tracker, stop=440.0, target=0.0)
    found, message = tracker.check_double_reservation("POS-123", "PLATFORM")
    assert found is False
    assert message == "No double reservation detected ($440.00 reserved for 2 orders)"
    assert tracker.get_held_capital("PLATFORM") == 440.0


def test_stop_reserving_440_and_target_reserving_460_is_a_double_reservation(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    _stop_and_target(tracker, stop=440.0, target=460.0)
    found, message = tracker.check_double_reservation("POS-123", "PLATFORM")
    assert found is True
    assert message == (
        "DOUBLE RESERVATION: Stop reserved $440.00, Target reserved $460.00 (total $900.00)"
    )
    assert tracker.check_double_reservation("POS-999", "PLATFORM") == (
        False,
        "No orders found for position",
    )


def test_exchange_level_check_reports_a_resting_stop_and_target_both_locking_the_base(
    data_dir: str,
) -> None:
    tracker = get_order_tracker(data_dir)
    _stop_and_target(tracker, stop=440.0, target=0.0)
    # Declared, only the stop reserves; on the exchange both orders lock 0.01 BTC.
    found, message = tracker.check_exit_reservations("PLATFORM", positions={"BTC-USD": 0.01})
    assert found is True
    assert "STOP-1" in message
    assert "TARGET-1" in message
    assert tracker.check_exit_reservations("USER_bob_kraken") == (
        False,
        "No exit locks more than the position",
    )


# ---------------------------------------------------------------------------- attributes


def test_orders_by_account_keeps_filled_orders_and_lists_them_oldest_first(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("ORDER-1"))
    tracker.add_order(order("ORDER-2", reserved_capital=300.0))
    tracker.mark_order_filled("ORDER-1", "PLATFORM")
    listed = tracker.orders_by_account["PLATFORM"]
    assert [(o.order_id, o.status) for o in listed] == [("ORDER-1", "filled"), ("ORDER-2", "open")]
    assert tracker.get_order_count("PLATFORM") == 1
    assert list(tracker.orders_by_account) == ["PLATFORM"]
    assert tracker.orders_by_account["USER_nobody"] == []
    assert "USER_nobody" not in tracker.orders_by_account


def test_setting_reserved_capital_on_a_listed_order_changes_the_tracked_order(
    data_dir: str,
) -> None:
    tracker = get_order_tracker(data_dir)
    _stop_and_target(tracker, stop=440.0, target=0.0)
    tracker.orders_by_account["PLATFORM"][-1].reserved_capital = 460.0
    assert tracker.check_double_reservation("POS-123", "PLATFORM")[0] is True
    assert tracker.get_held_capital("PLATFORM") == 900.0
    compat._close_all()
    assert get_order_tracker(data_dir).get_held_capital("PLATFORM") == 900.0


def test_a_disagreeing_total_written_to_reserved_capital_by_account_is_logged_not_kept(
    data_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = get_order_tracker(data_dir)
    _stop_and_target(tracker, stop=440.0, target=0.0)
    tracker.orders_by_account["PLATFORM"][-1].reserved_capital = 460.0
    with caplog.at_level(logging.WARNING, logger="nija_broker.compat"):
        tracker.reserved_capital_by_account["PLATFORM"] += 460.0  # the seed's own test does this
    assert tracker.reserved_capital_by_account["PLATFORM"] == 900.0
    assert "not kept" in caplog.text
    assert dict(tracker.reserved_capital_by_account) == {"PLATFORM": 900.0}
    assert tracker.reserved_capital_by_account["USER_nobody"] == 0.0


def test_listed_orders_refuse_other_assignments_and_copies_are_plain(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("ORDER-1"))
    listed = tracker.get_open_orders("PLATFORM")[0]
    with pytest.raises(AttributeError, match="mark_order_filled"):
        listed.status = "filled"
    with pytest.raises(ValueError, match="reserved_capital"):
        listed.reserved_capital = -5.0
    plain = copy.deepcopy(listed)
    plain.status = "filled"
    plain.reserved_capital = 1.0
    assert tracker.get_held_capital("PLATFORM") == 450.0
    assert tracker.get_order_count("PLATFORM") == 1


def test_cleanup_stats_count_what_cleanup_filled_orders_removed(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(order("ORDER-1"))
    tracker.mark_order_filled("ORDER-1", "PLATFORM")
    assert tracker.cleanup_stats["total_cleaned"] == 0
    assert tracker.cleanup_stats["last_cleanup"] is None
    assert tracker.cleanup_filled_orders("PLATFORM", max_age_hours=0) == 1
    assert tracker.cleanup_stats["total_cleaned"] == 1
    assert tracker.cleanup_stats["orders_cleaned_per_account"]["PLATFORM"] == 1
    assert datetime.fromisoformat(tracker.cleanup_stats["last_cleanup"]).tzinfo is not None
    assert tracker.orders_by_account["PLATFORM"] == []


def test_performance_attributes_read_the_tracked_trades_metrics_and_balances(data_dir: str) -> None:
    perf = get_performance_tracker(data_dir)
    perf.record_trade(trade("TRADE-1"))
    perf.record_trade(
        trade(
            "TRADE-2",
            symbol="ETH-USD",
            pnl=-5.0,
            fees=1.5,
            net_pnl=-6.5,
            is_win=False,
            exit_price=2_950.0,
        )
    )
    perf.update_balance("PLATFORM", 1_000.0)
    perf.update_balance("PLATFORM", 900.0)
    perf.update_balance("USER_abc123", 500.0)
    assert [t.trade_id for t in perf.trade_history_by_account["PLATFORM"]] == ["TRADE-1", "TRADE-2"]
    assert perf.trade_history_by_account["USER_abc123"] == []
    assert list(perf.trade_history_by_account) == ["PLATFORM"]
    assert perf.metrics_by_account["PLATFORM"].total_trades == 2
    assert perf.metrics_by_account["USER_abc123"].max_drawdown == 0.0
    assert set(perf.metrics_by_account) == {"PLATFORM", "USER_abc123"}
    with pytest.raises(KeyError):
        perf.metrics_by_account["USER_nobody"]
    history = perf.balance_history_by_account["PLATFORM"]
    assert [balance for _, balance in history] == [1_000.0, 900.0]
    assert history[0][0] <= history[1][0]
    assert perf.balance_history_by_account["USER_nobody"] == []


def test_trade_record_to_dict_has_the_seeds_keys_and_iso_times(data_dir: str) -> None:
    record = trade("TRADE-1")
    data = record.to_dict()
    assert list(data) == SEED_TRADE_KEYS
    assert datetime.fromisoformat(data["exit_time"]) == record.exit_time
    perf = get_performance_tracker(data_dir)
    perf.record_trade(record)
    back = perf.get_trade_history("PLATFORM")[0].to_dict()
    assert list(back) == SEED_TRADE_KEYS
    assert back["symbol"] == "BTC-USD"
    assert (back["net_pnl"], back["fees"], back["is_win"]) == (8.0, 2.0, True)


def test_module_globals_hold_the_trackers_and_a_reset_gives_fresh_objects_same_state(
    data_dir: str,
) -> None:
    assert compat._global_order_tracker is None
    tracker = get_order_tracker(data_dir)
    perf = get_performance_tracker(data_dir)
    assert compat._global_order_tracker is tracker
    assert compat._global_performance_tracker is perf
    tracker.add_order(order("ORDER-1"))
    compat._global_order_tracker = None  # how the seed's callers start afresh
    again = get_order_tracker(data_dir)
    assert again is not tracker
    assert compat._global_order_tracker is again
    assert again.get_held_capital("PLATFORM") == 450.0


# ---------------------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    ("given", "unified"),
    [
        ("BTC-USD", "BTC/USD"),
        ("BTC/USD", "BTC/USD"),
        ("XXBTZUSD", "BTC/USD"),
        ("XBTUSD", "BTC/USD"),
        ("XETHZUSD", "ETH/USD"),
        ("XDGUSD", "DOGE/USD"),
        ("SOLUSD", "SOL/USD"),
        ("BTCUSDT", "BTC/USDT"),
        ("ETHUSDC", "ETH/USDC"),
    ],
)
def test_the_bots_symbol_forms_are_accepted_and_echoed_back(
    data_dir: str, given: str, unified: str
) -> None:
    tracker = get_order_tracker(data_dir)
    perf = get_performance_tracker(data_dir)
    tracker.add_order(order("ORDER-1", symbol=given))
    perf.record_trade(trade("TRADE-1", symbol=given))
    assert tracker.get_open_orders("PLATFORM")[0].symbol == given
    assert tracker.orders_by_account["PLATFORM"][0].symbol == given
    assert perf.get_trade_history("PLATFORM")[0].symbol == given
    book = tracker._workspace.book("PLATFORM")
    assert book.orders.get("ORDER-1").symbol == unified  # type: ignore[union-attr]
    assert book.performance.trade_history()[0].symbol == unified


def test_pair_code_and_dash_form_are_the_same_market_for_the_book(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    tracker.add_order(
        order(
            "KRAKEN-1",
            symbol="XXBTZUSD",
            side="sell",
            order_type="target",
            parent_position_id="POS-1",
            reserved_capital=0.0,
        )
    )
    tracker.add_order(
        order(
            "BOT-1",
            symbol="BTC-USD",
            side="sell",
            order_type="stop",
            price=44_000.0,
            parent_position_id="POS-1",
            reserved_capital=440.0,
        )
    )
    found, _ = tracker.check_exit_reservations("PLATFORM", positions={"BTC/USD": 0.01})
    assert found is True  # one market, two exits of 0.01 on a 0.01 position


def test_use_markets_resolves_a_pair_code_the_aliases_cannot(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    ccxt_markets = {
        "LUNA2/USD": {
            "id": "LUNAUSD",
            "symbol": "LUNA2/USD",
            "base": "LUNA2",
            "quote": "USD",
            "info": {"altname": "LUNAUSD"},
        }
    }
    tracker.use_markets("USER_alice_kraken", ccxt_markets)
    tracker.add_order(
        order(
            "ORDER-1",
            "USER_alice_kraken",
            symbol="LUNAUSD",
            price=0.5,
            quantity=100.0,
            size_usd=50.0,
            reserved_capital=50.0,
        )
    )
    tracker.add_order(
        order(
            "ORDER-2",
            "PLATFORM",
            symbol="LUNAUSD",
            price=0.5,
            quantity=100.0,
            size_usd=50.0,
            reserved_capital=50.0,
        )
    )
    alice = tracker._workspace.book("USER_alice_kraken").orders.get("ORDER-1")
    platform = tracker._workspace.book("PLATFORM").orders.get("ORDER-2")
    assert alice is not None
    assert platform is not None
    assert (alice.symbol, platform.symbol) == ("LUNA2/USD", "LUNA/USD")


def test_an_unknown_symbol_form_names_the_field_and_value(data_dir: str) -> None:
    tracker = get_order_tracker(data_dir)
    with pytest.raises(ValueError, match=r"OrderInfo: symbol: .*'BTC_USD'"):
        tracker.add_order(order("BAD", symbol="BTC_USD"))
    with pytest.raises(ValueError, match=r"TradeRecord: symbol: .*'FOO'"):
        get_performance_tracker(data_dir).record_trade(trade("BAD", symbol="FOO"))
    assert tracker.get_order_count("PLATFORM") == 0


# ---------------------------------------------------------------------------- the seed's tests


def test_the_seeds_order_management_sequence_passes(data_dir: str) -> None:
    """The seven order-management steps of the seed's own tests, each on a fresh tracker
    object over the same directory, as the seed's tests do."""
    t = AccountOrderTracker(data_dir=data_dir)
    t.add_order(order("ORDER-1"))
    t.add_order(
        order(
            "ORDER-2",
            symbol="ETH-USD",
            price=3000.0,
            quantity=0.1,
            size_usd=300.0,
            reserved_capital=300.0,
        )
    )
    t.add_order(
        order(
            "ORDER-3",
            "USER_abc123",
            symbol="SOL-USD",
            price=100.0,
            quantity=1.0,
            size_usd=100.0,
            reserved_capital=100.0,
        )
    )
    assert (t.get_order_count("PLATFORM"), t.get_order_count("USER_abc123")) == (2, 1)

    t = AccountOrderTracker(data_dir=data_dir)
    assert t.get_held_capital("PLATFORM") == 750.0
    assert t.get_held_capital("USER_abc123") == 100.0

    t = AccountOrderTracker(data_dir=data_dir)
    assert t.mark_order_filled("ORDER-1", "PLATFORM")
    assert t.get_held_capital("PLATFORM") == 300.0
    assert len(t.orders_by_account["PLATFORM"]) == 2
    assert t.get_order_count("PLATFORM") == 1

    t = AccountOrderTracker(data_dir=data_dir)
    _stop_and_target(t, stop=440.0, target=0.0)
    assert not t.check_double_reservation("POS-123", "PLATFORM")[0]
    t.orders_by_account["PLATFORM"][-1].reserved_capital = 460.0
    t.reserved_capital_by_account["PLATFORM"] += 460.0
    assert t.check_double_reservation("POS-123", "PLATFORM")[0]

    t = AccountOrderTracker(data_dir=data_dir)
    assert t.get_held_capital("PLATFORM") == 1200.0  # 300 + 440 + 460, as in the seed
    assert t.detect_order_fragmentation("PLATFORM", 100.0, warn_threshold=0.30)[0]
    assert not t.detect_order_fragmentation("PLATFORM", 5000.0, warn_threshold=0.30)[0]

    t = AccountOrderTracker(data_dir=data_dir)
    t.add_order(
        order(
            "STALE-1",
            "USER_abc123",
            symbol="AVAX-USD",
            price=50.0,
            quantity=1.0,
            size_usd=50.0,
            reserved_capital=50.0,
            created_at=local_now() - timedelta(hours=2),
        )
    )
    t.max_order_age_minutes = 60
    assert t.cleanup_stale_orders("USER_abc123", force_cancel=False) >= 1
    assert t.cleanup_stale_orders("USER_abc123", force_cancel=True) >= 1

    stats = AccountOrderTracker(data_dir=data_dir).get_account_stats("PLATFORM")
    assert (
        stats.total_open_orders,
        stats.market_orders,
        stats.stop_orders,
        stats.target_orders,
    ) == (3, 1, 1, 1)
    assert stats.total_held_capital == 1200.0


def test_the_seeds_performance_sequence_passes(
    data_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    t = AccountPerformanceTracker(data_dir=data_dir)
    t.record_trade(trade("TRADE-1"))
    t.record_trade(
        trade(
            "TRADE-2",
            symbol="ETH-USD",
            entry_price=3000.0,
            exit_price=2950.0,
            quantity=0.1,
            size_usd=300.0,
            pnl=-5.0,
            pnl_pct=-1.67,
            fees=1.5,
            net_pnl=-6.5,
            is_win=False,
        )
    )
    t.record_trade(
        trade(
            "TRADE-3",
            "USER_abc123",
            symbol="SOL-USD",
            entry_price=100.0,
            exit_price=105.0,
            quantity=1.0,
            size_usd=100.0,
            pnl=5.0,
            pnl_pct=5.0,
            fees=0.5,
            net_pnl=4.5,
        )
    )
    assert [len(t.get_trade_history(a)) for a in ("PLATFORM", "USER_abc123")] == [2, 1]

    t = AccountPerformanceTracker(data_dir=data_dir)
    platform, user = t.get_metrics("PLATFORM"), t.get_metrics("USER_abc123")
    assert (platform.total_trades, platform.win_rate) == (2, 50.0)
    assert (user.total_trades, user.win_rate) == (1, 100.0)
    assert platform.expectancy != user.expectancy

    t = AccountPerformanceTracker(data_dir=data_dir)
    for balance in (1000.0, 950.0, 900.0, 920.0):
        t.update_balance("PLATFORM", balance)
    for balance in (500.0, 475.0, 490.0):
        t.update_balance("USER_abc123", balance)
    platform, user = t.get_metrics("PLATFORM"), t.get_metrics("USER_abc123")
    assert (platform.peak_balance, platform.current_balance, platform.max_drawdown) == (
        1000.0,
        920.0,
        100.0,
    )
    assert (user.peak_balance, user.current_balance, user.max_drawdown) == (500.0, 490.0, 25.0)

    t = AccountPerformanceTracker(data_dir=data_dir)
    assert all("Clean" in v for v in t.verify_no_aggregation().values())
    metrics = t.get_all_metrics()
    assert id(metrics["PLATFORM"]) != id(metrics["USER_abc123"])
    t.print_account_summary("PLATFORM")
    t.print_account_summary("USER_abc123")
    assert "PERFORMANCE SUMMARY: USER_abc123" in capsys.readouterr().out
