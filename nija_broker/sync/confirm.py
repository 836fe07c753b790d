"""Confirmations: vanished orders asked about by id until the exchange says what happened.

Step 4 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`).
An order missing from the open-orders listing stays open here until
``fetch_order`` answers for it (DESIGN invariant 2, positive evidence): not
found, a timeout or a rate limit only count a failed attempt, and past
``attention_after`` attempts one attention event says so. A budget of calls
per cycle bounds the cost; the oldest orders go first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.errors import AccountFatal, ExchangeError, ImpossibleAnswer
from nija_broker.core.events import AttentionRequired
from nija_broker.core.reconcile import resolve
from nija_broker.sync.owed import Owed

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Confirmations"]


@dataclass(slots=True)
class Confirmations:
    """Orders awaiting the exchange's word. Runs on the event loop only."""

    unconfirmed: dict[str, Owed] = field(default_factory=dict)
    """Live orders missing from a listing (or whose cancel was refused), by order id."""
    ever_listed: set[str] = field(default_factory=set)
    """Live orders seen in a listing: visible on the exchange, so no lag to wait out."""

    def __contains__(self, order_id: object) -> bool:
        return order_id in self.unconfirmed

    def listed(self, order_ids: set[str], tracked: Iterable[str]) -> None:
        """These orders were in a listing: seen, and no longer missing. Those seen before
        and no longer ``tracked`` as live are forgotten (only memory: an order that is not
        live is never asked about)."""
        self.ever_listed.intersection_update(tracked)
        self.ever_listed |= order_ids
        for order_id in self.unconfirmed.keys() & order_ids:
            del self.unconfirmed[order_id]

    def owe(self, order_id: str) -> None:
        """Ask the exchange about ``order_id`` (its count kept if already owed)."""
        self.unconfirmed.setdefault(order_id, Owed())

    def settled(self, order_id: str) -> None:
        """The exchange spoke about ``order_id``: nothing more to ask."""
        self.unconfirmed.pop(order_id, None)

    async def confirm(
        self, sync: AccountSync, now: datetime, *, budget: int | None, startup: bool
    ) -> None:
        """Ask the exchange about vanished orders, oldest first, within ``budget`` calls."""
        if not self.unconfirmed:
            return  # nothing missing: no need to read the book
        view = sync.view  # the listing's read, unless the cycle changed the book since
        live = {o.id: o for o in (view.live if view is not None else await sync.live_orders())}
        for order_id in [i for i in self.unconfirmed if i not in live]:
            del self.unconfirmed[order_id]
        window_s = sync.settings.visibility_window_s
        limit = sync.settings.attention_after
        candidates = [
            live[order_id]
            for order_id in self.unconfirmed
            # A just-placed order may be missing from listings for a while (Binance
            # -2013 "order does not exist"); unless a listing already showed it,
            # asking before the window is over would only waste a call.
            if startup
            or order_id in self.ever_listed
            or (now - live[order_id].created_at).total_seconds() >= window_s
        ]
        # Oldest first; orders already past the attention limit go last so they cannot
        # starve the others of the budget.
        candidates.sort(
            key=lambda o: (self.unconfirmed[o.id].attempts >= limit, o.created_at, o.id)
        )
        if budget is not None:
            candidates = candidates[:budget]
        for order in candidates:
            entry = self.unconfirmed[order.id]
            try:
                answer = await sync.ask(
                    partial(sync.exchange.fetch_order, order.id, order.symbol), "fetch_order"
                )
            except AccountFatal:
                raise
            except ImpossibleAnswer as exc:
                # Nothing is booked from it; the order keeps its last good state, and a
                # later truthful answer (a cancel) still ends it.
                entry.attempts += 1
                sync.publish(
                    [
                        AttentionRequired(
                            account_id=sync.account_id,
                            at=sync.clock.now(),
                            order_id=order.id,
                            reason=str(exc),
                        )
                    ]
                )
                continue
            except ExchangeError as exc:
                # Not found, timed out, rate limited: none of it says the order ended.
                if entry.failed(limit):
                    sync.publish(
                        [
                            AttentionRequired(
                                account_id=sync.account_id,
                                at=sync.clock.now(),
                                order_id=order.id,
                                attempts=entry.attempts,
                                reason=(
                                    f"order {order.id} ({order.symbol}) is missing from the open "
                                    f"orders and {entry.attempts} confirmations failed, the last "
                                    f"with {type(exc).__name__}: {exc}; it stays open"
                                ),
                            )
                        ]
                    )
                continue
            event = resolve(order, answer, sync.clock.now(), sync.price_step(order.symbol))
            applied = await sync.commit([event]) if event is not None else []
            if event is None or applied or answer.is_open:
                # The exchange spoke: ended (applied), or still open and due in the next listing.
                self.settled(order.id)
