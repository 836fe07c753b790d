"""``resolve_symbol`` reads the live bot's exchange-native pair codes; ``market_ids`` feeds it."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nija_broker.core.symbols import market_ids, normalize_symbol, resolve_symbol

KRAKEN_CRYPTO = (
    "XXBT",
    "XETH",
    "XLTC",
    "XXRP",
    "XXLM",
    "XXMR",
    "XZEC",
    "XETC",
    "XREP",
    "XMLN",
    "XXDG",
)
KRAKEN_FIAT = ("ZUSD", "ZEUR", "ZGBP", "ZCAD", "ZJPY", "ZAUD")
QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "BTC", "ETH")
# Unified base codes as Kraken and Binance list them (no X/Z-prefixed legacy codes).
BASES = (
    "BTC",
    "ETH",
    "SOL",
    "DOGE",
    "XRP",
    "XLM",
    "XTZ",
    "ADA",
    "DOT",
    "LINK",
    "AVAX",
    "1INCH",
    "SHIB",
    "PEPE",
    "USDC",
    "USDT",
    "EUR",
    "LUNA2",
    "ZEC",
    "ZRX",
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("BTC-USD", "BTC/USD"),
        ("btc/usd", "BTC/USD"),
        ("  eth-usdt ", "ETH/USDT"),
        ("XXBTZUSD", "BTC/USD"),
        ("XETHZUSD", "ETH/USD"),
        ("XETHXXBT", "ETH/BTC"),
        ("XBTUSD", "BTC/USD"),
        ("XDGUSD", "DOGE/USD"),
        ("SOLUSD", "SOL/USD"),
        ("BTCUSDT", "BTC/USDT"),
        ("ETHUSDC", "ETH/USDC"),
        ("XBTUSDT", "BTC/USDT"),
        ("xxbtzusd", "BTC/USD"),
    ],
)
def test_unified_and_native_forms_resolve_to_base_slash_quote(value: str, expected: str) -> None:
    assert resolve_symbol(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ETHXBT", "ETH/BTC"),  # Kraken's altname of XETHXXBT quotes in XBT
        ("DOTGBP", "DOT/GBP"),
        ("USDTZUSD", "USDT/USD"),  # Kraken's USDT/USD pair id
        ("ZEURZUSD", "EUR/USD"),
        ("XTZUSD", "XTZ/USD"),  # Tezos: a base ending in Z is not read as ZUSD
        ("USDCUSDT", "USDC/USDT"),
    ],
)
def test_other_kraken_and_binance_codes_split_where_the_venue_does(
    value: str, expected: str
) -> None:
    assert resolve_symbol(value) == expected


@pytest.mark.parametrize("value", ["XBT/USD", "XBT-USD", "XDG/USD"])
def test_aliases_never_rewrite_a_unified_form_the_caller_chose(value: str) -> None:
    assert resolve_symbol(value) == normalize_symbol(value)


def test_normalize_symbol_stays_strict_about_native_codes() -> None:
    with pytest.raises(ValueError, match="XXBTZUSD"):
        normalize_symbol("XXBTZUSD")


@pytest.mark.parametrize("code", KRAKEN_CRYPTO)
def test_kraken_crypto_codes_agree_with_ccxt(code: str) -> None:
    unified = ccxt.kraken().safe_currency_code(code)
    assert resolve_symbol(f"{code}ZUSD") == f"{unified}/USD"


@pytest.mark.parametrize("code", KRAKEN_FIAT)
def test_kraken_fiat_codes_agree_with_ccxt(code: str) -> None:
    unified = ccxt.kraken().safe_currency_code(code)
    assert resolve_symbol(f"XXBT{code}") == f"BTC/{unified}"


def test_markets_answer_before_the_alias_table() -> None:
    # ccxt's kraken calls the old LUNA "LUNC"; the table alone would say LUNA/USD.
    assert resolve_symbol("LUNAUSD") == "LUNA/USD"
    assert resolve_symbol("LUNAUSD", {"LUNAUSD": "LUNC/USD"}) == "LUNC/USD"


def test_markets_know_ids_the_table_cannot_split() -> None:
    markets = {"PF_XBTUSD": "BTC/USD", "XBTUSD": "BTC/USD"}
    assert resolve_symbol("pf_xbtusd", markets) == "BTC/USD"
    with pytest.raises(ValueError, match="PF_XBTUSD"):
        resolve_symbol("PF_XBTUSD")


def test_markets_answers_are_normalized() -> None:
    assert resolve_symbol("SOLUSD", {"SOLUSD": "sol-usd"}) == "SOL/USD"


def test_a_market_that_is_not_spot_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'PF_XBTUSD'.*'BTC/USD:USD'.*spot"):
        resolve_symbol("PF_XBTUSD", {"PF_XBTUSD": "BTC/USD:USD"})


def test_markets_do_not_override_a_unified_form() -> None:
    assert resolve_symbol("BTC-USD", {"BTC-USD": "ETH/USD"}) == "BTC/USD"


def _market(market_id: Any, symbol: str, **info: Any) -> dict[str, Any]:
    base, _, quote = symbol.partition("/")
    return {
        "id": market_id,
        "symbol": symbol,
        "base": base,
        "quote": quote.split(":")[0],
        "info": info,
    }


def test_market_ids_maps_ids_and_kraken_altnames_to_unified_symbols() -> None:
    kraken = {
        "BTC/USD": _market("XXBTZUSD", "BTC/USD", altname="XBTUSD", wsname="XBT/USD"),
        "DOGE/USD": _market("XDGUSD", "DOGE/USD", altname="XDGUSD"),
        "ETH/BTC": _market("XETHXXBT", "ETH/BTC", altname="ETHXBT"),
    }
    assert market_ids(kraken) == {
        "XXBTZUSD": "BTC/USD",
        "XBTUSD": "BTC/USD",
        "XDGUSD": "DOGE/USD",
        "XETHXXBT": "ETH/BTC",
        "ETHXBT": "ETH/BTC",
    }


def test_market_ids_upper_cases_ids() -> None:
    assert market_ids({"BTC/USD": _market("btc-usd", "BTC/USD")}) == {"BTC-USD": "BTC/USD"}


def test_market_ids_skips_markets_without_a_string_id() -> None:
    markets = {
        "BTC/USD": _market(None, "BTC/USD"),
        "ETH/USD": _market(7, "ETH/USD"),
        "SOL/USD": {"symbol": "SOL/USD"},
    }
    assert market_ids(markets) == {}


def test_market_ids_keeps_spot_when_a_derivative_shares_its_id() -> None:
    # Binance lists spot BTC/USDT and the linear swap BTC/USDT:USDT under one id, BTCUSDT.
    binance = {
        "BTC/USDT": _market("BTCUSDT", "BTC/USDT"),
        "BTC/USDT:USDT": _market("BTCUSDT", "BTC/USDT:USDT"),
    }
    assert market_ids(binance) == {"BTCUSDT": "BTC/USDT"}


def test_market_ids_output_feeds_resolve_symbol() -> None:
    ids = market_ids({"LUNC/USD": _market("LUNAUSD", "LUNC/USD", altname="LUNAUSD")})
    assert resolve_symbol("lunausd", ids) == "LUNC/USD"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "USD",  # a quote suffix alone: empty base
        "XBT",  # a lone asset code is not a pair
        "XETH",
        "ZUSD",
        "BTC_USD",
        "FOOBAR",
        "BTC/USD:USD",
        "X" * 21 + "USD",  # base longer than normalize_symbol allows
    ],
)
def test_unreadable_symbols_are_errors_naming_the_value_and_the_forms(value: str) -> None:
    with pytest.raises(
        ValueError, match="is not 'BTC-USD', 'BTC/USD' or an exchange pair code"
    ) as caught:
        resolve_symbol(value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", [None, 42, b"BTCUSD"])
def test_non_strings_are_errors(value: Any) -> None:
    with pytest.raises(ValueError, match=f"must be a string.*{value!r}"):
        resolve_symbol(value)


@settings(max_examples=200, deadline=None)
@given(base=st.sampled_from(BASES), quote=st.sampled_from(QUOTES))
def test_concatenated_and_dashed_forms_agree_for_unified_codes(base: str, quote: str) -> None:
    """For unified base codes (no Kraken X/Z legacy code, no alias) the concatenation is
    unambiguous: no quote suffix ends another, so the suffix found is ``quote``."""
    assert resolve_symbol(base + quote) == resolve_symbol(f"{base}-{quote}") == f"{base}/{quote}"
