"""Symbols are stored in ccxt's unified ``BASE/QUOTE`` form.

Which forms are accepted where:

* ``normalize_symbol`` (models, config, the ledger) is strict: ``BTC/USD`` or the bot's
  ``BTC-USD``, any case, nothing else.
* ``resolve_symbol`` also reads the exchange-native pair codes the live bot uses: Kraken's
  ``XXBTZUSD`` / ``XBTUSD`` / ``XDGUSD`` / ``SOLUSD`` and Binance's ``BTCUSDT``. The venue's
  own markets answer first (``market_ids(exchange.markets)`` builds the mapping); a small
  built-in table of Kraken asset codes and quote suffixes answers the rest.

Aliases such as ``XBT`` -> ``BTC`` apply to concatenated pair codes only. ``XBT/USD`` and
``XBT-USD`` are unified forms a caller chose, so they stay ``XBT/USD``: whatever
``normalize_symbol`` accepts, ``resolve_symbol`` returns unchanged.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Mapping
from typing import Any

_SYMBOL = re.compile(r"^([A-Z0-9]{1,20})[/\-]([A-Z0-9]{1,20})$")
_CODE = re.compile(r"[A-Z0-9]{1,20}")
_PAIR_CODE = re.compile(r"[A-Z0-9]{2,40}")

# Kraken's legacy asset codes: X prefixes crypto, Z prefixes fiat
# (https://support.kraken.com/hc/en-us/articles/360001206766). The unified codes are the ones
# ccxt 4.5's kraken ``commonCurrencies`` gives. CHF has no Z code on Kraken (its pairs are
# XBTCHF, USDCHF), and ZCHF is Frankencoin's ticker, so ZCHF is deliberately absent.
_KRAKEN_ASSETS: dict[str, str] = {
    "XXBT": "BTC",
    "XETH": "ETH",
    "XLTC": "LTC",
    "XXRP": "XRP",
    "XXLM": "XLM",
    "XXMR": "XMR",
    "XZEC": "ZEC",
    "XETC": "ETC",
    "XREP": "REP",
    "XMLN": "MLN",
    "XXDG": "DOGE",
    "ZUSD": "USD",
    "ZEUR": "EUR",
    "ZGBP": "GBP",
    "ZCAD": "CAD",
    "ZJPY": "JPY",
    "ZAUD": "AUD",
}
# Kraken's short names (the altnames of XXBT and XXDG) join the table.
_ALIASES: dict[str, str] = {**_KRAKEN_ASSETS, "XBT": "BTC", "XDG": "DOGE"}
# An 8-letter code splits 4+4 only into these; USDT is here for Kraken's USDTZUSD.
_PAIR_HALVES = frozenset(_KRAKEN_ASSETS) | {"USDT"}
# Longest first. GBP: Kraken quotes many pairs in it (DOTGBP, XRPGBP, USDTGBP).
# XBT: Kraken's altnames quote in it (ETHXBT is XETHXXBT's altname, DOTXBT, ADAXBT).
_QUOTE_SUFFIXES = ("USDT", "USDC", "USD", "EUR", "GBP", "BTC", "XBT", "ETH")

_ACCEPTED = "'BTC-USD', 'BTC/USD' or an exchange pair code like 'XXBTZUSD' / 'BTCUSDT'"


def normalize_symbol(value: str) -> str:
    """``"btc-usd"`` -> ``"BTC/USD"``. Raises ``ValueError`` naming the value otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"symbol must be a string like 'BTC/USD' or 'BTC-USD', got {value!r}")
    match = _SYMBOL.match(value.strip().upper())
    if match is None:
        raise ValueError(f"symbol must look like 'BTC/USD' or 'BTC-USD', got {value!r}")
    # Interned: an account holds thousands of orders on a few symbols, one string each.
    return sys.intern(f"{match.group(1)}/{match.group(2)}")


