"""How :class:`~adapters.ccxt_adapter.CcxtExchange` reads the account's websocket streams.

Where the account's configuration asks for streams (``stream = true``) and ccxt.pro
has the venue, the adapter's ccxt object is ccxt.pro's class of that venue, built
from the same settings dict (the ``[accounts.ccxt]`` table): its REST methods are the
same, and its websocket URLs come from the same ``urls`` table, so a configuration
that points REST at a local exchange points the streams there too.

Each ``watch_*`` waits for ccxt.pro's next message and converts what it carries
like the REST answers. ccxt.pro does not reconnect by itself: when the socket
drops, the pending call raises ``NetworkError`` (here a
:class:`~nija_broker.core.errors.TransientError`), the next call subscribes again,
and whatever happened in between was never seen: the caller polls once to learn it.

Kraken's streams need a token from a private REST call (``GetWebSocketsToken``),
which ccxt.pro asks for by itself when it subscribes. Where a venue wants one
request of the account at a time (Kraken's nonce rule), the token is asked for
first, through the same one-at-a-time door as every REST call of the account;
ccxt.pro then reuses it while it is valid.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import ccxt.async_support as ccxt

from nija_broker.core.errors import ExchangeError
from nija_broker.core.models import Balance, Fill, Order

from ._ccxt_calls import CcxtCalls
from ._ccxt_convert import convert_balance, convert_trade

__all__ = ["CcxtStreams", "streaming_class"]

T = TypeVar("T")

MAX_REMEMBERED_ORDERS = 5_000
_TERMS = ("symbol", "side", "type", "amount", "price")

_log = logging.getLogger("adapters.ccxt_adapter")


@cache  # asked once per venue, not per account: a class without ``has`` is built to ask
def streaming_class(exchange_id: str) -> type[Any] | None:
    """ccxt.pro's class of ``exchange_id`` when it streams the account's orders, else None."""
    import ccxt.pro as ccxtpro  # the websocket build: loaded only for streaming accounts

    cls = getattr(ccxtpro, exchange_id, None)
    if cls is None or exchange_id not in getattr(ccxtpro, "exchanges", ()):
        return None
    has = getattr(cls, "has", None) or cls().has  # class attribute on most venues
    return cls if has.get("watchOrders") else None


def _stream_row(raw: Mapping[str, Any]) -> dict[str, Any]:
    """ccxt.pro's order, with what its parse leaves in ``info`` on Kraken's v2 feed: our
    client order id (``cl_ord_id``; ccxt's clientOrderId is the numeric userref) and what
    has filled (``cum_qty``; ccxt reports ``filled`` as None and, without ``order_qty``,
    the amount as ``cum_qty``)."""
    row = dict(raw)
    info = raw.get("info")
    if not isinstance(info, Mapping):
        return row
    given = info.get("cl_ord_id")
    if isinstance(given, str) and given:
        row["clientOrderId"] = given
    if row.get("filled") is None and info.get("cum_qty") is not None:
        row["filled"] = float(info["cum_qty"])
        row["remaining"] = None
        if info.get("order_qty") is None:
            row["amount"] = None  # cum_qty, not the order's amount: taken from its terms
    return row


class CcxtStreams(CcxtCalls):
    """The account's order, trade and balance streams; a base of ``CcxtExchange``."""

    _stream_seen_orders: dict[str, tuple[Any, ...]]
    """Order id -> (status, filled) as last returned (bounded)."""
    _stream_seen_trades: dict[str, None]
    """Trade ids returned (bounded, oldest first)."""
    _stream_terms: dict[str, dict[str, Any]]
    """Order id -> its terms (symbol, side, type, amount, price) as the stream's first
    message of it gave them (bounded)."""

    async def _watch(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """One wait for the stream's next message; a drop or refusal mapped as REST's are."""
        try:
            if self._profile.serialize_requests and hasattr(self._ex, "authenticate"):
                async with self._one_at_a_time():
                    await self._ex.authenticate()  # the token, in nonce order (Kraken)
            return await call()
        except ccxt.BaseError as exc:
            raise self._mapped(exc, action) from exc

    async def watch_orders(self) -> list[Order]:
        """The orders the next message changed, as unified orders (impossible ones left out
        and logged: the poll that follows a stream sees them too)."""
        raws = self._unseen_orders(()) or self._unseen_orders(
            await self._watch("watch_orders", lambda: self._ex.watch_orders())
        )
        # ccxt.pro edits its cached orders in place after returning them: read them now.
        # Kraken's feed carries our client order id as cl_ord_id, which ccxt.pro leaves in
        # ``info`` (its clientOrderId is the numeric userref).
        # Kraken's status updates (filled, cancelled) carry the status and what filled, but
        # no symbol, side or type, and a cancel's amount is what had filled: those come from
        # the order's first message (its placement, or the subscription's snapshot). An
        # update of an order never described is left to the poll.
        now = self._clock.now()
        orders = []
        for raw in raws:
            row = _stream_row(raw)
            order_id = str(row.get("id"))
            if row.get("symbol") and row.get("amount") is not None:
                self._remember_terms(order_id, row)
            elif order_id in self._stream_terms:
                terms = self._stream_terms[order_id]
                row.update({k: v for k, v in terms.items() if k == "amount" or row.get(k) is None})
            else:
                _log.info("%s: stream update of order %s names no symbol", self._ex.id, order_id)
                continue
            try:
                orders.append(self._convert(row, now))
            except ExchangeError as exc:  # one unreadable update must not end the stream
                _log.warning("%s: stream update left out: %s", self._ex.id, exc)
        return orders

    # ccxt.pro resolves a watch with the message that arrived while it was awaited; one
    # that arrives before the next call only joins ccxt.pro's cache, and the next call
    # returns it with the message after. So what the cache holds that was not returned
    # yet is returned first, without waiting: a second fill pushed right after the first
    # is booked now, not when a third message comes.

    def _unseen_orders(self, raws: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        cached = getattr(self._ex, "orders", None) or ()
        # One entry per order, the newest: ccxt.pro may cache an order twice (Kraken's
        # status updates name no symbol, so they are filed apart from the placement), and
        # two entries of different states must not both read as unseen on every call.
        latest: dict[str, Mapping[str, Any]] = {}
        for raw in (*cached, *raws):
            latest[str(raw.get("id"))] = raw
        seen = self._stream_seen_orders
        rows: list[Mapping[str, Any]] = []
        for key, raw in latest.items():
            state = (raw.get("status"), raw.get("filled"), raw.get("info", {}).get("cum_qty"))
            if seen.get(key) == state:
                continue
            seen[key] = state
            if len(seen) > MAX_REMEMBERED_ORDERS:
                del seen[next(iter(seen))]
            rows.append(raw)
        return rows

    def _unseen_trades(self, raws: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        cached = getattr(self._ex, "myTrades", None) or ()
        seen = self._stream_seen_trades
        rows: list[Mapping[str, Any]] = []
        for raw in (*raws, *cached):
            key = str(raw.get("id"))
            if key in seen:
                continue
            seen[key] = None
            if len(seen) > MAX_REMEMBERED_ORDERS:
                del seen[next(iter(seen))]
            rows.append(raw)
        return rows

    def _remember_terms(self, order_id: str, row: Mapping[str, Any]) -> None:
        terms = self._stream_terms
        if order_id not in terms:
            terms[order_id] = {name: row.get(name) for name in _TERMS}
            if len(terms) > MAX_REMEMBERED_ORDERS:
                del terms[next(iter(terms))]  # the oldest first

    async def watch_my_trades(self) -> list[Fill]:
        """The account's trades the next message carried, with their fees and trade ids."""
        raws = self._unseen_trades(()) or self._unseen_trades(
            await self._watch("watch_my_trades", lambda: self._ex.watch_my_trades())
        )
        now = self._clock.now()
        return [convert_trade(t, account_id=self._account_id, now=now) for t in raws]

    async def watch_balance(self) -> Mapping[str, Balance]:
        """The account's balances after the next balance message (ccxt.pro keeps the whole
        balance, each message updating what it names)."""
        return self._balances(await self._watch("watch_balance", lambda: self._ex.watch_balance()))

    def _balances(self, raw: Mapping[str, Any]) -> dict[str, Balance]:
        """ccxt's balance structure as balances by unified currency (REST's and the stream's)."""
        balances = convert_balance(raw)
        unified = {self._profile.unified_currency(c): b for c, b in balances.items()}
        return {c: b if b.currency == c else b.replace(currency=c) for c, b in unified.items()}
