"""The HTTP API under bad input, over a real socket, in front of a reconciler on the sim.

Every refusal is a 4xx JSON answer naming the field, and nothing of a refused
request reaches the exchange, the guard's reservations or the store. Also:
reserving is idempotent by client order id, reservations are listed and can be
released, and a confirmed entry whose order the exchange does not know is
released after ``guard.not_found_grace_s``.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.base import Capabilities
from nija_broker.core.errors import ConfigError
from nija_broker.guard.guard import Guard, GuardSettings
from nija_broker.service.api import ApiContext, ApiServer, check_binding
from nija_broker.service.prom import BrokerMetrics
from nija_broker.sync.reconciler import ReconcilerSettings

from ._reconciler_rig import Rig, make_rig

ALICE = "USER:alice"
TOKEN = "t0ken-Secret-123"
ENTRY = {"account_id": ALICE, "symbol": "BTC-USD", "side": "buy", "size_usd": 50.0}
TRADES = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    order_trades=True,
)


@dataclass
class Stack:
    rig: Rig
    guard: Guard
    api: ApiServer

    def nothing_reached_the_exchange_or_the_books(self) -> None:
        assert self.rig.exchanges[ALICE].calls["create_order"] == 0
        assert self.guard.reservations(ALICE) == []
        assert self.rig.store.pending_intents(ALICE) == []


async def _stack(
    tmp_path: Path, *, token: str | None = None, settings: GuardSettings | None = None
) -> AsyncIterator[Stack]:
    rig = make_rig(
        tmp_path,
        capabilities=TRADES,
        settings=ReconcilerSettings(visibility_window_s=0.0, balance_interval_s=3_600.0),
    )
    assert rig.books is not None
    guard = Guard(rig.books, rig.live, store=rig.store, clock=rig.clock, settings=settings)
    await rig.rec.startup(ALICE)
    ctx = ApiContext(
        books=rig.books,
        live=rig.live,
        guard=guard,
        metrics=BrokerMetrics(),
        clock=rig.clock,
        token=token,
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        yield Stack(rig, guard, api)
    await rig.rec.aclose()
    rig.store.close()


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for built in _stack(tmp_path):
        yield built


async def _call(
    api: ApiServer,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body); fails the test if the answer is not JSON."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            api.url + path,
            data=io.BytesIO(data) if data is not None else None,
            headers={"Content-Type": "application/json", **(headers or {})},
        ) as r,
    ):
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()


async def _post(api: ApiServer, path: str, body: Any) -> tuple[int, Any]:
    return await _call(api, "POST", path, json.dumps(body).encode())


def _with(**changes: Any) -> bytes:
    return json.dumps({**ENTRY, **changes}).encode()


DEEP = b'{"account_id": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # within the size limit

BAD_INPUT = [
    # (case, path, raw body, status, field named)
    (
        "body over 1 MiB",
        "/v1/guard/reserve",
        b'{"account_id": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        413,
        "body",
    ),
    ("body just over the limit", "/v1/guard/check", b" " * (64 * 1024 + 1), 413, "body"),
    (
        "100,000 levels of nesting",
        "/v1/guard/reserve",
        b"[" * 100_000 + b"]" * 100_000,
        413,
        "body",
    ),
    ("30,000 levels of nesting", "/v1/guard/reserve", DEEP, 400, "body"),
    (
        "5,000-digit integer",
        "/v1/guard/reserve",
        b'{"account_id": "USER:alice", "symbol": "BTC-USD", "side": "buy", "size_usd": 1'
        + b"0" * 5_000
        + b"}",
        422,
        "size_usd",
    ),
    (
        "NaN for a number",
        "/v1/guard/reserve",
        b'{"account_id": "USER:alice", "symbol": "BTC-USD", "side": "buy", "size_usd": NaN}',
        422,
        "size_usd",
    ),
    ('"10" for a number', "/v1/guard/reserve", _with(size_usd="10"), 422, "size_usd"),
    ("true for a number", "/v1/guard/reserve", _with(size_usd=True), 422, "size_usd"),
    (
        '"yes" for a flag',
        "/v1/guard/reserve",
        _with(side="buy", reduce_only="yes"),
        422,
        "reduce_only",
    ),
    ("1 for a flag", "/v1/guard/check", _with(reduce_only=1), 422, "reduce_only"),
    ("a number for a string", "/v1/guard/reserve", _with(symbol=5), 422, "symbol"),
    ("an unknown field", "/v1/guard/reserve", _with(leverage=10), 422, "leverage"),
    ("not an object", "/v1/guard/reserve", b"[1, 2]", 400, "body"),
    ("not JSON", "/v1/guard/reserve", b"{nope", 400, "body"),
    ("not UTF-8", "/v1/guard/reserve", b'{"account_id": "\xff"}', 400, "body"),
    ("an unknown account", "/v1/guard/reserve", _with(account_id="USER:nobody"), 404, "account_id"),
    (
        "a number for an order id",
        "/v1/guard/confirm",
        b'{"reservation_id": "rsv-1", "order_id": 5}',
        422,
        "order_id",
    ),
    (
        "true for a reservation id",
        "/v1/guard/release",
        b'{"reservation_id": true}',
        422,
        "reservation_id",
    ),
    (
        "an unknown reservation",
        "/v1/guard/release",
        b'{"reservation_id": "rsv-nope"}',
        404,
        "reservation_id",
    ),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("case", "path", "raw", "status", "field"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
async def test_bad_input_is_a_json_4xx_naming_the_field_and_reaches_nothing(
    stack: Stack, case: str, path: str, raw: bytes, status: int, field: str
) -> None:
    got, body = await _call(stack.api, "POST", path, raw)
    assert (got, body["field"]) == (status, field), body
    assert body["error"]
    stack.nothing_reached_the_exchange_or_the_books()


@pytest.mark.asyncio
async def test_the_server_still_answers_after_the_bad_input(stack: Stack) -> None:
    for _, path, raw, _, _ in BAD_INPUT:
        await _call(stack.api, "POST", path, raw)
    status, body = await _post(stack.api, "/v1/guard/check", ENTRY)
    assert (status, body["allowed"]) == (200, True)
    stack.nothing_reached_the_exchange_or_the_books()


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", ["", " ", " \t\n", f" {TOKEN}", f"{TOKEN}\n"])
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_blank_or_padded_token_is_refused_at_start(host: str, token: str) -> None:
    with pytest.raises(ConfigError, match="token"):
        check_binding(host, token)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"BEARER {TOKEN}", 200),
        (f"Bearer  {TOKEN}", 200),
        ("Bearer wrong", 401),
        (f"Basic {TOKEN}", 401),
        (TOKEN, 401),
        ("Bearer", 401),
        ("", 401),
    ],
)
async def test_bearer_scheme_is_case_insensitive_and_the_token_exact(
    tmp_path: Path, header: str, status: int
) -> None:
    async for built in _stack(tmp_path, token=TOKEN):
        got, body = await _call(
            built.api,
            "POST",
            "/v1/guard/reserve",
            json.dumps(ENTRY).encode(),
            {"Authorization": header},
        )
        assert got == status, body
        if status == 401:
            assert body["field"] == "Authorization"
            assert TOKEN not in json.dumps(body)
            built.nothing_reached_the_exchange_or_the_books()


# --------------------------------------------------------------------------- idempotency


@pytest.mark.asyncio
async def test_the_same_reserve_with_the_same_client_order_id_returns_the_same_reservation(
    stack: Stack,
) -> None:
    entry = {**ENTRY, "client_order_id": "bot-1"}
    _, first = await _post(stack.api, "/v1/guard/reserve", entry)
    _, again = await _post(stack.api, "/v1/guard/reserve", entry)
    assert first["allowed"] is True
    assert again["reservation_id"] == first["reservation_id"]
    assert again["client_order_id"] == "bot-1"
    _, listed = await _call(stack.api, "GET", f"/v1/accounts/{ALICE}/reservations")
    assert [r["reservation_id"] for r in listed["reservations"]] == [first["reservation_id"]]
    assert [i.client_order_id for i in stack.rig.store.pending_intents(ALICE)] == ["bot-1"]
    assert len(stack.guard.decisions(ALICE)) == 1  # the repeat journaled nothing


@pytest.mark.asyncio
async def test_a_client_order_id_reused_for_another_request_is_a_409_naming_it(
    stack: Stack,
) -> None:
    _, first = await _post(stack.api, "/v1/guard/reserve", {**ENTRY, "client_order_id": "bot-2"})
    status, body = await _post(
        stack.api, "/v1/guard/reserve", {**ENTRY, "size_usd": 60.0, "client_order_id": "bot-2"}
    )
    assert status == 409
    assert (body["field"], body["client_order_id"]) == ("client_order_id", "bot-2")
    assert "'bot-2'" in body["error"]
    # Once released, the id stays used: the same request again is refused too.
    await _post(stack.api, "/v1/guard/release", {"reservation_id": first["reservation_id"]})
    status, body = await _post(
        stack.api, "/v1/guard/reserve", {**ENTRY, "client_order_id": "bot-2"}
    )
    assert status == 409
    assert "released" in body["error"]
    stack.nothing_reached_the_exchange_or_the_books()


# --------------------------------------------------------------------------- listing


@pytest.mark.asyncio
async def test_reservations_are_listed_with_why_they_count_then_released(stack: Stack) -> None:
    api, path = stack.api, f"/v1/accounts/{ALICE}/reservations"
    _, held = await _post(api, "/v1/guard/reserve", {**ENTRY, "client_order_id": "bot-3"})
    stack.rig.clock.advance(1)
    _, other = await _post(
        api,
        "/v1/guard/reserve",
        {
            "account_id": ALICE,
            "symbol": "ETH/USD",
            "side": "buy",
            "type": "limit",
            "amount": 2.0,
            "price": 9.0,
            "client_order_id": "bot-4",
        },
    )
    await _post(
        api, "/v1/guard/confirm", {"reservation_id": other["reservation_id"], "order_id": "X-1"}
    )
    stack.rig.clock.advance(5)
    status, listed = await _call(api, "GET", path)
    assert status == 200
    in_flight, settling = listed["reservations"]
    assert in_flight["reservation_id"] == held["reservation_id"]
    assert (
        in_flight["state"],
        in_flight["symbol"],
        in_flight["client_order_id"],
        in_flight["order_id"],
    ) == ("in_flight", "BTC/USD", "bot-3", None)
    assert in_flight["why"].startswith("in flight")
    assert in_flight["age_s"] == pytest.approx(6.0)
    assert in_flight["reserved_usd"] == pytest.approx(50.0 * 1.004)
    assert in_flight["expires_in_s"] == pytest.approx(24.0)
    assert (settling["state"], settling["symbol"], settling["order_id"]) == (
        "settling",
        "ETH/USD",
        "X-1",
    )
    assert settling["why"].startswith("confirmed, waiting for the order to show")
    for reservation in (held, other):
        status, body = await _post(
            api, "/v1/guard/release", {"reservation_id": reservation["reservation_id"]}
        )
        assert (status, body["status"]) == (200, "released")
    _, listed = await _call(api, "GET", path)
    assert listed["reservations"] == []
    status, body = await _post(api, "/v1/guard/release", {"reservation_id": "rsv-gone"})
    assert (status, body["field"], body["reservation_id"]) == (404, "reservation_id", "rsv-gone")
    status, body = await _call(api, "GET", "/v1/accounts/USER:nobody/reservations")
    assert (status, body["field"]) == (404, "account_id")


# --------------------------------------------------------------------------- phantom confirm


@pytest.mark.asyncio
@pytest.mark.parametrize("grace_s", [30.0, 60.0])
async def test_a_confirmed_order_the_exchange_never_heard_of_is_released_after_the_grace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, grace_s: float
) -> None:
    async for built in _stack(tmp_path, settings=GuardSettings(not_found_grace_s=grace_s)):
        api, rig, path = built.api, built.rig, f"/v1/accounts/{ALICE}/reservations"
        _, held = await _post(
            api,
            "/v1/guard/reserve",
            {
                "account_id": ALICE,
                "symbol": "ETH/USD",
                "side": "buy",
                "type": "limit",
                "amount": 2.0,
                "price": 9.0,
                "client_order_id": "bot-ghost",
            },
        )
        status, _ = await _post(
            api,
            "/v1/guard/confirm",
            {"reservation_id": held["reservation_id"], "order_id": "999999"},
        )
        assert status == 200
        await rig.sync(ALICE)  # the reconciler asks for 999999: the exchange does not know it
        _, listed = await _call(api, "GET", path)
        [ghost] = listed["reservations"]
        assert ghost["state"] == "settling"
        assert "does not know order 999999" in ghost["why"]
        assert ghost["unknown_to_exchange_s"] == pytest.approx(0.0)
        await rig.sync(ALICE, after_s=grace_s - 1)
        _, listed = await _call(api, "GET", path)
        assert [r["order_id"] for r in listed["reservations"]] == ["999999"]
        rig.clock.advance(1)
        with caplog.at_level(logging.WARNING, logger="nija_broker.guard"):
            _, listed = await _call(api, "GET", path)
        assert listed["reservations"] == []
        [warning] = [r for r in caplog.records if r.name == "nija_broker.guard"]
        assert warning.levelno == logging.WARNING
        for named in (ALICE, "bot-ghost", "999999"):
            assert named in warning.getMessage()
        assert rig.exchanges[ALICE].calls["create_order"] == 0
