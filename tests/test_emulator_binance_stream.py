"""Real ccxt.pro.binance against the emulator's WebSocket API: spot user data over loopback.

ccxt.pro subscribes with ``userDataStream.subscribe.signature`` on
``urls['api']['ws']['ws-api']['spot']`` and reads ``executionReport``,
``outboundAccountPosition``, ``balanceUpdate`` and ``eventStreamTerminated``; the same
config dict that points ccxt's REST at the emulator points its streams there too.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt
import ccxt.pro
import pytest
import pytest_asyncio

from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine, StreamFaultInjector, StreamFaultKind, StreamFaultPlan
from nija_broker.core.clock import FakeClock
from nija_broker.core.models import Market

pytestmark = pytest.mark.integration

BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.0001,
    price_step=0.01,
    min_amount=0.0001,
    min_notional=5.0,
)
KEYS = {"USER:alice": ("alice-key", "alice-secret"), "USER:bob": ("bob-key", "bob-secret")}
WAIT_S = 20.0
"""How long a test waits for something the stream owes it: generous, never a threshold."""


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Client:
    """One ccxt.pro.binance, with every user data event it received recorded as it came."""

    ex: Any
    wire: list[dict[str, Any]] = field(default_factory=list)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.wire if e.get("e") == kind]


@dataclass
class Rig:
    engine: SimEngine
    server: EmulatorServer
    faults: StreamFaultInjector
    clients: list[Client] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def client(self, account_id: str = "USER:alice", secret: str | None = None) -> Client:
        api_key, real_secret = KEYS[account_id]
        ex = ccxt.pro.binance(binance_ccxt_config(self.server.url, api_key, secret or real_secret))
        client = Client(ex)
        handle = ex.handle_message

        def recording(ws_client: Any, message: Any) -> Any:
            if isinstance(message, dict) and isinstance(message.get("event"), dict):
                client.wire.append(message["event"])
            return handle(ws_client, message)

        ex.handle_message = recording
        await ex.load_markets()
        self.clients.append(client)
        return client

    def spawn(self, awaitable: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(awaitable)
        self.tasks.append(task)
        return task

    async def subscribed(self, client: Client, account_id: str = "USER:alice") -> asyncio.Task[Any]:
        """A pending ``watch_orders`` of ``client``, once its subscription is live."""
        before = self.server.ws_api.subscribed[account_id]
        watch = self.spawn(client.ex.watch_orders())
        await until(
            lambda: (
                self.server.ws_api.subscribed[account_id] > before
                and self.server.ws_api.subscriptions(account_id) > 0
            ),
            "the subscription",
        )
        return watch


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    engine = SimEngine(seed=3, clock=FakeClock(datetime(2026, 3, 1, tzinfo=UTC)))
    engine.add_market(BTC, 50_000.0)
    engine.open_account("USER:alice", {"USDT": 10_000.0, "BTC": 0.5})
    engine.open_account("USER:bob", {"USDT": 1_000.0})
    faults = StreamFaultInjector(StreamFaultPlan(hold_s=math.inf))
    async with EmulatorServer(engine, KEYS, stream_faults=faults) as server:
        rig = Rig(engine, server, faults)
        try:
            yield rig
        finally:
            for task in rig.tasks:
                task.cancel()
            await asyncio.gather(*rig.tasks, return_exceptions=True)
            for client in rig.clients:
                await client.ex.close()


class Collector:
    """Calls ``watch`` over and over, keeping every update it hands back."""

    def __init__(self, rig: Rig, watch: Callable[[], Awaitable[list[dict[str, Any]]]]) -> None:
        self.seen: list[dict[str, Any]] = []
        rig.spawn(self._run(watch))

    async def _run(self, watch: Callable[[], Awaitable[list[dict[str, Any]]]]) -> None:
        while True:
            self.seen.extend(dict(item) for item in await watch())

    def of(self, order_id: str) -> list[dict[str, Any]]:
        return [o for o in self.seen if o["id"] == order_id]


# ------------------------------------------------------------------- config


def test_one_config_points_rest_and_every_websocket_url_at_the_emulator() -> None:
    config = binance_ccxt_config("http://127.0.0.1:4321", "k", "s")
    ex = ccxt.pro.binance(config)

    def urls(table: Any) -> list[str]:
        if isinstance(table, dict):
            return [u for value in table.values() for u in urls(value)]
        return [table] if isinstance(table, str) else []

    every = urls(ex.urls["api"])
    assert every
    assert {urlsplit(u).netloc for u in every} == {"127.0.0.1:4321"}
    assert ex.urls["api"]["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:4321/ws-api/v3"


# ------------------------------------------------------------- order updates


@pytest.mark.asyncio
async def test_watch_orders_sees_a_placed_order_its_partial_and_full_fill_and_a_cancel(
    rig: Rig,
) -> None:
    client = await rig.client()
    orders = Collector(rig, client.ex.watch_orders)
    await until(lambda: rig.server.ws_api.subscriptions("USER:alice") == 1, "the subscription")

    placed = await client.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: bool(orders.of(placed["id"])), "the new order")
    assert (orders.of(placed["id"])[-1]["status"], orders.of(placed["id"])[-1]["filled"]) == (
        "open",
        0.0,
    )

    rig.engine.fill_partially("USER:alice", placed["id"], 0.004)
    await until(lambda: orders.of(placed["id"])[-1]["filled"] == 0.004, "the partial fill")
    assert orders.of(placed["id"])[-1]["status"] == "open"

    rig.engine.set_price("BTC/USDT", 48_999.0)
    await until(lambda: orders.of(placed["id"])[-1]["status"] == "closed", "the full fill")
    assert orders.of(placed["id"])[-1]["filled"] == 0.01

    resting = await client.ex.create_order(
        "BTC/USDT", "limit", "buy", 0.01, 40_000.0, {"newClientOrderId": "mine-1"}
    )
    await until(lambda: bool(orders.of(resting["id"])), "the second order")
    await client.ex.cancel_order(resting["id"], "BTC/USDT")
    await until(lambda: orders.of(resting["id"])[-1]["status"] == "canceled", "the cancel")
    # The report names the cancel's own id in "c", the order's in "C": ccxt reads "C".
    assert orders.of(resting["id"])[-1]["clientOrderId"] == "mine-1"
    (cancel,) = [e for e in client.events("executionReport") if e["x"] == "CANCELED"]
    assert (cancel["C"], cancel["X"]) == ("mine-1", "CANCELED")
    assert cancel["c"] != "mine-1"
    # All ccxt.pro sent on the connection: one signed subscription, no session.logon.
    assert rig.server.ws_api.methods == {"userDataStream.subscribe.signature": 1}


@pytest.mark.asyncio
async def test_watch_my_trades_sees_each_fill_once_with_the_fee_the_engine_charged(
    rig: Rig,
) -> None:
    client = await rig.client()
    trades = Collector(rig, client.ex.watch_my_trades)
    await until(lambda: rig.server.ws_api.subscriptions("USER:alice") == 1, "the subscription")

    resting = await client.ex.create_order("BTC/USDT", "limit", "sell", 0.02, 51_000.0)
    rig.engine.fill_partially("USER:alice", resting["id"], 0.005)
    rig.engine.set_price("BTC/USDT", 51_000.0)
    await client.ex.create_order("BTC/USDT", "market", "buy", 0.001)

    truth = rig.engine.trades("USER:alice")
    assert len(truth) == 3
    await until(lambda: len(trades.seen) >= len(truth), "every fill")
    await asyncio.sleep(0)
    assert [t["id"] for t in trades.seen] == [f.trade_id for f in truth]
    for seen, fill in zip(trades.seen, truth, strict=True):
        assert (seen["order"], seen["amount"], seen["price"]) == (
            fill.order_id,
            pytest.approx(fill.amount),
            pytest.approx(fill.price),
        )
        assert seen["fee"]["currency"] == fill.fee_currency
        assert seen["fee"]["cost"] == pytest.approx(fill.fee_cost)
        assert seen["takerOrMaker"] == (
            "maker" if rig.engine.is_maker(fill.trade_id or "") else "taker"
        )


@pytest.mark.asyncio
async def test_watch_balance_follows_holds_fills_and_deposits_to_the_engines_balances(
    rig: Rig,
) -> None:
    client = await rig.client()
    balances: list[dict[str, Any]] = []

    async def watch() -> None:
        while True:
            balances.append(dict(await client.ex.watch_balance()))

    rig.spawn(watch())
    await until(lambda: rig.server.ws_api.subscriptions("USER:alice") == 1, "the subscription")

    def agrees(currency: str) -> bool:
        if not balances or currency not in balances[-1]:
            return False
        truth = rig.engine.balances("USER:alice")[currency]
        seen = balances[-1][currency]
        return (seen["free"], seen["used"]) == (
            pytest.approx(truth.free),
            pytest.approx(truth.used),
        )

    order = await client.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 49_000.0)
    await until(lambda: agrees("USDT") and balances[-1]["USDT"]["used"] > 0, "the hold")
    rig.engine.set_price("BTC/USDT", 48_000.0)
    await until(lambda: agrees("BTC") and balances[-1]["USDT"]["used"] == 0, "the fill")
    assert rig.engine.get_order("USER:alice", order["id"]).status.value == "filled"
    rig.engine.deposit("USER:alice", "ETH", 1.5)
    await until(lambda: agrees("ETH"), "the deposit")
    (deposit,) = client.events("balanceUpdate")
    assert (deposit["a"], deposit["d"]) == ("ETH", "1.50000000")


@pytest.mark.asyncio
async def test_accounts_hear_only_their_own_orders(rig: Rig) -> None:
    alice, bob = await rig.client("USER:alice"), await rig.client("USER:bob")
    await rig.subscribed(alice, "USER:alice")
    bobs = await rig.subscribed(bob, "USER:bob")
    await alice.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 49_000.0)
    theirs = await bob.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 48_000.0)
    assert [o["id"] for o in await bobs] == [theirs["id"]]
    await until(lambda: len(alice.events("executionReport")) == 1, "alice's report")
    assert {e["i"] for e in bob.events("executionReport")} == {int(theirs["id"])}


# ------------------------------------------------------------ authentication


def refused_as_authentication(exc: BaseException) -> bool:
    """ccxt 4.5.90 refuses with AuthenticationError, then (its error handler has already
    removed the subscription it deletes again) raises KeyError out of that: either way
    the watch fails, with the refusal as the cause."""
    return isinstance(exc, ccxt.AuthenticationError) or isinstance(
        exc.__context__, ccxt.AuthenticationError
    )


@pytest.mark.asyncio
async def test_subscription_with_a_wrong_signature_is_refused(rig: Rig) -> None:
    client = await rig.client("USER:alice", secret="not-alice-secret")
    with pytest.raises(Exception) as failed:  # noqa: PT011 - the class is ccxt's accident
        await asyncio.wait_for(client.ex.watch_orders(), WAIT_S)
    assert refused_as_authentication(failed.value)
    assert rig.server.ws_api.refused[-1022] == 1
    assert rig.server.ws_api.subscriptions() == 0


@pytest.mark.asyncio
async def test_subscription_with_an_unknown_key_is_refused(rig: Rig) -> None:
    ex = ccxt.pro.binance(binance_ccxt_config(rig.server.url, "nobody-key", "whatever"))
    rig.clients.append(Client(ex))
    await ex.load_markets()
    with pytest.raises(Exception) as failed:  # noqa: PT011 - the class is ccxt's accident
        await asyncio.wait_for(ex.watch_orders(), WAIT_S)
    assert refused_as_authentication(failed.value)
    assert rig.server.ws_api.refused[-2015] == 1


# ------------------------------------------------------ the stream closing


@pytest.mark.asyncio
@pytest.mark.parametrize("terminated", [True, False], ids=["eventStreamTerminated", "silent"])
async def test_when_the_server_closes_the_stream_the_watch_raises_and_the_next_call_subscribes(
    rig: Rig, terminated: bool
) -> None:
    client = await rig.client()
    pending = await rig.subscribed(client)
    assert await rig.server.ws_api.close_streams("USER:alice", terminated=terminated) == 1
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, WAIT_S)
    assert bool(client.events("eventStreamTerminated")) is terminated

    again = await rig.subscribed(client)
    assert rig.server.ws_api.subscribed["USER:alice"] == 2
    placed = await client.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 49_000.0)
    assert [o["id"] for o in await asyncio.wait_for(again, WAIT_S)] == [placed["id"]]


# ------------------------------------------------------------------ faults


async def place_and_hear(rig: Rig, client: Client) -> dict[str, Any]:
    """Place a resting buy: its NEW report and the hold's account position are owed."""
    return dict(await client.ex.create_order("BTC/USDT", "limit", "buy", 0.01, 49_000.0))


