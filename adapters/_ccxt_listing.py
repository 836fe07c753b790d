"""Open-orders listings parsed only where a row changed.

A poll lists the same open orders again and again, mostly unchanged. ccxt
parses every row of every answer into its unified order, and that parse is
most of what a poll costs: for 100 resting orders on Binance about 4 ms of
CPU time, against 0.4 ms for the request itself. :class:`ListingMemo` keeps,
per listing scope (all symbols, or one symbol), a digest of each row's raw
JSON and the order built from it the last time; a row whose digest is the
same gets that order again, and only the rows that differ are handed to
ccxt's own ``parse_orders``, then to the adapter's conversion.

Before any row, the answer as a whole: when the body of the HTTP answer is
the same as the last one of that scope (SHA-256), the last orders are the
answer, and no row is looked at. That is the common case of a poll, and costs
about 25 µs for 100 orders.

How the body and the raw rows are reached without copying ccxt's request
code: during a listing (a context variable, so other calls on the same ccxt
object in other tasks are untouched), the instance's ``on_rest_response``
hands the body to the listing as it passes, and its ``parse_orders`` answers
the raw rows it was given instead of parsing them. That needs the exchange's
``fetch_open_orders`` to return ``parse_orders``' answer as it is, which
ccxt 4.5's binance, kraken and okx do (the profile's ``listing_rows_direct``);
on any other exchange, or if ccxt answers a plain list anyway, every row is
parsed as before.

The digest is BLAKE2b (128 bits) of the row's ``marshal`` form: the same
JSON decodes to the same dict with its keys in the same order, and any
change to any field, nested ones included, changes the digest. The memo
holds only the digests and the orders of the last answer of each scope,
which the book holds anyway.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import marshal
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

from nija_broker.core.errors import ImpossibleAnswer
from nija_broker.core.models import Order

__all__ = ["ROWS_DIRECT", "ListingMemo", "RawRows", "install_raw_listing", "raw_rows"]

ROWS_DIRECT = frozenset({"binance", "kraken", "okx"})
"""Profiles whose ccxt ``fetch_open_orders`` returns ``parse_orders``' answer as it is
(read in ccxt 4.5.90's async binance.py, kraken.py and okx.py; okx only without
``paginate``, which the adapter never sends)."""


class _Capture:
    """One listing's view of its own request: the body of the answer, as ccxt read it."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body: str | None = None


_LISTING: contextvars.ContextVar[_Capture | None] = contextvars.ContextVar(
    "nija_broker_raw_listing", default=None
)

Convert = Callable[[Mapping[str, Any], datetime], Order]
ParseOrders = Callable[..., Any]


class RawRows:
    """What ccxt's ``parse_orders`` answers during a listing: its arguments, unparsed."""

    __slots__ = ("body", "limit", "market", "params", "rows", "since")

    def __init__(
        self, rows: Any, market: Any, since: Any, limit: Any, params: Any, body: str | None
    ) -> None:
        self.body = body
        """The HTTP body the rows were decoded from, where ccxt passed it on."""
        self.rows = rows
        self.market = market
        self.since = since
        self.limit = limit
        self.params = params


def install_raw_listing(exchange: Any) -> ParseOrders:
    """Let ``exchange`` (a ccxt instance) answer raw rows inside :func:`raw_rows`.

    Returns ccxt's own ``parse_orders`` (bound), for the rows that must be parsed.
    """
    original: ParseOrders = exchange.parse_orders
    on_rest_response: Callable[..., Any] = exchange.on_rest_response

    def parse_orders(
        orders: Any, market: Any = None, since: Any = None, limit: Any = None, params: Any = None
    ) -> Any:
        capture = _LISTING.get()
        if capture is not None:
            # Taken, not kept: callbacks scheduled during the request (aiohttp's keep-alive
            # timer) hold the context, and with it the capture, for seconds.
            body, capture.body = capture.body, None
            return RawRows(orders, market, since, limit, params, body)
        return original(orders, market, since, limit, {} if params is None else params)

    def passing_response(*args: Any) -> Any:
        body = on_rest_response(*args)
        capture = _LISTING.get()
        if capture is not None:
            capture.body = body if isinstance(body, str) else None
        return body

    exchange.parse_orders = parse_orders
    exchange.on_rest_response = passing_response
    return original


