"""GuardClient against a live API: every failure of the sidecar is an answer, never a crash.

Entries are answered as blocked (``guard_error`` with the HTTP status for an error
answer, ``guard_unreachable`` when nothing answers) and exits as allowed; only the
caller's own mistakes (bad arguments) raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from nija_broker.client import GuardClient, GuardUnavailable
from nija_broker.core.clock import FakeClock
from nija_broker.core.intent import OrderIntent
from nija_broker.guard.guard import Guard
from nija_broker.service.api import ApiContext, ApiServer
from nija_broker.service.prom import BrokerMetrics
from nija_broker.state.store import Store
from tests._guard_support import ALICE, T0, account_live, make_guard

TOKEN = "t0ken-Secret-123"

pytestmark = pytest.mark.asyncio


@dataclass
class Served:
    guard: Guard
    url: str


async def _serve(tmp_path: Path, token: str | None = None) -> AsyncIterator[Served]:
    store = Store(tmp_path / "client.sqlite3")
    clock = FakeClock(T0)
    live = {ALICE: account_live(ALICE, equity=100.0, free=100.0)}
    guard = make_guard(store, clock, live)
    ctx = ApiContext(
        books=guard.books, live=live, guard=guard, metrics=BrokerMetrics(), clock=clock, token=token
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        yield Served(guard, api.url)
    store.close()


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async for s in _serve(tmp_path):
        yield s


async def _in_thread(call: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(call, *args, **kwargs)


async def test_a_401_is_a_guard_error_answer_blocking_entries_and_allowing_exits(
    tmp_path: Path,
) -> None:
    async for s in _serve(tmp_path, token=TOKEN):
        client = GuardClient(s.url)  # no token
        entry = await _in_thread(client.check, ALICE, "BTC-USD", "buy", size_usd=10.0)
        assert (entry.allowed, entry.rule, entry.status) == (False, "guard_error", 401)
        assert entry.reason is not None
        assert "401" in entry.reason
        exit_ = await _in_thread(client.reserve, ALICE, "BTC-USD", "sell", amount=0.001)
        assert (exit_.allowed, exit_.rule, exit_.status) == (True, None, 401)
        assert exit_.error is not None
        assert "bearer token" in exit_.error
        authorized = GuardClient(s.url, token=TOKEN)
        assert (await _in_thread(authorized.check, ALICE, "BTC-USD", "buy", size_usd=10.0)).allowed


async def test_a_404_is_a_guard_error_answer_with_the_sidecars_message(served: Served) -> None:
    client = GuardClient(served.url)
    answer = await _in_thread(client.reserve, "USER:nobody", "BTC-USD", "buy", size_usd=10.0)
    assert (answer.allowed, answer.rule, answer.status) == (False, "guard_error", 404)
    assert answer.reason is not None
    assert "unknown account 'USER:nobody'" in answer.reason
    assert answer.reservation_id is None


async def test_a_500_is_a_guard_error_answer(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(intent: OrderIntent) -> Any:
        raise RuntimeError("bug in the sidecar")

    monkeypatch.setattr(served.guard, "check", broken)
    client = GuardClient(served.url)
    answer = await _in_thread(client.check, ALICE, "BTC-USD", "buy", size_usd=10.0)
    assert (answer.allowed, answer.rule, answer.status) == (False, "guard_error", 500)
    assert answer.reason is not None
    assert "bug in the sidecar" not in answer.reason
    exit_ = await _in_thread(client.check, ALICE, "BTC-USD", "sell", amount=0.001, reduce_only=True)
    assert (exit_.allowed, exit_.status) == (True, 500)


async def test_a_reused_client_order_id_is_a_guard_error_answer_naming_it(served: Served) -> None:
    client = GuardClient(served.url)
    first = await _in_thread(
        client.reserve, ALICE, "BTC-USD", "buy", size_usd=10.0, client_order_id="bot-7"
    )
    again = await _in_thread(
        client.reserve, ALICE, "BTC-USD", "buy", size_usd=10.0, client_order_id="bot-7"
    )
    assert first.allowed
    assert again.reservation_id == first.reservation_id
    other = await _in_thread(
        client.reserve, ALICE, "BTC-USD", "buy", size_usd=12.0, client_order_id="bot-7"
    )
    assert (other.allowed, other.rule, other.status) == (False, "guard_error", 409)
    assert other.reason is not None
    assert "bot-7" in other.reason


async def test_a_bad_field_the_sidecar_refuses_is_a_guard_error_answer(served: Served) -> None:
    client = GuardClient(served.url)
    answer = await _in_thread(
        client.check, ALICE, "BTC-USD", "buy", amount=0.001, type="limit"
    )  # a limit order without its price
    assert (answer.allowed, answer.rule, answer.status) == (False, "guard_error", 422)
    assert answer.reason is not None
    assert "price" in answer.reason


async def test_an_answer_that_is_not_the_guards_is_a_guard_error_answer() -> None:
    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/v1/guard/check", not_json)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        client = GuardClient(f"http://127.0.0.1:{port}")
        answer = await _in_thread(client.check, ALICE, "BTC-USD", "buy", size_usd=10.0)
        assert (answer.allowed, answer.rule, answer.status) == (False, "guard_error", 200)
    finally:
        await runner.cleanup()


async def test_nothing_answering_is_guard_unreachable_for_entries_only() -> None:
    client = GuardClient("http://127.0.0.1:9", timeout_s=0.5)
    entry = await _in_thread(client.reserve, ALICE, "BTC-USD", "buy", size_usd=10.0)
    assert (entry.allowed, entry.rule, entry.status) == (False, "guard_unreachable", None)
    exit_ = await _in_thread(client.check, ALICE, "BTC-USD", "buy", amount=0.001, role="stop")
    assert (exit_.allowed, exit_.rule) == (True, None)
    assert await _in_thread(client.confirm, "rsv-1", "order-1") is False
    with pytest.raises(GuardUnavailable):
        await _in_thread(
            GuardClient("http://127.0.0.1:9", timeout_s=0.5, on_unreachable="raise").check,
            ALICE,
            "BTC-USD",
            "buy",
            size_usd=10.0,
        )


async def test_confirm_and_release_say_whether_the_sidecar_recorded_them(served: Served) -> None:
    client = GuardClient(served.url)
    held = await _in_thread(client.reserve, ALICE, "BTC-USD", "buy", size_usd=10.0)
    assert held.reservation_id is not None
    assert await _in_thread(client.confirm, held.reservation_id, "order-1") is True
    assert await _in_thread(client.confirm, held.reservation_id, "order-1") is True  # a retry
    assert await _in_thread(client.release, "rsv-unknown") is False
    assert await _in_thread(client.release, held.reservation_id) is True


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"side": "long", "size_usd": 10.0}, ValueError),
        ({"side": "buy"}, ValueError),
        ({"side": "buy", "size_usd": "10"}, TypeError),
        ({"side": "buy", "size_usd": True}, TypeError),
        ({"side": "buy", "size_usd": 10.0, "reduce_only": "yes"}, TypeError),
    ],
)
async def test_the_callers_own_mistakes_raise(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    client = GuardClient("http://127.0.0.1:9", timeout_s=0.5)
    side = kwargs.pop("side")
    with pytest.raises(error):
        client.check(ALICE, "BTC-USD", side, **kwargs)


async def test_answer_is_the_guard_answer_class() -> None:
    from nija_broker.client import Answer, GuardAnswer

    assert Answer is GuardAnswer
