"""The HTTP API: every endpoint answers, errors are JSON, the token is required off loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from nija_broker.client import GuardClient, GuardUnavailable
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.health import SyncState
from nija_broker.core.models import Balance, Order
from nija_broker.service.api import ApiContext, ApiServer, check_binding
from nija_broker.service.prom import BrokerMetrics
from nija_broker.state.store import Store
from tests._guard_support import ALICE, T0, account_live, make_guard

BOB = "USER:bob"
TOKEN = "t0ken-Secret-123"


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ApiServer]:
    store = Store(tmp_path / "api.sqlite3")
    clock = FakeClock(T0)
    live = {
        ALICE: account_live(ALICE, equity=100.0, free=100.0),
        BOB: account_live(BOB, equity=5_000.0, free=5_000.0, state=SyncState.FAILED),
    }
    guard = make_guard(store, clock, live)
    guard.books.get(ALICE).apply_order(
        Order(
            id="O-1",
            account_id=ALICE,
            symbol="ETH/USD",
            side="buy",
            price=2_000.0,
            amount=0.005,
            created_at=T0,
        )
    )
    ctx = ApiContext(
        books=guard.books, live=live, guard=guard, metrics=BrokerMetrics(), clock=clock
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        yield api
    store.close()


async def _get(api: ApiServer, path: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(api.url + path, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def _post(api: ApiServer, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + path, json=body, **kw) as r,
    ):
        return r.status, await r.json()


@pytest.mark.asyncio
async def test_healthz_reports_each_account_and_fails_when_one_has_failed(
    server: ApiServer,
) -> None:
    status, body = await _get(server, "/healthz")
    assert status == 503
    assert body["status"] == "failed"
    assert body["accounts"][ALICE]["state"] == "ok"
    assert body["accounts"][BOB]["state"] == "failed"


@pytest.mark.asyncio
async def test_accounts_list_is_a_row_per_account(server: ApiServer) -> None:
    status, body = await _get(server, "/v1/accounts")
    assert status == 200
    assert body["schema_version"] == 5
    assert [row["account_id"] for row in body["accounts"]] == [ALICE, BOB]
    status, row = await _get(server, f"/v1/accounts/{ALICE}")
    assert status == 200
    assert row["open_orders"] == 1
    assert row["tier"] == "MICRO_CAP"


@pytest.mark.asyncio
async def test_unknown_account_is_a_json_404(server: ApiServer) -> None:
    for path in (
        "/v1/accounts/USER:nobody",
        "/v1/accounts/USER:nobody/orders",
        "/v1/accounts/USER:nobody/trades",
        "/v1/accounts/USER:nobody/guard-decisions",
    ):
        status, body = await _get(server, path)
        assert status == 404, path
        assert body["error"] == "unknown account 'USER:nobody'"


@pytest.mark.asyncio
async def test_orders_trades_and_decisions_of_one_account(server: ApiServer) -> None:
    status, body = await _get(server, f"/v1/accounts/{ALICE}/orders")
    assert status == 200
    assert [o["id"] for o in body["orders"]] == ["O-1"]
    status, body = await _get(server, f"/v1/accounts/{ALICE}/trades?limit=5")
    assert (status, body["trades"]) == (200, [])
    status, body = await _get(server, f"/v1/accounts/{ALICE}/trades?limit=zero")
    assert status == 422
    assert body["field"] == "limit"


@pytest.mark.asyncio
async def test_guard_check_blocks_a_second_entry_on_a_micro_account(server: ApiServer) -> None:
    entry = {"account_id": ALICE, "symbol": "ETH-USD", "side": "buy", "size_usd": 10.0}
    status, body = await _post(server, "/v1/guard/check", entry)
    assert status == 200
    assert body["allowed"] is False
    assert body["rule"] == "duplicate_symbol_entry"
    assert "ETH/USD" in body["reason"]
    other = {**entry, "symbol": "SOL-USD"}
    status, body = await _post(server, "/v1/guard/check", other)
    assert (status, body["allowed"], body["rule"]) == (200, True, None)


@pytest.mark.asyncio
async def test_guard_check_names_the_bad_field(server: ApiServer) -> None:
    status, body = await _post(
        server,
        "/v1/guard/check",
        {"account_id": ALICE, "symbol": "ETH-USD", "side": "long", "size_usd": 10.0},
    )
    assert status == 422
    assert body["field"] == "side"
    status, body = await _post(
        server, "/v1/guard/check", {"account_id": ALICE, "symbol": "ETH-USD", "side": "buy"}
    )
    assert status == 422
    assert "size" in body["error"]
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/v1/guard/check", data=b"{nope") as r,
    ):
        assert r.status == 400


@pytest.mark.asyncio
async def test_reserve_then_confirm_or_release(server: ApiServer) -> None:
    entry = {"account_id": ALICE, "symbol": "SOL-USD", "side": "buy", "size_usd": 10.0}
    status, first = await _post(server, "/v1/guard/reserve", entry)
    assert (status, first["allowed"]) == (200, True)
    # The reservation holds the symbol: a second reserve is a duplicate entry.
    _, second = await _post(server, "/v1/guard/reserve", entry)
    assert second["rule"] == "duplicate_symbol_entry"
    status, released = await _post(
        server, "/v1/guard/release", {"reservation_id": first["reservation_id"]}
    )
    assert (status, released["status"]) == (200, "released")
    _, third = await _post(server, "/v1/guard/reserve", entry)
    assert third["allowed"] is True
    status, _ = await _post(
        server, "/v1/guard/confirm", {"reservation_id": third["reservation_id"], "order_id": "X-9"}
    )
    assert status == 200
    status, body = await _post(server, "/v1/guard/release", {"reservation_id": "nope"})
    assert status == 404
    assert body["reservation_id"] == "nope"
    _, decisions = await _get(server, f"/v1/accounts/{ALICE}/guard-decisions?blocked_only=true")
    assert [d["rule"] for d in decisions["decisions"]] == ["duplicate_symbol_entry"]


@pytest.mark.asyncio
async def test_metrics_are_prometheus_text_per_account(server: ApiServer) -> None:
    status, text = await _get(server, "/metrics")
    assert status == 200
    assert f'nija_broker_open_orders{{account="{ALICE}"}} 1.0' in text


@pytest.mark.asyncio
async def test_unknown_endpoint_is_json(server: ApiServer) -> None:
    status, body = await _get(server, "/v2/nothing")
    assert status == 404
    assert "no such endpoint" in body["error"]


def test_binding_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="token"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", TOKEN)
    check_binding("127.0.0.1", None)
    check_binding("::1", None)


@pytest.mark.asyncio
async def test_an_account_whose_equity_cannot_be_valued_shows_its_holdings_and_is_degraded() -> (
    None
):
    clock = FakeClock(T0)
    live = {
        ALICE: account_live(
            ALICE, balances={"JUNK": Balance(currency="JUNK", free=1_000.0, total=1_000.0)}
        )
    }
    live[ALICE].equity_usd = None
    live[ALICE].unvalued_holdings = ("JUNK",)
    live[ALICE].valuation_problem = (
        "equity cannot be established in USD: the account holds "
        "JUNK and no ticker of the exchange values it"
    )
    guard = make_guard(None, clock, live)
    ctx = ApiContext(
        books=guard.books, live=live, guard=guard, metrics=BrokerMetrics(), clock=clock
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        status, row = await _get(api, f"/v1/accounts/{ALICE}")
        assert status == 200
        assert (row["sync"], row["equity_usd"], row["unvalued_holdings"]) == (
            "degraded",
            None,
            ["JUNK"],
        )
        status, body = await _get(api, "/healthz")
        assert status == 200
        assert body["status"] == "degraded"
        account = body["accounts"][ALICE]
        assert account["state"] == "degraded"
        assert account["unvalued_holdings"] == ["JUNK"]
        assert "JUNK" in account["last_error"]
        status, metrics = await _get(api, "/metrics")
        assert status == 200
        assert "nija_broker_equity_usd{" not in metrics  # unknown is absent, not a zero


@pytest.mark.asyncio
async def test_token_is_required_when_set(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    live = {ALICE: account_live(ALICE)}
    guard = make_guard(None, clock, live)
    ctx = ApiContext(
        books=guard.books, live=live, guard=guard, metrics=BrokerMetrics(), clock=clock, token=TOKEN
    )
    assert TOKEN not in repr(ctx)
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        status, body = await _get(api, "/v1/accounts")
        assert status == 401
        assert TOKEN not in str(body)
        status, _ = await _get(api, "/v1/accounts", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200


@pytest.mark.asyncio
async def test_sync_client_checks_reserves_and_fails_closed_for_entries(server: ApiServer) -> None:
    client = GuardClient(server.url)
    answer = await asyncio.to_thread(client.check, ALICE, "ETH-USD", "buy", size_usd=10.0)
    assert (answer.allowed, answer.rule) == (False, "duplicate_symbol_entry")
    held = await asyncio.to_thread(client.reserve, ALICE, "ADA-USD", "buy", size_usd=10.0)
    assert held.allowed
    assert held.reservation_id
    await asyncio.to_thread(client.release, held.reservation_id)
    unknown = await asyncio.to_thread(client.check, "USER:nobody", "ETH-USD", "buy", size_usd=1.0)
    assert (unknown.allowed, unknown.rule, unknown.status) == (False, "guard_error", 404)
    strict = GuardClient(server.url, on_unreachable="raise")
    with pytest.raises(GuardUnavailable, match="404"):
        await asyncio.to_thread(strict.check, "USER:nobody", "ETH-USD", "buy", size_usd=1.0)

    dead = GuardClient("http://127.0.0.1:9", timeout_s=0.5)
    entry = await asyncio.to_thread(dead.check, ALICE, "ETH-USD", "buy", size_usd=10.0)
    assert (entry.allowed, entry.rule) == (False, "guard_unreachable")
    exit_ = await asyncio.to_thread(dead.check, ALICE, "ETH-USD", "sell", amount=0.01)
    assert exit_.allowed is True
    assert "t0ken" not in repr(GuardClient(server.url, token=TOKEN))
