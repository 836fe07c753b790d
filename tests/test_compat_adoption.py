"""Adoption with no rewrite: the bot's two seed modules reduced to re-exports of
``nija_broker.compat``, imported the bot's two ways, driven by the seed's documented
examples and by a loop like the bot's live balance audit (``bot/live_balance_audit.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# What README "Adopting it in the bot" tells the trader to put in each seed file.
REEXPORT = "import sys, nija_broker.compat\nsys.modules[__name__] = nija_broker.compat\n"

BOT_SCRIPT = textwrap.dedent("""
    import json, sys
    from datetime import datetime, timedelta
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bot"]

    # The seed README's imports, and the audit's top-level imports.
    from bot.account_order_tracker import get_order_tracker, OrderInfo
    from bot.account_performance_tracker import get_performance_tracker, TradeRecord
    import account_order_tracker
    import account_performance_tracker
    import bot.account_order_tracker

    tracker = get_order_tracker()            # the seed's default: ./data
    order = OrderInfo(
        order_id="ORDER-123", account_id="PLATFORM", symbol="BTC-USD", side="buy",
        price=45000.0, quantity=0.01, size_usd=450.0, status="open",
        created_at=datetime.now(), reserved_capital=450.0)
    tracker.add_order(order)
    kraken = OrderInfo(
        order_id="OQCLML-BW3P3-BUCMWZ", account_id="USER_alice_kraken", symbol="XXBTZUSD",
        side="buy", price=60000.0, quantity=0.0005, size_usd=30.0, status="open",
        created_at=datetime.now(), reserved_capital=30.0)
    tracker.add_order(kraken)
    fragmented, message = tracker.detect_order_fragmentation(
        "PLATFORM", account_balance=100.0, warn_threshold=0.30)

    perf = get_performance_tracker()
    exit_time = datetime.now()
    perf.record_trade(TradeRecord(
        trade_id="TRADE-1", account_id="PLATFORM", symbol="BTC-USD", side="buy",
        entry_price=45000.0, exit_price=46000.0, quantity=0.01, size_usd=450.0, pnl=10.0,
        pnl_pct=2.22, fees=2.0, net_pnl=8.0, entry_time=exit_time - timedelta(hours=2),
        exit_time=exit_time, hold_time_seconds=7200, is_win=True))
    perf.update_balance("PLATFORM", 1000.0)
    metrics = perf.get_metrics("PLATFORM")
    perf.print_account_summary("PLATFORM")

    # The live balance audit's way of finding the tracked accounts.
    audit = get_order_tracker()
    accounts = set()
    if hasattr(audit, "orders_by_account"):
        accounts.update(audit.orders_by_account.keys())
    if hasattr(audit, "reserved_capital_by_account"):
        accounts.update(audit.reserved_capital_by_account.keys())
    tracked = {}
    for account_id in accounts:
        stats = audit.get_account_stats(account_id)
        tracked[account_id] = {"open_order_count": stats.total_open_orders,
                               "held_capital": stats.total_held_capital,
                               "market_orders": stats.market_orders}
    print(json.dumps({
        "same_module": account_order_tracker is bot.account_order_tracker
                       is account_performance_tracker,
        "global_is_tracker": account_order_tracker._global_order_tracker is tracker,
        "global_perf": account_performance_tracker._global_performance_tracker is perf,
        "fragmented": fragmented, "message": message, "tracked": tracked,
        "echoed": [o.symbol for o in audit.orders_by_account["USER_alice_kraken"]],
        "trades": [t.to_dict()["symbol"] for t in perf.get_trade_history("PLATFORM")],
        "metrics": [metrics.total_trades, metrics.win_rate, metrics.current_balance],
        "aiohttp": "aiohttp" in sys.modules, "ccxt": "ccxt" in sys.modules,
    }))
""")


def _bot_layout(root: Path, reexport: str) -> None:
    bot = root / "bot"
    bot.mkdir(parents=True)
    (bot / "__init__.py").write_text("")
    (bot / "account_order_tracker.py").write_text(reexport)
    (bot / "account_performance_tracker.py").write_text(reexport)


def _run_bot(root: Path) -> dict[str, object]:
    script = root / "bot_session.py"
    script.write_text(BOT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(root)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_bots_seed_modules_reduced_to_reexports_work_unchanged(tmp_path: Path) -> None:
    _bot_layout(tmp_path, REEXPORT)
    result = _run_bot(tmp_path)
    assert result["same_module"] is True
    assert result["global_is_tracker"] is True
    assert result["global_perf"] is True
    assert result["tracked"] == {
        "PLATFORM": {"open_order_count": 1, "held_capital": 450.0, "market_orders": 1},
        "USER_alice_kraken": {"open_order_count": 1, "held_capital": 30.0, "market_orders": 1},
    }
    assert result["fragmented"] is True
    assert "$450.00 of $100.00" in str(result["message"])
    assert result["echoed"] == ["XXBTZUSD"]
    assert result["trades"] == ["BTC-USD"]
    assert result["metrics"] == [1, 100.0, 1000.0]
    assert (result["aiohttp"], result["ccxt"]) == (False, False)
    # The state is where the seed kept its own: ./data under the bot's working directory.
    assert (tmp_path / "data" / "nija_broker.sqlite3").exists()


def test_a_second_bot_process_finds_the_first_ones_orders(tmp_path: Path) -> None:
    _bot_layout(tmp_path, REEXPORT)
    _run_bot(tmp_path)
    result = _run_bot(tmp_path)  # same ids again: tracked once, from the store
    tracked = result["tracked"]
    assert isinstance(tracked, dict)
    assert tracked["PLATFORM"]["open_order_count"] == 1


@pytest.mark.parametrize(
    "reexport",
    [
        "from nija_broker.compat import *  # noqa: F403\n",
    ],
)
def test_a_star_reexport_gives_the_seeds_public_names(tmp_path: Path, reexport: str) -> None:
    _bot_layout(tmp_path, reexport)
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent("""
        import sys
        sys.path[:0] = [sys.argv[1] + "/bot"]
        import account_order_tracker as m
        names = ["AccountOrderTracker", "OrderInfo", "AccountOrderStats", "get_order_tracker",
                 "AccountPerformanceTracker", "TradeRecord", "AccountPerformanceMetrics",
                 "get_performance_tracker"]
        print(",".join(n for n in names if not hasattr(m, n)))
    """)
    )
    done = subprocess.run(
        [sys.executable, str(probe), str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
