"""Equity in the account's quote: every holding valued at the exchange's own prices.

Pure tables for the routes (direct, inverse, par, a stablecoin or USD leg),
properties of the valuation, and the reconciler on a USDT venue with the
default configuration (quote USD): the bug where such an account showed 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.events import BalancesUpdated
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.models import Balance, Market, Ticker
from nija_broker.core.reconcile import equity_of
from nija_broker.core.tiers import TierTable
from nija_broker.core.valuation import (
    LEGS,
    USD_PEGGED,
    Hop,
    at_par,
    order_symbols,
    prices_of,
    rate,
    route,
    ticker_price,
    tickers_to_fetch,
    value_balances,
)
from nija_broker.service.config import AccountConfig
from nija_broker.service.status import account_status
from nija_broker.state.books import Books
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import Reconciler


def held(**totals: float) -> dict[str, Balance]:
    return {c: Balance(currency=c, free=t, total=t) for c, t in totals.items()}


def market(symbol: str) -> Market:
    base, quote = symbol.split("/")
    return Market(symbol=symbol, base=base, quote=quote)


def markets(*symbols: str) -> dict[str, Market]:
    return {s: market(s) for s in symbols}


# ----------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("currency", "quote", "prices", "expected"),
    [
        pytest.param("USD", "USD", {}, 1.0, id="the-quote-itself"),
        pytest.param("BTC", "USD", {"BTC/USD": 50_000.0}, 50_000.0, id="direct"),
        pytest.param("EUR", "USD", {"USD/EUR": 0.8}, 1.25, id="inverse"),
        pytest.param("USDT", "USD", {}, 1.0, id="stablecoin-at-par-for-usd"),
        pytest.param("USD", "USDT", {}, 1.0, id="usd-at-par-for-a-stablecoin-quote"),
        pytest.param("USDC", "USDT", {}, 1.0, id="stablecoins-at-par"),
        pytest.param("PYUSD", "FDUSD", {}, 1.0, id="any-two-pegged"),
        pytest.param("USDT", "USD", {"USDT/USD": 0.998}, 0.998, id="a-listed-ticker-beats-par"),
        pytest.param("USDC", "USDT", {"USDT/USDC": 1.25}, 0.8, id="listed-inverse-beats-par"),
        pytest.param("BTC", "USD", {"BTC/USDT": 60_000.0}, 60_000.0, id="usdt-leg-at-par"),
        pytest.param(
            "BTC",
            "USD",
            {"BTC/USDT": 60_000.0, "USDT/USD": 0.5},
            30_000.0,
            id="usdt-leg-at-its-listed-price",
        ),
        pytest.param("BTC", "USDC", {"BTC/USDT": 60_000.0}, 60_000.0, id="stablecoin-quote"),
        pytest.param(
            "BTC",
            "EUR",
            {"BTC/USD": 50_000.0, "EUR/USD": 1.25},
            40_000.0,
            id="usd-leg-to-a-fiat-quote",
        ),
        pytest.param("USDC", "EUR", {"EUR/USD": 1.25}, 0.8, id="par-then-a-ticker"),
        pytest.param(
            "BTC", "USD", {"BTC/USD": 50_000.0, "BTC/USDT": 1.0}, 50_000.0, id="direct-beats-a-leg"
        ),
        pytest.param("EUR", "USD", {}, None, id="fiat-is-not-at-par"),
        pytest.param("BTC", "USD", {"BTC/EUR": 40_000.0}, None, id="no-fiat-legs"),
        pytest.param("BTC", "USD", {"BTC/USDT": 0.0}, None, id="a-zero-price-is-no-price"),
        pytest.param("JUNK", "USD", {"BTC/USDT": 60_000.0}, None, id="nothing-reaches-it"),
    ],
)
def test_rate_table(
    currency: str, quote: str, prices: dict[str, float], expected: float | None
) -> None:
    got = rate(currency, quote, prices)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_route_names_the_hops_it_takes() -> None:
    listed = {"BTC/USDT", "EUR/USD"}
    assert route("BTC", "USD", listed) == (Hop("BTC/USDT"), Hop(None))
    assert route("BTC", "BTC", listed) == ()
    assert route("USD", "EUR", listed) == (Hop("EUR/USD", inverse=True),)
    assert route("ETH", "USD", listed) is None


def test_legs_are_usd_first_and_all_pegged() -> None:
    assert LEGS[0] == "USD"
    assert set(LEGS) == USD_PEGGED
    assert {"USD", "USDT", "USDC", "FDUSD", "DAI", "PYUSD", "TUSD", "USDP", "BUSD"} <= USD_PEGGED
    assert at_par("USDT", "USD")
    assert at_par("EUR", "EUR")
    assert not at_par("EUR", "USD")


@pytest.mark.parametrize(
    ("ticker", "price"),
    [
        (Ticker(symbol="BTC/USDT", last=100.0, bid=99.0, ask=101.0), 100.0),
        (Ticker(symbol="BTC/USDT", bid=99.0, ask=101.0), 100.0),
        (Ticker(symbol="BTC/USDT", bid=99.0), 99.0),
        (Ticker(symbol="BTC/USDT", ask=101.0), 101.0),
        (Ticker(symbol="BTC/USDT"), None),
    ],
)
def test_ticker_price_is_last_else_mid_else_either_side(
    ticker: Ticker, price: float | None
) -> None:
    assert ticker_price(ticker) == price
    assert prices_of({ticker.symbol: ticker}) == ({} if price is None else {"BTC/USDT": price})


# ----------------------------------------------------------------------------- balances


def test_usdt_account_with_the_default_usd_quote_is_valued_in_full() -> None:
    """The bug: 10,000 USDT and 0.1 BTC on a Binance-like venue, quote USD (the default)."""
    valued = value_balances(held(USDT=10_000.0, BTC=0.1), {"BTC/USDT": 60_000.0}, "USD")
    assert valued.equity == pytest.approx(16_000.0)
    assert valued.values == {"BTC": pytest.approx(6_000.0), "USDT": 10_000.0}
    assert valued.unvalued == ()
    assert valued.established
    assert valued.problem is None


@pytest.mark.parametrize(
    ("balances", "prices", "quote", "equity", "unvalued"),
    [
        (held(USD=100.0, BTC=0.5, DOGE=10.0, ETH=0.0), {"BTC/USD": 200.0}, "USD", 200.0, ("DOGE",)),
        (held(USDC=50.0, USDT=50.0, FDUSD=1.0), {}, "USD", 101.0, ()),
        (held(USDC=100.0), {}, "USDC", 100.0, ()),
        (held(USDT=100.0, ETH=1.0), {"ETH/USDC": 3_000.0}, "USDT", 3_100.0, ()),
        (held(EUR=100.0, BTC=0.01), {"BTC/EUR": 40_000.0}, "EUR", 500.0, ()),
        (held(), {}, "USD", 0.0, ()),
        (held(JUNK=1_000.0, LDBTC=0.1), {"BTC/USDT": 60_000.0}, "USD", 0.0, ("JUNK", "LDBTC")),
    ],
)
def test_value_balances_table(
    balances: dict[str, Balance],
    prices: dict[str, float],
    quote: str,
    equity: float,
    unvalued: tuple[str, ...],
) -> None:
    valued = value_balances(balances, prices, quote)
    assert valued.equity == pytest.approx(equity)
    assert valued.unvalued == unvalued


def test_a_balance_without_total_counts_free_plus_used() -> None:
    balances = {"BTC": Balance(currency="BTC", free=0.1, used=0.1, total=0.0)}
    assert value_balances(balances, {"BTC/USD": 100.0}, "USD").equity == pytest.approx(20.0)


def test_equity_is_not_established_when_only_unvalued_holdings_are_held() -> None:
    nothing = value_balances(held(JUNK=5.0), {}, "USD")
    assert not nothing.established
    assert nothing.problem is not None
    assert "JUNK" in nothing.problem
    assert "USD" in nothing.problem
    # Some value and some unvalued: equity is what is valued, the rest listed.
    some = value_balances(held(JUNK=5.0, USDT=1.0), {}, "USD")
    assert some.established
    assert (some.equity, some.unvalued) == (1.0, ("JUNK",))
    # Nothing at all is an empty account, worth 0, not an unknown one.
    assert value_balances({}, {}, "USD").established


def test_equity_of_delegates_to_the_valuation() -> None:
    tickers = {"BTC/USDT": Ticker(symbol="BTC/USDT", last=60_000.0)}
    assert equity_of(held(USDT=10_000.0, BTC=0.1, JUNK=1.0), tickers, "USD") == (
        pytest.approx(16_000.0),
        ("JUNK",),
    )


# ----------------------------------------------------------------------------- what to fetch


BINANCE = markets("BTC/USDT", "BTC/USDC", "ETH/USDT", "ETH/BTC", "USDC/USDT", "SOL/USDC")
KRAKEN = markets("BTC/USD", "ETH/USD", "USDT/USD", "USDC/USD", "EUR/USD", "BTC/EUR")


@pytest.mark.parametrize(
    ("balances", "quote", "listed", "expected"),
    [
        pytest.param(
            held(USDT=10_000.0, BTC=0.1), "USD", BINANCE, ["BTC/USDT"], id="binance-default-quote"
        ),
        pytest.param(held(USDC=5.0, SOL=1.0), "USD", BINANCE, ["SOL/USDC"], id="binance-usdc-leg"),
        pytest.param(
            held(USDC=5.0), "USDT", BINANCE, ["USDC/USDT"], id="a-listed-stablecoin-pair-is-fetched"
        ),
        pytest.param(
            held(USDT=5.0, USDC=5.0, BTC=1.0),
            "USD",
            KRAKEN,
            ["BTC/USD", "USDC/USD", "USDT/USD"],
            id="kraken-direct",
        ),
        pytest.param(
            held(EUR=5.0, BTC=1.0), "USD", KRAKEN, ["BTC/USD", "EUR/USD"], id="kraken-fiat"
        ),
        pytest.param(held(USD=5.0), "USD", KRAKEN, [], id="only-the-quote"),
        pytest.param(held(JUNK=5.0, BTC=0.0), "USD", BINANCE, [], id="unroutable-and-empty"),
        pytest.param(
            held(USDT=5.0, BTC=1.0), "USD", {}, ["BTC/USD"], id="no-markets-known-direct-guess"
        ),
    ],
)
def test_tickers_to_fetch_table(
    balances: dict[str, Balance], quote: str, listed: dict[str, Market], expected: list[str]
) -> None:
    assert tickers_to_fetch(balances, quote, listed) == expected


@pytest.mark.parametrize(
    ("balances", "quote", "listed", "expected"),
    [
        pytest.param(held(USDT=1.0, BTC=0.1), "USD", BINANCE, {"BTC/USDT"}, id="usdt-held"),
        pytest.param(
            held(USDT=1.0, USDC=1.0, BTC=0.1),
            "USD",
            BINANCE,
            {"BTC/USDT", "BTC/USDC"},
            id="every-money-currency-held",
        ),
        pytest.param(held(BTC=0.1), "USD", BINANCE, {"BTC/USDT"}, id="the-market-it-is-valued-on"),
        pytest.param(held(USD=1.0, BTC=0.1), "USD", KRAKEN, {"BTC/USD"}, id="kraken"),
        pytest.param(held(USDT=1.0), "USD", BINANCE, set(), id="money-has-no-order-market"),
        pytest.param(held(BTC=0.1), "USD", {}, {"BTC/USD"}, id="no-markets-known"),
    ],
)
def test_order_symbols_table(
    balances: dict[str, Balance], quote: str, listed: dict[str, Market], expected: set[str]
) -> None:
    assert order_symbols(balances, quote, listed) == expected


# ----------------------------------------------------------------------------- properties

_CURRENCIES = ["USD", "USDT", "USDC", "DAI", "EUR", "BTC", "ETH", "SOL", "JUNK"]
_SYMBOLS = [
    "BTC/USD",
    "BTC/USDT",
    "BTC/USDC",
    "ETH/USDT",
    "ETH/BTC",
    "SOL/USDC",
    "USDT/USD",
    "USDC/USDT",
    "EUR/USD",
    "BTC/EUR",
]
_balances = st.dictionaries(
    st.sampled_from(_CURRENCIES),
    st.floats(0.0, 1e6, allow_nan=False),
    max_size=len(_CURRENCIES),
).map(lambda totals: held(**totals))
_prices = st.dictionaries(st.sampled_from(_SYMBOLS), st.floats(1e-3, 1e5), max_size=6)
_quotes = st.sampled_from(["USD", "USDT", "USDC", "EUR", "BTC"])


@settings(max_examples=200, deadline=None)
@given(balances=_balances, prices=_prices, quote=_quotes)
def test_every_holding_is_valued_or_listed_and_equity_is_their_sum(
    balances: dict[str, Balance], prices: dict[str, float], quote: str
) -> None:
    valued = value_balances(balances, prices, quote)
    held_now = {c for c, b in balances.items() if b.total > 0}
    assert set(valued.values) | set(valued.unvalued) == held_now
    assert not set(valued.values) & set(valued.unvalued)
    assert all(v >= 0 for v in valued.values.values())
    assert valued.equity == pytest.approx(sum(valued.values.values()))
    if quote in held_now:
        assert valued.values[quote] == balances[quote].total
    assert valued.established is not (bool(valued.unvalued) and valued.equity <= 0)


@settings(max_examples=200, deadline=None)
@given(
    balances=_balances,
    listed=st.sets(st.sampled_from(_SYMBOLS)),
    quote=_quotes,
    price=st.floats(1e-3, 1e5),
)
def test_fetching_what_is_asked_for_values_everything_the_markets_can_value(
    balances: dict[str, Balance], listed: set[str], quote: str, price: float
) -> None:
    """Planning and valuing walk the same routes: the planned tickers are enough."""
    venue = markets(*listed)
    asked = tickers_to_fetch(balances, quote, venue) if venue else []
    assert set(asked) <= listed
    valued = value_balances(balances, dict.fromkeys(asked, price), quote)
    for currency in valued.unvalued:
        assert route(currency, quote, listed) is None


@settings(max_examples=100, deadline=None)
@given(balances=_balances, prices=_prices, quote=_quotes, factor=st.floats(0.5, 4.0))
def test_equity_scales_with_the_holdings(
    balances: dict[str, Balance], prices: dict[str, float], quote: str, factor: float
) -> None:
    scaled = {
        c: Balance(currency=c, free=b.free * factor, total=b.total * factor)
        for c, b in balances.items()
    }
    assert value_balances(scaled, prices, quote).equity == pytest.approx(
        value_balances(balances, prices, quote).equity * factor, rel=1e-9, abs=1e-9
    )


# ----------------------------------------------------------------------------- the reconciler

ALICE = "USER:alice"
BTC_USDT = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=1e-5,
    price_step=0.01,
    min_amount=1e-5,
    min_notional=5.0,
)


@dataclass
class Venue:
    reconciler: Reconciler
    live: AccountLive
    books: Books
    store: Store
    clock: FakeClock
    exchange: SimExchange


def _venue(tmp_path: Path, balances: dict[str, float]) -> Venue:
    """A Binance-like sim venue (BTC/USDT only) and an account in the default configuration."""
    clock = FakeClock()
    engine = SimEngine(seed=1, clock=clock)
    engine.add_market(BTC_USDT, 60_000.0)
    engine.open_account(ALICE, balances)
    quote = AccountConfig(id=ALICE, exchange="binance").quote_currency  # no quote_currency set
    assert quote == "USD"
    live = AccountLive.create(ALICE, TierTable(), quote_currency=quote)
    store = Store(tmp_path / "state.sqlite3")
    books = Books(store, clock=clock)
    exchange = SimExchange(engine, ALICE)
    reconciler = Reconciler(books, {ALICE: exchange}, {ALICE: live}, clock=clock)
    return Venue(reconciler, live, books, store, clock, exchange)


@pytest.mark.asyncio
async def test_usdt_venue_with_the_default_usd_quote_gets_its_full_equity_and_tier(
    tmp_path: Path,
) -> None:
    venue = _venue(tmp_path, {"USDT": 10_000.0, "BTC": 0.1})
    live = venue.live
    events = venue.reconciler.subscribe()
    health = await venue.reconciler.sync_once(ALICE)
    assert health.state is SyncState.OK
    assert live.equity_usd == pytest.approx(16_000.0)
    assert live.policy() is not None
    assert live.policy().name == "STANDARD"  # type: ignore[union-attr]
    assert live.unvalued_holdings == ()
    assert live.reported_health().state is SyncState.OK
    updates = [e for e in events.drain() if isinstance(e, BalancesUpdated)]
    assert [(u.equity_usd, u.unpriced) for u in updates] == [(pytest.approx(16_000.0), ())]
    assert [p.equity for p in venue.store.equity_points(ALICE)] == [pytest.approx(16_000.0)]
    await venue.reconciler.aclose()
    venue.store.close()


@pytest.mark.asyncio
async def test_an_account_holding_only_what_nothing_values_is_degraded_not_zero(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    venue = _venue(tmp_path, {"JUNK": 1_000.0})
    live = venue.live
    with caplog.at_level(logging.WARNING, logger="nija_broker.reconciler"):
        await venue.reconciler.sync_once(ALICE)
        venue.clock.advance(120)  # past the balance interval: balances are refreshed again
        await venue.reconciler.sync_once(ALICE)
    assert venue.exchange.calls["fetch_balance"] >= 2
    assert venue.reconciler.health(ALICE).state is SyncState.OK  # the cycles succeed
    reported = live.reported_health()
    assert reported.state is SyncState.DEGRADED
    assert "JUNK" in (reported.last_error or "")
    assert live.equity_usd is None  # unknown, not 0
    assert live.policy() is None  # so no BELOW_MIN either: entries fail closed as unknown
    assert live.unvalued_holdings == ("JUNK",)
    assert venue.store.equity_points(ALICE) == []  # no false zero on the equity curve
    warnings = [r for r in caplog.records if "JUNK" in r.getMessage()]
    assert len(warnings) == 1  # once, not on every refresh
    row = account_status(venue.books.get(ALICE), live, venue.clock.now())
    assert (row.sync, row.equity_usd, row.unvalued_holdings) == ("degraded", None, ("JUNK",))
    await venue.reconciler.aclose()
    venue.store.close()
