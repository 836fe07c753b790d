"""A broker task that dies while the broker runs is never silent: every account turns
``failed`` at once, the guard fails closed where the tier does (DESIGN invariant 7), and
the error is logged with its traceback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import SystemClock
from nija_broker.core.events import HealthChanged
from nija_broker.core.health import SyncState
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

ALICE, PLATFORM = "USER_alice_binance", "PLATFORM"
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
FAST = ReconcilerSettings(poll_interval_s=0.05, balance_interval_s=0.05, visibility_window_s=0.0)


def _broker(tmp_path: Path) -> Broker:
    engine = SimEngine(seed=3, clock=SystemClock())
    engine.add_market(BTC, 50_000.0, volatility=0.0)
    engine.open_account(ALICE, {"USDT": 100.0})  # MICRO_CAP: fails closed
    engine.open_account(PLATFORM, {"USDT": 10_000.0})  # STANDARD: does not
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "accounts": [
                {"id": ALICE, "exchange": "binance"},
                {"id": PLATFORM, "exchange": "binance"},
            ],
        }
    )
    exchanges = {a: SimExchange(engine, a) for a in (ALICE, PLATFORM)}
    return Broker(config, exchanges=exchanges, reconciler_settings=FAST, serve_api=False)


def _entry(account_id: str) -> OrderIntent:
    return OrderIntent(account_id=account_id, symbol="BTC/USDT", side="buy", size_usd=10.0)


def _task(name: str) -> asyncio.Task[object]:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == name]
    return task


@pytest.mark.asyncio
async def test_a_killed_reconciler_fails_every_account_and_micro_cap_entries_fail_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="nija_broker.runtime")
    async with _broker(tmp_path) as broker:
        assert broker.reconciler is not None
        events = broker.reconciler.subscribe()
        assert broker.check(_entry(ALICE)).allowed
        reconciler = _task("broker:reconciler")
        reconciler.cancel()
        await asyncio.gather(reconciler, return_exceptions=True)
        assert {a: live.health.state for a, live in broker.live.items()} == {
            ALICE: SyncState.FAILED,
            PLATFORM: SyncState.FAILED,
        }
        assert "broker:reconciler was cancelled" in str(broker.live[ALICE].health.last_error)
        blocked = broker.check(_entry(ALICE))
        assert isinstance(blocked, Blocked)
        assert blocked.rule == "sync_unknown"
        assert broker.check(_entry(PLATFORM)).allowed  # STANDARD does not fail closed
        changed = [e for e in events.drain() if isinstance(e, HealthChanged)]
        assert {e.account_id for e in changed if e.health.state is SyncState.FAILED} == {
            ALICE,
            PLATFORM,
        }
        assert any("every account is marked failed" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_a_crashed_reconciler_is_logged_with_its_traceback_and_fails_every_account(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.ERROR, logger="nija_broker.runtime")
    crashed = asyncio.Event()

    async def crash(self: Reconciler) -> None:
        crashed.set()
        raise RuntimeError("poller bug")

    monkeypatch.setattr(Reconciler, "run", crash)
    async with _broker(tmp_path) as broker:
        await crashed.wait()
        await asyncio.sleep(0)  # the member's handler runs as the error leaves it
        (record,) = [r for r in caplog.records if "broker:reconciler" in r.getMessage()]
        assert "crashed: RuntimeError: poller bug" in record.getMessage()
        assert record.exc_info is not None
        assert {a: live.health.state for a, live in broker.live.items()} == {
            ALICE: SyncState.FAILED,
            PLATFORM: SyncState.FAILED,
        }
        assert isinstance(broker.check(_entry(ALICE)), Blocked)


@pytest.mark.asyncio
async def test_the_broker_runs_its_tasks_in_one_group_and_leaves_none_behind(
    tmp_path: Path,
) -> None:
    before = asyncio.all_tasks()
    async with _broker(tmp_path):
        names = {t.get_name() for t in asyncio.all_tasks() - before}
        assert {"broker:supervisor", "broker:events", "broker:reconciler"} <= names
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()


@pytest.mark.asyncio
async def test_closing_the_broker_marks_nothing_failed(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    async with broker:
        assert broker.live[ALICE].health.state is SyncState.OK
    assert broker.live[ALICE].health.state is SyncState.OK
