"""The API on its own thread and loop: it answers while the runtime's loop is busy or still
starting, and it ends with the broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from adapters.sim import SimEngine, SimExchange
from nija_broker.client import GuardClient
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market
from nija_broker.service.api import ApiServer
from nija_broker.service.config import Config, parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

T = TypeVar("T")

ALICE, PLATFORM = "USER:alice", "PLATFORM"
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
# A call deadline far beyond any test: the start-up hangs until the test lets it go.
PATIENT = ReconcilerSettings(
    poll_interval_s=0.5, balance_interval_s=0.5, visibility_window_s=0.0, call_timeout_s=600.0
)
HANG_GUARD_S = 30.0
"""Only a bound on a broken run, never a measure: every wait below ends on an event."""


class HangingExchange(SimExchange):
    """A sim exchange whose every request waits until ``gate`` is set: a start-up that hangs."""

    def __init__(self, engine: SimEngine, account_id: str, gate: asyncio.Event) -> None:
        super().__init__(engine, account_id)
        self.gate = gate

    async def _call(self, method: str, args: dict[str, Any], action: Callable[[], T]) -> Any:
        await self.gate.wait()
        return await super()._call(method, args, action)


def _world(tmp_path: Path) -> tuple[SimEngine, Config]:
    engine = SimEngine(seed=5, clock=SystemClock())
    engine.add_market(BTC, 50_000.0, volatility=0.0)
    engine.open_account(ALICE, {"USDT": 100.0})
    engine.open_account(PLATFORM, {"USDT": 10_000.0})
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"host": "127.0.0.1", "port": 0},
            "accounts": [
                {"id": ALICE, "exchange": "binance", "quote_currency": "USDT", "tier": "MICRO_CAP"},
                {"id": PLATFORM, "exchange": "binance", "quote_currency": "USDT"},
            ],
        }
    )
    return engine, config


def _exchanges(engine: SimEngine, gate: asyncio.Event) -> Mapping[str, SimExchange]:
    return {a: HangingExchange(engine, a, gate) for a in (ALICE, PLATFORM)}


async def _listening(broker: Broker) -> ApiServer:
    """The broker's API once it listens (its port known), while ``start`` still runs."""
    async with asyncio.timeout(HANG_GUARD_S):
        while broker.api is None or broker.api.port == 0:  # noqa: ASYNC110 - start sets it
            await asyncio.sleep(0.01)
    return broker.api


@pytest.mark.asyncio
async def test_healthz_says_syncing_and_micro_cap_entries_fail_closed_while_startup_hangs(
    tmp_path: Path,
) -> None:
    engine, config = _world(tmp_path)
    gate = asyncio.Event()
    broker = Broker(config, exchanges=_exchanges(engine, gate), reconciler_settings=PATIENT)
    starting = asyncio.create_task(broker.start(), name="test:broker-start")
    try:
        api = await _listening(broker)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{api.url}/healthz") as r:
                health = await r.json()
            entry = {"account_id": ALICE, "symbol": "BTC-USDT", "side": "buy", "size_usd": 10.0}
            async with session.post(f"{api.url}/v1/guard/check", json=entry) as r:
                blocked = await r.json()
            exit_ = {**entry, "side": "sell", "reduce_only": True, "amount": 0.0002}
            exit_.pop("size_usd")
            async with session.post(f"{api.url}/v1/guard/check", json=exit_) as r:
                exit_answer = await r.json()
        assert not starting.done(), "the answers came while every start-up sync still hangs"
        assert r.status == 200
        assert {a: v["state"] for a, v in health["accounts"].items()} == {
            ALICE: "syncing",
            PLATFORM: "syncing",
        }
        assert health["status"] == "degraded"
        assert (blocked["allowed"], blocked["rule"]) == (False, "sync_unknown")
        assert exit_answer["allowed"] is True  # exits are never blocked
    finally:
        gate.set()
        async with asyncio.timeout(HANG_GUARD_S):
            await starting
        await broker.aclose()


@pytest.mark.asyncio
async def test_a_guard_call_answers_while_the_runtime_loop_is_blocked(tmp_path: Path) -> None:
    engine, config = _world(tmp_path)
    gate = asyncio.Event()
    gate.set()
    async with Broker(
        config, exchanges=_exchanges(engine, gate), reconciler_settings=PATIENT
    ) as broker:
        assert broker.api is not None
        api_thread = broker.api.thread
        assert api_thread is not None
        assert api_thread.name == "nija-api"
        assert api_thread is not threading.current_thread()
        # The synchronous client called from the runtime's own loop blocks that loop for the
        # whole call: only an API served elsewhere can answer it (else: guard_unreachable).
        answer = GuardClient(broker.api.url, timeout_s=HANG_GUARD_S).check(
            PLATFORM, "BTC-USDT", "buy", size_usd=20.0
        )
        assert answer.rule != "guard_unreachable", answer
        assert answer.allowed, answer


@pytest.mark.asyncio
async def test_closing_the_broker_ends_the_api_thread_and_its_port(tmp_path: Path) -> None:
    engine, config = _world(tmp_path)
    gate = asyncio.Event()
    gate.set()
    broker = Broker(config, exchanges=_exchanges(engine, gate), reconciler_settings=PATIENT)
    async with broker:
        assert broker.api is not None
        api_thread, url = broker.api.thread, broker.api.url
        assert api_thread is not None
        assert api_thread.is_alive()
    assert not api_thread.is_alive()
    assert broker.api.thread is None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}/healthz")
    await broker.aclose()  # safe twice


@pytest.mark.asyncio
async def test_a_port_in_use_fails_start_with_the_bind_error_and_leaves_no_thread(
    tmp_path: Path,
) -> None:
    engine, config = _world(tmp_path)
    gate = asyncio.Event()
    gate.set()
    async with Broker(
        config, exchanges=_exchanges(engine, gate), reconciler_settings=PATIENT
    ) as broker:
        assert broker.api is not None
        taken = ApiServer(broker.api.ctx, "127.0.0.1", broker.api.port)
        with pytest.raises(OSError, match=str(broker.api.port)):
            await taken.start()
        await taken.aclose()
        assert taken.thread is None
        assert [t.name for t in threading.enumerate()].count("nija-api") == 1


@pytest.mark.parametrize("given", ["0", "-0.001", "2", "soon"])
def test_run_refuses_a_switch_interval_outside_zero_to_one_second(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nija_broker.service.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["run", "--config", "unused.toml", "--switch-interval-s", given])
    assert exited.value.code == 2
    assert "--switch-interval-s" in capsys.readouterr().err