@pytest.mark.asyncio
async def test_a_dropped_message_never_arrives_and_the_next_one_does(rig: Rig) -> None:
    client = await rig.client()
    await rig.subscribed(client)
    rig.faults.force(StreamFaultKind.DROP)
    await place_and_hear(rig, client)
    await until(lambda: bool(client.events("outboundAccountPosition")), "the position")
    # One connection delivers in order: the report before the position would be here.
    assert client.events("executionReport") == []
    assert rig.faults.injected[StreamFaultKind.DROP] == 1


@pytest.mark.asyncio
async def test_a_duplicated_message_arrives_twice(rig: Rig) -> None:
    client = await rig.client()
    await rig.subscribed(client)
    rig.faults.force(StreamFaultKind.DUPLICATE)
    await place_and_hear(rig, client)
    await until(lambda: bool(client.events("outboundAccountPosition")), "the position")
    first, second = client.events("executionReport")
    assert first == second
    assert [e["e"] for e in client.wire] == [
        "executionReport",
        "executionReport",
        "outboundAccountPosition",
    ]


@pytest.mark.asyncio
async def test_a_reordered_message_arrives_after_the_next_one(rig: Rig) -> None:
    client = await rig.client()
    await rig.subscribed(client)
    rig.faults.force(StreamFaultKind.REORDER)
    await place_and_hear(rig, client)
    await until(lambda: len(client.wire) == 2, "both messages")
    assert [e["e"] for e in client.wire] == ["outboundAccountPosition", "executionReport"]


