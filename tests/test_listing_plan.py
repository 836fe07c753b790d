"""The open-orders listing plan: the cheapest listing each cycle, and what a listing proves.

Venues limit by weight: on Binance one listing of every symbol weighs 80, one of a
single symbol 6. An account with orders on two symbols is listed one symbol at a
time, and every symbol at start-up and every ``full_listing_interval_s`` (what finds
an order someone placed on a new symbol). A listing of some symbols proves nothing
about orders on the others: they are never marked vanished by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.base import Capabilities, OpenOrdersPage, RequestWeights
from adapters.profiles import BINANCE_WEIGHTS, KRAKEN
from adapters.sim import DEFAULT_CAPABILITIES
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.events import OrderAdopted, OrderCancelled
from nija_broker.core.models import Order, OrderStatus
from nija_broker.core.settings import ReconcilerSettings
from nija_broker.service.config import parse_config
from nija_broker.sync.listing import ListingChoice, choose_listing, scoped
from nija_broker.sync.weights import plan_weight

from ._reconciler_rig import RevocableExchange, Rig, make_rig

ALICE = "USER:alice"

BINANCE_LIKE = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    weights=BINANCE_WEIGHTS,
)
"""The sim behaving, as to weights, as Binance does."""


def listings(exchange: RevocableExchange) -> list[str | None]:
    """The scope of every open-orders request so far: a symbol, or ``None`` for all."""
    return [args["symbol"] for method, args in exchange.call_log if method == "fetch_open_orders"]


async def cycle(rig: Rig, after_s: float = 5.0) -> list[Any]:
    return await rig.sync(ALICE, after_s=after_s)


# ----------------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    ("symbols", "full_due", "expected"),
    [
        pytest.param(
            ["BTC/USDT", "ETH/USDT"],
            False,
            ListingChoice(("BTC/USDT", "ETH/USDT"), 12.0),
            id="two symbols: 12 against 80",
        ),
        pytest.param(["BTC/USDT", "ETH/USDT"], True, ListingChoice(None, 80.0), id="full due"),
        pytest.param([f"C{i}/USDT" for i in range(13)], False, None, id="13 x 6 = 78 < 80"),
        pytest.param(
            [f"C{i}/USDT" for i in range(14)],
            False,
            ListingChoice(None, 80.0),
            id="14 x 6 = 84: all at once is cheaper",
        ),
        pytest.param([], False, ListingChoice((), 0.0), id="no orders: nothing to ask"),
    ],
)
def test_the_cheapest_listing_is_chosen_from_the_weights_the_exchange_reports(
    symbols: list[str], full_due: bool, expected: ListingChoice | None
) -> None:
    choice = choose_listing(BINANCE_LIKE, symbols, full_due=full_due)
    if expected is None:
        assert choice.symbols == tuple(sorted(symbols))
        assert choice.weight == 78.0
    else:
        assert choice == expected


def test_an_order_on_a_market_the_exchange_no_longer_lists_is_found_by_listing_every_symbol() -> (
    None
):
    markets = {"BTC/USDT", "ETH/USDT"}
    assert choose_listing(BINANCE_LIKE, ["BTC/USDT"], full_due=False, markets=markets).symbols == (
        "BTC/USDT",
    )
    assert choose_listing(BINANCE_LIKE, ["LUNA/USDT"], full_due=False, markets=markets).every_symbol


def test_without_a_per_symbol_weight_every_cycle_lists_every_symbol() -> None:
    kraken = Capabilities(
        open_orders_without_symbol=True,
        fetch_order_by_client_id=True,
        watch_orders=False,
        weights=KRAKEN.rate.weights,
    )
    for caps in (DEFAULT_CAPABILITIES, kraken):
        assert caps.open_orders_symbol_weight is None
        assert choose_listing(caps, ["BTC/USD"], full_due=False).every_symbol


def _order(order_id: str, symbol: str) -> Order:
    return Order.model_validate(
        {
            "id": order_id,
            "account_id": ALICE,
            "symbol": symbol,
            "side": "buy",
            "type": "limit",
            "amount": 1.0,
            "price": 10.0,
            "status": "open",
            "created_at": "2026-03-01T00:00:00+00:00",
        }
    )


def test_a_listing_of_some_symbols_speaks_only_for_orders_on_those_symbols() -> None:
    tracked = {"b": _order("b", "BTC/USDT"), "e": _order("e", "ETH/USDT")}
    assert scoped(tracked, None) == tracked
    assert scoped(tracked, ("BTC/USDT",)) == {"b": tracked["b"]}
    assert scoped(tracked, ("BTC-USDT",)) == {"b": tracked["b"]}  # the bot's form too
    assert scoped(tracked, ()) == {}


# ----------------------------------------------------------------------------- on the sim


@pytest.mark.asyncio
async def test_orders_on_two_symbols_are_listed_per_symbol_between_full_listings(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE)
    rig.place(symbol="BTC/USD", price=90.0)
    rig.place(symbol="ETH/USD", price=9.0)
    exchange = rig.exchanges[ALICE]

    adopted = await cycle(rig)  # start-up: every symbol
    assert sum(isinstance(e, OrderAdopted) for e in adopted) == 2
    assert listings(exchange) == [None]
    for _ in range(60):  # five minutes of 5 s polls
        await cycle(rig)

    scopes = listings(exchange)
    # Start-up, then once full_listing_interval_s (300 s) had passed, in place of that
    # cycle's per-symbol listings; the 59 cycles between list the two symbols alone.
    assert scopes == [None] + ["BTC/USD", "ETH/USD"] * 59 + [None]
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_an_order_placed_on_a_new_symbol_is_adopted_within_the_full_listing_interval(
    tmp_path: Path,
) -> None:
    settings = ReconcilerSettings(full_listing_interval_s=60.0)
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE, settings=settings)
    rig.place(symbol="BTC/USD", price=90.0)
    await cycle(rig)
    await cycle(rig)  # per symbol now: BTC/USD only
    foreign = rig.place(symbol="ETH/USD", price=9.0)  # someone else, on the exchange's site

    waited_s, seen = 0.0, False
    while not seen:
        events = await cycle(rig)
        waited_s += 5.0
        seen = any(isinstance(e, OrderAdopted) and e.order.id == foreign.id for e in events)
        assert waited_s <= 60.0, "not adopted within full_listing_interval_s"
    assert rig.book(ALICE).orders.get(foreign.id).status is OrderStatus.OPEN
    # From then on its symbol is listed on its own.
    await cycle(rig)
    assert listings(rig.exchanges[ALICE])[-2:] == ["BTC/USD", "ETH/USD"]
    await rig.rec.aclose()


class OnlyBitcoin(RevocableExchange):
    """A sim account whose per-symbol listings answer, truthfully, for BTC/USD only: asked
    about ETH/USD it lists nothing, and its page says so (``symbols``)."""

    async def fetch_open_orders(self, symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        if symbols is None:
            return await super().fetch_open_orders(None)
        return await super().fetch_open_orders([s for s in symbols if s == "BTC/USD"])


@pytest.mark.asyncio
async def test_a_per_symbol_listing_never_marks_an_order_on_another_symbol_vanished(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE)
    exchange = rig.exchanges[ALICE]
    exchange.__class__ = OnlyBitcoin  # the reconciler holds this very object
    btc = rig.place(symbol="BTC/USD", price=90.0)
    eth = rig.place(symbol="ETH/USD", price=9.0)
    await cycle(rig)  # start-up, every symbol: both adopted

    seen: list[Any] = []
    for _ in range(10):
        seen += await cycle(rig)

    assert listings(exchange)[1:] == ["BTC/USD"] * 10  # ETH/USD never listed since
    assert not rig.rec._sync(ALICE).confirmations.unconfirmed  # nothing owed a confirmation
    assert exchange.calls["fetch_order"] == 0  # so none was asked for the ETH order
    assert not [e for e in seen if isinstance(e, OrderCancelled)]
    book = rig.book(ALICE)
    assert {book.orders.get(btc.id).status, book.orders.get(eth.id).status} == {OrderStatus.OPEN}
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_a_per_symbol_listing_still_finds_a_vanished_order_on_its_own_symbol(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE)
    btc = rig.place(symbol="BTC/USD", price=90.0)
    rig.place(symbol="ETH/USD", price=9.0)
    await cycle(rig)
    await cycle(rig)
    rig.engine.cancel_order(ALICE, btc.id)  # cancelled on the exchange's site

    events = await cycle(rig)

    # Missing from its own symbol's listing: asked about by id, and ended on that answer.
    assert rig.exchanges[ALICE].call_log[-1] == (
        "fetch_order",
        {"order_id": btc.id, "symbol": "BTC/USD"},
    )
    assert [e.order.id for e in events if isinstance(e, OrderCancelled)] == [btc.id]
    assert rig.book(ALICE).orders.get(btc.id).status is OrderStatus.CANCELLED
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_an_order_the_guard_placed_on_a_new_symbol_is_listed_in_the_next_cycle(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE)
    await cycle(rig)  # start-up: no orders, so nothing to list one by one afterwards
    await cycle(rig)
    exchange = rig.exchanges[ALICE]
    assert listings(exchange) == [None]
    # The guard records the exchange's answer to the order it sent.
    placed = rig.place(symbol="ETH/USD", price=9.0)
    rig.book(ALICE).apply_order(placed)
    rig.engine.cancel_order(ALICE, placed.id)  # and it is cancelled at once, elsewhere

    events = await cycle(rig)

    assert listings(exchange) == [None, "ETH/USD"]  # listed the cycle after, not later
    # Missing from its symbol's listing: owed a confirmation (asked once the visibility
    # window is over), then ended on the exchange's word.
    assert placed.id in rig.rec._sync(ALICE).confirmations
    assert not [e for e in events if isinstance(e, OrderCancelled)]
    events = await cycle(rig, after_s=10.0)
    assert [e.order.id for e in events if isinstance(e, OrderCancelled)] == [placed.id]
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_only_a_complete_listing_of_every_symbol_anchors_the_closed_orders_sweep(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE, clock=clock)
    rig.place(symbol="BTC/USD", price=90.0)
    await cycle(rig)
    listing = rig.rec._sync(ALICE).listing
    anchored = listing.last_complete_at
    assert anchored is not None
    for _ in range(10):
        await cycle(rig)  # per-symbol listings, complete for BTC/USD only
    assert listing.last_complete_at == anchored
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_default_capabilities_keep_one_listing_of_every_symbol_each_cycle(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path)
    rig.place(symbol="BTC/USD", price=90.0)
    for _ in range(5):
        await cycle(rig)
    assert listings(rig.exchanges[ALICE]) == [None] * 5
    await rig.rec.aclose()


# ----------------------------------------------------------------------------- the figure


def test_binance_weight_per_account_minute_at_the_defaults_leaves_room_under_250() -> None:
    settings = ReconcilerSettings()
    plan = plan_weight(
        BINANCE_LIKE,
        poll_interval_s=settings.poll_interval_s,
        balance_interval_s=settings.balance_interval_s,
        full_listing_interval_s=settings.full_listing_interval_s,
        symbols=2,
        ticker_symbols=2,
        sweep_requests=2,
        holdings_every_cycle=False,
    )
    # 12 cycles x 2 x 6, a full listing every 300 s in place of one cycle's, the balance
    # (20) and its tickers (2), the sweep's allOrders (20 per symbol).
    assert plan.listings == pytest.approx(11.8 * 12 + 0.2 * 80)
    assert (plan.balances, plan.sweep, plan.holdings) == (22.0, 40.0, 0.0)
    assert plan.total == pytest.approx(219.6)
    assert plan.accounts_per_limit(6000.0) == 27


@pytest.mark.asyncio
async def test_the_planned_and_spent_weight_show_on_the_accounts_live_view(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, capabilities=BINANCE_LIKE)
    rig.place(symbol="BTC/USD", price=90.0)
    rig.place(symbol="ETH/USD", price=9.0)
    for _ in range(13):
        await cycle(rig)
    await rig.rec.aclose()

    weight = rig.live[ALICE].request_weight
    assert weight is not None
    assert weight.unit == "request weight"
    assert weight.limit_per_min == 6000.0
    assert not weight.per_key
    # Listings as above, the balance and its one ticker (BTC held), the sim's sweep in
    # one request (it needs no symbol).
    assert weight.planned_per_min == pytest.approx(157.6 + 22 + 20)
    # The last minute: 12 cycles of two per-symbol listings, one balance refresh with its
    # ticker and sweep.
    assert weight.spent_last_min == pytest.approx(12 * 12 + 20 + 2 + 20)
    assert weight.listing.startswith("per symbol with orders (6 each)")


# ----------------------------------------------------------------------------- configuration


def test_full_listing_interval_defaults_to_300_s_and_is_set_per_table_and_account() -> None:
    config = parse_config(
        {
            "reconciler": {"full_listing_interval_s": 120},
            "accounts": [
                {"id": "a", "exchange": "binance", "full_listing_interval_s": 60},
                {"id": "b", "exchange": "binance"},
            ],
        }
    )
    settings = config.reconciler.settings(config.accounts)
    assert settings.full_listing_interval_for("a") == 60.0
    assert settings.full_listing_interval_for("b") == 120.0
    assert ReconcilerSettings().full_listing_interval_s == 300.0
    plain = parse_config({"accounts": [{"id": "c", "exchange": "binance"}]})
    assert plain.accounts[0].rate_budget == "venue"
    assert plain.reconciler.settings(plain.accounts).full_listing_interval_for("c") == 300.0


def test_rate_budget_off_reaches_the_exchange_spec() -> None:
    config = parse_config({"accounts": [{"id": "c", "exchange": "binance", "rate_budget": "off"}]})
    assert config.accounts[0].exchange_spec(environ={}).rate_budget == "off"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"reconciler": {"full_listing_interval_s": 0}}, r"reconciler: full_listing_interval_s"),
        (
            {"reconciler": {"full_listing_interval_s": "soon"}},
            r"reconciler\.full_listing_interval_s: Input should be a valid number",
        ),
        (
            {"accounts": [{"id": "a", "exchange": "binance", "full_listing_interval_s": -1}]},
            r"accounts\[0\]\(id='a'\)\.full_listing_interval_s: Input should be greater than 0",
        ),
        (
            {"accounts": [{"id": "a", "exchange": "binance", "rate_budget": "none"}]},
            r"accounts\[0\]\(id='a'\)\.rate_budget: Input should be 'venue' or 'off'",
        ),
    ],
)
def test_a_bad_value_of_the_new_keys_names_its_key(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_config(data)


def test_request_weights_without_a_per_symbol_listing_say_so() -> None:
    weights = RequestWeights.of({"fetch_open_orders": 3.0})
    caps = Capabilities(True, True, False, weights=weights)
    assert (caps.open_orders_weight, caps.open_orders_symbol_weight) == (3.0, None)
