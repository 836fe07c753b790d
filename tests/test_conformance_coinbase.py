"""Coinbase Advanced Trade conformance: recorded and documented bodies through real ccxt.

Each fixture under ``tests/fixtures/venues/coinbase/`` is answered to ccxt's own
``coinbase`` class offline: the instance's ``fetch`` is replaced, so the whole ccxt
method runs (request building, ccxt's ``handle_errors``, parsing) on the body, and
the adapter (:class:`~adapters.ccxt_adapter.CcxtExchange`, Coinbase profile) runs on
top of it. What the project reads is compared with the fixture's ``expected``.
Where ccxt recorded nothing for a situation, the fixture says so in ``notes`` and
takes its body from Advanced Trade's REST documentation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio

from adapters._ccxt_convert import convert_balance, convert_order, convert_status, convert_trade
from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.profiles import COINBASE
from adapters.ratelimit import RateBudget
from nija_broker.core import errors
from nija_broker.core.clock import FakeClock
from nija_broker.core.models import Order, OrderStatus, OrderType, Side
from tests._conformance import fill_figures, fixture, fixtures, order_figures, subset

VENUE = "coinbase"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALL = fixtures(VENUE)


def _named(*methods: str, errors_too: bool = False) -> list[Any]:
    return [
        pytest.param(content, id=name)
        for name, content in ALL
        if content["ccxt_method"] in methods and ("expected_error" in content) == errors_too
    ]


def _market(product: dict[str, Any]) -> dict[str, Any]:
    """A minimal unified ccxt market from one product (see markets_minimal_from_recorded)."""
    base, quote = product["base_currency_id"], product["quote_currency_id"]
    return {
        "id": product["product_id"],
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
        "settle": None,
        "type": "spot",
        "spot": True,
        "margin": False,
        "swap": False,
        "future": False,
        "option": False,
        "contract": False,
        "active": not product["trading_disabled"],
        "precision": {
            "amount": float(product["base_increment"]),
            "price": float(product["quote_increment"]),
        },
        "limits": {
            "amount": {"min": float(product["base_min_size"]), "max": None},
            "cost": {"min": float(product["quote_min_size"]), "max": None},
            "price": {"min": None, "max": None},
        },
    }


MARKETS = [
    _market(p) for p in fixture(VENUE, "markets_minimal_from_recorded.json")["body"]["products"]
]


class Wire:
    """ccxt's coinbase with ``fetch`` answering the fixture's bodies, in order."""

    def __init__(self, answers: list[dict[str, Any]], *, options: bool = True) -> None:
        # A bearer header stands in for the keys: ccxt signs nothing, builds everything else.
        self.ex = ccxt.coinbase({"headers": {"Authorization": "Bearer test"}})
        self.ex.set_markets(MARKETS)
        self.answers = list(answers)
        self.sent: list[str] = []
        self.bodies: list[Any] = []
        self.ex.fetch = self._fetch
        self.adapter = CcxtExchange(
            self.ex,
            account_id="USER_cb",
            clock=FakeClock(NOW),
            max_attempts=1,
            budget=RateBudget(1000.0, capacity=1000.0),
            profile=COINBASE if options else None,
        )
        if not options:  # ccxt's own defaults, as a plain ccxt user gets them
            self.ex.options = ccxt.coinbase().options

    async def _fetch(
        self, url: str, method: str = "GET", headers: Any = None, body: Any = None
    ) -> Any:
        self.sent.append(f"{method} {url}")
        self.bodies.append(json.loads(body) if body else None)
        answer = self.answers.pop(0)
        text = json.dumps(answer["body"])
        # What ccxt's own fetch does with an answer, so its error mapping runs too.
        self.ex.handle_errors(
            answer["status"], "", url, method, {}, text, answer["body"], headers, body
        )
        self.ex.handle_http_status_code(answer["status"], "", url, method, text)
        return json.loads(text)

    async def aclose(self) -> None:
        await self.ex.close()


def _answers(content: dict[str, Any]) -> list[dict[str, Any]]:
    if "answers" in content:
        return list(content["answers"])
    return [{"status": content.get("http_status", 200), "body": content["body"]}]


@pytest_asyncio.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    made: list[Wire] = []
    yield made
    for wire in made:
        await wire.aclose()


def _wire(made: list[Wire], content: dict[str, Any], *, options: bool = True) -> Wire:
    wire = Wire(_answers(content), options=options)
    made.append(wire)
    return wire


def _request(content: dict[str, Any]) -> OrderRequest:
    spec = content["request"]
    return OrderRequest(
        symbol=spec["symbol"],
        side=Side(spec["side"]),
        type=OrderType(spec["type"]),
        amount=spec["amount"],
        price=spec.get("price"),
        client_order_id=spec.get("client_order_id"),
        post_only=spec.get("post_only", False),
    )


@pytest.mark.asyncio
async def _order_through_adapter(wire: Wire, content: dict[str, Any]) -> Order:
    method = content["ccxt_method"]
    if method == "fetch_order":
        order_id, symbol = content["input"]
        return await wire.adapter.fetch_order(order_id, symbol)
    if method == "fetch_open_orders":
        page = await wire.adapter.fetch_open_orders()
        (order,) = page.orders
        return order
    if method == "fetch_closed_orders":
        (order,) = await wire.adapter.fetch_closed_orders(content["input"][0], None)
        return order
    if method == "create_order":
        return await wire.adapter.create_order(_request(content))
    if method == "cancel_order":
        order_id, symbol = content["input"]
        return await wire.adapter.cancel_order(order_id, symbol)
    raise AssertionError(f"no order call for {method}")


# -- the fixtures ---------------------------------------------------------------------


def test_every_fixture_cites_its_source_and_names_what_it_pins() -> None:
    assert len(ALL) >= 20
    for name, content in ALL:
        assert content["source"], name
        assert "ccxt/ccxt" in content["source"] or "docs.cdp.coinbase.com" in content["source"]
        assert content["situation"], name
        assert content["endpoint"], name
        if "ccxt/ccxt" not in content["source"]:
            assert content["notes"], f"{name}: a documented body says what the set lacks"
        assert "expected" in content, name


# -- orders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    _named(
        "fetch_order", "fetch_open_orders", "fetch_closed_orders", "create_order", "cancel_order"
    ),
)
@pytest.mark.asyncio
async def test_order_bodies_read_as_expected_through_ccxt_and_the_adapter(
    wires: list[Wire], content: dict[str, Any]
) -> None:
    wire = _wire(wires, content)
    order = await _order_through_adapter(wire, content)
    assert subset(order_figures(order), content["expected"]) == content["expected"]
    if "sent" in content:
        assert wire.sent == content["sent"]
    if "sent_body" in content:
        assert wire.bodies[0] == content["sent_body"]
    if "terminal" in content:
        assert order.is_terminal is content["terminal"]
    assert not wire.answers, "every answer was asked for"


@pytest.mark.parametrize(
    "content",
    [
        c
        for c in _named("fetch_order", "fetch_open_orders", "fetch_closed_orders")
        if "ccxt_expected" in c.values[0]
    ],
)
@pytest.mark.asyncio
async def test_ccxt_reads_post_only_time_in_force_and_the_fee_currency(
    wires: list[Wire], content: dict[str, Any]
) -> None:
    """What the Order model does not carry, pinned on ccxt's own dict."""
    wire = _wire(wires, content)
    method = getattr(wire.ex, content["ccxt_method"])
    raws = await (
        method() if content["ccxt_method"] == "fetch_open_orders" else method(content["input"][0])
    )
    (raw,) = raws
    assert {k: raw[k] for k in content["ccxt_expected"]} == content["ccxt_expected"]
    order = convert_order(raw, account_id="USER_cb", now=NOW)
    assert subset(order_figures(order), content["expected"]) == content["expected"]


