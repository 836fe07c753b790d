"""The ccxt adapter's pure parts: conversions, the shared rate budget, building from config.

Calls through real ccxt are in test_emulator_binance.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import ccxt.async_support as ccxt
import pytest

from adapters._ccxt_convert import (
    OrderMemo,
    convert_balance,
    convert_market,
    convert_order,
    convert_ticker,
    convert_trade,
    fee_in_quote,
    is_spot_market,
    precision_step,
)
from adapters.base import Exchange
from adapters.ccxt_adapter import CcxtExchange
from adapters.ratelimit import RateBudget
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import ConfigError, ExchangeError
from nija_broker.core.models import OrderRole, OrderStatus, OrderType, Side
from nija_broker.service.config import AccountConfig

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def ccxt_order(**changes: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": "101",
        "clientOrderId": "cid-101",
        "timestamp": TS_MS,
        "symbol": "BTC/USDT",
        "type": "limit",
        "side": "buy",
        "price": 40_000.0,
        "triggerPrice": None,
        "amount": 0.01,
        "filled": 0.0,
        "average": None,
        "status": "open",
        "fee": None,
        "fees": [],
        "info": {},
    }
    order.update(changes)
    return order


def convert(**changes: Any) -> Any:
    return convert_order(ccxt_order(**changes), account_id="USER:alice", now=NOW)


# ------------------------------------------------------------------ orders


@pytest.mark.parametrize(
    ("status", "filled", "expected"),
    [
        ("open", 0.0, OrderStatus.OPEN),
        ("open", 0.004, OrderStatus.PARTIALLY_FILLED),
        ("closed", 0.01, OrderStatus.FILLED),
        ("canceled", 0.0, OrderStatus.CANCELLED),
        ("canceled", 0.004, OrderStatus.CANCELLED),
        ("expired", 0.0, OrderStatus.EXPIRED),
        ("rejected", 0.0, OrderStatus.REJECTED),
        ("canceling", 0.0, OrderStatus.OPEN),
        (None, 0.0, OrderStatus.PENDING),
    ],
)
def test_ccxt_status_maps_to_ours(status: str | None, filled: float, expected: OrderStatus) -> None:
    assert convert(status=status, filled=filled).status is expected


def test_cancelled_order_keeps_what_it_filled() -> None:
    order = convert(status="canceled", filled=0.004)
    assert order.filled == 0.004
    assert order.remaining == pytest.approx(0.006)


def test_closed_order_without_a_filled_figure_is_filled_in_full() -> None:
    assert convert(status="closed", filled=None).filled == 0.01


def test_order_carries_account_time_and_client_id() -> None:
    order = convert()
    assert order.account_id == "USER:alice"
    assert order.created_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert order.client_order_id == "cid-101"


def test_order_without_timestamp_is_dated_now() -> None:
    assert convert(timestamp=None).created_at == NOW


def test_binance_cancel_answer_keeps_the_original_client_id() -> None:
    order = convert(
        status="canceled", clientOrderId="cancel-req-9", info={"origClientOrderId": "cid-101"}
    )
    assert order.client_order_id == "cid-101"


@pytest.mark.parametrize(
    ("raw", "side", "order_type", "role"),
    [
        ({"type": "limit"}, "buy", OrderType.LIMIT, OrderRole.ENTRY),
        ({"type": "limit"}, "sell", OrderType.LIMIT, OrderRole.EXIT),
        ({"type": "market", "price": 0.0}, "sell", OrderType.MARKET, OrderRole.EXIT),
        # Binance spot, as ccxt reports it: STOP_LOSS -> market + triggerPrice
        (
            {"type": "market", "price": None, "triggerPrice": 38_000.0},
            "sell",
            OrderType.STOP,
            OrderRole.STOP,
        ),
        (
            {"type": "limit", "price": 37_900.0, "triggerPrice": 38_000.0},
            "sell",
            OrderType.STOP_LIMIT,
            OrderRole.STOP,
        ),
        (
            {
                "type": "market",
                "price": None,
                "triggerPrice": 45_000.0,
                "takeProfitPrice": 45_000.0,
            },
            "sell",
            OrderType.TAKE_PROFIT,
            OrderRole.TARGET,
        ),
        # Kraken's spelling
        ({"type": "stop-loss", "price": 38_000.0}, "sell", OrderType.STOP, OrderRole.STOP),
        (
            {"type": "take-profit-limit", "price": 45_100.0, "triggerPrice": 45_000.0},
            "sell",
            OrderType.TAKE_PROFIT,
            OrderRole.TARGET,
        ),
        (
            {"type": "STOP_LOSS_LIMIT", "price": 37_900.0, "stopPrice": 38_000.0},
            "sell",
            OrderType.STOP_LIMIT,
            OrderRole.STOP,
        ),
    ],
)
def test_order_type_and_role_follow_what_the_exchange_reports(
    raw: dict[str, Any], side: str, order_type: OrderType, role: OrderRole
) -> None:
    order = convert(side=side, **raw)
    assert order.type is order_type
    assert order.role is role


def test_stop_order_keeps_its_trigger_price() -> None:
    order = convert(side="sell", type="market", price=None, triggerPrice=38_000.0)
    assert order.stop_price == 38_000.0
    assert order.price is None


def test_market_order_has_no_limit_price_even_when_echoed() -> None:
    assert convert(type="market", price=50_000.0).price is None


def test_fee_in_base_currency_is_converted_at_the_fill_price() -> None:
    order = convert(
        status="closed",
        filled=0.01,
        average=50_000.0,
        fee={"currency": "BTC", "cost": 0.00001},
        fees=[],
    )
    assert order.fee == pytest.approx(0.5)  # 0.00001 BTC x 50,000


def test_fees_in_quote_add_up_and_a_third_currency_is_left_out() -> None:
    order = convert(
        status="closed",
        filled=0.01,
        average=50_000.0,
        fees=[
            {"currency": "USDT", "cost": 0.2},
            {"currency": "USDT", "cost": 0.3},
            {"currency": "BNB", "cost": 0.001},
        ],
    )
    assert order.fee == pytest.approx(0.5)
    assert fee_in_quote({"currency": "BNB", "cost": 0.001}, "BTC/USDT", 50_000.0) is None


def test_order_without_amount_is_an_exchange_error_naming_it() -> None:
    with pytest.raises(ExchangeError, match="order '101'"):
        convert(amount=None)


def test_trade_becomes_a_fill_keyed_by_trade_id_with_fee_in_quote() -> None:
    fill = convert_trade(
        {
            "id": "t-9",
            "order": "101",
            "symbol": "BTC/USDT",
            "side": "buy",
            "amount": 0.002,
            "price": 50_000.0,
            "timestamp": TS_MS,
            "fee": {"currency": "BTC", "cost": 0.000002},
        },
        account_id="USER:alice",
        now=NOW,
    )
    assert fill.key == "101:t:t-9"
    assert fill.side is Side.BUY
    assert fill.fee == pytest.approx(0.1)


def test_balance_drops_empty_currencies_and_keeps_held_funds() -> None:
    raw = {
        "info": {},
        "free": {},
        "used": {},
        "total": {},
        "timestamp": TS_MS,
        "USDT": {"free": 600.0, "used": 400.0, "total": 1000.0},
        "BTC": {"free": 0.0, "used": 0.0, "total": 0.0},
        "ETH": {"free": 0.5, "used": None, "total": None},
    }
    balances = convert_balance(raw)
    assert set(balances) == {"USDT", "ETH"}
    assert balances["USDT"].used == 400.0
    assert balances["ETH"].total == 0.5


def test_ticker_without_prices_keeps_none() -> None:
    ticker = convert_ticker(
        {"symbol": "BTC/USDT", "last": 50_000.0, "bid": None, "ask": 0, "timestamp": TS_MS}
    )
    assert (ticker.last, ticker.bid, ticker.ask) == (50_000.0, None, None)


def test_memo_hands_back_the_same_order_while_nothing_changed() -> None:
    memo = OrderMemo("USER:alice")
    first = memo.convert(ccxt_order(), NOW)
    again = memo.convert(ccxt_order(), NOW)
    changed = memo.convert(ccxt_order(filled=0.004), NOW)
    assert again is first
    assert changed.filled == 0.004
    assert changed.status is OrderStatus.PARTIALLY_FILLED
    assert memo.hits == 1


def test_memo_is_bounded() -> None:
    memo = OrderMemo("USER:alice", max_entries=3)
    orders = [memo.convert(ccxt_order(id=str(i)), NOW) for i in range(5)]
    assert memo.convert(ccxt_order(id="4"), NOW) is orders[4]
    assert memo.convert(ccxt_order(id="0"), NOW) is not orders[0]  # evicted, rebuilt
    assert len(memo._orders) == 3


# ----------------------------------------------------------------- markets


@pytest.mark.parametrize(
    ("mode", "value", "step"),
    [
        (ccxt.TICK_SIZE, 0.01, 0.01),
        (ccxt.DECIMAL_PLACES, 2, 0.01),
        (ccxt.DECIMAL_PLACES, 8, 1e-8),
        (ccxt.SIGNIFICANT_DIGITS, 5, None),
        (ccxt.TICK_SIZE, None, None),
    ],
)
def test_precision_becomes_a_step_in_both_ccxt_modes(
    mode: int, value: float | None, step: float | None
) -> None:
    assert precision_step(value, mode) == (pytest.approx(step) if step else None)


def test_market_reads_steps_and_minimums() -> None:
    raw = {
        "symbol": "BTC/USD",
        "spot": True,
        "type": "spot",
        "active": True,
        "precision": {"amount": 8, "price": 1},
        "limits": {"amount": {"min": 0.0001}, "cost": {"min": 0.5}},
    }
    market = convert_market(raw, ccxt.DECIMAL_PLACES)
    assert (market.amount_step, market.price_step) == (pytest.approx(1e-8), pytest.approx(0.1))
    assert (market.min_amount, market.min_notional) == (0.0001, 0.5)
    assert (market.base, market.quote) == ("BTC", "USD")


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ({"symbol": "BTC/USDT", "spot": True, "type": "spot"}, True),
        ({"symbol": "BTC/USDT:USDT", "spot": False, "type": "swap"}, False),
        ({"symbol": "ETH/USDT", "spot": True, "type": "spot", "active": False}, False),
    ],
)
def test_only_active_spot_markets_are_loaded(raw: dict[str, Any], kept: bool) -> None:
    assert is_spot_market(raw) is kept


# ------------------------------------------------------------- rate budget


@pytest.mark.asyncio
async def test_budget_lets_a_burst_through_then_paces_at_its_rate() -> None:
    clock = FakeClock()
    budget = RateBudget(10.0, capacity=5, clock=clock)
    for _ in range(5):
        await budget.acquire()
    assert clock.monotonic() == 0.0
    for _ in range(10):
        await budget.acquire()
    assert clock.monotonic() == pytest.approx(1.0)  # ten more at ten a second


@pytest.mark.asyncio
async def test_budget_refills_while_idle_but_not_beyond_capacity() -> None:
    clock = FakeClock()
    budget = RateBudget(2.0, capacity=4, clock=clock)
    for _ in range(4):
        await budget.acquire()
    clock.advance(60.0)
    assert budget.available() == 4.0


@pytest.mark.asyncio
async def test_concurrent_callers_queue_in_arrival_order() -> None:
    clock = FakeClock()
    budget = RateBudget(1.0, capacity=1, clock=clock)
    order: list[int] = []

    async def call(i: int) -> None:
        await budget.acquire()
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(4)))
    assert order == [0, 1, 2, 3]
    assert budget.acquired == 4


def test_registry_gives_every_account_of_an_exchange_the_same_budget() -> None:
    RateBudget.forget("kraken-test")
    try:
        first = RateBudget.for_exchange("kraken-test", 1.0)
        assert RateBudget.for_exchange("kraken-test", 99.0) is first
        assert RateBudget.for_exchange("okx-test", 1.0) is not first
    finally:
        RateBudget.forget("kraken-test")
        RateBudget.forget("okx-test")


def test_budget_rate_comes_from_ccxt_rate_limit_ms() -> None:
    assert RateBudget.from_rate_limit_ms(50).rate_per_s == pytest.approx(20.0)


# ---------------------------------------------------------------- building


def account(**changes: Any) -> AccountConfig:
    fields: dict[str, Any] = {
        "id": "USER:alice",
        "exchange": "binance",
        "api_key_env": "ALICE_KEY",
        "secret_env": "ALICE_SECRET",
    }
    fields.update(changes)
    return AccountConfig(**fields)


ENV = {"ALICE_KEY": "alice-api-key-123", "ALICE_SECRET": "alice-secret-456"}


@pytest.mark.asyncio
async def test_from_config_passes_keys_ccxt_table_and_sandbox_to_ccxt() -> None:
    config = account(sandbox=True, ccxt={"options": {"recvWindow": 7000}, "timeout": 4000})
    ex = CcxtExchange.from_config(config, environ=ENV, budget=RateBudget(10.0))
    try:
        raw = ex._ex
        assert (raw.apiKey, raw.secret) == ("alice-api-key-123", "alice-secret-456")
        assert raw.options["recvWindow"] == 7000
        assert raw.timeout == 4000
        assert raw.enableRateLimit is True
        assert "testnet" in raw.urls["api"]["public"]
        assert isinstance(ex, Exchange)
        assert (ex.account_id, ex.exchange_id) == ("USER:alice", "binance")
    finally:
        await ex.aclose()
        await ex.aclose()


@pytest.mark.asyncio
async def test_binance_lists_open_orders_in_one_call_without_a_warning() -> None:
    ex = CcxtExchange.from_config(account(), environ=ENV, budget=RateBudget(10.0))
    try:
        assert ex._ex.options["warnOnFetchOpenOrdersWithoutSymbol"] is False
        assert ex.capabilities.open_orders_without_symbol
        assert ex.capabilities.fetch_order_by_client_id
    finally:
        await ex.aclose()


@pytest.mark.asyncio
async def test_repr_never_shows_the_keys() -> None:
    ex = CcxtExchange.from_config(account(), environ=ENV, budget=RateBudget(10.0))
    try:
        assert "alice-api-key-123" not in repr(ex)
        assert "alice-secret-456" not in repr(ex)
    finally:
        await ex.aclose()


def test_missing_key_variable_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="ALICE_SECRET"):
        CcxtExchange.from_config(account(), environ={"ALICE_KEY": "k"})


def test_unknown_exchange_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nosuchexchange"):
        CcxtExchange.from_config(account(exchange="nosuchexchange"), environ=ENV)


def test_sandbox_on_an_exchange_without_one_is_a_config_error() -> None:
    # ccxt has no sandbox URLs for Coinbase's retail exchange.
    with pytest.raises(ConfigError, match="sandbox"):
        CcxtExchange.from_config(account(exchange="coinbase", sandbox=True), environ=ENV)
