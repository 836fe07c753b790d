"""Virtual time: the MockClock's loop, FakeClock's sleep, and the one deadline of a call.

Each test that needs time to pass on its own is a plain function that runs its
async body on the clock's loop (``mock_clock.run``); none measures real time.
That no real time was waited is shown by ``clock.jumps``: the loop moved time
because every task was blocked, instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest

from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim import FaultInjector, FaultKind, FaultPlan, SimEngine, SimExchange
from nija_broker.core.clock import FakeClock, MockClock, SystemClock, current_deadline, deadline
from nija_broker.core.errors import TransientError
from nija_broker.core.health import SyncState
from nija_broker.core.models import Market
from nija_broker.sync.reconciler import ReconcilerSettings

from ._reconciler_rig import make_rig

BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
KEYS = {"USER:alice": ("alice-key-0001", "alice-secret-0001")}


# ------------------------------------------------------------------ when time may jump


def test_time_stands_still_while_a_task_computes_in_steps(mock_clock: MockClock) -> None:
    woke_at: list[float] = []

    async def sleeper() -> None:
        await mock_clock.sleep(1.0)
        woke_at.append(mock_clock.monotonic())

    async def main() -> None:
        task = asyncio.create_task(sleeper(), name="sleeper")
        for _ in range(2_000):  # CPU-bound steps that yield: always something ready
            sum(range(100))
            await asyncio.sleep(0)
        assert mock_clock.monotonic() == 0.0
        assert woke_at == []
        await task
        assert woke_at == [1.0]

    mock_clock.run(main())
    assert mock_clock.jumps == 1


def test_time_stands_still_while_an_executor_job_runs(mock_clock: MockClock) -> None:
    started, release = threading.Event(), threading.Event()
    seen_in_job: list[float] = []

    def job() -> str:
        started.set()
        # The loop has only a 1 s timer left; it must wait for this thread, not jump.
        release.wait(timeout=30)
        seen_in_job.append(mock_clock.monotonic())
        return "done"

    def unblock() -> None:
        started.wait(timeout=30)
        release.set()

    async def main() -> None:
        timer = asyncio.create_task(mock_clock.sleep(1.0), name="timer")
        with ThreadPoolExecutor(1, thread_name_prefix="owner") as owner:
            helper = threading.Thread(target=unblock, name="unblock")
            helper.start()
            assert await asyncio.get_running_loop().run_in_executor(owner, job) == "done"
            helper.join()
        assert seen_in_job == [0.0]
        assert not timer.done()
        assert await asyncio.to_thread(lambda: mock_clock.monotonic()) == 0.0
        await timer
        assert mock_clock.monotonic() == 1.0

    mock_clock.run(main())


def test_three_hundred_pollers_sleeping_five_seconds_move_time_five_seconds(
    mock_clock: MockClock,
) -> None:
    rounds = 3

    async def poller(wakes: list[float]) -> None:
        for _ in range(rounds):
            await mock_clock.sleep(5.0)
            wakes.append(mock_clock.monotonic())

    async def main() -> list[list[float]]:
        wakes: list[list[float]] = [[] for _ in range(300)]
        await asyncio.gather(*(poller(w) for w in wakes))
        return wakes

    wakes = mock_clock.run(main())
    assert mock_clock.monotonic() == 15.0
    assert all(w == [5.0, 10.0, 15.0] for w in wakes)
    assert mock_clock.jumps == rounds


def test_fake_clock_sleepers_of_one_turn_share_one_jump() -> None:
    clock = FakeClock()

    async def main() -> None:
        await asyncio.gather(*(clock.sleep(5.0) for _ in range(300)))
        assert clock.monotonic() == 5.0
        await clock.sleep(2.0)  # one sleeper alone: exactly its own delay
        assert clock.monotonic() == 7.0
        await asyncio.gather(clock.sleep(1.0), clock.sleep(3.0))
        assert clock.monotonic() == 10.0  # the latest deadline of the turn

    asyncio.run(main())


def test_mock_clock_sleep_refuses_a_loop_on_real_time() -> None:
    clock = MockClock()
    with pytest.raises(RuntimeError, match="clock's own loop"):
        asyncio.run(clock.sleep(1.0))


def test_time_moved_by_hand_fires_the_timers_it_makes_due(mock_clock: MockClock) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired = loop.create_future()
        loop.call_later(30.0, fired.set_result, None)
        mock_clock.advance(30.0)
        await fired
        assert mock_clock.monotonic() == 30.0

    mock_clock.run(main())
    assert mock_clock.jumps == 0


# ------------------------------------------------------------------ one deadline per call


def test_deadline_on_a_hanging_sim_call_fires_at_its_virtual_time(mock_clock: MockClock) -> None:
    async def main() -> None:
        engine = SimEngine(seed=1, clock=mock_clock)
        hang = FaultPlan(rate=1.0, kinds=frozenset({FaultKind.TIMEOUT}), timeout_s=3_600.0)
        exchange = SimExchange(engine, "A", faults=FaultInjector(hang, mock_clock))
        engine.open_account("A", {"USD": 100.0})
        with pytest.raises(TimeoutError):
            async with deadline(15.0):
                await exchange.fetch_balance()
        assert mock_clock.monotonic() == 15.0

    mock_clock.run(main())
    assert mock_clock.jumps == 1


def test_an_inner_deadline_takes_the_callers_and_sets_no_second(mock_clock: MockClock) -> None:
    async def main() -> None:
        assert current_deadline() is None
        async with deadline(5.0) as outer:
            async with deadline(60.0) as inner:
                assert inner == outer == 5.0
                assert current_deadline() == 5.0

            async def in_a_task() -> float | None:
                return current_deadline()

            # A task started inside may outlive the block: it does not inherit it.
            assert await asyncio.create_task(in_a_task(), name="child") is None
        assert current_deadline() is None

    mock_clock.run(main())


def test_reconciler_call_that_hangs_is_cut_at_call_timeout(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    async def main() -> None:
        rig = make_rig(tmp_path, settings=ReconcilerSettings(call_timeout_s=15.0), clock=mock_clock)
        await rig.sync()
        rig.faults["USER:alice"].set_plan(
            FaultPlan(
                rate=1.0,
                kinds=frozenset({FaultKind.TIMEOUT}),
                timeout_s=3_600.0,
                methods=frozenset({"fetch_open_orders"}),
            )
        )
        started = mock_clock.monotonic()
        health = await rig.rec.sync_once("USER:alice")
        assert mock_clock.monotonic() - started == pytest.approx(15.0)
        assert health.state is SyncState.DEGRADED
        assert "no answer within 15.0s" in (health.last_error or "")
        await rig.rec.aclose()

    mock_clock.run(main())


# ------------------------------------------------------------------ the ccxt adapter, on loopback


@asynccontextmanager
async def binance(
    clock: MockClock, plan: FaultPlan, **kwargs: Any
) -> AsyncIterator[tuple[EmulatorServer, CcxtExchange]]:
    """The Binance emulator on loopback and real ccxt through CcxtExchange, on ``clock``.

    The engine and server stamp and check times on real time as ccxt does; their
    sleeps (``asyncio.sleep``) are on the loop's virtual time like everything else.
    """
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(BTC, 50_000.0)
    engine.open_account("USER:alice", {"USDT": 10_000.0})
    faults = FaultInjector(plan, SystemClock())
    async with EmulatorServer(engine, KEYS, faults=faults) as server:
        api_key, secret = KEYS["USER:alice"]
        raw = ccxt.binance(binance_ccxt_config(server.url, api_key, secret))
        exchange = CcxtExchange(
            raw,
            account_id="USER:alice",
            clock=clock,
            budget=RateBudget(1000.0, clock=clock),
            **kwargs,
        )
        try:
            yield server, exchange
        finally:
            await exchange.aclose()


def test_ccxt_call_to_a_hanging_exchange_ends_at_its_deadline(mock_clock: MockClock) -> None:
    hang = FaultPlan(
        rate=1.0,
        kinds=frozenset({FaultKind.TIMEOUT}),
        timeout_s=3_600.0,
        methods=frozenset({"fetch_balance"}),
    )

    async def main() -> None:
        async with binance(mock_clock, hang, call_timeout_s=15.0) as (server, exchange):
            assert (await exchange.fetch_open_orders()).orders == []  # loopback I/O works
            started = mock_clock.monotonic()
            with pytest.raises(TransientError, match=r"fetch_balance: no answer within .*15\.0s"):
                await exchange.fetch_balance()
            assert mock_clock.monotonic() - started == pytest.approx(15.0)
            assert server.requests["GET /api/v3/account"] == 1  # one attempt, not cut early
            assert exchange._ex.timeout >= 15_000  # ccxt's own timeout never fires first

    mock_clock.run(main())


def test_ccxt_retries_stop_at_the_retry_budget(mock_clock: MockClock) -> None:
    failing = FaultPlan(
        rate=1.0, kinds=frozenset({FaultKind.SERVER_ERROR}), methods=frozenset({"fetch_balance"})
    )

    async def main() -> None:
        async with binance(
            mock_clock,
            failing,
            call_timeout_s=20.0,
            max_attempts=100,
            retry_initial_s=0.5,
            retry_max_wait_s=4.0,
        ) as (server, exchange):
            started = mock_clock.monotonic()
            with pytest.raises(TransientError, match=r"503.*gave up after") as caught:
                await exchange.fetch_balance()
            spent = mock_clock.monotonic() - started
            # No backoff was begun that would end past the deadline; the next one would
            # have (it is at most retry_max_wait_s plus one initial step of jitter).
            assert 20.0 - (4.0 + 0.5) <= spent < 20.0
            attempts = server.requests["GET /api/v3/account"]
            assert 4 < attempts < 100
            assert f"gave up after {attempts} attempt(s)" in str(caught.value)

    mock_clock.run(main())


def test_ccxt_retries_under_a_callers_deadline_stop_at_the_callers(mock_clock: MockClock) -> None:
    failing = FaultPlan(
        rate=1.0, kinds=frozenset({FaultKind.SERVER_ERROR}), methods=frozenset({"fetch_balance"})
    )

    async def main() -> None:
        async with binance(
            mock_clock,
            failing,
            call_timeout_s=60.0,
            max_attempts=100,
            retry_initial_s=0.5,
            retry_max_wait_s=4.0,
        ) as (_server, exchange):
            async with deadline(6.0):
                with pytest.raises(TransientError, match="gave up after"):
                    await exchange.fetch_balance()
            assert mock_clock.monotonic() < 6.0

    mock_clock.run(main())
