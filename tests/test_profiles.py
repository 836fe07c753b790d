"""Exchange profiles: what differs per exchange, and the adapter reading it (no network)."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from adapters._ccxt_errors import map_ccxt_error
from adapters.ccxt_adapter import CcxtExchange
from adapters.profiles import (
    BINANCE,
    COINBASE,
    DEFAULT,
    KRAKEN,
    OKX,
    ClientIdLookup,
    ExchangeProfile,
    StopFunds,
    profile_for,
)
from adapters.ratelimit import RateBudget
from nija_broker.core import errors
from nija_broker.core.intent import new_client_order_id


@pytest.mark.parametrize(
    ("exchange_id", "profile"),
    [
        ("kraken", KRAKEN),
        ("binance", BINANCE),
        ("binanceus", BINANCE),
        ("coinbase", COINBASE),
        ("okx", OKX),
        ("bitstamp", DEFAULT),
        ("gate", DEFAULT),
    ],
)
def test_every_ccxt_id_gets_a_profile(exchange_id: str, profile: ExchangeProfile) -> None:
    assert profile_for(exchange_id) is profile


@pytest.mark.parametrize("symbol", ["BTC-USD", "btc/usd", "XBT-USD", "XBT/USD", "XXBT-ZUSD"])
def test_bot_and_kraken_symbols_become_ccxts_btc_usd_on_kraken(symbol: str) -> None:
    assert KRAKEN.unified_symbol(symbol) == "BTC/USD"


def test_other_exchanges_keep_symbols_as_written_apart_from_form() -> None:
    assert BINANCE.unified_symbol("BTC-USDT") == "BTC/USDT"
    assert BINANCE.unified_symbol("XBT-USDT") == "XBT/USDT"  # XBT means nothing special there
    assert KRAKEN.unified_symbol("XDG-USD") == "DOGE/USD"
    with pytest.raises(ValueError, match="BTCUSD"):
        KRAKEN.unified_symbol("BTCUSD")


@pytest.mark.parametrize("profile", [KRAKEN, OKX])
def test_guard_ids_are_sent_as_32_hex_digits_and_read_back_whole(profile: ExchangeProfile) -> None:
    ours = new_client_order_id()
    sent = profile.client_ids.to_exchange(ours)
    assert sent == ours.removeprefix("nb-")
    assert profile.client_ids.from_exchange(sent) == ours


@pytest.mark.parametrize(
    ("client_id", "fits"),
    [
        ("entry-1", True),
        ("a" * 18, True),
        ("a" * 19, False),
        ("d15708c1-dbb6-465d-b77d-47258319cc90", True),
        ("has space", False),
    ],
)
def test_kraken_cl_ord_id_is_a_uuid_or_short_free_text(client_id: str, fits: bool) -> None:
    assert (KRAKEN.client_ids.to_exchange(client_id) is not None) is fits


def test_okx_refuses_ids_with_punctuation_and_binance_takes_ours_as_is() -> None:
    assert OKX.client_ids.to_exchange("entry-1") is None
    ours = new_client_order_id()
    assert BINANCE.client_ids.to_exchange(ours) == ours
    assert BINANCE.client_ids.from_exchange(ours) == ours


def test_kraken_userref_zero_means_no_client_id_but_other_userrefs_count() -> None:
    assert KRAKEN.client_ids.from_exchange("0") is None
    assert KRAKEN.client_ids.from_exchange(0) is None
    assert KRAKEN.client_ids.from_exchange("4242") == "4242"
    assert KRAKEN.client_ids.from_exchange(None) is None
    assert BINANCE.client_ids.from_exchange("0") == "0"


def test_profiles_say_how_each_exchange_finds_orders_by_client_id_and_holds_stops() -> None:
    assert {p.name: p.client_ids.lookup for p in (KRAKEN, BINANCE, COINBASE, OKX, DEFAULT)} == {
        "kraken": ClientIdLookup.FILTER,
        "binance": ClientIdLookup.NATIVE,
        "coinbase": ClientIdLookup.SCAN,
        "okx": ClientIdLookup.NATIVE,
        "default": ClientIdLookup.SCAN,
    }
    assert {p.client_ids.param for p in (KRAKEN, BINANCE, COINBASE, OKX)} == {
        "cl_ord_id",
        "newClientOrderId",
        "client_order_id",
        "clOrdId",
    }
    assert KRAKEN.stop_funds is StopFunds.AT_PLACEMENT
    assert OKX.stop_funds is StopFunds.AT_TRIGGER


def test_kraken_counts_private_calls_per_key_with_trade_history_double() -> None:
    rate = KRAKEN.rate
    assert rate.per_account
    assert (
        rate.cost("fetch_open_orders"),
        rate.cost("fetch_my_trades"),
        rate.cost("create_order"),
        rate.cost("cancel_order"),
    ) == (1.0, 2.0, 0.0, 0.0)
    assert rate.capacity == 15.0


def test_binance_counts_its_documented_request_weights_per_ip() -> None:
    rate = BINANCE.rate
    assert not rate.per_account
    assert rate.weights.limit_per_min == 6000.0
    # One listing of every symbol weighs as much as thirteen of one symbol.
    assert (rate.cost("fetch_open_orders"), rate.cost("fetch_open_orders_symbol")) == (80.0, 6.0)
    assert (rate.cost("fetch_balance"), rate.cost("fetch_closed_orders")) == (20.0, 20.0)
    assert (rate.cost("fetch_my_trades"), rate.cost("fetch_order_trades")) == (20.0, 5.0)
    assert (rate.cost("fetch_order"), rate.cost("create_order"), rate.cost("cancel_order")) == (
        4.0,
        1.0,
        1.0,
    )
    assert [rate.cost("fetch_tickers", n) for n in (1, 20, 21, 100, 101)] == [2, 2, 40, 40, 80]
    # No minute can pass 6,000: the burst and a minute's refill add up to it.
    assert rate.capacity is not None
    assert rate.rate_per_s is not None
    assert rate.capacity + 60 * rate.rate_per_s <= 6000.0
    # New orders are limited per account besides: 100 every 10 s.
    orders = rate.key_limit
    assert orders is not None
    assert orders.per_account
    assert (orders.cost("create_order"), orders.cost("fetch_balance")) == (1.0, 0.0)
    assert orders.capacity is not None
    assert orders.rate_per_s is not None
    assert orders.capacity + 10 * orders.rate_per_s <= 100.0


def test_kraken_lists_every_symbol_in_one_call_so_it_offers_no_per_symbol_weight() -> None:
    assert KRAKEN.rate.weights.known("fetch_open_orders_symbol") is None
    assert BINANCE.rate.weights.known("fetch_open_orders_symbol") == 6.0


def test_ccxt_options_merge_into_nested_tables_without_dropping_others() -> None:
    options = {
        "fetchOpenOrders": {"method": "x", "warnWithoutSymbol": True},
        "warnOnFetchOpenOrdersWithoutSymbol": True,
    }

    class Fake:
        pass

    fake = Fake()
    fake.options = options  # type: ignore[attr-defined]
    BINANCE.apply_ccxt_options(fake)
    assert options == {
        "fetchOpenOrders": {"method": "x", "warnWithoutSymbol": False},
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    }


# ----------------------------------------------------------- error overrides


def kraken_error(exc: Exception, action: str) -> errors.ExchangeError:
    return map_ccxt_error(
        exc,
        exchange_id="kraken",
        account_id="USER:alice",
        secrets=(),
        action=action,
        overrides=KRAKEN.error_overrides,
        nonce_advice=KRAKEN.nonce_advice,
    )


@pytest.mark.parametrize(
    ("exc", "action", "expected"),
    [
        # ccxt's classes for Kraken's texts, and what they mean.
        (
            ccxt.InvalidOrder('kraken {"error":["EOrder:Unknown order"]}'),
            "fetch_order",
            errors.OrderNotFound,
        ),
        (
            ccxt.InvalidOrder('kraken {"error":["EOrder:Invalid order"]}'),
            "fetch_order",
            errors.OrderNotFound,
        ),
        (
            ccxt.InvalidOrder('kraken {"error":["EOrder:Invalid order"]}'),
            "create_order",
            errors.InvalidOrder,
        ),
        (
            ccxt.ExchangeError('kraken {"error":["EOrder:Post only order"]}'),
            "create_order",
            errors.InvalidOrder,
        ),
        (
            ccxt.ExchangeError('kraken {"error":["EAPI:Invalid signature"]}'),
            "fetch_balance",
            errors.AuthenticationFailed,
        ),
        (
            ccxt.ExchangeError('kraken {"error":["EQuery:Unknown asset pair"]}'),
            "fetch_tickers",
            errors.InvalidOrder,
        ),
        (
            ccxt.DDoSProtection('kraken {"error":["EAPI:Rate limit exceeded"]}'),
            "fetch_balance",
            errors.RateLimited,
        ),
        (
            ccxt.ExchangeNotAvailable('kraken {"error":["EService:Unavailable"]}'),
            "create_order",
            errors.TransientError,
        ),
        (
            ccxt.InsufficientFunds('kraken {"error":["EOrder:Insufficient funds"]}'),
            "create_order",
            errors.InsufficientFunds,
        ),
        (
            ccxt.AuthenticationError('kraken {"error":["EAPI:Invalid key"]}'),
            "fetch_balance",
            errors.AuthenticationFailed,
        ),
    ],
)
def test_kraken_errors_land_on_the_class_they_mean(
    exc: Exception, action: str, expected: type[Exception]
) -> None:
    assert type(kraken_error(exc, action)) is expected


def test_an_override_never_makes_a_network_failure_final() -> None:
    exc = ccxt.RequestTimeout("kraken POST /0/private/CancelOrder EOrder:Unknown order")
    assert type(kraken_error(exc, "cancel_order")) is errors.TransientError


def test_kraken_nonce_error_tells_the_user_to_give_nija_broker_its_own_key() -> None:
    result = kraken_error(
        ccxt.InvalidNonce('kraken {"error":["EAPI:Invalid nonce"]}'), "fetch_open_orders"
    )
    assert isinstance(result, errors.AuthenticationFailed)
    assert "another program is using this API key" in str(result)
    assert "separate API key for nija_broker" in str(result)


# ----------------------------------------------------------- the adapter


@pytest.mark.asyncio
async def test_adapter_reads_kraken_capabilities_and_budget_from_the_profile() -> None:
    for account_id in ("USER:alice", "USER:bob"):
        RateBudget.forget(f"kraken:{account_id}")
    alice = CcxtExchange(ccxt.kraken(), account_id="USER:alice")
    bob = CcxtExchange(ccxt.kraken(), account_id="USER:bob")
    try:
        assert alice.profile is KRAKEN
        caps = alice.capabilities
        assert (caps.open_orders_without_symbol, caps.fetch_order_by_client_id) == (True, True)
        assert alice.budget is not bob.budget  # Kraken limits per API key
        assert (alice.budget.rate_per_s, alice.budget.capacity) == (0.33, 15.0)
    finally:
        await alice.aclose()
        await bob.aclose()
        for account_id in ("USER:alice", "USER:bob"):
            RateBudget.forget(f"kraken:{account_id}")


@pytest.mark.asyncio
async def test_adapter_on_an_unprofiled_exchange_scans_for_client_ids() -> None:
    ex = CcxtExchange(ccxt.bitstamp(), account_id="USER:alice", budget=RateBudget(10.0))
    try:
        assert ex.profile is DEFAULT
        assert not ex.capabilities.fetch_order_by_client_id
    finally:
        await ex.aclose()