@pytest.mark.parametrize("word", ["PENDING", "QUEUED", "CANCEL_QUEUED", "UNKNOWN_ORDER_STATUS"])
@pytest.mark.asyncio
async def test_coinbase_in_flight_statuses_never_read_as_terminal(
    wires: list[Wire], word: str
) -> None:
    content = fixture(VENUE, f"order_status_{word.lower()}.json")
    wire = _wire(wires, content)
    order = await wire.adapter.fetch_order(*content["input"])
    assert not order.is_terminal
    assert order.status is OrderStatus(content["expected"]["status"])


def test_statuses_ccxt_folds_into_canceled_keep_the_venue_word() -> None:
    # ccxt maps Coinbase EXPIRED and FAILED to 'canceled'; info.status keeps the truth.
    raw = {
        "id": "1",
        "symbol": "ADA/USDT",
        "side": "buy",
        "type": "limit",
        "price": 0.3,
        "amount": 10,
        "filled": 4,
        "status": "canceled",
        "timestamp": 1_700_000_000_000,
    }
    read = {
        word: convert_order(dict(raw, info={"status": word}), account_id="a", now=NOW).status
        for word in ("CANCELLED", "EXPIRED", "FAILED")
    }
    assert read == {
        "CANCELLED": OrderStatus.CANCELLED,
        "EXPIRED": OrderStatus.EXPIRED,
        "FAILED": OrderStatus.REJECTED,
    }
    assert convert_order(raw, account_id="a", now=NOW).status is OrderStatus.CANCELLED
    assert convert_status("CANCEL_QUEUED", 4.0) is OrderStatus.PARTIALLY_FILLED


