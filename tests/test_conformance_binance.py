"""Binance spot: recorded venue bodies through real ccxt and the adapter, then the emulator.

Each fixture under ``tests/fixtures/venues/binance/`` holds a body the live venue answered
(ccxt's static-test captures) or, where none was recorded, the shape Binance documents.

1. **Recorded**: the whole ccxt method runs offline (request building and parsing): the
   instance's ``fetch`` answers the fixture's body for the fixture's endpoint, and
   :class:`~adapters.ccxt_adapter.CcxtExchange` on top gives the figures the fixture expects.
2. **Emulated**: the same situation driven on the SimEngine behind the Binance emulator;
   real ccxt and the adapter must give the same figures (ids and times aside), and the
   emulator's body the same keys and value types as the recorded one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.models import Market, Order, OrderType, Side

from ._conformance import fill_figures, fixture, fixtures, order_figures, subset
from ._emulator_support import EmulatorRig, serving

pytestmark = pytest.mark.asyncio

VENUE = "binance"
FIXTURES = dict(fixtures(VENUE))
MARKETS_BODY = fixture(VENUE, "load_markets_exchange_info.json")["body"]
# What describes a situation; ids, client ids and times differ between venue and emulator.
SITUATION_ORDER = (
    "status",
    "filled",
    "remaining",
    "amount",
    "price",
    "average",
    "fee",
    "stop_price",
    "reduce_only",
    "type",
    "side",
    "symbol",
)
SITUATION_FILL = ("symbol", "side", "amount", "price", "fee", "fee_currency", "fee_cost")
# Fields Binance adds only when the order has them ("Conditional fields in Order Responses").
CONDITIONAL = frozenset({"icebergQty", "stopPrice", "uid"})


# ------------------------------------------------------------------ recorded bodies


class Recorded:
    """A ccxt Binance instance whose HTTP answers are the fixture's body."""

    def __init__(self, endpoint: str, body: Any) -> None:
        self.endpoint = endpoint
        self.body = body
        self.sent: list[tuple[str, str, dict[str, list[str]]]] = []
        self.raw = ccxt.binance(
            {
                "apiKey": "recorded-key",
                "secret": "recorded-secret",
                **{k: v for k, v in binance_ccxt_config("http://x").items() if k != "urls"},
            }
        )
        self.raw.fetch = self._fetch

    async def _fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        parts = urlsplit(url)
        query = parse_qs(parts.query or (body or ""))
        self.sent.append((method, parts.path, query))
        if parts.path.endswith("/exchangeInfo"):
            return json.loads(json.dumps(MARKETS_BODY))
        if f"{method} {parts.path}" != self.endpoint:
            raise AssertionError(
                f"ccxt asked {method} {parts.path}, the fixture answers {self.endpoint}"
            )
        return json.loads(json.dumps(self.body))

    def exchange(self) -> CcxtExchange:
        return CcxtExchange(
            self.raw,
            account_id="USER:recorded",
            clock=FakeClock(),
            budget=RateBudget(1000.0),
            call_timeout_s=5.0,
        )


def _order_request(
    symbol: str,
    side: str,
    amount: float,
    price: float | None,
    post_only: bool = False,
    cid: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=Side(side),
        type=OrderType.LIMIT if price is not None else OrderType.MARKET,
        amount=amount,
        price=price,
        post_only=post_only,
        client_order_id=cid,
    )


def _order_for(order_id: str, symbol: str) -> Order:
    return Order(
        id=order_id,
        account_id="USER:recorded",
        symbol=symbol,
        side=Side.SELL,
        type=OrderType.MARKET,
        amount=1.0,
        filled=1.0,
        created_at=datetime(2023, 1, 1, tzinfo=UTC),
    )


