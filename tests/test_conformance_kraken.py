"""Kraken spot conformance: recorded venue bodies through real ccxt and the adapter, then the
same situations against the Kraken emulator.

Each fixture under ``tests/fixtures/venues/kraken/`` holds a body Kraken answered (or, where
ccxt's recorded set lacks the situation, one written to Kraken's documentation; the fixture
says which). Offline, the ccxt instance's ``fetch`` is replaced, so every ccxt method runs
whole on the recorded answer, ``handle_errors`` included, and ``CcxtExchange`` on top of it
gives the unified figures the project relies on. The emulator half runs the same situations
over loopback and compares the figures field by field (ids and times aside) and the JSON's
keys and value types with the recorded body's.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import KrakenEmulatorServer, kraken_ccxt_config
from adapters.ratelimit import RateBudget
from adapters.sim.engine import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import ExchangeError, InvalidOrder, OrderNotFound
from nija_broker.core.models import Market, OrderStatus, OrderType, Side

from ._conformance import fill_figures, fixture, fixtures, order_figures, subset
from ._emulator_support import EmulatorRig, serving

VENUE = "kraken"
MARKETS = fixture(VENUE, "asset_pairs.json")
NOW = datetime(2024, 6, 1, tzinfo=UTC)


class Recorded:
    """Kraken's answers by endpoint name (``QueryOrders``); a list is answered in turn."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = {"AssetPairs": MARKETS["body"], "Assets": MARKETS["assets"], **answers}
        self.sent: list[tuple[str, dict[str, str]]] = []

    def install(self, ex: Any) -> None:
        async def fetch(
            url: str, method: str = "GET", headers: Any = None, body: Any = None
        ) -> Any:
            parts = urlsplit(url)
            name = parts.path.rsplit("/", 1)[-1]
            self.sent.append((name, dict(parse_qsl(body or parts.query))))
            answer = self.answers[name]
            if isinstance(answer, list):
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
            text = json.dumps(answer)
            ex.last_http_response = text
            ex.handle_errors(200, "OK", url, method, {}, text, answer, headers, body)
            return copy.deepcopy(answer)

        ex.fetch = fetch

    def requests(self, name: str) -> list[dict[str, str]]:
        return [params for sent, params in self.sent if sent == name]


def offline(answers: dict[str, Any]) -> tuple[Any, Recorded]:
    ex = ccxt.kraken(
        {
            "apiKey": "conformance-key",
            "enableRateLimit": False,
            "secret": base64.b64encode(b"conformance-secret").decode(),
        }
    )
    recorded = Recorded(answers)
    recorded.install(ex)
    return ex, recorded


def adapter(answers: dict[str, Any]) -> tuple[CcxtExchange, Recorded]:
    ex, recorded = offline(answers)
    return CcxtExchange(
        ex,
        account_id="USER:conformance",
        clock=FakeClock(NOW),
        budget=RateBudget(1000.0),
        call_timeout_s=5.0,
    ), recorded


def endpoint_name(case: dict[str, Any]) -> str:
    return str(case["endpoint"]).split()[1].rsplit("/", 1)[-1]


