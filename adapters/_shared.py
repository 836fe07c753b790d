"""What every account of one exchange can share, shared: tables, connections, markets.

A fleet runs hundreds of accounts on the same few exchanges; ccxt builds each
instance as if it were alone. Per account that is about 400 KiB of tables
copied from the exchange's description, an HTTP connection pool of its own,
and its own copy of every market. Here:

- :func:`share_tables`: the tables ccxt copies into each instance from the
  exchange's description and only reads afterwards (``api``, the error
  tables, ``has``, ``features``, ...) become one object per exchange class.
  ccxt builds them deterministically from the class; a table the account's
  own ``[accounts.ccxt]`` settings name is left alone. Python ccxt reads
  ``api`` only while building its class, the others only through look-ups.
- :class:`SessionPool`: one aiohttp session (one connection pool, kept-alive
  connections per host) per event loop and TLS context, for every account;
  closed when the last account using it closes. The pool bounds the
  connections a fleet opens (:data:`CONNECTIONS`, :data:`CONNECTIONS_PER_HOST`).
- :class:`SharedMarkets`: markets loaded once per exchange and settings, then
  handed to each account's ccxt instance with ccxt's own
  ``set_markets_from_exchange`` (the same dicts, read-only), and the converted
  :class:`~nija_broker.core.models.Market` table shared too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import aiohttp

from nija_broker.core.models import Market

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_PER_HOST",
    "MarketsEntry",
    "SessionPool",
    "SharedMarkets",
    "share_tables",
    "shared_table",
]

_TABLES = (
    "api",
    "exceptions",
    "httpExceptions",
    "has",
    "features",
    "timeframes",
    "ecdsaCurves",
    "ecdsaPrehashedAlgorithms",
    "requiredCredentials",
    "commonCurrencies",
)
_canonical: dict[tuple[type, str], Any] = {}


def share_tables(exchange: Any, settings: Mapping[str, Any]) -> None:
    """Point ``exchange``'s read-only description tables at its class's one copy.

    ``settings`` is what the ccxt constructor was given: a table named there may
    differ from the class's and keeps its own copy.
    """
    cls = type(exchange)
    for name in _TABLES:
        if name in settings:
            continue
        value = getattr(exchange, name, None)
        if not isinstance(value, dict):
            continue
        setattr(exchange, name, _canonical.setdefault((cls, name), value))


def shared_table(cls: type, name: str) -> Any:
    """The one copy of ``cls``'s read-only table ``name`` (``None``: not shared)."""
    return _canonical.get((cls, name))


CONNECTIONS = 256
"""Connections the pool opens at most, over all hosts (aiohttp's default is 100)."""
CONNECTIONS_PER_HOST = 64
"""Connections to one host at most: a fleet's burst queues here, not at the venue."""


class SessionPool:
    """One aiohttp session per event loop and TLS context, shared by reference count."""

    _sessions: ClassVar[
        dict[tuple[int, int], tuple[aiohttp.ClientSession, asyncio.AbstractEventLoop, int]]
    ] = {}

    @classmethod
    def acquire(cls, ssl: Any, trust_env: bool) -> tuple[aiohttp.ClientSession, tuple[int, int]]:
        """The running loop's session for ``ssl`` (an ``SSLContext``, or False), and the key
        to :meth:`release` it with."""
        loop = asyncio.get_running_loop()
        key = (id(loop), id(ssl))
        held = cls._sessions.get(key)
        if held is None or held[0].closed or held[1] is not loop:
            connector = aiohttp.TCPConnector(  # as ccxt builds its own, bounded
                ssl=ssl,
                limit=CONNECTIONS,
                limit_per_host=CONNECTIONS_PER_HOST,
                enable_cleanup_closed=True,
                family=socket.AF_UNSPEC,
                happy_eyeballs_delay=0,
            )
            held = (aiohttp.ClientSession(connector=connector, trust_env=trust_env), loop, 0)
        session, _, users = held
        cls._sessions[key] = (session, loop, users + 1)
        return session, key

    @classmethod
    async def release(cls, key: tuple[int, int]) -> None:
        """One account less on the session of ``key``; the last one closes it."""
        held = cls._sessions.get(key)
        if held is None:
            return
        session, loop, users = held
        if users > 1:
            cls._sessions[key] = (session, loop, users - 1)
            return
        del cls._sessions[key]
        await session.close()


class MarketsEntry:
    """The markets of one exchange and settings: the ccxt instance that loaded them,
    and their conversion."""

    __slots__ = ("__weakref__", "converted", "loading", "source")

    def __init__(self) -> None:
        self.source: Any = None
        self.converted: dict[str, Market] | None = None
        self.loading: asyncio.Future[None] | None = None


class SharedMarkets:
    """Markets loaded once per exchange id and ccxt settings, for every account with them.

    An entry lives as long as an account holds it (weakly registered), so a test's
    emulator on a fresh port does not share with the last one.
    """

    _entries: ClassVar[weakref.WeakValueDictionary[str, MarketsEntry]] = (
        weakref.WeakValueDictionary()
    )

    @classmethod
    def entry(cls, exchange_id: str, sandbox: bool, settings: Mapping[str, Any]) -> MarketsEntry:
        """The entry of accounts with these settings (keys left out by the caller)."""
        key = json.dumps([exchange_id, sandbox, settings], sort_keys=True, default=repr)
        found = cls._entries.get(key)
        if found is None:
            found = MarketsEntry()
            cls._entries[key] = found
        return found

    @staticmethod
    async def load(
        entry: MarketsEntry,
        exchange: Any,
        load: Callable[[], Awaitable[dict[str, Market]]],
    ) -> dict[str, Market]:
        """The entry's converted markets, ``exchange`` given ccxt's markets too.

        The first account to ask runs ``load`` (which loads ``exchange``'s markets and
        converts them); the others of the same loop wait for it and take its result. A
        failed load is not kept: the next account to ask tries again.
        """
        while entry.converted is None:
            loop = asyncio.get_running_loop()
            waiting = entry.loading
            if waiting is not None and waiting.get_loop() is loop and not waiting.done():
                await asyncio.wait([waiting])  # its end, whatever the outcome
                continue
            done: asyncio.Future[None] = loop.create_future()
            entry.loading = done
            try:
                converted = await load()
                entry.source, entry.converted = exchange, converted
                return converted
            finally:
                entry.loading = None
                done.set_result(None)
        if exchange is not entry.source:
            exchange.set_markets_from_exchange(entry.source)
        return entry.converted
