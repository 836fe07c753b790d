"""A local exchange for ccxt: Binance or Kraken spot REST over the simulated engine, on loopback.

::

    engine = SimEngine(seed=1, clock=SystemClock())
    engine.add_market(Market(symbol="BTC/USDT", base="BTC", quote="USDT", ...), 50_000)
    engine.open_account("USER:alice", {"USDT": 1_000})
    async with EmulatorServer(engine, {"USER:alice": ("key", "secret")}) as server:
        exchange = ccxt.async_support.binance(binance_ccxt_config(server.url, "key", "secret"))

The same dict, minus the keys, can stand in an account's ``ccxt`` table in a
TOML configuration, so the whole runtime can be pointed at the emulator.
Kraken's dialect is :class:`KrakenEmulatorServer` with :func:`kraken_ccxt_config`
(Kraken secrets are base64, as Kraken issues them).

Fees are charged by each engine account's fee mode
(``engine.open_account(..., fee_mode="base_for_buys")`` or ``"BNB"``): Binance's
``myTrades`` and ``FULL`` fills give ``commission`` / ``commissionAsset`` as
charged, its orders no fee; Kraken serves only accounts that pay in quote, as
Kraken charges by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from .kraken import KrakenEmulatorServer, kraken_ccxt_config, kraken_urls
from .server import EmulatorServer

__all__ = [
    "EmulatorServer",
    "KrakenEmulatorServer",
    "binance_ccxt_config",
    "binance_urls",
    "binance_ws_urls",
    "kraken_ccxt_config",
    "kraken_urls",
]


@lru_cache(maxsize=1)
def _binance_api_urls() -> dict[str, str]:
    import ccxt  # the sync build: only its URL table is read, no session is opened

    urls: dict[str, Any] = dict(ccxt.binance().urls["api"])
    return {key: url for key, url in urls.items() if isinstance(url, str)}


@lru_cache(maxsize=1)
def _binance_ws_urls() -> dict[str, Any]:
    import ccxt.pro  # only its URL table is read: no connection or session is opened

    ws: dict[str, Any] = ccxt.pro.binance().describe()["urls"]["api"]["ws"]
    return ws


def _rebased(table: Mapping[str, Any], base: str) -> dict[str, Any]:
    """``table`` (nested as ccxt nests it) with every URL's host replaced by ``base``."""
    return {
        key: _rebased(url, base) if isinstance(url, Mapping) else base + urlsplit(url).path
        for key, url in table.items()
        if isinstance(url, str | Mapping)
    }


def binance_urls(server_url: str) -> dict[str, str]:
    """Every entry of ccxt's ``binance.urls['api']`` with its host replaced by ``server_url``.

    Paths are kept (``/api/v3``, ``/sapi/v1`` ...): the emulator serves
    Binance's own paths, and nothing is left pointing at a real host.
    """
    base = server_url.rstrip("/")
    return {key: base + urlsplit(url).path for key, url in _binance_api_urls().items()}


def binance_ws_urls(server_url: str) -> dict[str, Any]:
    """ccxt.pro's ``binance.urls['api']['ws']`` (nested: ``ws-api.spot`` ...) with every host
    replaced by the emulator's, as ``ws://`` (``wss://`` for an ``https`` server URL).

    Only ``ws-api.spot`` (``/ws-api/v3``, the WebSocket API that carries spot user data)
    is served; the rest point at the emulator too, so nothing reaches a real host.
    """
    parts = urlsplit(server_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return _rebased(_binance_ws_urls(), f"{scheme}://{parts.netloc}")


def binance_ccxt_config(
    server_url: str, api_key: str | None = None, secret: str | None = None
) -> dict[str, Any]:
    """Settings for ``ccxt.async_support.binance(...)`` that talk to the emulator.

    - ``urls.api``: every API entry rewritten to the emulator, the websocket ones
      (``urls.api.ws``, which ccxt.pro reads) included, so the same dict serves
      ``ccxt.async_support.binance`` and ``ccxt.pro.binance``;
    - ``fetchMarkets: spot`` and no currencies/margins look-ups: the emulator
      serves spot only;
    - no open-orders-without-symbol warning: one call for all symbols is what
      nija_broker wants;
    - no time-difference adjustment and ccxt's own limiter off: the server is
      local and does not enforce Binance's weights (nija_broker's shared
      :class:`~adapters.ratelimit.RateBudget` still applies).
    """
    config: dict[str, Any] = {
        "urls": {"api": {**binance_urls(server_url), "ws": binance_ws_urls(server_url)}},
        "enableRateLimit": False,
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
            "fetchMargins": False,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
            "adjustForTimeDifference": False,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    return config