async def _through_adapter(ex: CcxtExchange, fx: dict[str, Any]) -> Any:
    """The adapter's call for the fixture's ccxt method, its unified figures out."""
    method, args = fx["ccxt_method"], fx["input"]
    if method == "load_markets":
        markets = await ex.load_markets()
        return {
            s: {
                "price_step": m.price_step,
                "amount_step": m.amount_step,
                "min_amount": m.min_amount,
                "min_notional": m.min_notional,
            }
            for s, m in markets.items()
        }
    if method == "fetch_balance":
        balances = await ex.fetch_balance()
        return {c: {"free": b.free, "used": b.used, "total": b.total} for c, b in balances.items()}
    if method == "fetch_my_trades":
        (fill,) = await ex.fetch_my_trades(args[0], None)
        return fill_figures(fill)
    if method == "fetch_order_trades":
        (fill,) = await ex.fetch_order_trades(_order_for(args[0], args[1]))
        return fill_figures(fill)
    order: Order
    if method == "create_order":
        symbol, _kind, side, amount, price = args[:5]
        order = await ex.create_order(_order_request(symbol, side, amount, price))
    elif method == "fetch_order":
        order = await ex.fetch_order(str(args[0]), args[1])
    elif method == "cancel_order":
        order = await ex.cancel_order(str(args[0]), args[1])
    elif method == "fetch_open_orders":
        (order,) = (await ex.fetch_open_orders()).orders
    elif method == "fetch_orders":
        (order,) = await ex.fetch_closed_orders(args[0], datetime(2023, 1, 1, tzinfo=UTC))
    else:
        raise AssertionError(f"no adapter call for {method}")
    return order_figures(order)


@pytest.mark.parametrize("name", sorted(FIXTURES))
async def test_recorded_body_gives_the_expected_unified_figures(name: str) -> None:
    fx = FIXTURES[name]
    assert fx["source"]
    assert fx["situation"]
    assert fx["endpoint"]
    recorded = Recorded(fx["endpoint"], fx["body"])
    ex = recorded.exchange()
    try:
        figures = await _through_adapter(ex, fx)
    finally:
        await ex.aclose()
    # Figures compare to the float (remaining is amount - filled in binary floats).
    assert subset(figures, fx["expected"]) == _approx(fx["expected"])
    # The adapter's own call path reached the fixture's endpoint.
    method, path = fx["endpoint"].split(" ", 1)
    assert (method, path) in {(m, p) for m, p, _ in recorded.sent}


async def test_order_trades_are_asked_by_order_id() -> None:
    fx = FIXTURES["fetch_order_trades_sell_taker.json"]
    recorded = Recorded(fx["endpoint"], fx["body"])
    ex = recorded.exchange()
    try:
        await _through_adapter(ex, fx)
    finally:
        await ex.aclose()
    (query,) = [q for m, p, q in recorded.sent if p.endswith("/myTrades")]
    assert query["orderId"] == ["3784695242"]


async def test_cancel_answer_client_id_is_not_taken_for_the_orders() -> None:
    """Binance's cancel answer: clientOrderId is the cancel's own id; ccxt reads it as the
    order's, the adapter takes origClientOrderId (the order's) instead."""
    fx = FIXTURES["cancel_order_cancelled.json"]
    recorded = Recorded(fx["endpoint"], fx["body"])
    raw = await recorded.raw.cancel_order("4", "LTC/USDT")
    assert raw["clientOrderId"] == "cancelMyOrder1"  # ccxt's reading
    ex = recorded.exchange()
    try:
        order = await ex.cancel_order("4", "LTC/USDT")
    finally:
        await ex.aclose()
    assert order.client_order_id == "myOrder1"


# ------------------------------------------------------------------ the emulator

LTC = Market(
    symbol="LTC/USDT",
    base="LTC",
    quote="USDT",
    amount_step=0.001,
    price_step=0.01,
    min_amount=0.001,
    min_notional=5.0,
)
SOL = Market(
    symbol="SOL/USDT",
    base="SOL",
    quote="USDT",
    amount_step=0.001,
    price_step=0.01,
    min_amount=0.001,
    min_notional=5.0,
)
KEYS = {
    "USER:alice": ("alice-key-0001", "alice-secret-0001"),
    "USER:bal": ("bal-key-0002", "bal-secret-0002"),
}
Rig = EmulatorRig[EmulatorServer]


