"""The closed-orders sweep: evidence for vanished orders, and orders nobody saw open.

Step 3 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`), on
the balance cadence. An order that opened and closed between two listings is
in no listing; its fills are found here. Where the exchange lists closed
orders one symbol at a time (Binance lists open orders without a symbol but
closed ones only by symbol), the sweep asks about every symbol the account
ever ordered, filled, held or reserved, and its ``watch_symbols``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.errors import AccountFatal, ExchangeError, TransientError
from nija_broker.core.events import Event
from nija_broker.core.exchange import Capabilities
from nija_broker.core.models import Order
from nija_broker.core.reconcile import resolve
from nija_broker.state.book import AccountBook
from nija_broker.sync.listing import listing_symbols

if TYPE_CHECKING:
    from nija_broker.sync.confirm import Confirmations
    from nija_broker.sync.cycle import AccountSync
    from nija_broker.sync.listing import Listing

__all__ = ["Sweeps"]

log = logging.getLogger("nija_broker.reconciler")


@dataclass(slots=True)
class Sweeps:
    """Where the sweep looks and from when. Runs on the event loop only."""

    known_symbols: set[str] = field(default_factory=set)
    """Every symbol the account ever ordered, filled, held or reserved, and its
    ``watch_symbols``: where a per-symbol sweep looks."""
    anchor: datetime | None = None
    """The last complete listing before the last successful sweep."""
    supported: bool = True
    """False once the exchange refused to list closed orders even per symbol."""
    per_symbol: bool = False
    """True once the exchange refused to list closed orders without a symbol."""
    last_requests: int | None = None
    """Requests the last sweep made (one per symbol where the exchange needs a symbol)."""

    def requests_per_sweep(self, capabilities: Capabilities) -> int:
        """Requests one sweep makes: the last sweep's count, else what the exchange's
        weights say it needs (a symbol each: every symbol known; else one)."""
        if not self.supported:
            return 0
        if self.last_requests is not None:
            return self.last_requests
        needs = self.per_symbol or "fetch_closed_orders" in capabilities.weights.per_symbol
        return max(len(self.known_symbols), 1) if needs else 1

    async def sweep(
        self, sync: AccountSync, now: datetime, listing: Listing, confirmations: Confirmations
    ) -> None:
        """Closed orders created since the anchor, resolved against the book.

        Why the anchor: an order created more than the visibility window before a
        complete listing and still open then was in that listing, so it is tracked.
        Any order never tracked was therefore created after (anchor - window), or
        closed before the previous sweep, which covered it. Anchoring on the last
        sweep's own time instead would miss an order that outlived a sweep while
        listings were failing.
        """
        margin = timedelta(seconds=sync.settings.visibility_window_s + sync.poll_interval_s)
        since = (
            self.anchor - margin
            if self.anchor is not None
            else now - timedelta(seconds=sync.settings.sweep_lookback_s)
        )
        # Only a complete listing of every symbol anchors (Listing.last_complete_at): an
        # order never tracked, on a symbol a per-symbol listing left out, was in no listing.
        anchor = listing.last_complete_at
        per_symbol = self.per_symbol or not sync.exchange.capabilities.open_orders_without_symbol
        try:
            answers = await self._closed_orders(sync, since, per_symbol)
        except AccountFatal:
            raise
        except TransientError:
            return  # the next sweep covers the same window again
        except ExchangeError as exc:
            if per_symbol:
                self.supported = False
                log.warning(
                    "account %s: closed orders cannot be listed (%s); orders that "
                    "open and close between two polls will be missed",
                    sync.account_id,
                    exc,
                )
                return
            # Binance lists open orders without a symbol but closed ones only by symbol.
            self.per_symbol = True
            return await self.sweep(sync, now, listing, confirmations)
        if anchor is not None:
            self.anchor = anchor
        tracked = await sync.in_book(_tracked, [a.id for a in answers]) if answers else {}
        events: list[Event] = []
        for answer in answers:
            known = tracked.get(answer.id)
            if known is not None and known.is_terminal:
                continue
            if known is None and answer.filled <= 0:
                continue  # never seen, nothing executed: nothing to book
            event = resolve(known, answer, now)
            if event is not None:
                events.append(event)
        for applied in await sync.commit(events):
            if applied.order.is_terminal:
                confirmations.settled(applied.order.id)

    async def _closed_orders(
        self, sync: AccountSync, since: datetime, per_symbol: bool
    ) -> list[Order]:
        scopes: list[str | None] = [None]
        if per_symbol:
            # Every symbol ever held, traded, ordered or reserved, and the watch list:
            # where an order nobody saw open can be.
            live, touched = await sync.in_book(_symbols_touched)
            wanted = set(listing_symbols(live, sync.live)) | self.known_symbols | touched
            markets = sync.live.markets
            scopes = [s for s in sorted(wanted) if not markets or s in markets]
        self.last_requests = len(scopes)
        answers: list[Order] = []
        for scope in scopes:
            answers.extend(
                await sync.ask(
                    partial(sync.exchange.fetch_closed_orders, scope, since), "fetch_closed_orders"
                )
            )
        return answers


# Run on the book's owner thread, through AccountSync.in_book.
def _tracked(book: AccountBook, order_ids: list[str]) -> dict[str, Order | None]:
    return {order_id: book.orders.get(order_id) for order_id in order_ids}


def _symbols_touched(book: AccountBook) -> tuple[list[Order], set[str]]:
    """The live orders, and the symbols of every order tracked and every position."""
    touched = {order.symbol for order in book.orders.orders()}
    touched.update(position.symbol for position in book.positions())
    return book.orders.live_orders(), touched
