"""The open-orders listing: one call, the pure diff, the changes committed.

Step 2 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`).
Where the exchange lists open orders without a symbol it is one call; where
it lists them one symbol at a time, the symbols asked about are those of the
live orders and the markets of held currencies (:func:`listing_symbols`).
Orders missing from the listing are handed to the confirmations
(:class:`~nija_broker.sync.confirm.Confirmations`): absence is never evidence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.events import AttentionRequired, OrderVanished
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Order
from nija_broker.core.reconcile import Snapshot, diff
from nija_broker.core.valuation import order_symbols

if TYPE_CHECKING:
    from nija_broker.sync.confirm import Confirmations
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Listing", "listing_symbols"]


def listing_symbols(live_orders: Iterable[Order], live: AccountLive) -> list[str]:
    """Symbols to ask about where an exchange lists open orders one symbol at a time:
    those of live orders, and the markets of held currencies (:func:`order_symbols`).
    Pure."""
    markets = live.markets
    wanted = {order.symbol for order in live_orders}
    wanted.update(order_symbols(live.balances, live.quote_currency, markets))
    return sorted(s for s in wanted if not markets or s in markets)


@dataclass(slots=True)
class Listing:
    """The listing's memory between cycles. Runs on the event loop only."""

    last_complete_at: datetime | None = None
    """When the last complete open-orders listing was requested: the closed-orders
    sweep's anchor (:class:`~nija_broker.sync.sweep.Sweeps`)."""

    async def run(self, sync: AccountSync, confirmations: Confirmations) -> datetime:
        """List the open orders and commit what changed; returns the time of the answer."""
        symbols = None
        if not sync.exchange.capabilities.open_orders_without_symbol:
            symbols = listing_symbols(await sync.live_orders(), sync.live)
        asked_at = sync.clock.now()
        page = await sync.ask(
            partial(sync.exchange.fetch_open_orders, symbols), "fetch_open_orders"
        )
        now = sync.clock.now()
        if page.complete:
            self.last_complete_at = asked_at
        # Read after the answer: the guard may have changed an order while it was asked.
        tracked = {order.id: order for order in (await sync.read_view(now)).live}
        events = diff(
            tracked,
            Snapshot(page.orders, page.complete),
            now,
            sync.price_steps(o.symbol for o in page.orders),
        )
        events.extend(
            AttentionRequired(
                account_id=sync.account_id, at=now, order_id=problem.order_id, reason=str(problem)
            )
            for problem in page.problems
        )
        confirmations.listed({order.id for order in page.orders}, tracked)
        await sync.commit(events)
        for event in events:
            if isinstance(event, OrderVanished):
                confirmations.owe(event.order.id)
        return now