def _binance(url: str, api_key: str, secret: str) -> ccxt.binance:
    return ccxt.binance(binance_ccxt_config(url, api_key, secret))


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    engine = SimEngine(seed=3, clock=SystemClock())
    engine.add_market(LTC, 70.0)
    engine.add_market(SOL, 250.0)
    engine.open_account("USER:alice", {"USDT": 10_000.0, "LTC": 5.0})
    engine.open_account("USER:bal", {"BTC": 0.0, "LTC": 0.919741, "ETH": 0.02229833})
    async with serving(EmulatorServer, engine, KEYS, _binance) as rig:
        yield rig
        assert not rig.server.not_found, dict(rig.server.not_found)


Drive = Callable[[Rig, CcxtExchange], Awaitable[Any]]


def _answers_kept(ex: CcxtExchange) -> CcxtExchange:
    """ccxt keeps the last JSON body it parsed (``last_json_response``)."""
    ex._ex.enableLastJsonResponse = True
    return ex


async def _create_new(rig: Rig, ex: CcxtExchange) -> Any:
    return order_figures(
        await ex.create_order(_order_request("SOL/USDT", "buy", 0.05, 241.0, cid="c-new"))
    )


async def _market_sell(rig: Rig, ex: CcxtExchange) -> Any:
    rig.engine.set_price("LTC/USDT", 90.8)
    placed = await ex.create_order(_order_request("LTC/USDT", "sell", 0.1, None))
    return order_figures(await ex.fetch_order(placed.id, "LTC/USDT"))


async def _post_only(rig: Rig, ex: CcxtExchange) -> Any:
    await ex.create_order(_order_request("LTC/USDT", "buy", 0.2, 50.0, post_only=True))
    (order,) = (await ex.fetch_open_orders()).orders
    return order_figures(order)


async def _cancelled_in_history(rig: Rig, ex: CcxtExchange) -> Any:
    placed = await ex.create_order(_order_request("LTC/USDT", "buy", 0.1, 50.0))
    rig.engine.cancel_order("USER:alice", placed.id)
    (order,) = await ex.fetch_closed_orders("LTC/USDT", datetime(2023, 1, 1, tzinfo=UTC))
    return order_figures(order)


async def _cancel(rig: Rig, ex: CcxtExchange) -> Any:
    placed = await ex.create_order(_order_request("LTC/USDT", "buy", 0.2, 50.0, cid="mine-1"))
    order = await ex.cancel_order(placed.id, "LTC/USDT")
    assert order.client_order_id == "mine-1"
    return order_figures(order)


async def _taker_sell(rig: Rig, ex: CcxtExchange) -> Order:
    rig.engine.set_price("LTC/USDT", 69.63)
    return await ex.create_order(_order_request("LTC/USDT", "sell", 0.2, None))


async def _my_trades(rig: Rig, ex: CcxtExchange) -> Any:
    await _taker_sell(rig, ex)
    (fill,) = await ex.fetch_my_trades("LTC/USDT", None)
    return fill_figures(fill)


async def _order_trades(rig: Rig, ex: CcxtExchange) -> Any:
    placed = await _taker_sell(rig, ex)
    (fill,) = await ex.fetch_order_trades(placed)
    return fill_figures(fill)


async def _balance(rig: Rig, ex: CcxtExchange) -> Any:
    other = rig.exchange("USER:bal")
    try:
        balances = await other.fetch_balance()
    finally:
        await other.aclose()
    return {c: {"free": b.free, "used": b.used, "total": b.total} for c, b in balances.items()}


async def _markets(rig: Rig, ex: CcxtExchange) -> Any:
    markets = await ex.load_markets()
    return {
        s: {
            "price_step": m.price_step,
            "amount_step": m.amount_step,
            "min_amount": m.min_amount,
            "min_notional": m.min_notional,
        }
        for s, m in markets.items()
    }


async def _ioc_partial(rig: Rig, ex: CcxtExchange) -> Any:
    rig.engine.set_price("LTC/USDT", 69.63)
    rig.engine.set_liquidity("LTC/USDT", 0.05)
    async with rig.raw_session() as raw:
        placed = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.2, 69.7, {"timeInForce": "IOC"}
        )
    return order_figures(await ex.fetch_order(placed["id"], "LTC/USDT"))


