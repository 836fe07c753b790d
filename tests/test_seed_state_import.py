"""``nija-broker import-seed-state DIR``: the seed's JSON state files, into the store once.

The sample files in ``tests/data/seed_state`` are ours, written in the format the
seed's ``_save_state`` writes (public NIJA repository, ``bot/account_order_tracker.py``
and ``bot/account_performance_tracker.py``): ``account_orders_state.json`` with
``orders_by_account`` / ``reserved_capital_by_account`` / ``cleanup_stats``, and one
``performance_<account>.json`` per account, times as naive local ISO text.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nija_broker import compat
from nija_broker.compat import OrderInfo, TradeRecord, get_order_tracker, get_performance_tracker
from nija_broker.compat.seed_state import SeedStateError, import_seed_state
from nija_broker.service.cli import main
from nija_broker.state.store import Store

SAMPLES = Path(__file__).parent / "data" / "seed_state"


@pytest.fixture
def seed_dir(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "data"
    shutil.copytree(SAMPLES, target)
    compat._close_all()
    yield target
    compat._close_all()


def test_import_takes_orders_trades_and_balances_and_compat_reads_them(seed_dir: Path) -> None:
    report = import_seed_state(seed_dir)
    platform, alice = report.accounts["PLATFORM"], report.accounts["USER_alice_kraken"]
    assert (platform.open_orders_new, platform.finished_orders_new) == (3, 1)
    assert (alice.open_orders_new, alice.finished_orders_new) == (1, 1)
    assert (platform.trades_new, alice.trades_new) == (2, 1)  # TRADE-1 was in the file twice
    assert (platform.balances_new, alice.balances_new) == (4, 3)
    assert report.taken == 4 + 2 + 2 + 1 + 4 + 3

    tracker = get_order_tracker(str(seed_dir))  # the bot's data_dir, unchanged
    assert tracker.get_held_capital("PLATFORM") == 740.0  # 300 + 440 + 0, as declared
    assert tracker.get_held_capital("USER_alice_kraken") == 30.0
    assert tracker.check_double_reservation("POS-123", "PLATFORM")[0] is False
    # The cancelled order last changed in February, past the tracker's retention: a
    # restart holds the open order (and finished ones within retention); the store
    # keeps both, for whoever asks it.
    held = {o.symbol: o.status for o in tracker.orders_by_account["USER_alice_kraken"]}
    assert held["XXBTZUSD"] == "open"
    with Store(seed_dir / compat.STORE_FILE) as store:
        assert [(o.caller_symbol, o.status.value) for o in store.orders("USER_alice_kraken")] == [
            ("XDGUSD", "cancelled"),
            ("XXBTZUSD", "open"),
        ]
    perf = get_performance_tracker(str(seed_dir))
    assert [t.trade_id for t in perf.get_trade_history("PLATFORM")] == ["TRADE-1", "TRADE-2"]
    assert perf.get_trade_history("USER_alice_kraken")[0].symbol == "XETHZUSD"
    metrics = perf.get_metrics("PLATFORM")
    assert (metrics.peak_balance, metrics.current_balance, metrics.max_drawdown) == (
        1000.0,
        920.0,
        100.0,
    )
    assert perf.get_metrics("USER_alice_kraken").total_trades == 1


def test_no_fill_is_booked_from_the_seeds_filled_orders(seed_dir: Path) -> None:
    import_seed_state(seed_dir)
    with Store(seed_dir / compat.STORE_FILE) as store:
        assert store.fills("PLATFORM") == []
        assert store.positions("PLATFORM") == []


def test_importing_twice_takes_nothing_the_second_time(seed_dir: Path) -> None:
    import_seed_state(seed_dir)
    again = import_seed_state(seed_dir)
    assert again.taken == 0
    platform = again.accounts["PLATFORM"]
    assert (platform.orders_kept, platform.trades_kept, platform.balances_kept) == (4, 2, 4)
    with Store(seed_dir / compat.STORE_FILE) as store:
        assert len(store.equity_points("PLATFORM")) == 4
        assert len(store.trades("PLATFORM")) == 2


def test_an_order_the_bot_moved_on_since_is_not_overwritten_by_a_second_import(
    seed_dir: Path,
) -> None:
    import_seed_state(seed_dir)
    tracker = get_order_tracker(str(seed_dir))
    assert tracker.mark_order_filled("ORDER-2", "PLATFORM")
    compat._close_all()
    import_seed_state(seed_dir)
    assert get_order_tracker(str(seed_dir)).get_held_capital("PLATFORM") == 440.0


def test_notes_say_what_was_not_taken_and_a_drifted_seed_total(seed_dir: Path) -> None:
    state_file = seed_dir / "account_orders_state.json"
    state = json.loads(state_file.read_text())
    state["reserved_capital_by_account"]["PLATFORM"] = 753.0
    state_file.write_text(json.dumps(state, indent=2))
    notes = " | ".join(import_seed_state(seed_dir).notes)
    assert "reserved_capital_by_account['PLATFORM'] was 753.00" in notes
    assert "declare 740.00" in notes
    assert "cleanup_stats" in notes
    assert "performance_PLATFORM.json metrics" in notes


def test_a_bad_record_is_named_and_nothing_is_imported(seed_dir: Path) -> None:
    state_file = seed_dir / "account_orders_state.json"
    state = json.loads(state_file.read_text())
    state["orders_by_account"]["PLATFORM"][1]["quantity"] = -1
    del state["orders_by_account"]["PLATFORM"][2]["created_at"]
    state["orders_by_account"]["USER_alice_kraken"][0]["account_id"] = "PLATFORM"
    state_file.write_text(json.dumps(state))
    perf_file = seed_dir / "performance_PLATFORM.json"
    perf = json.loads(perf_file.read_text())
    perf["balance_history"][0]["balance"] = "lots"
    perf_file.write_text(json.dumps(perf))
    with pytest.raises(SeedStateError) as caught:
        import_seed_state(seed_dir)
    problems = caught.value.problems
    assert any("orders_by_account['PLATFORM'][1]" in p and "quantity" in p for p in problems)
    assert any("orders_by_account['PLATFORM'][2]: missing created_at" in p for p in problems)
    assert any(
        "orders_by_account['USER_alice_kraken'][0]" in p and "filed under" in p for p in problems
    )
    assert any("performance_PLATFORM.json: balance_history[0]" in p for p in problems)
    assert not (seed_dir / compat.STORE_FILE).exists()


def test_cli_imports_reports_per_account_and_exits_0(
    seed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import-seed-state", str(seed_dir)]) == 0
    out = capsys.readouterr().out
    assert "took 16 records" in out
    assert (
        "PLATFORM: orders 4 taken (3 open, 1 finished), 0 already stored; trades 2 taken, "
        "0 already stored; balance points 4 taken, 0 already stored"
    ) in out
    assert main(["import-seed-state", str(seed_dir)]) == 0
    assert "took 0 records" in capsys.readouterr().out


def test_cli_dry_run_writes_nothing(seed_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import-seed-state", str(seed_dir), "--dry-run"]) == 0
    assert "would take 16 records" in capsys.readouterr().out
    assert not (seed_dir / compat.STORE_FILE).exists()


def test_cli_into_another_store_and_refused_while_a_sidecar_holds_it(
    seed_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "sidecar.sqlite3"
    with Store(other, exclusive=True):
        assert main(["import-seed-state", str(seed_dir), "--store", str(other)]) == 2
        assert "sidecar.sqlite3" in capsys.readouterr().err
    assert main(["import-seed-state", str(seed_dir), "--store", str(other)]) == 0
    with Store(other) as store:
        assert len(store.orders("USER_alice_kraken")) == 2


def test_cli_bad_files_exit_2_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["import-seed-state", str(empty)]) == 2
    assert "no seed state here" in capsys.readouterr().err
    (empty / "account_orders_state.json").write_text("{not json")
    assert main(["import-seed-state", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "account_orders_state.json: not readable as JSON" in err
    assert "nothing imported" in err


def _seed_save_state(
    data_dir: Path,
    orders: list[OrderInfo],
    trades: list[TradeRecord],
    balances: dict[str, list[tuple[datetime, float]]],
) -> None:
    """The files as the seed's own _save_state writes them, from the seed's to_dict()s."""
    by_account: dict[str, list[dict[str, Any]]] = {}
    reserved: dict[str, float] = {}
    for order in orders:
        by_account.setdefault(order.account_id, []).append(order.to_dict())
        if order.status == "open":
            reserved[order.account_id] = reserved.get(order.account_id, 0.0) + float(
                order.reserved_capital or 0.0
            )
    (data_dir / "account_orders_state.json").write_text(
        json.dumps(
            {
                "orders_by_account": by_account,
                "reserved_capital_by_account": reserved,
                "cleanup_stats": {
                    "total_cleaned": 0,
                    "last_cleanup": None,
                    "orders_cleaned_per_account": {},
                },
                "timestamp": datetime.now().isoformat(),  # noqa: DTZ005 - as the seed wrote it
            },
            indent=2,
            default=str,
        )
    )
    for account in sorted({t.account_id for t in trades} | set(balances)):
        (data_dir / f"performance_{account}.json").write_text(
            json.dumps(
                {
                    "account_id": account,
                    "trade_history": [t.to_dict() for t in trades if t.account_id == account],
                    "metrics": {"account_id": account},
                    "balance_history": [
                        {"timestamp": ts.isoformat(), "balance": b}
                        for ts, b in balances.get(account, [])
                    ],
                    "timestamp": datetime.now().isoformat(),  # noqa: DTZ005 - as the seed wrote it
                },
                indent=2,
                default=str,
            )
        )


def test_state_written_by_the_seeds_own_records_round_trips(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    now = datetime.now()  # noqa: DTZ005 - the bot's naive local time
    orders = [
        OrderInfo(
            order_id=f"O-{i}",
            account_id="USER_bob_coinbase",
            symbol="SOL-USD",
            side="buy",
            price=100.0,
            quantity=0.2,
            size_usd=20.0,
            status="open",
            created_at=now - timedelta(minutes=i),
            reserved_capital=20.0,
        )
        for i in range(3)
    ]
    trades = [
        TradeRecord(
            trade_id="T-1",
            account_id="USER_bob_coinbase",
            symbol="SOL-USD",
            side="buy",
            entry_price=100.0,
            exit_price=99.0,
            quantity=0.2,
            size_usd=20.0,
            pnl=-0.2,
            pnl_pct=-1.0,
            fees=0.16,
            net_pnl=-0.36,
            entry_time=now - timedelta(hours=1),
            exit_time=now,
            hold_time_seconds=3600.0,
            is_win=False,
        )
    ]
    _seed_save_state(
        data_dir,
        orders,
        trades,
        {"USER_bob_coinbase": [(now - timedelta(hours=1), 60.0), (now, 59.64)]},
    )
    try:
        report = import_seed_state(data_dir)
        assert report.taken == 3 + 1 + 2
        tracker = get_order_tracker(str(data_dir))
        assert tracker.get_held_capital("USER_bob_coinbase") == 60.0
        assert {o.created_at for o in tracker.get_open_orders("USER_bob_coinbase")} == {
            o.created_at.astimezone() for o in orders
        }
        history = get_performance_tracker(str(data_dir)).get_trade_history("USER_bob_coinbase")
        assert history[0].to_dict()["net_pnl"] == -0.36
        assert history[0].exit_time == now.astimezone()
    finally:
        compat._close_all()
