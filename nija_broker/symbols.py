"""Symbols are stored in ccxt's ``BASE/QUOTE`` form; the bot's ``BASE-QUOTE`` is accepted too."""

from __future__ import annotations

import re

_SYMBOL = re.compile(r"^([A-Z0-9]{1,20})[/\-]([A-Z0-9]{1,20})$")


def normalize_symbol(value: str) -> str:
    """``"btc-usd"`` -> ``"BTC/USD"``. Raises ``ValueError`` naming the value otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"symbol must be a string like 'BTC/USD' or 'BTC-USD', got {value!r}")
    match = _SYMBOL.match(value.strip().upper())
    if match is None:
        raise ValueError(f"symbol must look like 'BTC/USD' or 'BTC-USD', got {value!r}")
    return f"{match.group(1)}/{match.group(2)}"


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