async def _expired_in_match(rig: Rig, ex: CcxtExchange) -> Any:
    rig.engine.set_price("LTC/USDT", 69.63)
    await ex.create_order(_order_request("LTC/USDT", "sell", 0.1, 69.9))  # rests
    rig.engine.set_liquidity("LTC/USDT", 0.1)
    async with rig.raw_session() as raw:
        # ccxt's unified name, as the recorded createOrder request sent it.
        placed = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.2, 70.0, {"selfTradePrevention": "expire_taker"}
        )
    return order_figures(await ex.fetch_order(placed["id"], "LTC/USDT"))


async def _pending_cancel(rig: Rig, ex: CcxtExchange) -> Any:
    placed = await ex.create_order(_order_request("LTC/USDT", "buy", 0.2, 69.0))
    rig.engine.fill_partially("USER:alice", placed.id, 0.05)
    rig.engine.delay_cancels(1)
    answered = await ex.cancel_order(placed.id, "LTC/USDT")
    assert not answered.is_terminal
    return order_figures(await ex.fetch_order(placed.id, "LTC/USDT"))


DRIVES: dict[str, Drive] = {
    "create_order_limit_buy_new.json": _create_new,
    "fetch_order_market_sell_filled.json": _market_sell,
    "fetch_open_orders_post_only_buy.json": _post_only,
    "fetch_orders_cancelled_buy.json": _cancelled_in_history,
    "cancel_order_cancelled.json": _cancel,
    "fetch_my_trades_sell_taker.json": _my_trades,
    "fetch_order_trades_sell_taker.json": _order_trades,
    "fetch_balance_spot.json": _balance,
    "load_markets_exchange_info.json": _markets,
    "fetch_order_ioc_expired_after_partial.json": _ioc_partial,
    "fetch_order_expired_in_match.json": _expired_in_match,
    "fetch_order_pending_cancel.json": _pending_cancel,
}


async def test_every_fixture_has_an_emulated_situation() -> None:
    assert set(DRIVES) == set(FIXTURES)


def _situation(fx: dict[str, Any], figures: dict[str, Any]) -> tuple[Any, Any]:
    """(expected, got) restricted to what describes the situation."""
    expected = fx["expected"]
    if fx["ccxt_method"] in ("fetch_my_trades", "fetch_order_trades"):
        keys: tuple[str, ...] = SITUATION_FILL
    elif fx["ccxt_method"] in ("fetch_balance", "load_markets"):
        return expected, figures
    else:
        keys = SITUATION_ORDER
    return (
        {k: expected[k] for k in keys if k in expected},
        {k: figures.get(k) for k in keys if k in expected},
    )


def _approx(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9)
    return value


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(DRIVES))
async def test_emulator_gives_the_recorded_figures_for_the_same_situation(
    rig: Rig, name: str
) -> None:
    fx = FIXTURES[name]
    ex = _answers_kept(rig.exchange())
    try:
        figures = await DRIVES[name](rig, ex)
        raw_body = ex._ex.last_json_response
    finally:
        await ex.aclose()
    expected, got = _situation(fx, figures)
    assert got == _approx(expected)
    if "EXPIRED" in json.dumps(fx["body"]) or "PENDING_CANCEL" in json.dumps(fx["body"]):
        assert (raw_body["status"], raw_body["timeInForce"]) == (
            fx["body"]["status"],
            fx["body"]["timeInForce"],
        )