@pytest.mark.asyncio
async def test_an_in_flight_order_does_not_blind_the_open_orders_listing(wires: list[Wire]) -> None:
    listing = fixture(VENUE, "open_orders_page_truncated.json")
    queued = fixture(VENUE, "order_status_queued.json")["body"]["order"]
    body = dict(
        listing["body"], orders=[*listing["body"]["orders"], dict(queued, order_id="queued-1")]
    )
    wire = _wire(wires, {"body": body})
    page = await wire.adapter.fetch_open_orders()
    assert {o.id: o.status for o in page.orders} == {
        "9fd0cadc-2ccc-45e8-b254-ea511c34e5b2": OrderStatus.PARTIALLY_FILLED,
        "queued-1": OrderStatus.OPEN,
    }
    assert page.problems == []


@pytest.mark.asyncio
async def test_our_client_order_id_is_what_coinbase_receives(wires: list[Wire]) -> None:
    """ccxt 4.5 sends its own 'ccxt-<uuid>' unless client_order_id itself is given."""
    content = fixture(VENUE, "create_limit_buy_post_only.json")
    plain = _wire(wires, {"answers": content["answers"][:1]}, options=False)
    await plain.ex.create_order(*content["input"])
    assert plain.bodies[0]["client_order_id"].startswith("ccxt-")
    wire = _wire(wires, content)
    order = await wire.adapter.create_order(_request(content))
    assert wire.bodies[0]["client_order_id"] == content["request"]["client_order_id"]
    assert order.client_order_id == content["request"]["client_order_id"]


@pytest.mark.asyncio
async def test_a_lost_create_is_found_by_its_client_order_id(wires: list[Wire]) -> None:
    """The scan look-up (open, then filled orders) matches the id Coinbase was given."""
    content = fixture(VENUE, "create_limit_buy_post_only.json")
    listing = fixture(VENUE, "open_orders_page_truncated.json")["body"]
    wire = _wire(wires, {"answers": [{"status": 200, "body": listing}]})
    found = await wire.adapter.fetch_order_by_client_id(
        content["request"]["client_order_id"], "ADA-USDT"
    )
    assert found.id == "9fd0cadc-2ccc-45e8-b254-ea511c34e5b2"
    assert wire.sent == [
        "GET https://api.coinbase.com/api/v3/brokerage/orders/historical/"
        "batch?order_status=OPEN&product_id=ADA-USDT&limit=100"
    ]


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", _named("create_order", "fetch_order", "cancel_order", errors_too=True)
)
@pytest.mark.asyncio
async def test_refusals_map_to_the_project_error_they_mean(
    wires: list[Wire], content: dict[str, Any]
) -> None:
    wire = _wire(wires, content)
    expected = getattr(errors, content["expected_error"])
    with pytest.raises(errors.ExchangeError) as caught:
        await _order_through_adapter(wire, content)
    assert type(caught.value) is expected
    assert isinstance(caught.value.__cause__, ccxt.BaseError)
    assert not isinstance(caught.value, errors.TransientError)


