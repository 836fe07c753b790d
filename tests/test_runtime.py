"""The Broker runtime end to end: real ccxt against the emulator, the guard, the API, a restart."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt as ccxt_sync
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.errors import EntryBlocked
from nija_broker.core.health import SyncState
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market, OrderStatus, OrderType, Side
from nija_broker.guard.guarded import guard_submit, market_order_reader
from nija_broker.service.broker_thread import BrokerThread
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

pytestmark = pytest.mark.integration

PLATFORM, ALICE = "PLATFORM", "USER:alice"
KEYS = {
    PLATFORM: ("platform-key-01", "platform-secret-01"),
    ALICE: ("alice-key-01", "alice-secret-01"),
}
ENV = {
    "PLATFORM_KEY": KEYS[PLATFORM][0],
    "PLATFORM_SECRET": KEYS[PLATFORM][1],
    "ALICE_KEY": KEYS[ALICE][0],
    "ALICE_SECRET": KEYS[ALICE][1],
}
MARKETS = [
    (
        Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        50_000.0,
    ),
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.0001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
]
FAST = ReconcilerSettings(
    poll_interval_s=0.2,
    balance_interval_s=0.2,
    visibility_window_s=0.0,
    call_timeout_s=5.0,
    # An order placed straight on the exchange on a symbol the account has no order on
    # is found by the listing of every symbol: every second here, not every 300 s.
    full_listing_interval_s=1.0,
)


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    engine = SimEngine(seed=7, clock=SystemClock())
    for market, price in MARKETS:
        engine.add_market(market, price)
    engine.open_account(PLATFORM, {"USDT": 10_000.0})
    engine.open_account(ALICE, {"USDT": 100.0})
    async with EmulatorServer(engine, KEYS) as server:
        yield server


def _config(url: str, tmp_path: Path) -> Any:
    accounts = []
    for account_id, env in ((PLATFORM, "PLATFORM"), (ALICE, "ALICE")):
        accounts.append(
            {
                "id": account_id,
                "exchange": "binance",
                "api_key_env": f"{env}_KEY",
                "secret_env": f"{env}_SECRET",
                "quote_currency": "USDT",
                "ccxt": binance_ccxt_config(url),
            }
        )
    return parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"host": "127.0.0.1", "port": 0},
            "accounts": accounts,
        }
    )


async def _until(predicate: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state another task owns
            await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_broker_syncs_guards_adopts_and_survives_a_restart(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    config = _config(emulator.url, tmp_path)
    async with Broker(config, environ=ENV, reconciler_settings=FAST) as broker:
        rows = {row.account_id: row for row in broker.status()}
        assert rows[PLATFORM].tier == "STANDARD"
        assert rows[ALICE].tier == "MICRO_CAP"
        assert {row.sync for row in rows.values()} == {"ok"}

        alice = broker.guarded_exchange(ALICE)
        # A marketable limit: it fills at once, and carries the price the guard values it at.
        first = await alice.create_order(
            OrderRequest(
                symbol="BTC-USDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0004,
                price=51_000.0,
            )
        )
        assert first.status is OrderStatus.FILLED
        # The position shows once balances refresh; then a second BTC entry is DCA.
        await _until(lambda: broker.live[ALICE].balances.get("BTC") is not None)
        with pytest.raises(EntryBlocked) as blocked:
            await alice.create_order(
                OrderRequest(
                    symbol="BTC/USDT",
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=0.0002,
                    price=49_000.0,
                )
            )
        assert blocked.value.rule in {"dca", "duplicate_symbol_entry"}

        # An order placed straight on the exchange, as the live bot does, is adopted.
        external = emulator.engine.place_order(
            PLATFORM,
            OrderRequest(
                symbol="ETH/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.01, price=2_000.0
            ),
        )
        book = broker.books.get(PLATFORM)  # type: ignore[union-attr]
        await _until(lambda: book.orders.get(external.id) is not None)

        assert broker.api is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{broker.api.url}/v1/accounts/{PLATFORM}/orders") as r:
                body = await r.json()
            assert [o["id"] for o in body["orders"]] == [external.id]
            async with session.post(
                f"{broker.api.url}/v1/guard/check",
                json={"account_id": ALICE, "symbol": "BTC-USDT", "side": "buy", "size_usd": 10.0},
            ) as r:
                answer = await r.json()
            assert answer["allowed"] is False
            async with session.get(f"{broker.api.url}/metrics") as r:
                metrics = await r.text()
        rule = blocked.value.rule
        # The blocked reserve and the blocked check above: every decision counts, once.
        assert f'nija_broker_guard_blocks_total{{account="{ALICE}",rule="{rule}"}} 2.0' in metrics
        assert f'nija_broker_sync_cycle_seconds_count{{account="{PLATFORM}"}}' in metrics
        assert f'nija_broker_fills_total{{account="{ALICE}"}} 1.0' in metrics
        alice_book = broker.books.get(ALICE)  # type: ignore[union-attr]
        # MICRO_CAP balances are checked every poll, before the full refresh that books the
        # equity point: compare the metrics once the curve shows the entry (its fee).
        await _until(lambda: alice_book.metrics().current_balance < 100.0)
        metrics_before = alice_book.metrics()

    async with Broker(config, environ=ENV, reconciler_settings=FAST) as again:
        book = again.books.get(PLATFORM)  # type: ignore[union-attr]
        assert book.orders.get(external.id) is not None
        assert again.books.get(ALICE).metrics() == metrics_before  # type: ignore[union-attr]
        decisions = again.guard.decisions(ALICE, blocked_only=True)  # type: ignore[union-attr]
        assert decisions
        assert decisions[0].rule in {"dca", "duplicate_symbol_entry"}


@pytest.mark.asyncio
async def test_wrong_keys_fail_that_account_only_and_its_entries_fail_closed(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    env = {**ENV, "ALICE_SECRET": "not-the-secret"}
    async with Broker(
        _config(emulator.url, tmp_path), environ=env, reconciler_settings=FAST
    ) as broker:
        assert broker.live[ALICE].health.state is SyncState.FAILED
        assert broker.live[PLATFORM].health.state is SyncState.OK
        decision = broker.check(
            OrderIntent(account_id=ALICE, symbol="ETH/USDT", side="buy", size_usd=10.0)
        )
        assert isinstance(decision, Blocked)
        assert decision.rule == "sync_unknown"
        assert "not-the-secret" not in (broker.live[ALICE].health.last_error or "")


def test_background_thread_mode_for_a_synchronous_bot(tmp_path: Path) -> None:
    async def serve(ready: asyncio.Future[str], stop: asyncio.Event) -> None:
        engine = SimEngine(seed=1, clock=SystemClock())
        for market, price in MARKETS:
            engine.add_market(market, price)
        engine.open_account(PLATFORM, {"USDT": 10_000.0})
        engine.open_account(ALICE, {"USDT": 100.0})
        async with EmulatorServer(engine, KEYS) as server:
            ready.set_result(server.url)
            await stop.wait()

    loop = asyncio.new_event_loop()
    ready: asyncio.Future[str] = loop.create_future()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(ready, stop),))
    thread.start()
    try:
        while not ready.done():
            threading.Event().wait(0.02)
        broker = BrokerThread(
            _config(ready.result(), tmp_path),
            environ=ENV,
            reconciler_settings=FAST,
            serve_api=False,
        )
        broker.start()
        try:
            rows = broker.status()
            assert [r.account_id for r in rows] == [PLATFORM, ALICE]
            decision = broker.check(
                OrderIntent(account_id=ALICE, symbol="ETH/USDT", side="buy", size_usd=10.0)
            )
            assert decision.allowed

            # The live bot's own submit function, on its own (sync) SDK, behind the guard.
            bot_sdk = ccxt_sync.binance(binance_ccxt_config(ready.result(), *KEYS[ALICE]))

            def place_market_order(
                symbol: str, side: str, quantity: float, size_type: str = "quote"
            ) -> dict[str, Any]:
                assert (side, size_type) == ("buy", "quote")
                order: dict[str, Any] = bot_sdk.create_market_buy_order_with_cost(
                    symbol.replace("-", "/"), quantity
                )
                return order

            guarded_place = guard_submit(
                broker.guard, place_market_order, market_order_reader(ALICE)
            )
            placed = guarded_place("ETH-USDT", "buy", 20.0)
            assert placed["status"] == "closed"
            with pytest.raises(EntryBlocked) as blocked:
                guarded_place("ETH-USDT", "buy", 20.0)  # the position (or its entry) is there
            assert blocked.value.rule in {"dca", "duplicate_symbol_entry"}
            orders = [o["id"] for o in bot_sdk.fetch_orders("ETH/USDT")]
            assert orders == [placed["id"]]  # the blocked entry never reached the exchange
        finally:
            broker.stop()
            broker.stop()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


@pytest.mark.asyncio
async def test_each_account_holds_capital_at_its_own_fee_rate(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    raw = _config(emulator.url, tmp_path).model_dump()
    raw["accounts"][1]["fee_rate"] = 0.001  # USER:alice; PLATFORM keeps the default
    config = parse_config(raw)
    async with Broker(config, environ=ENV, reconciler_settings=FAST, serve_api=False) as broker:
        assert broker.books is not None
        assert broker.books.get(ALICE).orders.fee_rate == pytest.approx(0.001)
        assert broker.books.get(PLATFORM).orders.fee_rate == pytest.approx(0.004)


def test_a_stale_cancellation_counts_once_in_each_counter(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from nija_broker.core.events import OrderCancelled, StaleOrderFound
    from nija_broker.core.models import Order

    broker = Broker(_config("http://127.0.0.1:9", tmp_path), environ=ENV, serve_api=False)
    at = SystemClock().now()
    resting = Order(
        id="7",
        account_id=ALICE,
        symbol="ETH/USDT",
        side="buy",
        price=2_000.0,
        amount=0.01,
        created_at=at,
    )
    cancelled = resting.replace(status=OrderStatus.CANCELLED)
    broker._on_event(
        StaleOrderFound(account_id=ALICE, at=at, order=resting, max_age_s=60.0, action="cancel")
    )
    broker._on_event(
        OrderCancelled(account_id=ALICE, at=at, order=cancelled, previous=resting, fill=None)
    )
    other = cancelled.replace(id="8")
    broker._on_event(OrderCancelled(account_id=ALICE, at=at, order=other, previous=None, fill=None))
    body, _ = broker.metrics.render()
    samples = {
        (s.name, s.labels.get("account")): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("nija_broker_cancellations_total", ALICE)] == 2.0
    assert samples[("nija_broker_stale_cancellations_total", ALICE)] == 1.0