@pytest.mark.asyncio
async def test_a_stalled_stream_holds_every_message_then_releases_them_in_order(rig: Rig) -> None:
    client = await rig.client()
    await rig.subscribed(client)
    rig.faults.force(StreamFaultKind.STALL)
    placed = await place_and_hear(rig, client)
    rig.engine.fill_partially("USER:alice", placed["id"], 0.004)
    await until(lambda: rig.server.ws_api.holding == 1, "the stall")
    assert client.wire == []
    rig.server.ws_api.release()
    await until(lambda: len(client.wire) == 4, "the released messages")
    assert [(e["e"], e.get("x")) for e in client.wire] == [
        ("executionReport", "NEW"),
        ("outboundAccountPosition", None),
        ("executionReport", "TRADE"),
        ("outboundAccountPosition", None),
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "terminated"),
    [(StreamFaultKind.CLOSE, True), (StreamFaultKind.DISCONNECT, False)],
)
async def test_a_closing_fault_fails_the_pending_watch_and_loses_the_message(
    rig: Rig, kind: StreamFaultKind, terminated: bool
) -> None:
    client = await rig.client()
    pending = await rig.subscribed(client)
    rig.faults.force(kind)
    await place_and_hear(rig, client)
    with pytest.raises(ccxt.NetworkError):
        await asyncio.wait_for(pending, WAIT_S)
    assert [e["e"] for e in client.wire] == (["eventStreamTerminated"] if terminated else [])
    await rig.subscribed(client)
    assert rig.server.ws_api.subscribed["USER:alice"] == 2


