"""The rig shared by the tests that drive real ccxt, through CcxtExchange, against an emulator.

Each dialect's test module builds its own engine (markets, accounts, fees)
and names its server type, keys and ccxt class; the rig around them is one.
The ``alice`` fixture is bound by name in each module and takes that
module's own ``rig``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest_asyncio

from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultInjector, FaultKind, FaultPlan
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.models import OrderRole, OrderType

ServerT = TypeVar("ServerT", bound=EmulatorServer)

Keys = Mapping[str, tuple[str, str]]
"""Account id -> (API key, secret), as the emulator checks them."""
MakeCcxt = Callable[[str, str, str], Any]
"""(server url, API key, secret) -> a ccxt exchange pointed at the emulator."""


@dataclass
class EmulatorRig(Generic[ServerT]):
    engine: SimEngine
    server: ServerT
    faults: FaultInjector
    keys: Keys
    make_ccxt: MakeCcxt

    def raw(self, account_id: str = "USER:alice", *, secret: str | None = None) -> Any:
        """A bare ccxt exchange for ``account_id``; ``secret`` replaces the real one."""
        api_key, real_secret = self.keys[account_id]
        return self.make_ccxt(self.server.url, api_key, secret or real_secret)

    @asynccontextmanager
    async def raw_session(self, account_id: str = "USER:alice") -> AsyncIterator[Any]:
        """:meth:`raw`, closed when the block ends."""
        raw = self.raw(account_id)
        try:
            yield raw
        finally:
            await raw.close()

    def exchange(
        self, account_id: str = "USER:alice", *, secret: str | None = None, **kwargs: object
    ) -> CcxtExchange:
        """A CcxtExchange on a fake clock (retries sleep no real time) and a roomy budget."""
        defaults: dict[str, object] = {
            "clock": FakeClock(),
            "call_timeout_s": 2.0,
            "budget": RateBudget(1000.0),
        }
        return CcxtExchange(
            self.raw(account_id, secret=secret), account_id=account_id, **{**defaults, **kwargs}
        )  # type: ignore[arg-type]

    def fault(
        self,
        *kinds: FaultKind,
        methods: set[str],
        rate: float = 1.0,
        timeout_s: float = 0.0,
        hidden_after_create_s: float = 0.0,
    ) -> None:
        self.faults.set_plan(
            FaultPlan(
                rate=rate,
                kinds=frozenset(kinds),
                methods=frozenset(methods),
                timeout_s=timeout_s,
                hidden_after_create_s=hidden_after_create_s,
            )
        )


@asynccontextmanager
async def serving(
    server_type: type[ServerT], engine: SimEngine, keys: Keys, make_ccxt: MakeCcxt
) -> AsyncIterator[EmulatorRig[ServerT]]:
    """``engine`` served on loopback with no faults planned yet, as a rig."""
    faults = FaultInjector(FaultPlan(), SystemClock())
    async with server_type(engine, keys, faults=faults) as server:
        yield EmulatorRig(engine, server, faults, keys, make_ccxt)


@pytest_asyncio.fixture
async def alice(rig: EmulatorRig[Any]) -> AsyncIterator[CcxtExchange]:
    ex = rig.exchange()
    yield ex
    await ex.aclose()


PROTECTIVE_SELLS = [
    (OrderType.STOP, None, 45_000.0, OrderRole.STOP),
    (OrderType.STOP_LIMIT, 44_900.0, 45_000.0, OrderRole.STOP),
    (OrderType.TAKE_PROFIT, None, 60_000.0, OrderRole.TARGET),
    (OrderType.TAKE_PROFIT, 60_100.0, 60_000.0, OrderRole.TARGET),
]
"""(type, limit price, trigger, role) of the protective sells each dialect must carry whole."""