@contextlib.contextmanager
def raw_rows() -> Iterator[None]:
    """Inside: ``parse_orders`` of exchanges set up by :func:`install_raw_listing` answers
    :class:`RawRows`. Scoped to the current task's context."""
    token = _LISTING.set(_Capture())
    try:
        yield
    finally:
        _LISTING.reset(token)


def _digest(row: Any) -> bytes:
    return hashlib.blake2b(marshal.dumps(row), digest_size=16).digest()


class ListingMemo:
    """Per listing scope, the digest of each raw row and the order it gave (``None``: the
    row gave no order, ccxt's filter left it out)."""

    __slots__ = ("_answers", "_scopes", "parsed_rows", "reused_answers", "reused_rows")

    def __init__(self) -> None:
        self._scopes: dict[str | None, dict[bytes, Order | None]] = {}
        self._answers: dict[str | None, tuple[bytes, list[Order]]] = {}
        """Per scope, the digest of the last body answered without problems, and its orders."""
        self.reused_answers = 0
        self.parsed_rows = 0
        """Rows handed to ccxt's parser so far (for tests and benchmarks)."""
        self.reused_rows = 0

    def clear(self) -> None:
        self._scopes.clear()
        self._answers.clear()

    def orders(
        self,
        scope: str | None,
        raw: RawRows,
        parse_orders: ParseOrders,
        convert: Convert,
        now: datetime,
        problems: list[ImpossibleAnswer],
    ) -> list[Order]:
        """The orders of one listing answer; only the changed rows are parsed.

        A row that cannot become an order is left out and reported in ``problems``
        (and parsed again next time, so it is reported again). The listings of this
        adapter pass ccxt no ``since`` and no ``limit``: ccxt's filter by symbol is the
        only one a row meets, and it meets it one row at a time here.
        """
        body = None if raw.body is None else hashlib.sha256(raw.body.encode()).digest()
        last = self._answers.get(scope)
        if body is not None and last is not None and last[0] == body:
            self.reused_answers += 1
            return list(last[1])
        self._answers.pop(scope, None)
        given = len(problems)
        known = self._scopes.get(scope, {})
        fresh: dict[bytes, Order | None] = {}
        orders: list[Order] = []
        rows = raw.rows
        keyed = isinstance(rows, Mapping)  # Kraken: {txid: row}; others: [row, ...]
        params = {} if raw.params is None else raw.params
        for item in rows.items() if keyed else rows or ():
            digest = _digest(item)
            if digest in fresh:  # the same row twice in one answer: ccxt would give it twice
                order = fresh[digest]
            elif digest in known:
                order = known[digest]
                self.reused_rows += 1
            elif (order := self._elsewhere(scope, digest)) is not None:
                self.reused_rows += 1
            else:
                one = {item[0]: item[1]} if keyed else [item]
                parsed = parse_orders(one, raw.market, raw.since, raw.limit, params)
                self.parsed_rows += 1
                try:
                    order = convert(parsed[0], now) if parsed else None
                except ImpossibleAnswer as exc:
                    problems.append(exc)
                    continue
            fresh[digest] = order
            if order is not None:
                orders.append(order)
        self._scopes[scope] = fresh
        orders.sort(key=_created)  # as ccxt sorts its answer, by time (stable)
        if body is not None and len(problems) == given:
            self._answers[scope] = (body, list(orders))
        return orders

    def _elsewhere(self, scope: str | None, digest: bytes) -> Order | None:
        """The order another scope's same row gave, where this scope keeps it too: the
        listing of every symbol and those of one symbol see the same rows (start-up, and
        every ``full_listing_interval_s``), and hold one order object between them.

        A row of another symbol than ``scope``'s is not taken: ccxt's filter would leave
        it out here, and parsing it says so."""
        for other, rows in self._scopes.items():
            if other == scope:
                continue
            order = rows.get(digest)
            if order is not None and (scope is None or order.symbol == scope):
                return order
        return None


def _created(order: Order) -> datetime:
    return order.created_at