def _shape(value: Any) -> Any:
    """A JSON value's type as Binance prints it: decimals and integers told apart even
    where ccxt's capture wrote an integer as a string."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit()):
        return "integer"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "text"
        return "decimal string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _body_shape(body: Any) -> dict[str, Any]:
    row = body[0] if isinstance(body, list) else body
    return {k: _shape(v) for k, v in row.items() if k not in CONDITIONAL}


# Bodies whose raw shape is compared: the recorded ones and the documented cancel answer.
SHAPED = {
    "create_order_limit_buy_new.json": _create_new,
    "fetch_order_market_sell_filled.json": _market_sell,
    "fetch_open_orders_post_only_buy.json": _post_only,
    "fetch_orders_cancelled_buy.json": _cancelled_in_history,
    "cancel_order_cancelled.json": _cancel,
    "fetch_my_trades_sell_taker.json": _my_trades,
    "fetch_balance_spot.json": _balance,
}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(SHAPED))
async def test_emulator_body_has_the_recorded_keys_and_value_types(rig: Rig, name: str) -> None:
    fx = FIXTURES[name]
    ex = _answers_kept(
        rig.exchange("USER:bal" if name == "fetch_balance_spot.json" else "USER:alice")
    )
    try:
        if name == "fetch_balance_spot.json":
            await ex.fetch_balance()
        else:
            await SHAPED[name](rig, ex)
        raw_body = ex._ex.last_json_response
    finally:
        await ex.aclose()
    if name == "fetch_balance_spot.json":
        assert _body_shape(raw_body["balances"]) == _body_shape(fx["body"]["balances"])
        recorded = _body_shape(fx["body"])
        assert {k: v for k, v in _body_shape(raw_body).items() if k in recorded} == recorded
        return
    emulated, venue = _body_shape(raw_body), _body_shape(fx["body"])
    if "repo" not in fx["source"]:
        # A documented example (a mirror of the docs, which omit fields the live answers
        # carry, such as origQuoteOrderQty): its keys must be there, more may be.
        emulated = {k: v for k, v in emulated.items() if k in venue}
    assert emulated == venue


# ------------------------------------------------------------------ venue rules


@pytest.mark.integration
async def test_all_orders_without_a_start_answers_the_most_recent_rows(rig: Rig) -> None:
    ids = [
        rig.engine.place_order("USER:alice", _order_request("LTC/USDT", "buy", 0.1, 50.0 + i)).id
        for i in range(6)
    ]
    async with rig.raw_session() as raw:
        newest = await raw.fetch_orders("LTC/USDT", None, 4)
        from_start = await raw.fetch_orders("LTC/USDT", 0, 4)
        from_id = await raw.fetch_orders("LTC/USDT", None, 4, {"orderId": ids[1]})
    assert [o["id"] for o in newest] == ids[-4:]
    assert [o["id"] for o in from_start] == ids[:4]
    assert [o["id"] for o in from_id] == ids[1:5]


@pytest.mark.integration
@pytest.mark.parametrize("method", ["fetch_orders", "fetch_my_trades"])
async def test_history_window_over_24_hours_is_refused(rig: Rig, method: str) -> None:
    async with rig.raw_session() as raw:
        with pytest.raises(ccxt.BadRequest, match="-1127"):
            await getattr(raw, method)("LTC/USDT", 1_000, None, {"until": 1_000 + 86_400_000 + 1})
        # Exactly 24 hours is allowed.
        await getattr(raw, method)("LTC/USDT", 1_000, None, {"until": 1_000 + 86_400_000})


@pytest.mark.integration
async def test_fok_fills_whole_or_expires_with_nothing(rig: Rig) -> None:
    rig.engine.set_liquidity("LTC/USDT", 0.1)
    async with rig.raw_session() as raw:
        killed = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.2, 70.5, {"timeInForce": "FOK"}
        )
        filled = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.1, 70.5, {"timeInForce": "FOK"}
        )
    assert (killed["info"]["status"], killed["filled"]) == ("EXPIRED", 0.0)
    assert (filled["info"]["status"], filled["filled"]) == ("FILLED", 0.1)


@pytest.mark.integration
async def test_self_trade_prevention_mode_is_echoed_and_defaults_as_the_venue(rig: Rig) -> None:
    async with rig.raw_session() as raw:
        default = await raw.create_order("LTC/USDT", "limit", "buy", 0.1, 60.0)
        chosen = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.1, 60.0, {"selfTradePrevention": "expire_both"}
        )
        markets = await raw.public_get_exchangeinfo()
    assert default["info"]["selfTradePreventionMode"] == "EXPIRE_MAKER"
    assert chosen["info"]["selfTradePreventionMode"] == "EXPIRE_BOTH"
    (ltc,) = [s for s in markets["symbols"] if s["symbol"] == "LTCUSDT"]
    assert ltc["defaultSelfTradePreventionMode"] == "EXPIRE_MAKER"
    assert "EXPIRE_TAKER" in ltc["allowedSelfTradePreventionModes"]