# -- trades ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_my_trades_read_as_fills_with_the_fee_as_charged(wires: list[Wire]) -> None:
    content = fixture(VENUE, "my_trades_spot_sell.json")
    wire = _wire(wires, content)
    (fill,) = await wire.adapter.fetch_my_trades(content["input"][0], None)
    assert subset(fill_figures(fill), content["expected"]) == content["expected"]
    assert wire.sent == content["sent"]
    raw = (await _wire(wires, content).ex.fetch_my_trades(content["input"][0]))[0]
    again = convert_trade(raw, account_id="USER_cb", now=NOW)
    assert subset(fill_figures(again), content["expected"]) == content["expected"]


@pytest.mark.asyncio
async def test_order_trades_are_the_symbols_fills_since_the_order_kept_to_it(
    wires: list[Wire],
) -> None:
    content = fixture(VENUE, "order_trades_spot_sell.json")
    spec = content["order"]
    order = Order(
        id=spec["id"],
        account_id="USER_cb",
        symbol=spec["symbol"],
        side=Side(spec["side"]),
        type=OrderType.MARKET,
        amount=spec["amount"],
        filled=spec["filled"],
        status=OrderStatus.FILLED,
        created_at=datetime.fromtimestamp(spec["created_ms"] / 1000, tz=UTC),
    )
    wire = _wire(wires, content)
    (fill,) = await wire.adapter.fetch_order_trades(order)
    assert subset(fill_figures(fill), content["expected"]) == content["expected"]
    assert wire.sent == content["sent"]


# -- balances and markets -------------------------------------------------------------


def _figures(balances: Any) -> dict[str, dict[str, float]]:
    return {c: {"free": b.free, "used": b.used, "total": b.total} for c, b in balances.items()}


@pytest.mark.asyncio
async def test_balance_comes_from_advanced_trade_accounts_with_holds_over_every_page(
    wires: list[Wire],
) -> None:
    content = fixture(VENUE, "balance_v3_accounts_paged.json")
    wire = _wire(wires, content)
    balances = await wire.adapter.fetch_balance()
    assert _figures(balances) == content["expected"]
    assert wire.sent == content["sent"]


@pytest.mark.asyncio
async def test_ccxt_default_v2_wallets_know_no_holds(wires: list[Wire]) -> None:
    """Why the profile switches: v2 wallets read free = total and sum staked ADA in."""
    content = fixture(VENUE, "balance_v2_wallets.json")
    wire = _wire(wires, content, options=False)
    raw = await wire.ex.fetch_balance(*content["input"])
    assert wire.sent == ["GET https://api.coinbase.com/v2/accounts?limit=3"]
    assert _figures(convert_balance(raw)) == content["expected"]


@pytest.mark.asyncio
async def test_markets_from_the_recorded_products(wires: list[Wire]) -> None:
    content = fixture(VENUE, "markets_minimal_from_recorded.json")
    wire = _wire(wires, {"answers": []})
    markets = await wire.adapter.load_markets()
    assert {
        s: {
            "base": m.base,
            "quote": m.quote,
            "amount_step": m.amount_step,
            "price_step": m.price_step,
            "min_amount": m.min_amount,
            "min_notional": m.min_notional,
        }
        for s, m in markets.items()
    } == content["expected"]
    assert wire.sent == []  # set on the instance: nothing asked