def resolve_symbol(value: str, markets: Mapping[str, str] | None = None) -> str:
    """The unified ``BASE/QUOTE`` for a unified or exchange-native symbol.

    ``"BTC-USD"`` -> ``"BTC/USD"`` as ``normalize_symbol`` answers; otherwise ``markets``
    (native id, upper-cased, -> unified symbol, as ``market_ids`` builds it) is asked for the
    upper-cased value; otherwise the built-in table splits it: ``"XXBTZUSD"`` -> ``"BTC/USD"``,
    ``"XDGUSD"`` -> ``"DOGE/USD"``, ``"BTCUSDT"`` -> ``"BTC/USDT"``. Raises ``ValueError``
    naming the value and the accepted forms otherwise.
    """
    if not isinstance(value, str):
        raise ValueError(f"symbol must be a string, {_ACCEPTED}; got {value!r}")
    with contextlib.suppress(ValueError):
        return normalize_symbol(value)
    code = value.strip().upper()
    if markets is not None and code in markets:
        return _market_symbol(value, markets[code])
    pair = _split_pair_code(code)
    if pair is None:
        raise ValueError(f"symbol {value!r} is not {_ACCEPTED}")
    return f"{pair[0]}/{pair[1]}"


def market_ids(markets: Mapping[str, Any]) -> dict[str, str]:
    """The mapping ``resolve_symbol`` takes, from a ccxt ``exchange.markets`` dict.

    Each market's ``id`` and, on Kraken, ``info["altname"]`` map to its ``symbol``:
    ``{"XXBTZUSD": "BTC/USD", "XBTUSD": "BTC/USD"}``. Skipped: markets without a string id,
    and markets whose symbol is not spot ``BASE/QUOTE``, because derivatives such as
    ``BTC/USDT:USDT`` share the spot id ``BTCUSDT`` on Binance and would shadow it.
    """
    ids: dict[str, str] = {}
    for market in markets.values():
        if not isinstance(market, Mapping):
            continue
        native, symbol = market.get("id"), market.get("symbol")
        if not isinstance(native, str) or not isinstance(symbol, str):
            continue
        try:
            unified = normalize_symbol(symbol)
        except ValueError:
            continue
        ids[native.upper()] = unified
        info = market.get("info")
        altname = info.get("altname") if isinstance(info, Mapping) else None
        if isinstance(altname, str):
            ids[altname.upper()] = unified
    return ids


def _market_symbol(value: str, unified: str) -> str:
    try:
        return normalize_symbol(unified)
    except ValueError:
        raise ValueError(
            f"symbol {value!r} is the market {unified!r}, which is not a spot 'BASE/QUOTE' pair"
        ) from None


def _split_pair_code(code: str) -> tuple[str, str] | None:
    """``"XETHXXBT"`` -> ``("ETH", "BTC")``; ``None`` when the table cannot split it."""
    if _PAIR_CODE.fullmatch(code) is None or code in _ALIASES:
        return None  # a lone asset code such as XETH is not a pair
    if len(code) == 8 and code[:4] in _PAIR_HALVES and code[4:] in _PAIR_HALVES:
        base, quote = code[:4], code[4:]
    else:
        quote = next((suffix for suffix in _QUOTE_SUFFIXES if code.endswith(suffix)), "")
        base = code.removesuffix(quote) if quote else ""
    base, quote = _ALIASES.get(base, base), _ALIASES.get(quote, quote)
    if _CODE.fullmatch(base) is None:
        return None  # empty ("USD") or longer than normalize_symbol allows
    return base, quote


def split_symbol(symbol: str) -> tuple[str, str]:
    base, quote = normalize_symbol(symbol).split("/")
    return base, quote


def base_of(symbol: str) -> str:
    """The base of a stored (already normalized) symbol: ``"BTC/USDT"`` -> ``"BTC"``."""
    return symbol.split("/")[0]


def quote_of(symbol: str) -> str:
    """The quote of a stored (already normalized) symbol: ``"BTC/USDT"`` -> ``"USDT"``."""
    return symbol.split("/")[-1]


def to_dash(symbol: str) -> str:
    """The bot's form: ``"BTC/USD"`` -> ``"BTC-USD"``."""
    return normalize_symbol(symbol).replace("/", "-")
