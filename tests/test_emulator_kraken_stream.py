"""Real ccxt.pro.kraken against the Kraken emulator's private WebSocket v2, on loopback.

What a stream consumer relies on: the token comes from the signed, nonce-checked REST
call; orders, fills and balances arrive under the REST side's ids and numbers; a closed
connection fails the pending watch and the next watch subscribes again; and every
stream fault the emulator injects can be seen by the client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import ccxt.async_support
import ccxt.pro
import pytest
import pytest_asyncio

from adapters.emulator import KrakenEmulatorServer, kraken_ccxt_config
from adapters.sim.engine import SimEngine
from adapters.sim.faults import StreamFaultInjector, StreamFaultKind, StreamFaultPlan
from nija_broker.core.clock import Clock, FakeClock, SystemClock
from nija_broker.core.models import Market

pytestmark = pytest.mark.integration

BTC = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=1e-8,
    price_step=0.1,
    min_amount=0.0001,
    min_notional=0.5,
)


def _secret(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


ALICE, BOB = "USER:alice", "USER:bob"
KEYS = {
    ALICE: ("alice-kraken-key", _secret("alice-secret-bytes-0001")),
    BOB: ("bob-kraken-key", _secret("bob-secret-bytes-0002")),
}
WAIT_S = 10.0
"""How long a test waits for something that must happen (never a speed requirement)."""


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 - polling what ccxt's and the server's tasks do
            await asyncio.sleep(0.01)
    assert condition(), what


@dataclass
class Watch:
    """Everything one ``watch_*`` loop returned, in arrival order, errors included.

    Copies: ccxt updates the entries of its caches in place as later messages arrive.
    """

    items: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    async def run(self, watch: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                got = await watch()
            except ccxt.NetworkError as exc:
                self.errors.append(exc)
                await asyncio.sleep(0.05)
                continue
            self.items.extend(copy.deepcopy(got if isinstance(got, list) else [got]))

    def infos(self, key: str = "exec_type") -> list[Any]:
        return [item["info"].get(key) for item in self.items]


@dataclass
class Rig:
    engine: SimEngine
    server: KrakenEmulatorServer
    faults: StreamFaultInjector
    pro: Any
    tasks: list[asyncio.Task[None]]

    def watch(self, method: Callable[[], Awaitable[Any]]) -> Watch:
        watch = Watch()
        self.tasks.append(asyncio.create_task(watch.run(method), name="test-watch"))
        return watch

    async def subscribed(self, **channels: int) -> None:
        """Wait until the server accepted this many subscriptions per channel."""
        subs = self.server.stream.subscriptions
        await until(
            lambda: all(subs[c] >= n for c, n in channels.items()), f"subscribed {channels}"
        )

    def order_id(self, txid: str) -> str:
        return self.server.engine_order_id(txid)


def _engine(clock: Clock) -> SimEngine:
    engine = SimEngine(seed=11, clock=clock, maker_fee=0.0016, taker_fee=0.0026)
    engine.add_market(BTC, 50_000.0)
    engine.open_account(ALICE, {"USD": 10_000.0, "BTC": 0.5})
    engine.open_account(BOB, {"USD": 5_000.0})
    return engine


@contextlib.asynccontextmanager
async def rigged(server_clock: Clock | None = None) -> AsyncIterator[Rig]:
    engine = _engine(SystemClock())
    faults = StreamFaultInjector()
    async with KrakenEmulatorServer(
        engine, KEYS, clock=server_clock, stream_faults=faults, heartbeat_s=0.2
    ) as server:
        pro = ccxt.pro.kraken(kraken_ccxt_config(server.url, *KEYS[ALICE]))
        tasks: list[asyncio.Task[None]] = []
        try:
            await pro.load_markets()
            yield Rig(engine, server, faults, pro, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pro.close()


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    async with rigged() as rig:
        yield rig


# ------------------------------------------------------------ raw websocket


@dataclass
class RawSocket:
    """A bare websocket client, for what ccxt does not show (sequence numbers, errors)."""

    ws: aiohttp.ClientWebSocketResponse

    async def send(self, **message: Any) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, skip: tuple[str, ...] = ("heartbeat", "status")) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                message = await self.ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    return {"closed": message.type.name, "code": self.ws.close_code}
                data: dict[str, Any] = json.loads(message.data)
                if data.get("channel") not in skip:
                    return data

    async def subscribe(self, channel: str, token: str, req_id: int = 1, **extra: Any) -> Any:
        await self.send(
            method="subscribe", req_id=req_id, params={"channel": channel, "token": token, **extra}
        )
        return await self.next()


@contextlib.asynccontextmanager
async def raw_socket(server: KrakenEmulatorServer) -> AsyncIterator[RawSocket]:
    url = kraken_ccxt_config(server.url)["urls"]["api"]["ws"]["privateV2"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        yield RawSocket(ws)


async def token_of(server: KrakenEmulatorServer, account_id: str = ALICE) -> str:
    rest = ccxt.async_support.kraken(kraken_ccxt_config(server.url, *KEYS[account_id]))
    try:
        answer = await rest.privatePostGetWebSocketsToken()
    finally:
        await rest.close()
    token: str = answer["result"]["token"]
    return token


# ------------------------------------------------------------------ settings


def test_one_config_points_ccxt_rest_and_every_ccxt_pro_websocket_at_the_emulator() -> None:
    config = kraken_ccxt_config("http://127.0.0.1:45678")
    api = config["urls"]["api"]
    ws = api["ws"]
    assert set(ws) >= {"private", "privateV2", "public", "publicV2"}
    assert all(url.startswith("ws://127.0.0.1:45678") for url in ws.values())
    assert ws["privateV2"] == "ws://127.0.0.1:45678/v2"
    rest = {k: v for k, v in api.items() if k != "ws"}
    assert rest
    assert all(url.startswith("http://127.0.0.1:45678") for url in rest.values())
    # ccxt.pro takes the dict as it is: the URL its private watches use is the emulator's.
    pro = ccxt.pro.kraken(config)
    assert pro.urls["api"]["ws"]["privateV2"] == "ws://127.0.0.1:45678/v2"
    assert pro.urls["api"]["public"] == "http://127.0.0.1:45678"


# --------------------------------------------------------------------- token


@pytest.mark.asyncio
async def test_token_request_is_signed_nonce_checked_and_answers_900_s(rig: Rig) -> None:
    answer = await rig.pro.privatePostGetWebSocketsToken()
    assert answer["error"] == []
    assert answer["result"]["expires"] == 900
    assert answer["result"]["token"]
    # A nonce at or below the key's last one is refused, as for every other private call:
    # what a second program on the same key meets when its clock is behind.
    behind = ccxt.async_support.kraken(kraken_ccxt_config(rig.server.url, *KEYS[ALICE]))
    behind.nonce = lambda: 1
    try:
        with pytest.raises(ccxt.InvalidNonce):
            await behind.privatePostGetWebSocketsToken()
    finally:
        await behind.close()


@pytest.mark.asyncio
async def test_watch_with_an_unknown_key_is_refused_at_the_token_request(rig: Rig) -> None:
    stranger = ccxt.pro.kraken(kraken_ccxt_config(rig.server.url, "no-such-key", _secret("x")))
    try:
        with pytest.raises(ccxt.AuthenticationError):
            await stranger.watch_orders()
    finally:
        await stranger.close()
    assert rig.server.stream.subscriptions["executions"] == 0


@pytest.mark.asyncio
async def test_a_token_serves_its_own_account_only(rig: Rig) -> None:
    alice_token, bob_token = await token_of(rig.server, ALICE), await token_of(rig.server, BOB)
    async with raw_socket(rig.server) as sock:
        forged = await sock.subscribe("executions", "not-a-token")
        assert forged["success"] is False
        assert forged["error"] == "ESession:Invalid session"
        assert (await sock.subscribe("executions", alice_token, req_id=2))["success"] is True
        snapshot = await sock.next()
        assert snapshot["type"] == "snapshot"
        # One connection, one account: Bob's token does not join Alice's connection.
        joined = await sock.subscribe("balances", bob_token, req_id=3)
        assert joined["success"] is False
        # Bob's order is not on Alice's connection; her own is, and comes first.
        await _limit_buy(rig, BOB, 40_000.0)
        alice_order = await _limit_buy(rig, ALICE, 41_000.0)
        first = await sock.next()
        assert first["data"][0]["order_id"] == alice_order


@pytest.mark.asyncio
async def test_an_unused_token_expires_after_15_minutes_but_a_subscribed_one_keeps_serving() -> (
    None
):
    clock = FakeClock()
    async with rigged(server_clock=clock) as rig:
        token = await token_of(rig.server)
        async with raw_socket(rig.server) as early:
            assert (await early.subscribe("executions", token))["success"] is True
            await early.next()  # the snapshot
            clock.advance(timedelta(minutes=15, seconds=1).total_seconds())
            async with raw_socket(rig.server) as late:
                refused = await late.subscribe("executions", token)
                assert refused["success"] is False
                assert refused["error"] == "ESession:Invalid session"
            txid = await _limit_buy(rig, ALICE, 40_000.0)
            assert (await early.next())["data"][0]["order_id"] == txid


# ---------------------------------------------------------------- the feeds


async def _limit_buy(rig: Rig, account_id: str, price: float, amount: float = 0.01) -> str:
    rest = ccxt.async_support.kraken(kraken_ccxt_config(rig.server.url, *KEYS[account_id]))
    try:
        order = await rest.create_order("BTC/USD", "limit", "buy", amount, price)
    finally:
        await rest.close()
    txid: str = order["id"]
    return txid


@pytest.mark.asyncio
async def test_watch_orders_sees_placement_fills_and_cancel_under_the_rest_ids(rig: Rig) -> None:
    orders = rig.watch(rig.pro.watch_orders)
    await rig.subscribed(executions=1)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: orders.infos() == ["pending_new", "new"], "placement streamed")
    first = orders.items[0]
    assert (first["id"], first["status"], first["symbol"]) == (placed["id"], "open", "BTC/USD")
    assert (first["amount"], first["price"], first["side"]) == (0.01, 49_000.0, "buy")

    # Kraken v2 reports a fill as an exec_type "trade" (watch_my_trades' share of the
    # channel); the order's own next report is its end, carrying what filled.
    rig.engine.fill_partially(ALICE, rig.order_id(placed["id"]), 0.004)
    await rig.pro.cancel_order(placed["id"])
    await until(lambda: len(orders.items) == 3, "cancel streamed")
    cancelled = orders.items[2]
    assert (cancelled["id"], cancelled["status"]) == (placed["id"], "canceled")
    assert cancelled["info"]["cum_qty"] == 0.004
    assert cancelled["info"]["reason"] == "User requested"
    rest = await rig.pro.fetch_order(placed["id"])
    assert (rest["status"], rest["filled"]) == ("canceled", 0.004)

    # A fill that completes the order: its trade, then a separate "filled" report.
    second = await rig.pro.create_order("BTC/USD", "limit", "sell", 0.02, 51_000.0)
    rig.engine.set_price("BTC/USD", 51_500.0)
    await until(lambda: "filled" in orders.infos(), "completion streamed")
    done = orders.items[-1]
    assert (done["id"], done["status"], done["filled"]) == (second["id"], "closed", 0.02)
    assert done["average"] == 51_000.0
    rest = await rig.pro.fetch_order(second["id"])
    assert (rest["status"], rest["filled"], rest["average"]) == ("closed", 0.02, 51_000.0)


@pytest.mark.asyncio
async def test_updates_come_in_the_order_the_engine_made_them(rig: Rig) -> None:
    token = await token_of(rig.server)
    async with raw_socket(rig.server) as sock:
        await sock.subscribe("executions", token)
        assert (await sock.next())["type"] == "snapshot"
        await sock.subscribe("balances", token, req_id=2)
        assert (await sock.next())["type"] == "snapshot"
        bought = await rig.pro.create_order("BTC/USD", "market", "buy", 0.01)
        seen = [await sock.next() for _ in range(5)]
    flow = [(m["channel"], m["data"][0].get("exec_type", m["data"][0].get("type"))) for m in seen]
    assert flow == [
        ("executions", "pending_new"),
        ("executions", "new"),
        ("executions", "trade"),
        ("executions", "filled"),
        ("balances", "trade"),
    ]
    assert [m["sequence"] for m in seen if m["channel"] == "executions"] == [2, 3, 4, 5]
    assert {d["order_id"] for m in seen if m["channel"] == "executions" for d in m["data"]} == {
        bought["id"]
    }


@pytest.mark.asyncio
async def test_watch_my_trades_sees_each_fill_once_with_fee_and_the_rest_trade_id(
    rig: Rig,
) -> None:
    trades = rig.watch(rig.pro.watch_my_trades)
    await rig.subscribed(executions=1)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    rig.engine.fill_partially(ALICE, rig.order_id(placed["id"]), 0.004)
    rig.engine.set_price("BTC/USD", 48_900.0)  # the rest fills, as maker, at 49,000
    await rig.pro.create_order("BTC/USD", "market", "sell", 0.005)  # taker
    await until(lambda: len(trades.items) == 3, "three fills streamed")

    polled = {t["id"]: t for t in await rig.pro.fetch_my_trades("BTC/USD")}
    assert len(polled) == 3
    assert {t["id"] for t in trades.items} == set(polled)  # each fill once, same ids
    for streamed in trades.items:
        rest = polled[streamed["id"]]
        assert streamed["order"] == rest["order"]
        assert (streamed["amount"], streamed["price"]) == (rest["amount"], rest["price"])
        assert streamed["fee"] == {"cost": rest["fee"]["cost"], "currency": "USD"}
        assert streamed["takerOrMaker"] == rest["takerOrMaker"]
    # Kraken's order_status on each fill: the partial one leaves its order open.
    statuses = {t["amount"]: t["info"]["order_status"] for t in trades.items}
    assert statuses == {0.004: "partially_filled", 0.006: "filled", 0.005: "filled"}


@pytest.mark.asyncio
async def test_watch_balance_starts_from_the_totals_and_follows_each_fill(rig: Rig) -> None:
    balances = rig.watch(rig.pro.watch_balance)
    await until(lambda: len(balances.items) == 1, "balance snapshot")
    assert balances.items[0]["USD"]["total"] == 10_000.0
    assert balances.items[0]["BTC"]["total"] == 0.5

    await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 40_000.0)  # holds funds only
    await rig.pro.create_order("BTC/USD", "market", "buy", 0.01)
    await until(lambda: len(balances.items) == 2, "the fill moved the totals")
    after = balances.items[1]
    assert after["info"]["sequence"] == 2  # the hold moved no total: nothing was sent
    truth = rig.engine.balances(ALICE)
    assert after["USD"]["total"] == pytest.approx(truth["USD"].total, abs=1e-9)
    assert after["BTC"]["total"] == pytest.approx(truth["BTC"].total, abs=1e-9)
    # The fill's ledger entries name the trade as the REST side does, with its fee.
    (trade,) = await rig.pro.fetch_my_trades("BTC/USD")
    entries = after["info"]["data"]
    assert {e["ref_id"] for e in entries} == {trade["id"]}
    usd = next(e for e in entries if e["asset"] == "USD")
    assert usd["fee"] == trade["fee"]["cost"]
    assert usd["amount"] == pytest.approx(-trade["cost"], abs=1e-5)


@pytest.mark.asyncio
async def test_a_subscription_starts_with_open_orders_and_recent_trades(rig: Rig) -> None:
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    rig.engine.fill_partially(ALICE, rig.order_id(placed["id"]), 0.004)
    token = await token_of(rig.server)
    async with raw_socket(rig.server) as sock:
        ack = await sock.subscribe("executions", token, snap_trades=True)
        assert ack["success"] is True
        orders, trades = await sock.next(), await sock.next()
    assert (orders["type"], orders["sequence"]) == ("snapshot", 1)
    (order,) = orders["data"]
    assert (order["order_id"], order["order_status"]) == (placed["id"], "partially_filled")
    assert (order["order_qty"], order["cum_qty"]) == (0.01, 0.004)
    assert (trades["type"], trades["sequence"]) == ("snapshot", 2)
    (trade,) = trades["data"]
    (polled,) = await rig.pro.fetch_my_trades("BTC/USD")
    assert (trade["exec_id"], trade["order_id"]) == (polled["id"], placed["id"])


@pytest.mark.asyncio
async def test_post_only_order_kraken_takes_and_cancels_is_streamed_cancelled(rig: Rig) -> None:
    orders = rig.watch(rig.pro.watch_orders)
    await rig.subscribed(executions=1)
    crossing = await rig.pro.create_order(
        "BTC/USD", "limit", "buy", 0.01, 51_000.0, {"postOnly": True}
    )
    await until(lambda: len(orders.items) == 2, "refusal streamed")
    assert orders.infos() == ["pending_new", "canceled"]
    assert orders.items[1]["id"] == crossing["id"]
    assert orders.items[1]["info"]["reason"] == "Post only order"


@pytest.mark.asyncio
async def test_an_order_held_pending_is_reported_new_when_it_enters_the_book(rig: Rig) -> None:
    orders = rig.watch(rig.pro.watch_orders)
    await rig.subscribed(executions=1)
    rig.server.hold_pending = True
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: len(orders.items) == 1, "pending_new streamed")
    rig.server.release_pending()
    await until(lambda: len(orders.items) == 2, "new streamed")
    assert orders.infos() == ["pending_new", "new"]
    assert orders.items[1]["id"] == placed["id"]


@pytest.mark.asyncio
async def test_ping_gets_pong_and_an_idle_subscription_gets_heartbeats(rig: Rig) -> None:
    token = await token_of(rig.server)
    async with raw_socket(rig.server) as sock:
        status = await sock.next(skip=())
        assert status["channel"] == "status"
        assert status["data"][0]["api_version"] == "v2"
        await sock.send(method="ping", req_id=7)
        assert (await sock.next()) | {"time_in": "", "time_out": ""} == {
            "method": "pong",
            "req_id": 7,
            "time_in": "",
            "time_out": "",
        }
        await sock.subscribe("balances", token)
        assert (await sock.next())["type"] == "snapshot"
        assert await sock.next(skip=()) == {"channel": "heartbeat"}
        # Kraken's public channels share ccxt's ".../v2" URL here; they are not served.
        refused = await sock.subscribe("ticker", token, req_id=9, symbol=["BTC/USD"])
        assert (refused["success"], refused["req_id"]) == (False, 9)


# ------------------------------------------------------------- reconnects


@pytest.mark.asyncio
async def test_server_close_fails_the_pending_watch_and_the_next_watch_subscribes_again(
    rig: Rig,
) -> None:
    pending = asyncio.create_task(rig.pro.watch_orders())
    await rig.subscribed(executions=1)
    assert await rig.server.stream.close_connections() == 1
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, WAIT_S)
    again = asyncio.create_task(rig.pro.watch_orders())
    await rig.subscribed(executions=2)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    got = await asyncio.wait_for(again, WAIT_S)
    assert got[0]["id"] == placed["id"]
    assert rig.server.stream.connections == 1


# ---------------------------------------------------------------- faults


@pytest.mark.asyncio
async def test_stream_faults_are_off_by_default(rig: Rig) -> None:
    orders = rig.watch(rig.pro.watch_orders)
    await rig.subscribed(executions=1)
    await rig.pro.create_order("BTC/USD", "market", "buy", 0.01)
    await until(lambda: "filled" in orders.infos(), "the market order streamed")
    assert rig.faults.messages[ALICE] > 0
    assert not rig.faults.injected


@pytest.mark.asyncio
async def test_dropped_update_leaves_a_sequence_gap_and_never_arrives(rig: Rig) -> None:
    token = await token_of(rig.server)
    async with raw_socket(rig.server) as sock:
        await sock.subscribe("executions", token)
        await sock.next()  # snapshot, sequence 1
        rig.faults.force(StreamFaultKind.DROP)
        txid = await _limit_buy(rig, ALICE, 49_000.0)
        update = await sock.next()
    assert update["sequence"] == 3  # 2, the pending_new, was dropped
    assert (update["data"][0]["exec_type"], update["data"][0]["order_id"]) == ("new", txid)
    assert rig.faults.injected[StreamFaultKind.DROP] == 1


@pytest.mark.asyncio
async def test_duplicated_fill_reaches_watch_my_trades_twice_under_one_id(rig: Rig) -> None:
    trades = rig.watch(rig.pro.watch_my_trades)
    await rig.subscribed(executions=1)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: rig.faults.messages[ALICE] >= 2, "placement pushed")
    rig.faults.force(StreamFaultKind.DUPLICATE)
    rig.engine.fill_partially(ALICE, rig.order_id(placed["id"]), 0.004)
    await until(lambda: len(trades.items) == 2, "the fill and its copy")
    assert trades.items[0]["id"] == trades.items[1]["id"]
    assert len(await rig.pro.fetch_my_trades("BTC/USD")) == 1


@pytest.mark.asyncio
async def test_reordered_update_arrives_after_the_next_one(rig: Rig) -> None:
    token = await token_of(rig.server)
    async with raw_socket(rig.server) as sock:
        await sock.subscribe("executions", token)
        await sock.next()
        rig.faults.force(StreamFaultKind.REORDER)
        await _limit_buy(rig, ALICE, 49_000.0)
        later, earlier = await sock.next(), await sock.next()
    assert (later["sequence"], later["data"][0]["exec_type"]) == (3, "new")
    assert (earlier["sequence"], earlier["data"][0]["exec_type"]) == (2, "pending_new")


@pytest.mark.asyncio
async def test_stalled_connection_holds_everything_then_sends_it_in_order(rig: Rig) -> None:
    rig.faults.set_plan(StreamFaultPlan(hold_s=3600.0))  # until released by hand
    orders = rig.watch(rig.pro.watch_orders)
    await rig.subscribed(executions=1)
    rig.faults.force(StreamFaultKind.STALL)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: rig.faults.messages[ALICE] >= 2, "both updates pushed")
    for _ in range(20):
        await asyncio.sleep(0)
    assert orders.items == []  # held at the server, not written
    rig.server.stream.release_stalls()
    await until(lambda: len(orders.items) == 2, "released")
    assert orders.infos() == ["pending_new", "new"]
    assert {o["id"] for o in orders.items} == {placed["id"]}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", [StreamFaultKind.CLOSE, StreamFaultKind.DISCONNECT])
async def test_a_closing_fault_loses_the_update_and_fails_the_pending_watch(
    rig: Rig, kind: StreamFaultKind
) -> None:
    pending = asyncio.create_task(rig.pro.watch_orders())
    await rig.subscribed(executions=1)
    rig.faults.force(kind)
    placed = await rig.pro.create_order("BTC/USD", "limit", "buy", 0.01, 49_000.0)
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, WAIT_S)
    # Reconnected, the snapshot is how the client learns of the order it missed.
    got = await asyncio.wait_for(rig.pro.watch_orders(), WAIT_S)
    assert [(o["id"], o["info"]["exec_type"]) for o in got] == [(placed["id"], "new")]