def ccxt_subset(raw: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    return {key: raw.get(key) for key in expected}


ORDER_READS = [
    (name, case)
    for name, case in fixtures(VENUE)
    if case["ccxt_method"] in ("fetch_order", "fetch_open_orders", "fetch_closed_orders")
    and "error" not in case["expected"]
]
ERRORS = [(name, case) for name, case in fixtures(VENUE) if "error" in case["expected"]]


def limit_request(
    price: float,
    amount: float = 0.1,
    *,
    symbol: str = "LTC/USDT",
    post_only: bool = False,
    cid: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=Side.BUY,
        type=OrderType.LIMIT,
        amount=amount,
        price=price,
        post_only=post_only,
        client_order_id=cid,
    )


# ------------------------------------------------------------------ every fixture


def test_every_fixture_names_its_source_endpoint_and_situation() -> None:
    cases = fixtures(VENUE)
    assert len(cases) >= 15
    for name, case in cases:
        for key in ("source", "endpoint", "ccxt_method", "situation", "notes", "body", "expected"):
            assert key in case, (name, key)
        assert (
            "ccxt/ccxt" in case["source"]
            or "docs.kraken.com" in case["source"]
            or "support.kraken.com" in case["source"]
        ), name


@pytest.mark.asyncio
async def test_recorded_markets_give_steps_and_minimums() -> None:
    ex, _ = adapter({})
    try:
        markets = await ex.load_markets()
    finally:
        await ex.aclose()
    for symbol, figures in MARKETS["expected"].items():
        market = markets[symbol]
        assert {k: getattr(market, k) for k in figures} == pytest.approx(figures), symbol


@pytest.mark.parametrize(("name", "case"), ORDER_READS, ids=[n for n, _ in ORDER_READS])
@pytest.mark.asyncio
async def test_recorded_order_bodies_read_as_expected(name: str, case: dict[str, Any]) -> None:
    answers = {endpoint_name(case): case["body"]}
    ex, _ = adapter(answers)
    raw_ccxt, _ = offline(answers)
    try:
        if case["ccxt_method"] == "fetch_order":
            order = await ex.fetch_order(case["input"][0], case["input"][1])
            raw = await raw_ccxt.fetch_order(case["input"][0], case["input"][1])
        elif case["ccxt_method"] == "fetch_open_orders":
            (order,) = (await ex.fetch_open_orders()).orders
            (raw,) = await raw_ccxt.fetch_open_orders()
        else:
            (order,) = await ex.fetch_closed_orders(None, None)
            (raw,) = await raw_ccxt.fetch_closed_orders()
    finally:
        await ex.aclose()
        await raw_ccxt.close()
    assert subset(order_figures(order), case["expected"]) == pytest.approx(case["expected"])
    expected_ccxt = case.get("expected_ccxt", {})
    assert ccxt_subset(raw, expected_ccxt) == expected_ccxt


@pytest.mark.asyncio
async def test_recorded_balance_reads_total_used_and_free_in_unified_codes() -> None:
    case = fixture(VENUE, "balance_ex.json")
    ex, recorded = adapter({"BalanceEx": case["body"]})
    try:
        balances = await ex.fetch_balance()
    finally:
        await ex.aclose()
    assert set(balances) == set(case["expected"])
    for code, figures in case["expected"].items():
        got = balances[code]
        assert {"total": got.total, "used": got.used, "free": got.free} == pytest.approx(figures)
    assert len(recorded.requests("BalanceEx")) == 1  # ccxt asks BalanceEx, not Balance


@pytest.mark.asyncio
async def test_recorded_trade_history_reads_fee_in_quote() -> None:
    case = fixture(VENUE, "trades_history.json")
    ex, _ = adapter({"TradesHistory": case["body"]})
    try:
        fills = await ex.fetch_my_trades(case["input"][0], None)
    finally:
        await ex.aclose()
    assert [
        subset(fill_figures(f), e) for f, e in zip(fills, case["expected"], strict=True)
    ] == case["expected"]


def _closed_for(
    order_id: str,
    pair: str,
    trades: list[str],
    oflags: str = "fciq",
) -> dict[str, Any]:
    """The recorded closed market order, re-keyed for another id, pair and trades."""
    body: dict[str, Any] = copy.deepcopy(fixture(VENUE, "query_orders_closed_market.json")["body"])
    (info,) = body["result"].values()
    info["descr"]["pair"] = pair
    info["trades"] = trades
    info["oflags"] = oflags
    body["result"] = {order_id: info}
    return body


@pytest.mark.asyncio
async def test_order_trades_are_asked_by_the_ids_queryorders_gave() -> None:
    case = fixture(VENUE, "query_trades_market_sell.json")
    order_id = case["input"][0]
    trade_ids = case["input"][4]["trades"]
    ex, recorded = adapter(
        {"QueryOrders": _closed_for(order_id, "USDCUSDT", trade_ids), "QueryTrades": case["body"]}
    )
    try:
        order = await ex.fetch_order(order_id, "USDC/USDT")
        fills = await ex.fetch_order_trades(order)
    finally:
        await ex.aclose()
    assert [
        subset(fill_figures(f), e) for f, e in zip(fills, case["expected"], strict=True)
    ] == case["expected"]
    assert [r["txid"] for r in recorded.requests("QueryTrades")] == [",".join(trade_ids)]
    # ccxt form-encodes Python's True as "True"; Kraken takes it (the recorded closed order
    # came back with its trades to this very request).
    assert recorded.requests("QueryOrders")[0]["trades"] == "True"


# ------------------------------------------------------------------------ writes


@pytest.mark.asyncio
async def test_create_answer_has_no_status_or_client_id_so_the_order_is_fetched() -> None:
    case = fixture(VENUE, "add_order_market_buy.json")
    order_id = case["expected"]["id"]
    raw_ccxt, _ = offline({"AddOrder": case["body"]})
    ex, recorded = adapter(
        {"AddOrder": case["body"], "QueryOrders": _closed_for(order_id, "LTCUSDT", ["TWA6QJ"])}
    )
    request = OrderRequest(
        symbol="LTC/USDT",
        side=Side.BUY,
        type=OrderType.MARKET,
        amount=0.1,
        client_order_id="entry-1",
    )
    try:
        raw = await raw_ccxt.create_order(*case["input"])
        order = await ex.create_order(request)
    finally:
        await raw_ccxt.close()
        await ex.aclose()
    assert ccxt_subset(raw, case["expected_ccxt"]) == case["expected_ccxt"]
    assert (order.id, order.status, order.filled) == (order_id, OrderStatus.FILLED, 0.1)
    assert order.client_order_id == "entry-1"  # ours, since Kraken's answers carry none
    assert len(recorded.requests("QueryOrders")) == 1


@pytest.mark.asyncio
async def test_created_order_not_readable_yet_is_reported_pending() -> None:
    case = fixture(VENUE, "add_order_market_buy.json")
    # QueryOrders answers for another id: ccxt raises OrderNotFound for this one.
    ex, _ = adapter(
        {
            "AddOrder": case["body"],
            "QueryOrders": fixture(VENUE, "query_orders_closed_market.json")["body"],
        }
    )
    request = OrderRequest(symbol="LTC/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.1)
    try:
        order = await ex.create_order(request)
    finally:
        await ex.aclose()
    assert subset(order_figures(order), case["expected"]) == case["expected"]


@pytest.mark.asyncio
async def test_cancel_answer_has_no_id_or_status_so_the_order_is_fetched() -> None:
    case = fixture(VENUE, "cancel_order.json")
    raw_ccxt, _ = offline({"CancelOrder": case["body"]})
    ex, recorded = adapter({"CancelOrder": case["body"], **case["followup"]})
    try:
        raw = await raw_ccxt.cancel_order(*case["input"])
        order = await ex.cancel_order(*case["input"])
    finally:
        await raw_ccxt.close()
        await ex.aclose()
    assert ccxt_subset(raw, case["expected_ccxt"]) == case["expected_ccxt"]
    assert subset(order_figures(order), case["expected"]) == case["expected"]
    assert [r["txid"] for r in recorded.requests("CancelOrder")] == [case["input"][0]]


@pytest.mark.asyncio
async def test_post_only_order_kraken_took_and_cancelled_is_an_order_error() -> None:
    case = fixture(VENUE, "query_orders_post_only_cancelled.json")
    (order_id,) = case["body"]["result"]
    add = {
        "error": [],
        "result": {
            "txid": [order_id],
            "descr": {"order": "buy 0.10000000 LTCUSDT @ limit 80.00000"},
        },
    }
    ex, recorded = adapter({"AddOrder": add, "QueryOrders": case["body"]})
    try:
        with pytest.raises(InvalidOrder, match="Post only order") as caught:
            await ex.create_order(limit_request(80.0, post_only=True, cid="po-1"))
    finally:
        await ex.aclose()
    assert order_id in str(caught.value)
    assert ex.calls["create_order"] == 1  # a refusal: never re-sent
    assert recorded.requests("AddOrder")[0]["oflags"] == "post"


@pytest.mark.parametrize(("name", "case"), ERRORS, ids=[n for n, _ in ERRORS])
@pytest.mark.asyncio
async def test_error_bodies_map_to_the_class_the_bot_acts_on(
    name: str, case: dict[str, Any]
) -> None:
    expected: type[ExchangeError] = {"InvalidOrder": InvalidOrder, "OrderNotFound": OrderNotFound}[
        case["expected"]["error"]
    ]
    ex, _ = adapter({endpoint_name(case): case["body"]})
    raw_ccxt, _ = offline({endpoint_name(case): case["body"]})
    calls: dict[str, Callable[[], Any]] = {
        "create_order": lambda: ex.create_order(limit_request(50.0, cid="e-1")),
        "fetch_order": lambda: ex.fetch_order("OABCDE-FGHIJ-KLMNOP", "LTC/USDT"),
        "cancel_order": lambda: ex.cancel_order("OABCDE-FGHIJ-KLMNOP", "LTC/USDT"),
    }
    try:
        with pytest.raises(expected) as caught:
            await calls[case["ccxt_method"]]()
        with pytest.raises(ccxt.ExchangeError) as raw_caught:
            await {
                "create_order": lambda: raw_ccxt.create_order(
                    "LTC/USDT", "limit", "buy", 0.1, 50.0
                ),
                "fetch_order": lambda: raw_ccxt.fetch_order("OABCDE-FGHIJ-KLMNOP"),
                "cancel_order": lambda: raw_ccxt.cancel_order("OABCDE-FGHIJ-KLMNOP"),
            }[case["ccxt_method"]]()
    finally:
        await ex.aclose()
        await raw_ccxt.close()
    assert case["body"]["error"][0] in str(caught.value)
    assert ex.calls[case["ccxt_method"]] == 1  # not a transient: one request, no retry
    # What ccxt 4.5 itself raises, pinned so an upgrade that maps these shows up here.
    ccxt_class = {
        "EOrder:Post only order": ccxt.ExchangeError,
        "EOrder:Cost minimum not met": ccxt.ExchangeError,
        "EQuery:Unknown asset pair": ccxt.ExchangeError,
        "EOrder:Invalid order": ccxt.InvalidOrder,
        "EOrder:Unknown order": ccxt.OrderNotFound,
    }[case["body"]["error"][0]]
    assert type(raw_caught.value) is ccxt_class


# ------------------------------------------------------------------------ quirks


@pytest.mark.asyncio
async def test_order_fee_cost_stays_a_string_while_fees_hold_numbers() -> None:
    case = fixture(VENUE, "query_orders_closed_market.json")
    raw_ccxt, _ = offline({"QueryOrders": case["body"]})
    try:
        raw = await raw_ccxt.fetch_order(*case["input"])
    finally:
        await raw_ccxt.close()
    assert raw["fee"]["cost"] == "0.018475"
    assert raw["fees"][0]["cost"] == 0.018475
    ex, _ = adapter({"QueryOrders": case["body"]})
    try:
        order = await ex.fetch_order(*case["input"])
    finally:
        await ex.aclose()
    assert order.fee == 0.018475  # once, not string and number both


@pytest.mark.parametrize(("oflags", "currency"), [("fciq", "USDT"), ("fcib", "LTC"), ("", None)])
@pytest.mark.asyncio
async def test_order_fee_currency_is_set_only_by_fciq_or_fcib(
    oflags: str, currency: str | None
) -> None:
    body = _closed_for("OGMZCL-KC6MC-ZRBGM6", "LTCUSDT", ["TWA6QJ-ZO4EM-6QIHQJ"], oflags)
    raw_ccxt, _ = offline({"QueryOrders": body})
    try:
        raw = await raw_ccxt.fetch_order("OGMZCL-KC6MC-ZRBGM6")
    finally:
        await raw_ccxt.close()
    assert raw["fee"].get("currency") == currency


@pytest.mark.asyncio
async def test_trade_fee_of_an_fcib_order_is_booked_in_the_base_it_was_charged_in() -> None:
    trades = fixture(VENUE, "query_trades_market_sell.json")
    order_id = trades["input"][0]
    trade_ids = trades["input"][4]["trades"]
    answers = {
        "QueryOrders": _closed_for(order_id, "USDCUSDT", trade_ids, "fcib"),
        "QueryTrades": trades["body"],
    }
    raw_ccxt, _ = offline(answers)
    ex, _ = adapter(answers)
    try:
        (raw_trade,) = await raw_ccxt.fetch_order_trades(
            order_id, None, None, None, {"trades": trade_ids}
        )
        order = await ex.fetch_order(order_id, "USDC/USDT")
        (fill,) = await ex.fetch_order_trades(order)
    finally:
        await raw_ccxt.close()
        await ex.aclose()
    assert raw_trade["fee"]["currency"] == "USDT"  # ccxt: the quote, whatever fcib said
    assert (fill.fee_currency, fill.fee_cost) == ("USDC", 0.04433784)
    assert fill.fee == pytest.approx(0.04433784 * 0.9986)  # valued at the trade's price


@pytest.mark.asyncio
async def test_order_trades_need_the_trade_ids_else_ccxt_refuses() -> None:
    raw_ccxt, _ = offline({})
    try:
        with pytest.raises(ccxt.ArgumentsRequired):
            await raw_ccxt.fetch_order_trades("OR6EGN-KQSEG-AMI6CL", "LTC/USDT")
    finally:
        await raw_ccxt.close()
    case = fixture(VENUE, "query_orders_open_post_only_limit.json")
    ex, recorded = adapter({"QueryOrders": case["body"]})
    try:
        order = await ex.fetch_order(*case["input"])
        assert await ex.fetch_order_trades(order) == []  # no trades listed: none asked
    finally:
        await ex.aclose()
    assert recorded.requests("QueryTrades") == []


@pytest.mark.parametrize(
    ("userref", "cl_ord_id", "expected"),
    [
        ("0", None, None),
        (0, None, None),
        (None, None, None),
        (4242, None, "4242"),
        (0, "c0ffee00c0ffee00c0ffee00c0ffee00", "nb-c0ffee00c0ffee00c0ffee00c0ffee00"),
    ],
)
@pytest.mark.asyncio
async def test_userref_zero_is_no_client_id(
    userref: Any, cl_ord_id: str | None, expected: str | None
) -> None:
    case = fixture(VENUE, "query_orders_open_post_only_limit.json")
    body = copy.deepcopy(case["body"])
    info = body["result"][case["input"][0]]
    info["userref"] = userref
    if cl_ord_id:
        info["cl_ord_id"] = cl_ord_id
    ex, _ = adapter({"QueryOrders": body})
    try:
        order = await ex.fetch_order(*case["input"])
    finally:
        await ex.aclose()
    assert order.client_order_id == expected


@pytest.mark.asyncio
async def test_until_goes_out_in_milliseconds_and_the_adapter_never_sends_it() -> None:
    case = fixture(VENUE, "closed_orders_cancelled_unfilled.json")
    raw_ccxt, raw_sent = offline({"ClosedOrders": case["body"]})
    ex, sent = adapter({"ClosedOrders": case["body"]})
    until_ms = 1_717_200_000_000
    try:
        await raw_ccxt.fetch_closed_orders(None, None, None, {"until": until_ms})
        await ex.fetch_closed_orders(None, datetime(2020, 9, 30, tzinfo=UTC))
    finally:
        await raw_ccxt.close()
        await ex.aclose()
    # Kraken reads `end` in seconds: ccxt's `until` would mean the year 56,000.
    assert raw_sent.requests("ClosedOrders")[0]["end"] == str(until_ms)
    (asked,) = sent.requests("ClosedOrders")
    assert "end" not in asked
    assert asked["start"] == str(int(datetime(2020, 9, 30, tzinfo=UTC).timestamp()))
    assert (asked["ofs"], asked["trades"]) == ("0", "True")


def _closed_page(first: int, count: int, total: int) -> dict[str, Any]:
    """A ClosedOrders page: orders ``first`` .. ``first + count - 1``, newest first."""
    (info,) = fixture(VENUE, "closed_orders_cancelled_unfilled.json")["body"]["result"][
        "closed"
    ].values()
    rows = {}
    for n in range(first, first + count):
        row = copy.deepcopy(info)
        row["opentm"] = row["closetm"] = 1_700_000_000 - n
        rows[f"O{n:05d}-PAGED-000000"] = row
    return {"error": [], "result": {"closed": rows, "count": total}}


@pytest.mark.asyncio
async def test_closed_orders_are_paged_with_ofs_until_a_short_page() -> None:
    # 50 + 50 + 7, and the second page repeats the first's last row (an order closed
    # between the two calls shifts every row down by one).
    pages = [_closed_page(0, 50, 106), _closed_page(49, 50, 107), _closed_page(99, 7, 107)]
    ex, sent = adapter({"ClosedOrders": pages})
    try:
        orders = await ex.fetch_closed_orders("ETH/USDT", None)
    finally:
        await ex.aclose()
    assert [r["ofs"] for r in sent.requests("ClosedOrders")] == ["0", "50", "100"]
    assert len(orders) == len({o.id for o in orders}) == 106
    assert ex.calls["fetch_closed_orders"] == 3


# -------------------------------------------------------------------- the emulator

LTC = Market(
    symbol="LTC/USDT",
    base="LTC",
    quote="USDT",
    amount_step=1e-8,
    price_step=1e-5,
    min_amount=0.05,
    min_notional=0.5,
)
ALICE = "USER:alice"
KEYS = {ALICE: ("conformance-alice", base64.b64encode(b"conformance-alice-secret").decode())}
Rig = EmulatorRig[KrakenEmulatorServer]


def _kraken(url: str, api_key: str, secret: str) -> Any:
    ex = ccxt.kraken(kraken_ccxt_config(url, api_key, secret))
    ex.enableLastJsonResponse = True
    return ex


@pytest_asyncio.fixture
async def rig() -> AsyncIterator[Rig]:
    # Taker 0.26 %, maker 0.16 %: the recorded closed market buy paid 0.26 % of its cost.
    engine = SimEngine(seed=11, clock=SystemClock(), maker_fee=0.0016, taker_fee=0.0026)
    engine.add_market(LTC, 71.05741)
    engine.open_account(ALICE, {"USDT": 1_000.0, "LTC": 1.0})
    async with serving(KrakenEmulatorServer, engine, KEYS, _kraken) as rig:
        yield rig
        assert not rig.server.not_found, dict(rig.server.not_found)


_MOVING = ("id", "created_at", "updated_at")


def _without_ids_and_times(expected: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in expected.items() if k not in _MOVING}


def _kind(value: Any) -> str:
    """A JSON value's kind; a decimal string counts as a number (Kraken prints both)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return "text"
        return "number"
    return type(value).__name__


def assert_same_shape(recorded: dict[str, Any], emulated: dict[str, Any]) -> None:
    """Every key the venue answered, with a value of the same kind (nested dicts too)."""
    for key, value in recorded.items():
        assert key in emulated, key
        if isinstance(value, dict):
            assert_same_shape(value, emulated[key])
        elif value is not None:
            assert _kind(emulated[key]) == _kind(value), (key, value, emulated[key])


def _recorded_info(name: str) -> dict[str, Any]:
    body = fixture(VENUE, name)["body"]["result"]
    body = body.get("open") or body.get("closed") or body
    (info,) = body.values()
    info = dict(info)
    info.pop("cl_ord_id", None)  # only orders given one carry it
    return info


async def _emulated_info(rig: Rig, txid: str) -> dict[str, Any]:
    async with rig.raw_session() as raw:
        await raw.fetch_order(txid)
        info: dict[str, Any] = raw.last_json_response["result"][txid]
    return info


@pytest.mark.asyncio
async def test_emulator_resting_post_only_limit_matches_the_recorded_one(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_open_post_only_limit.json")
    ex = rig.exchange()
    try:
        placed = await ex.create_order(limit_request(50.0, post_only=True))
        order = await ex.fetch_order(placed.id, "LTC/USDT")
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(order), expected) == expected
    assert_same_shape(
        _recorded_info("query_orders_open_post_only_limit.json"),
        await _emulated_info(rig, order.id),
    )


@pytest.mark.asyncio
async def test_emulator_market_buy_matches_the_recorded_fill_and_fee(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_closed_market.json")
    ex = rig.exchange()
    try:
        order = await ex.create_order(
            OrderRequest(symbol="LTC/USDT", side=Side.BUY, type=OrderType.MARKET, amount=0.1)
        )
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    figures = subset(order_figures(order), expected)
    assert figures.pop("fee") == pytest.approx(expected.pop("fee"), abs=1e-6)  # 6 decimals
    assert figures == expected
    assert_same_shape(
        _recorded_info("query_orders_closed_market.json"), await _emulated_info(rig, order.id)
    )


@pytest.mark.parametrize(
    ("name", "order_type", "price", "trigger"),
    [
        ("open_orders_take_profit_market.json", OrderType.TAKE_PROFIT, None, 120.0),
        ("open_orders_stop_loss_limit.json", OrderType.STOP_LIMIT, 54.0, 55.0),
    ],
)
@pytest.mark.asyncio
async def test_emulator_protective_sells_match_the_recorded_ones(
    rig: Rig, name: str, order_type: OrderType, price: float | None, trigger: float
) -> None:
    case = fixture(VENUE, name)
    ex = rig.exchange()
    try:
        await ex.create_order(
            OrderRequest(
                symbol="LTC/USDT",
                side=Side.SELL,
                type=order_type,
                amount=0.1,
                price=price,
                stop_price=trigger,
            )
        )
        (order,) = (await ex.fetch_open_orders()).orders
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(order), expected) == expected
    assert_same_shape(_recorded_info(name), await _emulated_info(rig, order.id))


@pytest.mark.asyncio
async def test_emulator_partial_fill_then_cancel_matches_the_documented_order(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_partial_then_cancelled.json")
    ex = rig.exchange()
    try:
        placed = await ex.create_order(limit_request(50.0))
        rig.engine.fill_partially(ALICE, rig.server.engine_order_id(placed.id), 0.04)
        order = await ex.cancel_order(placed.id, "LTC/USDT")
        (fill,) = await ex.fetch_order_trades(order)
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(order), expected) == pytest.approx(expected)
    assert (fill.amount, fill.price, fill.fee) == pytest.approx((0.04, 50.0, 0.0032))
    assert_same_shape(
        _recorded_info("query_orders_partial_then_cancelled.json"),
        await _emulated_info(rig, order.id),
    )


@pytest.mark.asyncio
async def test_emulator_answers_pending_while_held_then_open(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_pending.json")
    rig.server.hold_pending = True
    ex = rig.exchange()
    try:
        placed = await ex.create_order(limit_request(50.0, cid="bot-entry-7"))
        pending = await _emulated_info(rig, placed.id)
        rig.server.release_pending()
        released = await _emulated_info(rig, placed.id)
    finally:
        await ex.aclose()
    assert (pending["status"], released["status"]) == ("pending", "open")
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(placed), expected) == expected  # ccxt: pending -> open
    assert_same_shape(_recorded_info("query_orders_pending.json"), pending)


@pytest.mark.asyncio
async def test_emulator_takes_a_crossing_post_only_order_and_cancels_it(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_post_only_cancelled.json")
    ex = rig.exchange()
    try:
        with pytest.raises(InvalidOrder, match="Post only order"):
            await ex.create_order(limit_request(80.0, post_only=True, cid="po-x"))
        (order,) = await ex.fetch_closed_orders(None, None)
        balance = await ex.fetch_balance()
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(order), expected) == expected
    info = await _emulated_info(rig, order.id)
    assert (info["reason"], info["oflags"]) == ("Post only order", "fciq,post")
    assert_same_shape(_recorded_info("query_orders_post_only_cancelled.json"), info)
    assert balance["USDT"].used == 0  # never held anything
    assert rig.engine.all_orders(ALICE) == []  # the engine never saw it


def _one_instance(rig: Rig) -> tuple[Any, CcxtExchange]:
    """A bare ccxt kraken and the adapter over that same instance: one nonce stream."""
    raw = rig.raw()
    return raw, CcxtExchange(
        raw, account_id=ALICE, clock=FakeClock(), call_timeout_s=2.0, budget=RateBudget(1000.0)
    )


@pytest.mark.asyncio
async def test_emulator_ioc_partly_filled_reads_cancelled_with_what_filled(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_ioc_partial_cancelled.json")
    rig.engine.set_price("LTC/USDT", 71.0)
    rig.engine.set_liquidity("LTC/USDT", 0.04)
    raw, ex = _one_instance(rig)
    try:
        # The adapter's OrderRequest has no time in force: AddOrder is driven through ccxt.
        created = await raw.create_order(
            "LTC/USDT", "limit", "buy", 0.1, 72.0, {"timeInForce": "IOC"}
        )
        assert "timeinforce=IOC" in (raw.last_request_body or "")
        order = await ex.fetch_order(created["id"], "LTC/USDT")
        info = raw.last_json_response["result"][order.id]
        (fill,) = await ex.fetch_order_trades(order)
    finally:
        await ex.aclose()
    expected = _without_ids_and_times(case["expected"])
    assert subset(order_figures(order), expected) == pytest.approx(expected)
    assert (fill.amount, fill.price, fill.fee) == pytest.approx((0.04, 71.0, 0.007384))
    assert (info["status"], info["reason"]) == ("canceled", None)
    assert_same_shape(_recorded_info("query_orders_ioc_partial_cancelled.json"), info)
    assert rig.engine.balances(ALICE)["USDT"].used == 0  # the dropped rest holds nothing


@pytest.mark.parametrize("timeinforce", ["GTD", "FOK", "ioc"])
@pytest.mark.asyncio
async def test_emulator_refuses_a_time_in_force_it_does_not_keep(
    rig: Rig, timeinforce: str
) -> None:
    raw, ex = _one_instance(rig)
    try:
        with pytest.raises(ccxt.ExchangeError, match="timeinforce"):
            await raw.create_order(
                "LTC/USDT", "limit", "buy", 0.1, 50.0, {"timeinforce": timeinforce}
            )
    finally:
        await ex.aclose()
    assert rig.engine.all_orders(ALICE) == []


@pytest.mark.asyncio
async def test_emulator_self_trade_cancels_the_newest_order_by_default(rig: Rig) -> None:
    case = fixture(VENUE, "query_orders_self_trade_cancelled.json")
    raw, ex = _one_instance(rig)
    try:
        resting = await raw.create_order("LTC/USDT", "limit", "sell", 0.1, 72.0)
        # Others offer 0.04; past that only the account's own sell is there. (Not 0: the
        # engine fills at least one amount step of a taker even at zero liquidity.)
        rig.engine.set_liquidity("LTC/USDT", 0.04)
        created = await raw.create_order("LTC/USDT", "market", "buy", 0.1)
        order = await ex.fetch_order(created["id"], "LTC/USDT")
        info = raw.last_json_response["result"][order.id]
        still = await ex.fetch_order(resting["id"], "LTC/USDT")
    finally:
        await ex.aclose()
    unfilled = ("filled", "remaining", "fee", "id")
    expected = {k: v for k, v in case["expected"].items() if k not in unfilled}
    assert subset(order_figures(order), expected) == expected
    assert (order.filled, order.remaining) == pytest.approx((0.04, 0.06))
    assert (info["status"], info["reason"]) == ("canceled", "Cannot trade with self")
    assert_same_shape(_recorded_info("query_orders_self_trade_cancelled.json"), info)
    assert still.status is OrderStatus.OPEN  # cancel-newest leaves the resting order


@pytest.mark.parametrize(
    ("stptype", "taker_ends", "maker_ends"),
    [("cancel-newest", True, False), ("cancel-oldest", False, True), ("cancel-both", True, True)],
)
@pytest.mark.asyncio
async def test_emulator_stptype_chooses_which_order_self_trade_prevention_ends(
    rig: Rig, stptype: str, taker_ends: bool, maker_ends: bool
) -> None:
    raw, ex = _one_instance(rig)
    try:
        resting = await raw.create_order("LTC/USDT", "limit", "sell", 0.1, 72.0)
        rig.engine.set_liquidity("LTC/USDT", 0.04)
        taker = await raw.create_order("LTC/USDT", "limit", "buy", 0.1, 73.0, {"stptype": stptype})
        statuses = [(await ex.fetch_order(o["id"], "LTC/USDT")).status for o in (taker, resting)]
    finally:
        await ex.aclose()
    ended = OrderStatus.CANCELLED
    assert [s is ended for s in statuses] == [taker_ends, maker_ends]


@pytest.mark.asyncio
async def test_emulator_refuses_an_unknown_stptype(rig: Rig) -> None:
    raw, ex = _one_instance(rig)
    try:
        with pytest.raises(ccxt.ExchangeError, match="stptype"):
            await raw.create_order(
                "LTC/USDT", "limit", "buy", 0.1, 50.0, {"stptype": "expire-maker"}
            )
    finally:
        await ex.aclose()
