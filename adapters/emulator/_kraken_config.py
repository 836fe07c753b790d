"""The client side of the Kraken emulator: ccxt settings that point ``ccxt.kraken`` (and
``ccxt.pro.kraken``) at it."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit


@lru_cache(maxsize=1)
def _kraken_api_urls() -> dict[str, str]:
    import ccxt  # the sync build: only its URL table is read, no session is opened

    urls: dict[str, str] = dict(ccxt.kraken().urls["api"])
    return urls


@lru_cache(maxsize=1)
def _kraken_ws_urls() -> dict[str, str]:
    import ccxt.pro  # only its URL table is read: no session or socket is opened

    urls: dict[str, str] = dict(ccxt.pro.kraken().urls["api"]["ws"])
    return urls


def kraken_urls(server_url: str) -> dict[str, str]:
    """ccxt's ``kraken.urls['api']`` with every host replaced by ``server_url`` (paths kept)."""
    base = server_url.rstrip("/")
    return {key: base + urlsplit(url).path for key, url in _kraken_api_urls().items()}


def kraken_ws_urls(server_url: str) -> dict[str, str]:
    """ccxt.pro's ``kraken.urls['api']['ws']`` pointed at the emulator, paths kept.

    ``http://127.0.0.1:PORT`` becomes ``ws://127.0.0.1:PORT`` (``https`` becomes ``wss``).
    Kraken's public and private hosts both land on the one emulator, so ``privateV2``
    and ``publicV2`` are the same ``.../v2``: the emulator serves the private channels
    there (``executions``, ``balances``) and refuses the public ones.
    """
    parts = urlsplit(server_url.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    base = f"{scheme}://{parts.netloc}"
    return {key: base + urlsplit(url).path for key, url in _kraken_ws_urls().items()}


def kraken_ccxt_config(
    server_url: str, api_key: str | None = None, secret: str | None = None
) -> dict[str, Any]:
    """Settings for ``ccxt.async_support.kraken(...)`` and ``ccxt.pro.kraken(...)`` that
    talk to the emulator.

    - ``urls.api``: ``public`` and ``private`` (and the help-centre entry ccxt
      also lists) rewritten to the emulator; ccxt appends ``/0/public/...``;
    - ``urls.api.ws``: every websocket entry ccxt.pro lists, rewritten to the emulator
      (``ws://``), so the one dict serves ccxt and ccxt.pro; plain ccxt ignores it;
    - ccxt's own limiter off: the server is local (nija_broker's shared
      :class:`~adapters.ratelimit.RateBudget` still applies).

    Without keys the dict can stand in an account's ``[accounts.ccxt]`` table.
    """
    api: dict[str, Any] = dict(kraken_urls(server_url))
    api["ws"] = kraken_ws_urls(server_url)
    config: dict[str, Any] = {
        "urls": {"api": api},
        "enableRateLimit": False,
        "options": {"adjustForTimeDifference": False},
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    return config
