"""A listing parsed only where a row changed gives exactly what parsing every row gives.

The adapter keeps, per listing scope, the digest of each raw row and the order
it gave (:mod:`adapters._ccxt_listing`), and reuses the whole answer when its
body did not change. Here a sequence of listings, built from rows the venues
answered (recorded by ccxt: ``tests/fixtures/venues/``) with random changes to
random fields, rows added and rows gone, goes through the adapter, offline,
with the real ccxt request and parse code; after every listing its orders are
compared with ccxt's full parse of the same body, converted the same way.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters._ccxt_convert import convert_order
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import binance_ccxt_config
from adapters.profiles import profile_for
from adapters.ratelimit import RateBudget
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import ImpossibleAnswer
from nija_broker.core.models import Order

from ._conformance import fixture, order_figures

NOW = datetime(2024, 6, 1, tzinfo=UTC)

BINANCE_ROW = fixture("binance", "fetch_open_orders_post_only_buy.json")["body"][0]
KRAKEN_ROWS = [
    row
    for name in ("open_orders_stop_loss_limit.json", "open_orders_take_profit_market.json")
    for row in fixture("kraken", name)["body"]["result"]["open"].values()
]

# Fields a venue changes on a resting order, and values it could answer (strings, as
# both venues send figures).
BINANCE_CHANGES: dict[str, list[Any]] = {
    "executedQty": ["0.00000000", "0.05000000", "0.10000000", "0.20000000"],
    "cummulativeQuoteQty": ["0.00000000", "2.50000000", "10.00000000"],
    "status": ["NEW", "PARTIALLY_FILLED", "PENDING_CANCEL", "CANCELED", "FILLED", "EXPIRED"],
    "price": ["50.00000000", "49.99000000", "51.00000000"],
    "origQty": ["0.20000000", "0.30000000"],
    "updateTime": ["1699380855570", "1699380900000", "1699381000000"],
    "clientOrderId": ["x-R4BD3S82102a551f8c1642bba06728", "nb-" + "ab" * 16, ""],
    "symbol": ["LTCUSDT", "SOLUSDT"],
    "type": ["LIMIT_MAKER", "LIMIT", "STOP_LOSS_LIMIT"],
    "stopPrice": ["0.00000000", "45.00000000"],
}
KRAKEN_CHANGES: dict[str, list[Any]] = {
    "vol_exec": ["0.00000000", "0.05000000", "0.10000000"],
    "cost": ["0.000000", "2.700000", "5.500000"],
    "fee": ["0.000000", "0.010000", "0.022000"],
    "price": ["0.000000", "54.000000", "55.100000"],
    "status": ["open", "pending", "closed", "canceled", "expired"],
    "userref": ["0", "12345"],
    "vol": ["0.10000000", "0.20000000"],
    "descr.price": ["55.00000", "120.00000", "56.50000"],
    "descr.price2": ["0", "54.00000", "53.00000"],
    "descr.pair": ["LTCUSDT", "ETHUSDT"],
}


def _binance() -> tuple[Any, dict[str, Any]]:
    markets = fixture("binance", "load_markets_exchange_info.json")["body"]
    config = {k: v for k, v in binance_ccxt_config("http://127.0.0.1:9").items() if k != "urls"}
    ex = ccxt.binance({"apiKey": "k", "secret": "s", **config})
    return ex, {"exchangeInfo": markets}


def _kraken() -> tuple[Any, dict[str, Any]]:
    case = fixture("kraken", "asset_pairs.json")
    ex = ccxt.kraken(
        {"apiKey": "k", "secret": base64.b64encode(b"s").decode(), "enableRateLimit": False}
    )
    return ex, {"AssetPairs": case["body"], "Assets": case["assets"]}


class Venue:
    """A ccxt instance answering from memory, through ccxt's own request and parse code.

    Its ``fetch`` stands in for the HTTP request only: the body goes through the
    instance's ``on_rest_response`` and is decoded, as ccxt's own ``fetch`` does.
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.ex, self.answers = _binance() if dialect == "binance" else _kraken()
        self.ex.fetch = self._fetch

    def list_open(self, rows: dict[str, dict[str, Any]]) -> None:
        if self.dialect == "binance":
            body: Any = list(rows.values())
            self.answers["openOrders"] = body
        else:
            self.answers["OpenOrders"] = {"error": [], "result": {"open": dict(rows)}}

    async def _fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None):
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        text = json.dumps(self.answers[name])
        text = self.ex.on_rest_response(200, "OK", url, method, {}, text, headers, body)
        answer = json.loads(text)
        self.ex.handle_errors(200, "OK", url, method, {}, text, answer, headers, body)
        return answer


def _adapter(venue: Venue) -> CcxtExchange:
    return CcxtExchange(venue.ex, account_id="USER:a", clock=FakeClock(NOW), budget=RateBudget(1e9))


