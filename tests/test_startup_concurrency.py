"""A fleet's start-up syncs run a few at a time per exchange; the others show ``syncing``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from adapters.sim import FaultPlan
from nija_broker.core.health import SyncState
from nija_broker.sync.reconciler import ReconcilerSettings

from ._reconciler_rig import make_rig

ACCOUNTS = tuple(f"USER:fleet{n:04d}" for n in range(12))


@pytest.mark.asyncio
async def test_start_up_syncs_run_startup_concurrency_at_a_time_and_all_end_synced(
    tmp_path: Path,
) -> None:
    rig = make_rig(
        tmp_path,
        ACCOUNTS,
        settings=ReconcilerSettings(startup_concurrency=3),
        # Each request answers a little late, so start-ups overlap as they would.
        plan=FaultPlan(base_latency_s=0.05),
    )
    in_flight = 0
    most = 0
    seen_syncing_meanwhile = False
    startup = rig.rec.startup

    async def counted(account_id: str) -> Any:
        nonlocal in_flight, most, seen_syncing_meanwhile
        in_flight += 1
        most = max(most, in_flight)
        waiting = [a for a in ACCOUNTS if rig.live[a].health.state is SyncState.SYNCING]
        seen_syncing_meanwhile = seen_syncing_meanwhile or len(waiting) > in_flight
        try:
            return await startup(account_id)
        finally:
            in_flight -= 1

    rig.rec.startup = counted  # type: ignore[method-assign]
    started = asyncio.ensure_future(rig.rec.startup_all())
    while not started.done():
        await asyncio.sleep(0)
        rig.clock.advance(0.01)
    await started
    assert most == 3
    assert seen_syncing_meanwhile
    assert {rig.live[a].health.state for a in ACCOUNTS} == {SyncState.OK}
    await rig.rec.aclose()
