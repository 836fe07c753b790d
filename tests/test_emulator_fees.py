"""Fees charged as the venues charge them: the engine's fee modes, then what the emulators say.

The engine's books first: which asset pays a fill's fee under each fee mode,
what resting orders hold, and where a fee goes when its asset cannot pay.
Then real ccxt over loopback: what ``fetch_my_trades`` and
``fetch_order_trades`` report from the Binance and Kraken emulators is exactly
what the engine charged, the balances move by exactly that, and the numbers
on the wire are fixed-point strings without float dust.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import ccxt.async_support as ccxt
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import OrderRequest
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.sim.engine import FeeMode, SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import InsufficientFunds, InvalidOrder, OrderNotFound
from nija_broker.core.models import Market, OrderType, Side

from ._emulator_support import EmulatorRig, serving

RATE = 0.001
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
BNB = Market(symbol="BNB/USDT", base="BNB", quote="USDT", amount_step=0.001, price_step=0.01)
ETH_BTC = Market(symbol="ETH/BTC", base="ETH", quote="BTC", amount_step=0.001, price_step=0.00001)


def books(**markets: float) -> SimEngine:
    engine = SimEngine(
        clock=FakeClock(datetime(2026, 3, 1, tzinfo=UTC)), maker_fee=RATE, taker_fee=RATE
    )
    engine.add_market(BTC, 50_000.0)
    engine.add_market(BNB, 600.0)
    if markets.get("eth_btc"):
        engine.add_market(ETH_BTC, markets["eth_btc"])
    return engine


def market(side: Side, amount: float, symbol: str = "BTC/USDT") -> OrderRequest:
    return OrderRequest(symbol=symbol, side=side, type=OrderType.MARKET, amount=amount)


def limit(side: Side, amount: float, price: float) -> OrderRequest:
    return OrderRequest(
        symbol="BTC/USDT", side=side, type=OrderType.LIMIT, amount=amount, price=price
    )


def totals(engine: SimEngine, account: str) -> dict[str, float]:
    return {c: b.total for c, b in engine.balances(account).items()}


def charged(engine: SimEngine, account: str) -> list[tuple[float | None, str | None, float]]:
    return [(f.fee_cost, f.fee_currency, f.fee) for f in engine.trades(account)]


# ------------------------------------------------------------------- the engine


def test_quote_mode_fills_name_the_quote_and_cost_what_they_are_worth() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 1_000.0})
    order = engine.place_order("A", market(Side.BUY, 0.002))
    assert charged(engine, "A") == [(0.1, "USDT", 0.1)]
    assert order.fee == 0.1
    assert totals(engine, "A") == {"USDT": 899.9, "BTC": 0.002}


def test_base_for_buys_buy_is_credited_amount_less_fee_and_debited_exactly_its_cost() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 100.0}, fee_mode="base_for_buys")
    order = engine.place_order("A", market(Side.BUY, 0.002))  # exactly its cost: no fee in quote
    assert charged(engine, "A") == [(0.000002, "BTC", 0.1)]
    assert order.fee == 0.1  # Order.fee stays the fees' quote value
    assert totals(engine, "A") == {"USDT": 0.0, "BTC": 0.001998}
    assert engine.trades("A")[0].base_fee == 0.000002


def test_base_for_buys_sell_pays_its_fee_in_quote_out_of_the_proceeds() -> None:
    engine = books()
    engine.open_account("A", {"BTC": 0.01}, fee_mode="base_for_buys")
    engine.place_order("A", market(Side.SELL, 0.002))
    assert charged(engine, "A") == [(0.1, "USDT", 0.1)]
    assert totals(engine, "A") == {"USDT": 99.9, "BTC": 0.008}


def test_base_for_buys_resting_buy_holds_only_its_cost() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 80.0}, fee_mode="base_for_buys")
    order = engine.place_order("A", limit(Side.BUY, 0.002, 40_000.0))
    usdt = engine.balances("A")["USDT"]
    assert (usdt.free, usdt.used) == (0.0, 80.0)
    engine.set_price("BTC/USDT", 40_000.0)
    assert engine.get_order("A", order.id).is_terminal
    assert totals(engine, "A") == {"USDT": 0.0, "BTC": 0.001998}
    assert engine.balances("A")["USDT"].used == 0.0


def test_third_asset_fee_is_valued_at_its_market_and_taken_in_that_asset() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 100.0, "BNB": 1.0}, fee_mode="BNB")
    engine.place_order("A", market(Side.BUY, 0.002))  # 100 USDT: the fee needs no quote
    # 0.1 USDT of fee at 600 USDT a BNB is 0.000166666..., rounded to 8 decimals.
    assert charged(engine, "A") == [(0.00016667, "BNB", 0.100002)]
    assert totals(engine, "A") == {"USDT": 0.0, "BTC": 0.002, "BNB": 0.99983333}
    assert engine.truth("A").fills == tuple(engine.trades("A"))


def test_third_asset_fee_falls_back_to_quote_when_the_asset_runs_out() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 1_000.0, "BNB": 0.0001}, fee_mode="BNB")
    engine.place_order("A", market(Side.BUY, 0.002))  # needs 0.00016667 BNB, has 0.0001
    engine.place_order("A", market(Side.SELL, 0.001))  # needs 0.00008333: BNB pays
    assert charged(engine, "A") == [(0.1, "USDT", 0.1), (0.00008333, "BNB", 0.049998)]
    assert totals(engine, "A") == {"USDT": 949.9, "BTC": 0.001, "BNB": 0.00001667}


def test_binance_rule_takes_the_fee_from_the_base_received_when_bnb_runs_out() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 100.0}, fee_mode=FeeMode(asset="BNB", buys_in_base=True))
    engine.place_order("A", market(Side.BUY, 0.002))
    assert charged(engine, "A") == [(0.000002, "BTC", 0.1)]
    assert engine.fee_mode("A").name == "BNB, else base_for_buys"


def test_third_asset_without_a_market_to_value_it_leaves_the_fee_in_quote() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 1_000.0, "KFEE": 1_000.0}, fee_mode="KFEE")
    engine.place_order("A", market(Side.BUY, 0.002))  # there is no KFEE/USDT market
    assert charged(engine, "A") == [(0.1, "USDT", 0.1)]
    assert totals(engine, "A")["KFEE"] == 1_000.0


def test_third_asset_that_is_the_orders_quote_is_worth_one_of_itself() -> None:
    engine = books(eth_btc=0.05)
    engine.open_account("A", {"BTC": 0.06}, fee_mode="BTC")
    engine.place_order("A", market(Side.BUY, 1.0, "ETH/BTC"))
    assert charged(engine, "A") == [(0.00005, "BTC", 0.00005)]
    assert totals(engine, "A") == {"BTC": 0.00995, "ETH": 1.0}


def test_asset_held_by_a_resting_order_never_pays_a_fee() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 1_000.0, "BNB": 1.0}, fee_mode="BNB")
    engine.place_order(
        "A",
        OrderRequest(
            symbol="BNB/USDT", side=Side.SELL, type=OrderType.LIMIT, amount=1.0, price=700.0
        ),
    )  # holds all the BNB
    engine.place_order("A", market(Side.BUY, 0.002))
    assert charged(engine, "A") == [(0.1, "USDT", 0.1)]
    assert engine.balances("A")["BNB"].used == 1.0


def test_selling_the_fee_asset_pays_the_fee_from_what_is_left_of_it() -> None:
    engine = books()
    engine.open_account("A", {"BNB": 1.0005}, fee_mode="BNB")
    engine.place_order("A", market(Side.SELL, 0.5, "BNB/USDT"))
    engine.place_order("A", market(Side.SELL, 0.5, "BNB/USDT"))  # nothing left: quote pays
    assert charged(engine, "A") == [(0.0005, "BNB", 0.3), (0.3, "USDT", 0.3)]
    assert totals(engine, "A") == {"BNB": 0.0, "USDT": 599.7}


def test_quote_mode_market_buy_still_needs_its_fee_in_quote() -> None:
    engine = books()
    engine.open_account("A", {"USDT": 100.0})
    with pytest.raises(InsufficientFunds):
        engine.place_order("A", market(Side.BUY, 0.002))


def test_fees_are_rounded_to_the_fee_decimals_in_decimal_arithmetic() -> None:
    engine = books()
    engine.set_price("BTC/USDT", 40_000.0)
    engine.open_account("A", {"USDT": 1_000.0})
    assert 0.0013 * 40_000.0 * RATE == 0.052000000000000005  # what float arithmetic gives
    engine.place_order("A", market(Side.BUY, 0.0013))
    assert charged(engine, "A") == [(0.052, "USDT", 0.052)]
    assert totals(engine, "A") == {"USDT": 947.948, "BTC": 0.0013}
    coarse = SimEngine(maker_fee=0.0026, taker_fee=0.0026, fee_decimals=2)
    coarse.add_market(BTC, 50_000.0)
    coarse.open_account("A", {"USDT": 1_000.0})
    coarse.place_order("A", market(Side.BUY, 0.00123))  # 0.15990 rounds to 0.16
    assert charged(coarse, "A") == [(0.16, "USDT", 0.16)]


@pytest.mark.parametrize("fee_mode", ["bnb", "base-for-buys", "", "quote "])
def test_unknown_fee_mode_is_refused(fee_mode: str) -> None:
    with pytest.raises(ValueError, match="fee_mode"):
        books().open_account("A", {"USDT": 1.0}, fee_mode=fee_mode)


_op = st.tuples(
    st.sampled_from(["limit", "market", "price", "cancel", "bnb"]),
    st.sampled_from(list(Side)),
    st.integers(1, 30),
    st.integers(-20, 20),
)
MODES = ["quote", "base_for_buys", "BNB", FeeMode(asset="BNB", buys_in_base=True)]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(MODES), st.lists(_op, max_size=25))
def test_balances_move_by_exactly_the_legs_and_fees_the_fills_report(
    mode: FeeMode | str, ops: list[tuple[str, Side, int, int]]
) -> None:
    engine = books()
    start = {"USDT": 5_000.0, "BTC": 0.05, "BNB": 0.01}
    engine.open_account("A", start, fee_mode=mode)
    for op, side, size, offset in ops:
        price = 50_000.0 + offset * 100
        try:
            if op == "limit":
                engine.place_order("A", limit(side, size * 0.0001, price))
            elif op == "market":
                engine.place_order("A", market(side, size * 0.0001))
            elif op == "bnb":
                engine.place_order("A", market(side, size * 0.001, "BNB/USDT"))
            elif op == "price":
                engine.set_price("BTC/USDT", price)
            else:
                engine.cancel_order("A", str(size))
        except (InvalidOrder, InsufficientFunds, OrderNotFound):
            pass
    expected = dict(start)
    for fill in engine.trades("A"):
        base, quote = fill.symbol.split("/")
        sign = 1 if fill.side is Side.BUY else -1
        expected[base] += sign * fill.amount
        expected[quote] -= sign * fill.notional
        assert fill.fee_currency is not None
        assert fill.fee_cost is not None
        expected[fill.fee_currency] -= fill.fee_cost
    balances = engine.balances("A")
    for currency, amount in expected.items():
        assert amount >= -1e-9, f"{currency} went below zero: {amount}"
        assert balances[currency].total == pytest.approx(max(amount, 0.0), abs=1e-9)
    hold_rate = 0.0 if FeeMode.parse(mode).buys_in_base else RATE
    held_usdt = sum(
        o.remaining * (o.price or 0.0) * (1 + hold_rate)
        for o in engine.open_orders("A")
        if o.side is Side.BUY
    )
    assert balances["USDT"].used == pytest.approx(held_usdt, abs=1e-9)
    assert all(b.free + b.used == pytest.approx(b.total) for b in balances.values())


# ----------------------------------------------------------- Binance over loopback

BINANCE_KEYS = {
    "USER:quote": ("quote-key-1", "quote-secret-1"),
    "USER:base": ("base-key-2", "base-secret-2"),
    "USER:bnb": ("bnb-key-3", "bnb-secret-3"),
    "USER:bnb-low": ("bnb-low-key-4", "bnb-low-secret-4"),
}
BINANCE_ACCOUNTS: dict[str, tuple[str, dict[str, float]]] = {
    "USER:quote": ("quote", {"USDT": 10_000.0, "BTC": 0.5}),
    "USER:base": ("base_for_buys", {"USDT": 10_000.0, "BTC": 0.5}),
    "USER:bnb": ("BNB", {"USDT": 10_000.0, "BTC": 0.5, "BNB": 1.0}),
    "USER:bnb-low": ("BNB", {"USDT": 10_000.0, "BTC": 0.5, "BNB": 0.0001}),
}
BinanceRig = EmulatorRig[EmulatorServer]
Fee = tuple[float, str]


def _binance(url: str, api_key: str, secret: str) -> ccxt.binance:
    return ccxt.binance(binance_ccxt_config(url, api_key, secret))


@pytest_asyncio.fixture
async def binance() -> AsyncIterator[BinanceRig]:
    engine = SimEngine(seed=3, clock=SystemClock(), maker_fee=RATE, taker_fee=RATE)
    engine.add_market(BTC, 50_000.0)
    engine.add_market(BNB, 600.0)
    for account, (mode, balances) in BINANCE_ACCOUNTS.items():
        engine.open_account(account, balances, fee_mode=mode)
    async with serving(EmulatorServer, engine, BINANCE_KEYS, _binance) as rig:
        yield rig
        assert not rig.server.not_found, dict(rig.server.not_found)


def fees(trades: list[dict[str, Any]]) -> list[Fee]:
    return [(t["fee"]["cost"], t["fee"]["currency"]) for t in trades]


@pytest.mark.parametrize(
    ("account", "buy_fee", "sell_fee", "after"),
    [
        pytest.param(
            "USER:quote",
            (0.1, "USDT"),
            (0.05, "USDT"),
            {"USDT": 9_949.85, "BTC": 0.501},
            id="quote",
        ),
        pytest.param(
            "USER:base",
            (0.000002, "BTC"),
            (0.05, "USDT"),
            {"USDT": 9_949.95, "BTC": 0.500998},
            id="base_for_buys",
        ),
        pytest.param(
            "USER:bnb",
            (0.00016667, "BNB"),
            (0.00008333, "BNB"),
            {"USDT": 9_950.0, "BTC": 0.501, "BNB": 0.99975},
            id="bnb",
        ),
        pytest.param(
            "USER:bnb-low",
            (0.1, "USDT"),
            (0.00008333, "BNB"),
            {"USDT": 9_949.9, "BTC": 0.501, "BNB": 0.00001667},
            id="bnb-runs-out",
        ),
    ],
)
@pytest.mark.integration
@pytest.mark.asyncio
async def test_binance_round_trip_reports_each_fee_in_the_asset_and_amount_charged(
    binance: BinanceRig, account: str, buy_fee: Fee, sell_fee: Fee, after: Mapping[str, float]
) -> None:
    ex = binance.raw(account)
    try:
        buy = await ex.create_order("BTC/USDT", "market", "buy", 0.002)
        sell = await ex.create_order("BTC/USDT", "market", "sell", 0.001)
        buy_trades = await ex.fetch_order_trades(buy["id"], "BTC/USDT")
        sell_trades = await ex.fetch_order_trades(sell["id"], "BTC/USDT")
        mine = await ex.fetch_my_trades("BTC/USDT")
        balance = await ex.fetch_balance()
    finally:
        await ex.close()

    assert fees(buy["trades"]) == [buy_fee]  # the FULL answer's fills
    assert fees(sell["trades"]) == [sell_fee]
    assert [t["order"] for t in buy_trades] == [buy["id"]]  # myTrades with orderId: its own
    assert fees(buy_trades) == [buy_fee]
    assert fees(sell_trades) == [sell_fee]
    assert fees(mine) == [buy_fee, sell_fee]
    assert {c: balance["total"][c] for c in after} == after
    engine = binance.engine
    assert [(f.fee_cost, f.fee_currency) for f in engine.trades(account)] == [buy_fee, sell_fee]
    assert totals(engine, account) == after
    assert binance.server.requests["GET /api/v3/myTrades"] == 3


FIXED_8 = re.compile(r"^\d+\.\d{8}$")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_binance_trade_numbers_are_fixed_8_decimal_strings_without_float_dust(
    binance: BinanceRig,
) -> None:
    binance.engine.set_price("BTC/USDT", 40_000.0)
    assert 0.0013 * 40_000.0 * RATE == 0.052000000000000005
    quote, base = binance.raw("USER:quote"), binance.raw("USER:base")
    try:
        full = await quote.create_order("BTC/USDT", "market", "buy", 0.0013)
        await base.create_order("BTC/USDT", "market", "buy", 0.0013)
        rows = [t["info"] for t in await quote.fetch_my_trades("BTC/USDT")]
        rows += [t["info"] for t in await base.fetch_my_trades("BTC/USDT")]
    finally:
        await quote.close()
        await base.close()

    assert full["info"]["fills"] == [
        {
            "price": "40000.00000000",
            "qty": "0.00130000",
            "commission": "0.05200000",
            "commissionAsset": "USDT",
            "tradeId": 1,
        }
    ]
    assert [(r["commission"], r["commissionAsset"], r["quoteQty"]) for r in rows] == [
        ("0.05200000", "USDT", "52.00000000"),
        ("0.00000130", "BTC", "52.00000000"),
    ]
    for row in rows:
        assert all(FIXED_8.match(row[k]) for k in ("price", "qty", "quoteQty", "commission"))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_binance_orders_carry_no_fee_only_their_trades_do(binance: BinanceRig) -> None:
    ex = binance.raw("USER:bnb")
    try:
        filled = await ex.create_order("BTC/USDT", "market", "buy", 0.002)
        await ex.create_order("BTC/USDT", "limit", "buy", 0.002, 40_000.0)
        orders = [
            await ex.fetch_order(filled["id"], "BTC/USDT"),
            *await ex.fetch_open_orders("BTC/USDT"),
            *await ex.fetch_orders("BTC/USDT"),
        ]
    finally:
        await ex.close()
    assert len(orders) == 4
    for order in orders:
        assert order["fee"] is None
        assert order["fees"] == []
        assert not {"commission", "commissionAsset", "fills"} & set(order["info"])


@pytest.mark.integration
@pytest.mark.asyncio
async def test_binance_my_trades_with_only_a_limit_answers_the_most_recent(
    binance: BinanceRig,
) -> None:
    ex = binance.raw("USER:quote")
    try:
        ids = [(await ex.create_order("BTC/USDT", "market", "buy", 0.001))["id"] for _ in range(3)]
        recent = await ex.fetch_my_trades("BTC/USDT", None, 2)
    finally:
        await ex.close()
    assert [t["order"] for t in recent] == ids[1:]


# ------------------------------------------------------------ Kraken over loopback

BTC_USD = Market(
    symbol="BTC/USD",
    base="BTC",
    quote="USD",
    amount_step=1e-8,
    price_step=0.1,
    min_amount=0.0001,
    min_notional=0.5,
)
KRAKEN_KEYS = {"USER:alice": ("alice-kraken-fees", "YWxpY2Uta3Jha2VuLWZlZXMtc2VjcmV0")}
KrakenRig = EmulatorRig[KrakenEmulatorServer]


def _kraken(url: str, api_key: str, secret: str) -> ccxt.kraken:
    return ccxt.kraken(kraken_ccxt_config(url, api_key, secret))


@pytest_asyncio.fixture
async def kraken() -> AsyncIterator[KrakenRig]:
    # 5 fee decimals: how Kraken prints the fees of its USD pairs ("0.01873" on XXBTZUSD).
    engine = SimEngine(
        seed=3, clock=SystemClock(), maker_fee=0.0016, taker_fee=0.0026, fee_decimals=5
    )
    engine.add_market(BTC_USD, 50_000.0)
    engine.open_account("USER:alice", {"USD": 10_000.0, "BTC": 0.5})
    async with serving(KrakenEmulatorServer, engine, KRAKEN_KEYS, _kraken) as rig:
        yield rig
        assert not rig.server.not_found, dict(rig.server.not_found)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kraken_round_trip_reports_fees_in_quote_exactly_as_charged(
    kraken: KrakenRig,
) -> None:
    ex = kraken.raw()
    try:
        buy = await ex.create_order("BTC/USD", "market", "buy", 0.002)
        await ex.create_order("BTC/USD", "market", "sell", 0.001)
        queried = await ex.fetch_order(buy["id"], "BTC/USD")
        buy_trades = await ex.fetch_order_trades(
            buy["id"], "BTC/USD", None, None, {"trades": queried["trades"]}
        )
        mine = await ex.fetch_my_trades("BTC/USD")
        balance = await ex.fetch_balance()
    finally:
        await ex.close()

    assert [(float(c), cur) for c, cur in fees(buy_trades)] == [(0.26, "USD")]
    assert [t["order"] for t in buy_trades] == [buy["id"]]
    assert [(float(c), cur) for c, cur in fees(mine)] == [(0.26, "USD"), (0.13, "USD")]
    assert [t["info"]["fee"] for t in mine] == ["0.26000", "0.13000"]
    assert queried["info"]["fee"] == "0.26000"  # QueryOrders' fee: its trades' sum
    assert {c: balance["total"][c] for c in ("USD", "BTC")} == {"USD": 9_949.61, "BTC": 0.501}
    engine = kraken.engine
    assert [(f.fee_cost, f.fee_currency) for f in engine.trades("USER:alice")] == [
        (0.26, "USD"),
        (0.13, "USD"),
    ]
    assert totals(engine, "USER:alice") == {"USD": 9_949.61, "BTC": 0.501}


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kraken_refuses_fee_in_base_it_does_not_emulate(kraken: KrakenRig) -> None:
    ex = kraken.raw()
    try:
        with pytest.raises(ccxt.ExchangeError, match="oflags"):  # ccxt: no closer class
            await ex.create_order("BTC/USD", "market", "buy", 0.002, None, {"oflags": "fcib"})
    finally:
        await ex.close()
    assert kraken.engine.trades("USER:alice") == []


def test_kraken_emulator_serves_only_accounts_that_pay_fees_in_quote() -> None:
    engine = SimEngine()
    engine.add_market(BTC_USD, 50_000.0)
    engine.open_account("USER:bob", {"USD": 100.0}, fee_mode="base_for_buys")
    with pytest.raises(ValueError, match="fees in quote"):
        KrakenEmulatorServer(engine, {"USER:bob": KRAKEN_KEYS["USER:alice"]})