def test_stream_faults_are_seeded_per_account_and_off_by_default() -> None:
    assert [StreamFaultInjector().next("A") for _ in range(50)] == [None] * 50

    def run(seed: int, account: str) -> list[StreamFaultKind | None]:
        injector = StreamFaultInjector(StreamFaultPlan(rate=0.3, seed=seed))
        return [injector.next(account) for _ in range(60)]

    assert run(1, "A") == run(1, "A")
    assert run(1, "A") != run(2, "A")
    assert any(run(1, "A"))
    assert None in run(1, "A")
    # What another account suffers does not move this account's faults.
    mixed = StreamFaultInjector(StreamFaultPlan(rate=0.3, seed=1))
    interleaved = [(mixed.next("B"), mixed.next("A"))[1] for _ in range(60)]
    assert interleaved == run(1, "A")


# ------------------------------------------------------- the raw WebSocket API


@pytest.mark.asyncio
async def test_ping_requests_and_ping_frames_are_answered_and_a_silent_client_is_dropped(
    rig: Rig,
) -> None:
    url = rig.server.url.replace("http://", "ws://") + "/ws-api/v3"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, autoping=False) as ws:
            await ws.send_str(json.dumps({"id": "p1", "method": "ping"}))
            answer = json.loads((await ws.receive(WAIT_S)).data)
            assert (answer["id"], answer["status"], answer["result"]) == ("p1", 200, {})
            await ws.send_str(json.dumps({"id": 7, "method": "no.such.method"}))
            refused = json.loads((await ws.receive(WAIT_S)).data)
            assert (refused["id"], refused["status"], refused["error"]["code"]) == (7, 400, -1020)
            await ws.ping(b"hello")
            pong = await ws.receive(WAIT_S)
            assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"hello")

        rig.server.ws_api.ping_interval_s = 0.05
        rig.server.ws_api.pong_timeout_s = 0.2
        async with session.ws_connect(url, autoping=False) as ws:
            kinds = []
            while True:
                message = await ws.receive(WAIT_S)
                kinds.append(message.type)
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    break
            assert aiohttp.WSMsgType.PING in kinds
    assert rig.server.ws_api.closed["no_pong"] == 1
