"""How Kraken spells things: asset codes, pair names, order and trade ids, numbers, times.

After Kraken's REST documentation (docs.kraken.com, "Spot REST API": Market Data,
Account Data). Numbers travel as fixed-point decimal strings, times as Unix
seconds with a fraction.

- assets carry Kraken's legacy codes where Kraken has them (``XXBT``,
  ``XETH``, ``ZUSD``) and their own name otherwise (``SOL``, ``USDT``);
  Bitcoin's short name is ``XBT``, never ``BTC``;
- a pair of two legacy assets is named by their codes (``XXBTZUSD``), other
  pairs by their short names (``SOLUSD``); ``altname`` is always the short
  form (``XBTUSD``) and ``wsname`` the slashed one (``XBT/USD``);
- order ids look like Kraken's (``OQCLML-BW3P3-BUCMWZ``), trade ids too
  (``T...``), ledger entries too (``L...``). They are a reversible scramble of
  the engine's sequence numbers, so a restarted server over the same engine gives
  the same ids.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from nija_broker.core.models import Market

# Unified code -> (Kraken asset code, Kraken short name), for assets Kraken lists with an
# X (crypto) or Z (fiat) prefix. Everything else keeps its own name as code and altname.
_LEGACY_ASSETS: dict[str, tuple[str, str]] = {
    "BTC": ("XXBT", "XBT"),
    "ETH": ("XETH", "ETH"),
    "LTC": ("XLTC", "LTC"),
    "XRP": ("XXRP", "XRP"),
    "XLM": ("XXLM", "XLM"),
    "XMR": ("XXMR", "XMR"),
    "ZEC": ("XZEC", "ZEC"),
    "ETC": ("XETC", "ETC"),
    "DOGE": ("XXDG", "XDG"),
    "USD": ("ZUSD", "USD"),
    "EUR": ("ZEUR", "EUR"),
    "GBP": ("ZGBP", "GBP"),
    "CAD": ("ZCAD", "CAD"),
    "JPY": ("ZJPY", "JPY"),
    "AUD": ("ZAUD", "AUD"),
}


# ------------------------------------------------------------------ names


def asset_code(currency: str) -> str:
    return _LEGACY_ASSETS.get(currency, (currency, currency))[0]


def asset_altname(currency: str) -> str:
    return _LEGACY_ASSETS.get(currency, (currency, currency))[1]


def pair_id(market: Market) -> str:
    base, quote = market.base, market.quote
    if base in _LEGACY_ASSETS and quote in _LEGACY_ASSETS:
        return asset_code(base) + asset_code(quote)
    return asset_altname(base) + asset_altname(quote)


def pair_altname(market: Market) -> str:
    return asset_altname(market.base) + asset_altname(market.quote)


def pair_wsname(market: Market) -> str:
    return f"{asset_altname(market.base)}/{asset_altname(market.quote)}"


def pair_names(market: Market) -> tuple[str, str, str]:
    """Every name Kraken accepts for a pair in a request: id, altname, wsname."""
    return pair_id(market), pair_altname(market), pair_wsname(market)


# ---------------------------------------------------------------- order ids

_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ID_SPACE = 36**16
# Odd and not a multiple of 3, hence invertible modulo 36**16: the scramble is a bijection.
_ID_MULTIPLIER = 0x9E3779B97F4A7C15 % _ID_SPACE
_ID_INVERSE = pow(_ID_MULTIPLIER, -1, _ID_SPACE)
_TXID = re.compile(r"^([OT])([0-9A-Z]{5})-([0-9A-Z]{5})-([0-9A-Z]{6})$")


def _scramble(prefix: str, seq: int) -> str:
    n = (seq * _ID_MULTIPLIER) % _ID_SPACE
    chars = []
    for _ in range(16):
        n, digit = divmod(n, 36)
        chars.append(_ID_ALPHABET[digit])
    text = "".join(chars)
    return f"{prefix}{text[:5]}-{text[5:10]}-{text[10:]}"


def _unscramble(prefix: str, txid: str) -> int | None:
    match = _TXID.match(txid)
    if match is None or match.group(1) != prefix:
        return None
    text = "".join(match.groups()[1:])
    n: int = sum(_ID_ALPHABET.index(c) * 36**i for i, c in enumerate(text))
    seq: int = (n * _ID_INVERSE) % _ID_SPACE
    return seq


def order_txid(engine_id: str) -> str:
    return _scramble("O", int(engine_id))


def engine_order_id(txid: str) -> str | None:
    """The engine's id behind a Kraken order id; ``None`` when ``txid`` is not one of ours."""
    seq = _unscramble("O", txid)
    return str(seq) if seq is not None else None


def trade_txid(engine_trade_id: str) -> str:
    return _scramble("T", int(engine_trade_id))


def engine_trade_id(txid: str) -> str | None:
    seq = _unscramble("T", txid)
    return str(seq) if seq is not None else None


def ledger_txid(seq: int) -> str:
    """A ledger entry's id, as the websocket ``balances`` channel names it (``L...``)."""
    return _scramble("L", seq)


# ------------------------------------------------------------------ numbers


def fmt(value: float | None, decimals: int = 8) -> str:
    """A fixed-point decimal string, as Kraken prints amounts and prices."""
    if value is None or not math.isfinite(value):
        value = 0.0
    return f"{Decimal(repr(value)):.{decimals}f}"


def seconds(ts_ms: int) -> float:
    return round(ts_ms / 1000, 4)
