"""Builders shared by the guard's tests: hand-made account views, a guard over a store, the sim.

The fixtures at the end (``clock``, ``store``, ``guard``) are bound by name in
each test module that uses them; ``guard`` takes that module's own ``live``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.events import IntentReleased, IntentResolved
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.intent import OrderIntent
from nija_broker.core.models import Balance, Market
from nija_broker.core.tiers import DEFAULT_TIERS, TierTable
from nija_broker.guard.guard import Guard, GuardSettings
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
TABLE = TierTable(DEFAULT_TIERS)
ALICE = "USER:alice"
SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD")
PRICES = {
    "BTC/USD": 50_000.0,
    "ETH/USD": 3_000.0,
    "SOL/USD": 150.0,
    "XRP/USD": 0.5,
    "ADA/USD": 0.4,
    "DOGE/USD": 0.1,
}
MARKETS = {
    s: Market(
        symbol=s,
        base=s.split("/")[0],
        quote="USD",
        amount_step=1e-8,
        price_step=0.0001,
        min_amount=1e-8,
        min_notional=1.0,
    )
    for s in SYMBOLS
}


def usd(free: float, **others: float) -> dict[str, Balance]:
    balances = {"USD": Balance(currency="USD", free=free, total=free)}
    for currency, total in others.items():
        balances[currency] = Balance(currency=currency, free=total, total=total)
    return balances


def account_live(
    account_id: str = ALICE,
    *,
    equity: float = 100.0,
    free: float = 100.0,
    state: SyncState = SyncState.OK,
    balances: Mapping[str, Balance] | None = None,
) -> AccountLive:
    """What the reconciler would hold for a synced account with ``free`` USD."""
    live = AccountLive.create(account_id, TABLE)
    live.tier.update(equity)
    live.health = AccountHealth(state=state, last_success=T0)
    live.equity_usd = equity
    live.balances = balances if balances is not None else usd(free)
    live.markets = MARKETS
    return live


def make_guard(
    store: Store | None, clock: FakeClock, live: dict[str, AccountLive], **settings: Any
) -> Guard:
    books = Books(store, clock=clock)
    guard = Guard(books, live, clock=clock, settings=GuardSettings(**settings))
    for account_id in live:
        for symbol, price in PRICES.items():
            books.get(account_id).orders.set_last_price(symbol, price)
    return guard


async def settle_at_startup(
    guard: Guard, exchange: SimExchange, clock: FakeClock
) -> tuple[set[str], set[str]]:
    """What a restart does with the intents it found unresolved: the reconciler's start-up
    looks each up by client order id and the runtime settles the guard's reservation.
    Returns the client order ids (resolved, released)."""
    reconciler = Reconciler(guard.books, {exchange.account_id: exchange}, guard.live, clock=clock)
    resolved: set[str] = set()
    released: set[str] = set()
    with reconciler.subscribe() as events:
        await reconciler.startup(exchange.account_id)
        for event in events.drain():
            if isinstance(event, IntentResolved | IntentReleased):
                guard.settle_client_id(
                    event.account_id,
                    event.client_order_id,
                    resolved=isinstance(event, IntentResolved),
                    order_id=getattr(event, "order_id", None),
                )
                (resolved if isinstance(event, IntentResolved) else released).add(
                    event.client_order_id
                )
    await reconciler.aclose()
    return resolved, released


def open_store(path: Path) -> Store:
    return Store(path / "state.sqlite3")


def buy(
    symbol: str = "BTC/USD", size_usd: float | None = 10.0, account_id: str = ALICE, **changes: Any
) -> OrderIntent:
    return OrderIntent(
        account_id=account_id, symbol=symbol, side="buy", size_usd=size_usd, **changes
    )


def sell(
    symbol: str = "BTC/USD", amount: float = 0.001, account_id: str = ALICE, **changes: Any
) -> OrderIntent:
    return OrderIntent(account_id=account_id, symbol=symbol, side="sell", amount=amount, **changes)


def sim(
    clock: FakeClock, balances: Mapping[str, float] | None = None, account_id: str = ALICE
) -> tuple[SimEngine, SimExchange]:
    engine = SimEngine(seed=7, clock=clock)
    for symbol, market in MARKETS.items():
        engine.add_market(market, PRICES[symbol])
    engine.open_account(account_id, dict(balances or {"USD": 100.0}))
    return engine, SimExchange(engine, account_id)


# ----------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path) as store:
        yield store


@pytest.fixture
def guard(store: Store, clock: FakeClock, live: dict[str, AccountLive]) -> Guard:
    return make_guard(store, clock, live)
