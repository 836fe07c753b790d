"""The sync wrapper from the bot's threads while the runtime's event loop runs in another thread.

The bot's ``place_market_order`` is synchronous; here it hands the order to a
:class:`SimExchange` living on a background event loop (the embedded runtime)
and waits for the answer, as the live bot waits on its exchange SDK.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.base import OrderRequest
from adapters.sim import SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import EntryBlocked
from nija_broker.core.intent import Allowed, OrderIntent
from nija_broker.core.models import OrderType, Side
from nija_broker.guard.guard import Guard
from nija_broker.guard.guarded import guard_submit, market_order_reader

from ._guard_support import ALICE, SYMBOLS, T0, account_live, make_guard, open_store, sim

THREADS = 16


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="runtime-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


@pytest.fixture
def busy_switching() -> Iterator[None]:
    # Switch threads as often as the interpreter can, so a race, if there is one, shows.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def bot_submit(
    exchange: SimExchange, loop: asyncio.AbstractEventLoop
) -> Callable[..., dict[str, Any]]:
    """The live bot's synchronous submit, backed by the sim on the runtime's loop."""

    def place_market_order(
        symbol: str,
        side: str,
        quantity: float,
        size_type: str = "quote",
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        price = exchange.engine.price(symbol)
        amount = round(quantity / price, 8) if size_type == "quote" else quantity
        request = OrderRequest(
            symbol=symbol,
            side=Side(side),
            type=OrderType.MARKET,
            amount=amount,
            client_order_id=client_order_id,
        )
        future = asyncio.run_coroutine_threadsafe(exchange.create_order(request), loop)
        order = future.result(timeout=10)
        return {"status": order.status.value, "order_id": order.id}

    return place_market_order


def hammer(attempt: Callable[[int], Any], attempts: int) -> tuple[int, list[EntryBlocked]]:
    """``attempts`` calls spread over THREADS threads released together; (placed, blocks)."""
    start = threading.Barrier(THREADS)
    per_thread = -(-attempts // THREADS)

    def worker(worker_id: int) -> tuple[int, list[EntryBlocked]]:
        start.wait()
        placed, blocks = 0, []
        for i in range(per_thread):
            try:
                attempt(worker_id * per_thread + i)
                placed += 1
            except EntryBlocked as exc:
                blocks.append(exc)
        return placed, blocks

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(worker, range(THREADS)))
    return sum(p for p, _ in results), [b for _, bs in results for b in bs]


def build(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> tuple[Guard, SimExchange, Callable[..., dict[str, Any]]]:
    clock = FakeClock(T0)
    _, exchange = sim(clock)
    guard = make_guard(open_store(tmp_path), clock, {ALICE: account_live()})
    place = guard_submit(
        guard,
        bot_submit(exchange, loop),
        market_order_reader(ALICE),
        client_id_kwarg="client_order_id",
    )
    return guard, exchange, place


@pytest.mark.usefixtures("busy_switching")
def test_1000_entries_from_16_threads_on_one_symbol_reach_the_exchange_once(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    guard, exchange, place = build(tmp_path, loop)
    placed, blocks = hammer(lambda _: place("BTC-USD", "buy", 10.0), 1_000)
    assert placed == 1
    assert len(blocks) == THREADS * -(-1_000 // THREADS) - 1
    assert {b.rule for b in blocks} == {"duplicate_symbol_entry"}
    assert exchange.calls["create_order"] == 1
    assert guard.store is not None
    guard.store.close()


@pytest.mark.usefixtures("busy_switching")
def test_16_threads_racing_for_position_slots_get_exactly_the_tiers_four(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    guard, exchange, place = build(tmp_path, loop)
    placed, blocks = hammer(lambda i: place(SYMBOLS[i % len(SYMBOLS)], "buy", 10.0), 320)
    assert placed == 4
    assert exchange.calls["create_order"] == 4
    symbols = {
        args["request"].symbol for method, args in exchange.call_log if method == "create_order"
    }
    assert len(symbols) == 4
    assert {b.rule for b in blocks} <= {"duplicate_symbol_entry", "max_positions", "dca"}
    assert guard.store is not None
    guard.store.close()


def test_a_blocked_sync_call_never_runs_the_submit_function(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    guard, exchange, place = build(tmp_path, loop)
    place("BTC-USD", "buy", 10.0)
    calls_before = len(exchange.call_log)
    with pytest.raises(EntryBlocked) as info:
        place("BTC-USD", "buy", 10.0)
    assert info.value.rule == "duplicate_symbol_entry"
    assert len(exchange.call_log) == calls_before
    # A sell (an exit) of what was bought goes straight through.
    result = place("BTC-USD", "sell", 0.0001, size_type="base")
    assert result["status"] == "filled"
    assert guard.store is not None
    guard.store.close()


@pytest.mark.usefixtures("busy_switching")
def test_16_threads_reserving_one_client_order_id_hold_one_reservation(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        start = threading.Barrier(THREADS)

        def retry(_: int) -> str | None:
            start.wait()
            decision = guard.decide(
                OrderIntent(
                    account_id=ALICE,
                    symbol="BTC/USD",
                    side="buy",
                    size_usd=10.0,
                    client_order_id="bot-retry",
                )
            )
            return (
                decision.reservation.id
                if isinstance(decision, Allowed) and (decision.reservation is not None)
                else None
            )

        with ThreadPoolExecutor(max_workers=THREADS) as pool:
            ids = list(pool.map(retry, range(THREADS)))
        assert len(set(ids)) == 1
        assert ids[0] is not None
        assert [r.id for r in guard.reservations(ALICE)] == ids[:1]
        assert [i.client_order_id for i in store.pending_intents(ALICE)] == ["bot-retry"]
        assert len(store.decisions(ALICE)) == 1


def test_a_repeated_reserve_waits_until_the_first_has_journaled_the_intent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    with open_store(tmp_path) as store:
        guard = make_guard(store, clock, {ALICE: account_live()})
        writing, finish = threading.Event(), threading.Event()
        journaled: list[str] = []
        put_intent = store.put_intent

        def slow_put_intent(*args: Any, **kwargs: Any) -> None:
            writing.set()
            assert finish.wait(10)
            put_intent(*args, **kwargs)
            journaled.append(args[1])

        monkeypatch.setattr(store, "put_intent", slow_put_intent)
        intent = OrderIntent(
            account_id=ALICE,
            symbol="BTC/USD",
            side="buy",
            size_usd=10.0,
            client_order_id="bot-slow",
        )
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(guard.decide, intent)
            assert writing.wait(10)
            second = pool.submit(guard.decide, intent)
            # The repeat may not answer (and the bot may not send) before the intent is stored.
            with pytest.raises(TimeoutError):
                second.result(timeout=0.2)
            finish.set()
            answers = first.result(timeout=10), second.result(timeout=10)
        assert journaled == ["bot-slow"]
        assert answers[0] is answers[1]
