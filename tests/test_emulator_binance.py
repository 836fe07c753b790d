"""Real ccxt.async_support.binance, through CcxtExchange, against the emulator on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from adapters.sim.faults import FaultKind
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import (
    AuthenticationFailed,
    InsufficientFunds,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    TransientError,
)
from nija_broker.core.models import Market, OrderRole, OrderStatus, OrderType, Side
from nija_broker.service.config import AccountConfig

from . import _emulator_support
from ._emulator_support import PROTECTIVE_SELLS, EmulatorRig, serving

pytestmark = pytest.mark.integration

BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
ETH = Market(
    symbol="ETH/USDT",
    base="ETH",
    quote="USDT",
    amount_step=0.0001,
    price_step=0.01,
    min_amount=0.0001,
    min_notional=5.0,
)
KEYS = {
    "USER:alice": ("alice-key-0001", "alice-secret-0001"),
    "USER:bob": ("bob-key-0002", "bob-secret-0002"),
}


Rig = EmulatorRig[EmulatorServer]
# The emulator tests' shared fixture, bound here by name so pytest finds it.
alice = _emulator_support.alice


def _binance(url: str, api_key: str, secret: str) -> ccxt.binance:
    return ccxt.binance(binance_ccxt_config(url, api_key, secret))


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    engine = SimEngine(seed=7, clock=SystemClock())
    engine.add_market(BTC, 50_000.0)
    engine.add_market(ETH, 3_000.0)
    engine.open_account("USER:alice", {"USDT": 10_000.0, "BTC": 0.5})
    engine.open_account("USER:bob", {"USDT": 100.0})
    async with serving(EmulatorServer, engine, KEYS, _binance) as rig:
        yield rig


def limit_buy(
    price: float, amount: float = 0.001, cid: str | None = None, symbol: str = "BTC/USDT"
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=amount,
        price=price,
        client_order_id=cid,
    )


# ---------------------------------------------------------------- protocol


@pytest.mark.asyncio
async def test_markets_carry_tick_lot_and_minimums_from_exchange_info(alice: CcxtExchange) -> None:
    markets = await alice.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert (btc.price_step, btc.amount_step, btc.min_amount, btc.min_notional) == (
        0.01,
        0.00001,
        0.00001,
        5.0,
    )


@pytest.mark.asyncio
async def test_open_orders_of_every_symbol_arrive_in_one_request(
    rig: Rig, alice: CcxtExchange
) -> None:
    await alice.create_order(limit_buy(40_000.0, cid="a1"))
    await alice.create_order(limit_buy(2_000.0, amount=0.01, cid="a2", symbol="ETH-USDT"))
    before = rig.server.requests["GET /api/v3/openOrders"]

    page = await alice.fetch_open_orders()

    assert page.calls == 1
    assert page.complete
    assert rig.server.requests["GET /api/v3/openOrders"] - before == 1
    assert {(o.symbol, o.client_order_id) for o in page.orders} == {
        ("BTC/USDT", "a1"),
        ("ETH/USDT", "a2"),
    }
    assert all(o.account_id == "USER:alice" and o.status is OrderStatus.OPEN for o in page.orders)


@pytest.mark.asyncio
async def test_limit_order_is_found_by_id_and_by_client_id(alice: CcxtExchange) -> None:
    placed = await alice.create_order(limit_buy(40_000.0, cid="entry-1"))

    by_id = await alice.fetch_order(placed.id, "BTC-USDT")
    by_client = await alice.fetch_order_by_client_id("entry-1", "BTC/USDT")

    assert placed.status is OrderStatus.OPEN
    assert placed.role is OrderRole.ENTRY
    assert by_id.id == by_client.id == placed.id
    assert by_client.client_order_id == "entry-1"
    assert (by_id.price, by_id.amount, by_id.type) == (40_000.0, 0.001, OrderType.LIMIT)


@pytest.mark.parametrize(
    ("order_type", "price", "stop", "role"),
    PROTECTIVE_SELLS,
)
@pytest.mark.asyncio
async def test_protective_sell_keeps_its_type_trigger_and_role(
    alice: CcxtExchange, order_type: OrderType, price: float | None, stop: float, role: OrderRole
) -> None:
    request = OrderRequest(
        symbol="BTC/USDT",
        side=Side.SELL,
        type=order_type,
        amount=0.01,
        price=price,
        stop_price=stop,
        client_order_id=f"p-{order_type}-{price}",
        role=role,
    )
    placed = await alice.create_order(request)

    fetched = await alice.fetch_order(placed.id, "BTC/USDT")
    listed = (await alice.fetch_open_orders()).orders

    for order in (placed, fetched):
        assert (order.type, order.stop_price, order.price) == (order_type, stop, price)
    assert fetched.role is role  # inferred from what Binance reports, not from our request
    assert [o.id for o in listed] == [placed.id]


@pytest.mark.asyncio
async def test_market_buy_fills_and_reports_fee_trades_and_balance(
    rig: Rig, alice: CcxtExchange
) -> None:
    order = await alice.create_order(
        OrderRequest(
            symbol="BTC/USDT",
            side=Side.BUY,
            type=OrderType.MARKET,
            amount=0.002,
            client_order_id="m-1",
        )
    )

    trades = await alice.fetch_my_trades("BTC/USDT", None)
    balance = await alice.fetch_balance()

    assert order.status is OrderStatus.FILLED
    assert order.filled == 0.002
    assert order.average == 50_000.0
    assert order.fee == pytest.approx(0.1)
    assert [(t.order_id, t.amount, t.price) for t in trades] == [(order.id, 0.002, 50_000.0)]
    assert trades[0].fee == pytest.approx(0.1)
    assert trades[0].trade_id is not None
    assert balance["BTC"].total == pytest.approx(0.502)
    assert balance["USDT"].free == pytest.approx(10_000.0 - 100.0 - 0.1)


@pytest.mark.asyncio
async def test_balance_shows_funds_held_by_open_orders_as_used(alice: CcxtExchange) -> None:
    await alice.create_order(limit_buy(40_000.0, amount=0.01, cid="hold"))

    usdt = (await alice.fetch_balance())["USDT"]

    assert usdt.used >= 400.0
    assert usdt.free + usdt.used == pytest.approx(usdt.total)


@pytest.mark.asyncio
async def test_cancelled_order_keeps_its_filled_amount_and_client_id(
    rig: Rig, alice: CcxtExchange
) -> None:
    placed = await alice.create_order(limit_buy(40_000.0, amount=0.01, cid="partial"))
    rig.engine.fill_partially("USER:alice", placed.id, 0.004)

    cancelled = await alice.cancel_order(placed.id, "BTC/USDT")

    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.filled == pytest.approx(0.004)
    assert cancelled.client_order_id == "partial"


@pytest.mark.asyncio
async def test_closed_orders_include_filled_and_cancelled(alice: CcxtExchange) -> None:
    resting = await alice.create_order(limit_buy(40_000.0, cid="c-1"))
    await alice.cancel_order(resting.id, "BTC/USDT")
    filled = await alice.create_order(
        OrderRequest(symbol="BTC/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.001)
    )
    await alice.create_order(limit_buy(41_000.0, cid="still-open"))

    closed = await alice.fetch_closed_orders("BTC/USDT", None)

    assert {(o.id, o.status) for o in closed} == {
        (resting.id, OrderStatus.CANCELLED),
        (filled.id, OrderStatus.FILLED),
    }


@pytest.mark.asyncio
async def test_tickers_come_for_the_symbols_asked(rig: Rig, alice: CcxtExchange) -> None:
    rig.engine.set_price("ETH/USDT", 3_100.0)

    tickers = await alice.fetch_tickers(["BTC-USDT", "ETH/USDT"])

    assert {s: t.last for s, t in tickers.items()} == {"BTC/USDT": 50_000.0, "ETH/USDT": 3_100.0}


@pytest.mark.asyncio
async def test_calls_are_counted_per_method_and_aclose_is_safe_twice(rig: Rig) -> None:
    ex = rig.exchange()
    await ex.fetch_balance()
    await ex.fetch_open_orders()
    await ex.fetch_open_orders()
    assert ex.calls == {"fetch_balance": 1, "fetch_open_orders": 2}
    await ex.aclose()
    await ex.aclose()


@pytest.mark.asyncio
async def test_account_built_from_config_points_at_the_emulator(rig: Rig) -> None:
    account = AccountConfig(
        id="USER:bob",
        exchange="binance",
        api_key_env="BOB_KEY",
        secret_env="BOB_SECRET",
        ccxt=binance_ccxt_config(rig.server.url),
    )
    environ = {"BOB_KEY": KEYS["USER:bob"][0], "BOB_SECRET": KEYS["USER:bob"][1]}
    ex = CcxtExchange.from_config(account, environ=environ, budget=RateBudget(1000.0))
    try:
        assert (await ex.fetch_balance())["USDT"].total == 100.0
    finally:
        await ex.aclose()


# ------------------------------------------------------------------ errors


@pytest.mark.asyncio
async def test_wrong_secret_fails_authentication_without_echoing_the_secret(rig: Rig) -> None:
    wrong = "wrong-secret-that-must-not-leak"
    ex = rig.exchange(secret=wrong)
    try:
        with pytest.raises(AuthenticationFailed) as caught:
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    text = f"{caught.value} {caught.value.__cause__!r}"
    assert "authentication failed" in str(caught.value)
    assert "-1022" in str(caught.value)
    assert wrong not in text
    assert KEYS["USER:alice"][0] not in text
    assert caught.value.account_id == "USER:alice"


@pytest.mark.asyncio
async def test_unknown_api_key_fails_authentication(rig: Rig) -> None:
    config = binance_ccxt_config(rig.server.url, "no-such-key", "whatever-secret")
    ex = CcxtExchange(ccxt.binance(config), account_id="USER:eve", budget=RateBudget(1000.0))
    try:
        with pytest.raises(AuthenticationFailed, match="-2015"):
            await ex.fetch_open_orders()
    finally:
        await ex.aclose()


@pytest.mark.asyncio
async def test_insufficient_balance_is_insufficient_funds(alice: CcxtExchange) -> None:
    with pytest.raises(InsufficientFunds, match=r"-2010|insufficient"):
        await alice.create_order(limit_buy(40_000.0, amount=1.0, cid="too-big"))


@pytest.mark.asyncio
async def test_filter_failure_is_invalid_order(alice: CcxtExchange) -> None:
    with pytest.raises(InvalidOrder) as caught:
        await alice.create_order(limit_buy(40_000.0, amount=0.0001, cid="tiny"))  # 4 USDT < 5
    assert not isinstance(caught.value, InsufficientFunds | OrderNotFound)


@pytest.mark.asyncio
async def test_unknown_order_is_order_not_found_on_fetch_and_on_cancel(
    rig: Rig, alice: CcxtExchange
) -> None:
    with pytest.raises(OrderNotFound, match="-2013"):
        await alice.fetch_order("424242", "BTC/USDT")
    with pytest.raises(OrderNotFound, match="-2011"):
        await alice.cancel_order("424242", "BTC/USDT")
    with pytest.raises(OrderNotFound):
        await alice.fetch_order_by_client_id("never-sent", "BTC/USDT")


@pytest.mark.asyncio
async def test_timestamp_outside_recv_window_says_to_fix_the_key_or_clock(rig: Rig) -> None:
    ex = rig.exchange()
    # ccxt stamps requests with its clock minus timeDifference: 2 minutes behind here.
    ex._ex.options["timeDifference"] = 120_000
    try:
        with pytest.raises(AuthenticationFailed, match="own API key") as caught:
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    assert "clock" in str(caught.value)
    assert "-1021" in str(caught.value)


@pytest.mark.asyncio
async def test_http_429_is_rate_limited(rig: Rig) -> None:
    rig.fault(FaultKind.RATE_LIMIT, methods={"fetch_balance"})
    ex = rig.exchange(max_attempts=2)
    try:
        with pytest.raises(RateLimited, match="gave up after 2"):
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    assert rig.server.requests["GET /api/v3/account"] == 2


@pytest.mark.asyncio
async def test_persistent_server_errors_end_in_a_transient_error_after_bounded_attempts(
    rig: Rig,
) -> None:
    rig.fault(FaultKind.SERVER_ERROR, methods={"fetch_open_orders"})
    ex = rig.exchange(max_attempts=4)
    try:
        with pytest.raises(TransientError, match="gave up after 4") as caught:
            await ex.fetch_open_orders()
    finally:
        await ex.aclose()
    assert not isinstance(caught.value, RateLimited)
    assert "503" in str(caught.value)
    assert rig.server.requests["GET /api/v3/openOrders"] == 4
    assert ex.calls["fetch_open_orders"] == 4


# ------------------------------------------------------------------ faults


@pytest.mark.asyncio
async def test_intermittent_faults_are_retried_until_reads_succeed(rig: Rig) -> None:
    rig.fault(
        FaultKind.RATE_LIMIT,
        FaultKind.SERVER_ERROR,
        FaultKind.LOST_RESPONSE,
        methods={"fetch_balance", "fetch_open_orders"},
        rate=0.4,
    )
    ex = rig.exchange(max_attempts=8)
    try:
        for _ in range(6):
            assert (await ex.fetch_balance())["USDT"].total == 10_000.0
            assert (await ex.fetch_open_orders()).orders == []
    finally:
        await ex.aclose()
    assert sum(rig.faults.injected.values()) > 0
    assert sum(ex.calls.values()) == 12 + sum(rig.faults.injected.values())


@pytest.mark.asyncio
async def test_request_held_past_the_call_deadline_is_a_transient_error(rig: Rig) -> None:
    # One deadline for the whole call: the held attempt uses it up, none follows.
    # (On virtual time, to the second: tests/test_mock_clock.py.)
    rig.fault(FaultKind.TIMEOUT, methods={"fetch_balance"}, timeout_s=0.6)
    ex = rig.exchange(call_timeout_s=0.2, max_attempts=2)
    try:
        with pytest.raises(TransientError, match=r"no answer within the call's deadline of 0\.2s"):
            await ex.fetch_balance()
    finally:
        await ex.aclose()
    assert rig.server.requests["GET /api/v3/account"] == 1


@pytest.mark.asyncio
async def test_create_whose_answer_is_lost_is_found_by_client_id_not_sent_twice(
    rig: Rig, alice: CcxtExchange
) -> None:
    rig.fault(FaultKind.LOST_RESPONSE, methods={"create_order"})

    order = await alice.create_order(limit_buy(40_000.0, cid="lost-1"))

    placed = rig.engine.all_orders("USER:alice")
    assert [o.client_order_id for o in placed] == ["lost-1"]
    assert order.id == placed[0].id
    assert order.status is OrderStatus.OPEN
    assert rig.server.requests["POST /api/v3/order"] == 1
    assert alice.calls["fetch_order_by_client_id"] == 1


@pytest.mark.asyncio
async def test_lost_create_of_a_not_yet_visible_order_is_never_duplicated(
    rig: Rig, alice: CcxtExchange
) -> None:
    # The order stays invisible to queries longer than the adapter keeps retrying.
    rig.fault(FaultKind.LOST_RESPONSE, methods={"create_order"}, hidden_after_create_s=30.0)

    with pytest.raises(TransientError, match="state is unknown"):
        await alice.create_order(limit_buy(40_000.0, cid="hidden-1"))

    assert [o.client_order_id for o in rig.engine.all_orders("USER:alice")] == ["hidden-1"]


@pytest.mark.asyncio
async def test_create_without_client_id_is_sent_once_even_on_a_transient_error(
    rig: Rig, alice: CcxtExchange
) -> None:
    rig.fault(FaultKind.LOST_RESPONSE, methods={"create_order"})

    with pytest.raises(TransientError):
        await alice.create_order(limit_buy(40_000.0, cid=None))

    assert rig.server.requests["POST /api/v3/order"] == 1
    assert len(rig.engine.all_orders("USER:alice")) == 1


@pytest.mark.asyncio
async def test_cancel_whose_answer_is_lost_returns_the_cancelled_order(
    rig: Rig, alice: CcxtExchange
) -> None:
    placed = await alice.create_order(limit_buy(40_000.0, cid="to-cancel"))
    rig.fault(FaultKind.LOST_RESPONSE, methods={"cancel_order"})

    cancelled = await alice.cancel_order(placed.id, "BTC/USDT")

    assert cancelled.id == placed.id
    assert cancelled.status is OrderStatus.CANCELLED
    assert rig.engine.get_order("USER:alice", placed.id).status is OrderStatus.CANCELLED
    assert alice.calls["cancel_order"] == 2
    assert alice.calls["fetch_order"] == 1


@pytest.mark.asyncio
async def test_truncated_open_orders_page_loses_orders_silently(
    rig: Rig, alice: CcxtExchange
) -> None:
    for i in range(4):
        await alice.create_order(limit_buy(40_000.0 + i, cid=f"t-{i}"))
    rig.fault(FaultKind.TRUNCATED_PAGE, methods={"fetch_open_orders"})

    page = await alice.fetch_open_orders()

    # Binance gives no sign of a cut list; only the reconciler's rule (absence is not
    # evidence) protects against it. This pins down what the adapter can and cannot see.
    assert len(page.orders) == 2
    assert page.complete


# ------------------------------------------------- exchanges with fewer features


class NeedsSymbolExchange(ccxt.binance):  # type: ignore[misc]
    """Binance's dialect, but behaving like exchanges that list open orders per symbol only
    and cannot look orders up by client id (ccxt raises ArgumentsRequired on those)."""

    async def fetch_open_orders(
        self, symbol: str | None = None, *args: object, **kwargs: object
    ) -> list[dict[str, object]]:
        if symbol is None:
            raise ccxt.ArgumentsRequired(f"{self.id} fetchOpenOrders() requires a symbol")
        return await super().fetch_open_orders(symbol, *args, **kwargs)  # type: ignore[no-any-return]


def needs_symbol(rig: Rig) -> CcxtExchange:
    api_key, secret = KEYS["USER:alice"]
    raw = NeedsSymbolExchange(binance_ccxt_config(rig.server.url, api_key, secret))
    raw.id = "needsymbol"
    return CcxtExchange(raw, account_id="USER:alice", clock=FakeClock(), budget=RateBudget(1000.0))


@pytest.mark.asyncio
async def test_exchange_that_needs_a_symbol_is_asked_once_per_symbol_given(rig: Rig) -> None:
    ex = needs_symbol(rig)
    try:
        await ex.create_order(limit_buy(40_000.0, cid="n-1"))
        await ex.create_order(limit_buy(2_000.0, amount=0.01, cid="n-2", symbol="ETH/USDT"))

        first = await ex.fetch_open_orders(["BTC-USDT", "ETH/USDT", "BTC/USDT"])
        second = await ex.fetch_open_orders(["ETH/USDT"])
        blind = await ex.fetch_open_orders()
    finally:
        await ex.aclose()
    assert not ex.capabilities.open_orders_without_symbol
    assert first.calls == 2  # BTC and ETH; the symbol-less try was refused by ccxt unsent
    assert {o.client_order_id for o in first.orders} == {"n-1", "n-2"}
    assert second.calls == 1
    assert [o.client_order_id for o in second.orders] == ["n-2"]
    assert blind.calls == 0
    assert not blind.complete


@pytest.mark.asyncio
async def test_client_id_lookup_without_native_support_searches_open_then_closed(rig: Rig) -> None:
    ex = needs_symbol(rig)
    try:
        resting = await ex.create_order(limit_buy(40_000.0, cid="scan-open"))
        filled = await ex.create_order(
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.BUY,
                type=OrderType.MARKET,
                amount=0.001,
                client_order_id="scan-closed",
            )
        )

        found_open = await ex.fetch_order_by_client_id("scan-open", "BTC/USDT")
        found_closed = await ex.fetch_order_by_client_id("scan-closed", "BTC/USDT")
        with pytest.raises(OrderNotFound, match="never-sent"):
            await ex.fetch_order_by_client_id("never-sent", "BTC/USDT")
    finally:
        await ex.aclose()
    assert not ex.capabilities.fetch_order_by_client_id
    assert (found_open.id, found_open.status) == (resting.id, OrderStatus.OPEN)
    assert (found_closed.id, found_closed.status) == (filled.id, OrderStatus.FILLED)
    assert ex.calls["fetch_order_by_client_id"] == 0


# ------------------------------------------------------------- rate budget


@pytest.mark.asyncio
async def test_accounts_on_one_exchange_share_one_budget_and_stay_inside_its_rate(rig: Rig) -> None:
    RateBudget.forget("binance")
    # The first budget registered for Binance is the one every account shares; in the
    # venue's units (request weight), faster than Binance's own so the test is quick.
    shared = RateBudget.for_exchange("binance", 2_000.0, capacity=400.0)
    try:
        exchanges = []
        for account_id in KEYS:
            api_key, secret = KEYS[account_id]
            raw = ccxt.binance(binance_ccxt_config(rig.server.url, api_key, secret))
            exchanges.append(CcxtExchange(raw, account_id=account_id))
        alice, bob = exchanges
        assert alice.budget is bob.budget is shared
        budget = alice.budget
        await alice.load_markets()
        await bob.load_markets()
        start_tokens = budget.available()

        started = time.monotonic()
        for _ in range(40):
            await alice.fetch_balance()
            await bob.fetch_balance()
        elapsed_s = time.monotonic() - started
    finally:
        for ex in exchanges:
            await ex.aclose()
        RateBudget.forget("binance")
    # 80 requests of weight 20: what the bucket held goes at once, the rest at its rate.
    assert elapsed_s >= (80 * 20 - start_tokens) / budget.rate_per_s * 0.95
    # Two exchangeInfo (20 each) and 80 accounts (20 each), from one bucket, in weight:
    # what the emulator, counting as Binance does, says they cost.
    assert budget.acquired == 2 * 20 + 80 * 20
    assert rig.server.weight_by_path["GET /api/v3/account"] == 80 * 20
    assert rig.server.weight_by_path["GET /api/v3/exchangeInfo"] == 2 * 20
    assert rig.server.requests["GET /api/v3/account"] == 80
