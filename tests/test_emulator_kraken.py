"""Real ccxt.async_support.kraken, through CcxtExchange, against the Kraken emulator on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import KrakenEmulatorServer, kraken_ccxt_config
from adapters.profiles import KRAKEN
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultKind, FaultPlan
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import (
    AuthenticationFailed,
    EntryBlocked,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    TransientError,
)
from nija_broker.core.intent import new_client_order_id
from nija_broker.core.models import Balance, Market, OrderRole, OrderStatus, OrderType, Side
from nija_broker.service.config import AccountConfig
from nija_broker.state.store import Store

from . import _emulator_support
from ._emulator_support import PROTECTIVE_SELLS, EmulatorRig, serving
from ._guard_support import T0, account_live, make_guard

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
ETH = Market(
    symbol="ETH/USD",
    base="ETH",
    quote="USD",
    amount_step=1e-8,
    price_step=0.01,
    min_amount=0.002,
    min_notional=0.5,
)
SOL = Market(
    symbol="SOL/USD",
    base="SOL",
    quote="USD",
    amount_step=1e-8,
    price_step=0.01,
    min_amount=0.02,
    min_notional=0.5,
)


def _secret(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


KEYS = {
    "USER:alice": ("alice-kraken-key", _secret("alice-secret-bytes-0001")),
    "USER:bob": ("bob-kraken-key", _secret("bob-secret-bytes-0002")),
    "USER:micro": ("micro-kraken-key", _secret("micro-secret-bytes-0003")),
}


Rig = EmulatorRig[KrakenEmulatorServer]
# The emulator tests' shared fixture, bound here by name so pytest finds it.
alice = _emulator_support.alice


def _kraken(url: str, api_key: str, secret: str) -> ccxt.kraken:
    return ccxt.kraken(kraken_ccxt_config(url, api_key, secret))


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    engine = SimEngine(seed=7, clock=SystemClock(), maker_fee=0.0016, taker_fee=0.0026)
    engine.add_market(BTC, 50_000.0)
    engine.add_market(ETH, 3_000.0)
    engine.add_market(SOL, 150.0)
    engine.open_account("USER:alice", {"USD": 10_000.0, "BTC": 0.5})
    engine.open_account("USER:bob", {"USD": 100.0})
    engine.open_account("USER:micro", {"USD": 100.0})
    async with serving(KrakenEmulatorServer, engine, KEYS, _kraken) as rig:
        yield rig
        # Everything real ccxt asked for exists in the emulator.
        assert not rig.server.not_found, dict(rig.server.not_found)


def limit_buy(
    price: float,
    amount: float = 0.001,
    cid: str | None = None,
    symbol: str = "BTC/USD",
    post_only: bool = False,
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=amount,
        price=price,
        client_order_id=cid,
        post_only=post_only,
    )


def market(side: Side, amount: float, cid: str | None = None) -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USD", side=side, type=OrderType.MARKET, amount=amount, client_order_id=cid
    )


# ---------------------------------------------------------------- protocol


@pytest.mark.asyncio
async def test_markets_carry_lot_and_price_decimals_and_kraken_minimums(
    rig: Rig, alice: CcxtExchange
) -> None:
    markets = await alice.load_markets()

    assert set(markets) == {"BTC/USD", "ETH/USD", "SOL/USD"}  # ccxt says BTC, Kraken XBT
    btc, sol = markets["BTC/USD"], markets["SOL/USD"]
    assert (btc.amount_step, btc.price_step, btc.min_amount, btc.min_notional) == (
        1e-8,
        0.1,
        0.0001,
        0.5,
    )
    assert (sol.price_step, sol.min_amount) == (0.01, 0.02)
    assert rig.server.requests["GET /0/public/AssetPairs"] == 1


@pytest.mark.asyncio
async def test_open_orders_of_every_pair_arrive_in_one_request(
    rig: Rig, alice: CcxtExchange
) -> None:
    await alice.create_order(limit_buy(40_000.0, cid="k1"))
    await alice.create_order(limit_buy(120.0, amount=0.1, cid="k2", symbol="SOL-USD"))
    before = rig.server.requests["POST /0/private/OpenOrders"]

    page = await alice.fetch_open_orders()

    assert alice.capabilities.open_orders_without_symbol
    assert (page.calls, page.complete) == (1, True)
    assert rig.server.requests["POST /0/private/OpenOrders"] - before == 1
    assert {(o.symbol, o.client_order_id) for o in page.orders} == {
        ("BTC/USD", "k1"),
        ("SOL/USD", "k2"),
    }
    assert all(o.status is OrderStatus.OPEN for o in page.orders)


@pytest.mark.asyncio
async def test_limit_order_is_found_by_id_and_by_client_id_under_every_symbol_form(
    alice: CcxtExchange,
) -> None:
    placed = await alice.create_order(limit_buy(40_000.0, cid="entry-1"))

    by_id = await alice.fetch_order(placed.id, "BTC-USD")
    by_client = await alice.fetch_order_by_client_id("entry-1", "XBT-USD")

    assert placed.status is OrderStatus.OPEN  # fetched after Kraken's bare acknowledgement
    assert placed.id.startswith("O")
    assert len(placed.id) == 19
    assert by_id.id == by_client.id == placed.id
    assert (by_id.symbol, by_id.price, by_id.amount, by_id.type) == (
        "BTC/USD",
        40_000.0,
        0.001,
        OrderType.LIMIT,
    )
    assert by_client.client_order_id == "entry-1"
    assert alice.capabilities.fetch_order_by_client_id


@pytest.mark.asyncio
async def test_client_id_lookup_filters_on_kraken_instead_of_scanning(
    rig: Rig, alice: CcxtExchange
) -> None:
    filled = await alice.create_order(market(Side.BUY, 0.001, cid="mkt-1"))
    for i in range(3):
        await alice.create_order(limit_buy(40_000.0 + i, cid=f"noise-{i}"))

    found = await alice.fetch_order_by_client_id("mkt-1", "BTC/USD")

    assert (found.id, found.status) == (filled.id, OrderStatus.FILLED)
    assert alice.calls["fetch_order_by_client_id"] == 2  # OpenOrders, then ClosedOrders
    assert alice.calls["fetch_open_orders"] == alice.calls["fetch_closed_orders"] == 0


@pytest.mark.asyncio
async def test_guard_client_ids_travel_as_kraken_uuids_and_come_back_whole(
    rig: Rig, alice: CcxtExchange
) -> None:
    cid = new_client_order_id()  # nb- and 32 hex digits: too long for Kraken's free text

    placed = await alice.create_order(limit_buy(40_000.0, cid=cid))
    listed = (await alice.fetch_open_orders()).orders

    [engine_order] = rig.engine.open_orders("USER:alice")
    assert engine_order.client_order_id == cid.removeprefix("nb-")  # what Kraken holds
    assert placed.client_order_id == listed[0].client_order_id == cid
    assert (await alice.fetch_order_by_client_id(cid, "BTC/USD")).id == placed.id


@pytest.mark.asyncio
async def test_client_id_kraken_cannot_carry_is_refused_before_sending(
    rig: Rig, alice: CcxtExchange
) -> None:
    with pytest.raises(InvalidOrder, match="cl_ord_id"):
        await alice.create_order(limit_buy(40_000.0, cid="a-free-text-id-longer-than-18"))
    assert rig.server.requests["POST /0/private/AddOrder"] == 0


@pytest.mark.asyncio
async def test_orders_placed_by_others_keep_their_userref_and_no_id_means_none(
    rig: Rig, alice: CcxtExchange
) -> None:
    bot = rig.raw()
    bot.options["lastNonce"] = int(time.time() * 1000) + 5_000  # the bot's nonces run ahead
    try:
        await bot.create_order("BTC/USD", "limit", "buy", 0.001, 41_000.0, {"userref": 4242})
        await bot.create_order("BTC/USD", "limit", "buy", 0.001, 42_000.0)
    finally:
        await bot.close()
    alice._ex.options["lastNonce"] = bot.options["lastNonce"]  # one key: stay above the bot

    orders = sorted((await alice.fetch_open_orders()).orders, key=lambda o: o.price or 0)

    # ccxt reads userref as clientOrderId, and Kraken's userref 0 as "0": that is no id.
    assert [o.client_order_id for o in orders] == ["4242", None]


@pytest.mark.asyncio
async def test_post_only_entry_rests_and_one_that_would_cross_is_refused(
    rig: Rig, alice: CcxtExchange
) -> None:
    resting = await alice.create_order(limit_buy(49_000.0, cid="po-1", post_only=True))

    with pytest.raises(InvalidOrder, match="Post only"):
        await alice.create_order(limit_buy(51_000.0, cid="po-2", post_only=True))

    assert resting.status is OrderStatus.OPEN
    assert [o.client_order_id for o in rig.engine.all_orders("USER:alice")] == ["po-1"]


@pytest.mark.asyncio
async def test_market_buy_fills_and_reports_fee_trades_and_balance_in_unified_codes(
    rig: Rig, alice: CcxtExchange
) -> None:
    order = await alice.create_order(market(Side.BUY, 0.002, cid="m-1"))

    trades = await alice.fetch_my_trades("BTC/USD", None)
    balance = await alice.fetch_balance()

    assert (order.status, order.filled, order.average) == (OrderStatus.FILLED, 0.002, 50_000.0)
    assert order.fee == pytest.approx(0.26)
    assert [(t.order_id, t.amount, t.price) for t in trades] == [(order.id, 0.002, 50_000.0)]
    assert trades[0].fee == pytest.approx(0.26)
    assert trades[0].trade_id is not None
    assert trades[0].trade_id.startswith("T")
    assert set(balance) == {"BTC", "USD"}  # not XXBT / ZUSD
    assert balance["BTC"].total == pytest.approx(0.502)
    assert balance["USD"].free == pytest.approx(10_000.0 - 100.0 - 0.26)


@pytest.mark.asyncio
async def test_balance_shows_funds_held_by_open_orders_as_used(alice: CcxtExchange) -> None:
    await alice.create_order(limit_buy(40_000.0, amount=0.01, cid="hold"))

    usd = (await alice.fetch_balance())["USD"]

    assert usd.used >= 400.0
    assert usd.free + usd.used == pytest.approx(usd.total)


@pytest.mark.parametrize(
    ("order_type", "price", "stop", "role"),
    PROTECTIVE_SELLS,
)
@pytest.mark.asyncio
async def test_protective_sell_keeps_its_type_trigger_and_role(
    alice: CcxtExchange, order_type: OrderType, price: float | None, stop: float, role: OrderRole
) -> None:
    placed = await alice.create_order(
        OrderRequest(
            symbol="BTC/USD",
            side=Side.SELL,
            type=order_type,
            amount=0.01,
            price=price,
            stop_price=stop,
            client_order_id="protect",
            role=role,
        )
    )

    fetched = await alice.fetch_order(placed.id, "BTC/USD")

    for order in (placed, fetched):
        assert (order.type, order.stop_price, order.price) == (order_type, stop, price)
        assert order.status is OrderStatus.OPEN
    assert fetched.role is role  # inferred from what Kraken reports


@pytest.mark.asyncio
async def test_cancelled_order_keeps_its_filled_amount_and_client_id(
    rig: Rig, alice: CcxtExchange
) -> None:
    placed = await alice.create_order(limit_buy(40_000.0, amount=0.01, cid="partial"))
    rig.engine.fill_partially("USER:alice", rig.server.engine_order_id(placed.id), 0.004)

    cancelled = await alice.cancel_order(placed.id, "BTC/USD")

    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.filled == pytest.approx(0.004)
    assert cancelled.client_order_id == "partial"
    assert alice.calls["fetch_order"] >= 1  # Kraken answers a cancel with a count only


@pytest.mark.asyncio
async def test_closed_orders_include_filled_and_cancelled_of_every_pair(
    alice: CcxtExchange,
) -> None:
    resting = await alice.create_order(limit_buy(40_000.0, cid="c-1"))
    await alice.cancel_order(resting.id, "BTC/USD")
    filled = await alice.create_order(market(Side.BUY, 0.001))
    await alice.create_order(limit_buy(41_000.0, cid="still-open"))

    closed = await alice.fetch_closed_orders(None, None)

    assert {(o.id, o.status) for o in closed} == {
        (resting.id, OrderStatus.CANCELLED),
        (filled.id, OrderStatus.FILLED),
    }


@pytest.mark.asyncio
async def test_tickers_come_for_the_symbols_asked(rig: Rig, alice: CcxtExchange) -> None:
    rig.engine.set_price("SOL/USD", 155.5)

    tickers = await alice.fetch_tickers(["BTC-USD", "SOL/USD"])

    assert {s: t.last for s, t in tickers.items()} == {"BTC/USD": 50_000.0, "SOL/USD": 155.5}


@pytest.mark.asyncio
async def test_account_built_from_config_points_at_the_emulator(rig: Rig) -> None:
    account = AccountConfig(
        id="USER:bob",
        exchange="kraken",
        api_key_env="BOB_KEY",
        secret_env="BOB_SECRET",
        ccxt=kraken_ccxt_config(rig.server.url),
    )
    environ = {"BOB_KEY": KEYS["USER:bob"][0], "BOB_SECRET": KEYS["USER:bob"][1]}
    ex = CcxtExchange.from_config(account, environ=environ, budget=RateBudget(1000.0))
    try:
        assert (await ex.fetch_balance())["USD"].total == 100.0
        assert ex.profile.name == "kraken"
    finally:
        await ex.aclose()
        await ex.aclose()  # safe twice


# ------------------------------------------------------------------ errors


@pytest.mark.asyncio
async def test_wrong_secret_fails_authentication_without_echoing_the_secret(rig: Rig) -> None:
    wrong = _secret("wrong-secret-that-must-not-leak")
    ex = rig.exchange(secret=wrong)
    try:
        with pytest.raises(AuthenticationFailed, match="EAPI:Invalid signature") as caught:
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    text = f"{caught.value} {caught.value.__cause__!r}"
    assert wrong not in text
    assert KEYS["USER:alice"][0] not in text


@pytest.mark.asyncio
async def test_unknown_api_key_fails_authentication(rig: Rig) -> None:
    config = kraken_ccxt_config(rig.server.url, "no-such-key", _secret("whatever"))
    ex = CcxtExchange(ccxt.kraken(config), account_id="USER:eve", budget=RateBudget(1000.0))
    try:
        with pytest.raises(AuthenticationFailed, match="EAPI:Invalid key"):
            await ex.fetch_open_orders()
    finally:
        await ex.aclose()


@pytest.mark.asyncio
async def test_insufficient_balance_is_insufficient_funds(alice: CcxtExchange) -> None:
    with pytest.raises(InsufficientFunds, match="EOrder:Insufficient funds"):
        await alice.create_order(limit_buy(40_000.0, amount=1.0, cid="too-big"))


@pytest.mark.asyncio
async def test_order_below_kraken_ordermin_is_invalid_order(alice: CcxtExchange) -> None:
    with pytest.raises(InvalidOrder, match="Order minimum not met") as caught:
        await alice.create_order(limit_buy(40_000.0, amount=0.00005, cid="tiny"))
    assert not isinstance(caught.value, InsufficientFunds | OrderNotFound)


@pytest.mark.asyncio
async def test_unknown_order_is_order_not_found_on_fetch_cancel_and_client_id(
    rig: Rig, alice: CcxtExchange
) -> None:
    never = "OABCDE-FGHIJ-KLMNOP"
    with pytest.raises(OrderNotFound):
        await alice.fetch_order(never, "BTC/USD")
    with pytest.raises(OrderNotFound, match="EOrder:Unknown order"):
        await alice.cancel_order(never, "BTC/USD")
    with pytest.raises(OrderNotFound):
        await alice.fetch_order_by_client_id("never-sent", "BTC/USD")


@pytest.mark.asyncio
async def test_rate_limit_answer_is_rate_limited(rig: Rig) -> None:
    rig.fault(FaultKind.RATE_LIMIT, methods={"fetch_balance"})
    ex = rig.exchange(max_attempts=2)
    try:
        with pytest.raises(RateLimited, match="gave up after 2"):
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    assert rig.server.requests["POST /0/private/BalanceEx"] == 2


@pytest.mark.asyncio
async def test_service_unavailable_is_transient_and_retried_within_bounds(rig: Rig) -> None:
    rig.fault(FaultKind.SERVER_ERROR, methods={"fetch_open_orders"})
    ex = rig.exchange(max_attempts=3)
    try:
        with pytest.raises(TransientError, match="EService:Unavailable") as caught:
            await ex.fetch_open_orders()
    finally:
        await ex.aclose()
    assert not isinstance(caught.value, RateLimited)
    assert rig.server.requests["POST /0/private/OpenOrders"] == 3


# ------------------------------------------------------------------- nonces


@pytest.mark.asyncio
async def test_another_program_on_the_same_key_gives_the_own_key_advice(rig: Rig) -> None:
    # The live bot signs with a microsecond nonce, far above ccxt's milliseconds.
    bot = rig.raw()
    bot.nonce = lambda: int(time.time() * 1_000_000)
    ours = rig.exchange()
    try:
        await bot.fetch_balance()
        with pytest.raises(AuthenticationFailed) as caught:
            await ours.fetch_open_orders()
    finally:
        await bot.close()
        await ours.aclose()
    message = str(caught.value)
    assert "EAPI:Invalid nonce" in message
    assert "another program is using this API key" in message
    assert "separate API key for nija_broker" in message
    assert ours.calls["fetch_open_orders"] == 1  # account-fatal: not retried


@pytest.mark.asyncio
async def test_reused_nonce_gives_the_clear_error(rig: Rig) -> None:
    first, second = rig.exchange(), rig.exchange()
    fixed_ms = int(time.time() * 1000) + 60_000
    for ex in (first, second):
        ex._ex.nonce = lambda: fixed_ms
    try:
        await first.fetch_balance()
        with pytest.raises(AuthenticationFailed, match=r"separate API key for nija_broker"):
            await second.fetch_balance()  # the same nonce, sent again on the same key
    finally:
        await first.aclose()
        await second.aclose()


async def _signed_post(
    url: str, path: str, api_key: str, secret: str, nonce: int, sign_with: str | None = None
) -> list[str]:
    body = urlencode({"nonce": str(nonce)})
    digest = hashlib.sha256((str(nonce) + body).encode()).digest()
    mac = hmac.new(base64.b64decode(sign_with or secret), path.encode() + digest, hashlib.sha512)
    headers = {
        "API-Key": api_key,
        "API-Sign": base64.b64encode(mac.digest()).decode(),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=body, headers=headers) as response,
    ):
        assert response.status == 200  # Kraken reports errors in the body
        errors: list[str] = (await response.json())["error"]
        return errors


@pytest.mark.asyncio
async def test_emulator_wants_strictly_increasing_nonces_and_forgeries_burn_none(rig: Rig) -> None:
    api_key, secret = KEYS["USER:bob"]
    url, path = rig.server.url, "/0/private/Balance"

    assert await _signed_post(url, path, api_key, secret, 100) == []
    assert await _signed_post(url, path, api_key, secret, 100) == ["EAPI:Invalid nonce"]
    assert await _signed_post(url, path, api_key, secret, 99) == ["EAPI:Invalid nonce"]
    forged = await _signed_post(url, path, api_key, secret, 500, sign_with=_secret("x"))
    assert forged == ["EAPI:Invalid signature"]
    assert await _signed_post(url, path, api_key, secret, 101) == []


@pytest.mark.parametrize("one_at_a_time", [True, False])
@pytest.mark.asyncio
async def test_concurrent_calls_of_one_account_trip_the_nonce_check_only_unserialised(
    rig: Rig, one_at_a_time: bool
) -> None:
    # Half the requests are delayed on the way: later-signed ones overtake them.
    rig.faults.set_plan(
        FaultPlan(
            rate=0.5,
            kinds=frozenset({FaultKind.LATENCY}),
            latency_s=0.02,
            methods=frozenset({"fetch_balance"}),
        )
    )
    profile = dataclasses.replace(KRAKEN, serialize_requests=one_at_a_time)
    ex = rig.exchange(profile=profile, max_attempts=1)
    try:
        await ex.load_markets()
        results = await asyncio.gather(
            *(ex.fetch_balance() for _ in range(12)), return_exceptions=True
        )
    finally:
        await ex.aclose()
    refused = [r for r in results if isinstance(r, AuthenticationFailed)]
    assert len(refused) + sum(isinstance(r, dict) for r in results) == len(results)
    assert (refused == []) is one_at_a_time


# ------------------------------------------------------------------ faults


@pytest.mark.asyncio
async def test_create_whose_answer_is_lost_is_found_by_client_id_not_sent_twice(
    rig: Rig, alice: CcxtExchange
) -> None:
    rig.fault(FaultKind.LOST_RESPONSE, methods={"create_order"})

    order = await alice.create_order(limit_buy(40_000.0, cid="lost-1"))

    placed = rig.engine.all_orders("USER:alice")
    assert [o.client_order_id for o in placed] == ["lost-1"]
    assert order.id.startswith("O")
    assert order.status is OrderStatus.OPEN
    assert rig.server.requests["POST /0/private/AddOrder"] == 1
    assert rig.faults.calls["fetch_order_by_client_id"] == 1  # found in the open list


@pytest.mark.asyncio
async def test_truncated_open_orders_page_loses_orders_silently(
    rig: Rig, alice: CcxtExchange
) -> None:
    for i in range(4):
        await alice.create_order(limit_buy(40_000.0 + i, cid=f"t-{i}"))
    rig.fault(FaultKind.TRUNCATED_PAGE, methods={"fetch_open_orders"})

    page = await alice.fetch_open_orders()

    # Kraken gives no sign of a cut list either: absence is never evidence.
    assert len(page.orders) == 2


# ------------------------------------------------------------------- guard


@pytest.mark.asyncio
async def test_guard_blocks_a_second_post_only_entry_on_a_micro_cap_kraken_account(
    rig: Rig, tmp_path: Path
) -> None:
    from nija_broker.guard.guarded import GuardedExchange

    live = account_live(
        "USER:micro",
        equity=100.0,
        balances={"USD": Balance(currency="USD", free=100.0, total=100.0)},
    )
    live.markets = {"BTC/USD": BTC}
    with Store(tmp_path / "state.sqlite3") as store:
        guard = make_guard(store, FakeClock(T0), {"USER:micro": live})
        exchange = GuardedExchange(rig.exchange("USER:micro"), guard)
        try:
            first = await exchange.create_order(limit_buy(49_000.0, amount=0.0002, post_only=True))
            before = sum(rig.server.requests.values())
            with pytest.raises(EntryBlocked):
                await exchange.create_order(limit_buy(48_000.0, amount=0.0002, post_only=True))
            after = sum(rig.server.requests.values())
        finally:
            await exchange.aclose()
    assert live.tier.current is not None
    assert live.tier.current.name == "MICRO_CAP"
    assert first.status is OrderStatus.OPEN
    assert first.client_order_id is not None
    assert first.client_order_id.startswith("nb-")
    assert after == before  # blocked before any request left
    assert [o.client_order_id for o in rig.engine.all_orders("USER:micro")] == [
        first.client_order_id.removeprefix("nb-")
    ]