def _reference(venue: Venue, symbol: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """ccxt's full parse of the current body (of ``symbol``'s listing: ccxt keeps that
    symbol's rows), converted as the adapter converts: the figures of every order, and
    how many rows could not become one."""
    answer = copy.deepcopy(
        venue.answers["openOrders" if venue.dialect == "binance" else "OpenOrders"]
    )
    rows = answer if venue.dialect == "binance" else answer["result"]["open"]
    decode = profile_for(venue.dialect).client_ids.from_exchange
    figures, problems = [], 0
    market = None if symbol is None else venue.ex.market(symbol)
    for unified in venue.ex.parse_orders(rows, market):
        try:
            order = convert_order(unified, account_id="USER:a", now=NOW, client_id=decode)
        except ImpossibleAnswer:
            problems += 1
            continue
        figures.append(_figures(order))
    return sorted(figures, key=lambda f: f["id"]), problems


def _figures(order: Order) -> dict[str, Any]:
    return {**order_figures(order), "role": order.role.value, "account_id": order.account_id}


def _set(row: dict[str, Any], field: str, value: Any) -> None:
    if "." in field:
        outer, inner = field.split(".")
        row[outer][inner] = value
    else:
        row[field] = value


def _steps(changes: dict[str, list[Any]]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    change = st.tuples(
        st.just("change"),
        st.integers(0, 5),
        st.sampled_from(sorted(changes)).flatmap(
            lambda f: st.tuples(st.just(f), st.sampled_from(changes[f]))
        ),
    )
    add = st.tuples(st.just("add"), st.integers(0, 5), st.just(None))
    drop = st.tuples(st.just("drop"), st.integers(0, 5), st.just(None))
    same = st.tuples(st.just("same"), st.just(0), st.just(None))
    listing = st.lists(st.one_of(change, change, add, drop, same), min_size=0, max_size=4)
    # Which listing reads the rows: every symbol's, or (Binance) one symbol's.
    scope = st.sampled_from([None, None, "LTC/USDT", "SOL/USDT"])
    return st.lists(st.tuples(scope, listing), min_size=1, max_size=8)


async def _run(dialect: str, listings: list[tuple[str | None, list[tuple[Any, ...]]]]) -> None:
    venue = Venue(dialect)
    adapter = CcxtExchange(
        venue.ex,
        account_id="USER:a",
        clock=FakeClock(NOW),
        budget=RateBudget(1e9),
        call_timeout_s=5.0,
    )
    base = [BINANCE_ROW] if dialect == "binance" else KRAKEN_ROWS
    rows: dict[str, dict[str, Any]] = {}
    serial = 0

    def new_row(index: int) -> None:
        nonlocal serial
        serial += 1
        row = copy.deepcopy(base[index % len(base)])
        if dialect == "binance":
            order_id = str(3811057334 + serial)
            row["orderId"] = order_id
        else:
            order_id = f"O{serial:05d}-AAAAA-BBBBBB"
        rows[order_id] = row

    for i in range(3):
        new_row(i)
    await venue.ex.load_markets()
    try:
        for scope, steps in listings:
            symbol = scope if dialect == "binance" else None
            for kind, index, what in steps:
                ids = sorted(rows)
                if kind == "add" or not ids:
                    new_row(index)
                elif kind == "drop":
                    del rows[ids[index % len(ids)]]
                elif kind == "change":
                    _set(rows[ids[index % len(ids)]], *what)
            venue.list_open(rows)
            expected, expected_problems = _reference(venue, symbol)
            page = await adapter.fetch_open_orders(None if symbol is None else [symbol])
            got = sorted((_figures(o) for o in page.orders), key=lambda f: f["id"])
            assert got == expected
            assert len(page.problems) == expected_problems
            assert page.complete is (expected_problems == 0)
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("dialect", ["binance", "kraken"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_listing_parsed_only_where_rows_changed_equals_the_full_parse(
    dialect: str, data: st.DataObject
) -> None:
    listings = data.draw(_steps(BINANCE_CHANGES if dialect == "binance" else KRAKEN_CHANGES))
    asyncio.run(_run(dialect, listings))


@pytest.mark.asyncio
async def test_an_unchanged_listing_parses_no_row_and_reuses_the_answer() -> None:
    venue = Venue("binance")
    adapter = _adapter(venue)
    rows = {}
    for n in range(5):
        row = copy.deepcopy(BINANCE_ROW)
        row["orderId"] = str(100 + n)
        rows[row["orderId"]] = row
    venue.list_open(rows)
    await venue.ex.load_markets()
    try:
        first = await adapter.fetch_open_orders()
        memo = adapter._listed
        assert (memo.parsed_rows, memo.reused_answers) == (5, 0)
        second = await adapter.fetch_open_orders()
        assert (memo.parsed_rows, memo.reused_answers) == (5, 1)
        assert [o.id for o in second.orders] == [o.id for o in first.orders]
        rows["102"]["executedQty"] = "0.10000000"
        venue.list_open(rows)
        third = await adapter.fetch_open_orders()
        assert (memo.parsed_rows, memo.reused_rows) == (6, 4)  # only the changed row
        assert {o.id: o.filled for o in third.orders}["102"] == pytest.approx(0.1)
    finally:
        await adapter.aclose()


@pytest.mark.asyncio
async def test_outside_a_listing_ccxt_parse_orders_parses_as_before() -> None:
    """The raw-row switch is the listing's own (a context variable): any other caller of
    the same ccxt object's parse_orders gets parsed orders."""
    venue = Venue("binance")
    adapter = _adapter(venue)
    venue.list_open({"100": {**copy.deepcopy(BINANCE_ROW), "orderId": "100"}})
    await venue.ex.load_markets()
    try:
        page = await adapter.fetch_open_orders()
        parsed = venue.ex.parse_orders([copy.deepcopy(BINANCE_ROW)])
        assert isinstance(parsed, list)
        assert parsed[0]["id"] == "3811057334"
        assert [o.id for o in page.orders] == ["100"]
    finally:
        await adapter.aclose()


SWEEP_CHANGES = {k: v for k, v in BINANCE_CHANGES.items() if k != "symbol"}
SWEEP_STATUSES = ["NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "PENDING_CANCEL", "EXPIRED"]
SWEEP_STATUSES += ["REJECTED", "EXPIRED_IN_MATCH"]


async def _sweep(pages: list[list[tuple[str, int, tuple[str, Any]]]]) -> None:
    """Binance's allOrders pages: the sweep, which leaves rows still open unparsed, keeps
    exactly the ended orders ccxt's full parse of the same rows gives."""
    venue = Venue("binance")
    adapter = _adapter(venue)
    await venue.ex.load_markets()
    decode = profile_for("binance").client_ids.from_exchange
    try:
        for serial, page in enumerate(pages):
            rows = []
            for n, (status, index, (field, value)) in enumerate(page):
                row = copy.deepcopy(BINANCE_ROW)
                row["orderId"] = str(5000 + 100 * serial + n)
                _set(row, field, value)
                row["status"] = status if index % 4 else row["status"]
                rows.append(row)
            venue.answers["allOrders"] = rows
            expected = []
            for unified in venue.ex.parse_orders(copy.deepcopy(rows)):
                try:
                    order = convert_order(unified, account_id="USER:a", now=NOW, client_id=decode)
                except ImpossibleAnswer:
                    continue
                if order.is_terminal:
                    expected.append(_figures(order))
            got = await adapter.fetch_closed_orders("LTC/USDT", since=None)
            assert sorted((_figures(o) for o in got), key=lambda f: f["id"]) == sorted(
                expected, key=lambda f: f["id"]
            )
    finally:
        await adapter.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.lists(
        st.lists(
            st.tuples(
                st.sampled_from(SWEEP_STATUSES),
                st.integers(0, 7),
                st.sampled_from(sorted(SWEEP_CHANGES)).flatmap(
                    lambda f: st.tuples(st.just(f), st.sampled_from(SWEEP_CHANGES[f]))
                ),
            ),
            max_size=12,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_the_sweep_leaving_open_rows_unparsed_keeps_what_the_full_parse_keeps(
    pages: list[list[tuple[str, int, tuple[str, Any]]]],
) -> None:
    asyncio.run(_sweep(pages))


@pytest.mark.asyncio
async def test_the_sweep_parses_only_the_rows_that_ended() -> None:
    venue = Venue("binance")
    adapter = _adapter(venue)
    rows = []
    for n, status in enumerate(["NEW"] * 18 + ["PARTIALLY_FILLED", "FILLED", "CANCELED"]):
        rows.append({**copy.deepcopy(BINANCE_ROW), "orderId": str(700 + n), "status": status})
    venue.answers["allOrders"] = rows
    await venue.ex.load_markets()
    parsed: list[int] = []
    parse_orders = adapter._parse_orders
    assert parse_orders is not None

    def counting(orders: Any, *args: Any) -> Any:
        parsed.append(len(orders))
        return parse_orders(orders, *args)

    adapter._parse_orders = counting
    try:
        ended = await adapter.fetch_closed_orders("LTC/USDT", since=None)
        assert sorted(o.id for o in ended) == ["719", "720"]
        assert parsed == [2]  # of 21 rows, the two that ended
    finally:
        await adapter.aclose()


@pytest.mark.asyncio
async def test_one_symbols_listing_after_every_symbols_holds_the_same_orders_unparsed() -> None:
    # Start-up lists every symbol, the polls then one symbol each: one order object per
    # resting order between the two, and nothing parsed again.
    venue = Venue("binance")
    adapter = _adapter(venue)
    rows = {}
    for n in range(6):
        row = {**copy.deepcopy(BINANCE_ROW), "orderId": str(900 + n)}
        row["symbol"] = "LTCUSDT" if n % 2 else "SOLUSDT"
        rows[row["orderId"]] = row
    venue.list_open(rows)
    await venue.ex.load_markets()
    try:
        every = {o.id: o for o in (await adapter.fetch_open_orders()).orders}
        parsed = adapter._listed.parsed_rows
        venue.list_open({k: r for k, r in rows.items() if r["symbol"] == "LTCUSDT"})  # as Binance
        ltc = (await adapter.fetch_open_orders(["LTC/USDT"])).orders
        assert adapter._listed.parsed_rows == parsed
        assert sorted(o.id for o in ltc) == ["901", "903", "905"]
        assert all(o is every[o.id] for o in ltc)
    finally:
        await adapter.aclose()
