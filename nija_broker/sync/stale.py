"""Stale entry orders: cancelled on the exchange, or alerted once, by the tier's rule.

Step 6 of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`).
An open order older than the tier's ``stale_max_age_s`` is stale; only entry
orders unless the tier says ``stale_includes_exits`` (DESIGN invariant 6: a
resting stop-loss is not stale). With ``stale_action = "cancel"`` it is
cancelled, within ``stale_cancel_budget`` calls a cycle, and booked cancelled
only on the exchange's answer; with ``"alert"`` one event per order says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.errors import AccountFatal, ExchangeError, OrderError
from nija_broker.core.events import StaleOrderFound
from nija_broker.core.models import Order
from nija_broker.core.reconcile import resolve
from nija_broker.core.tiers import StaleAction
from nija_broker.state.book import AccountBook

if TYPE_CHECKING:
    from nija_broker.sync.confirm import Confirmations
    from nija_broker.sync.cycle import AccountSync

__all__ = ["StaleOrders", "stale_orders"]


@dataclass(slots=True)
class StaleOrders:
    """Stale orders already alerted. Runs on the event loop only."""

    alerted: set[str] = field(default_factory=set)
    """Orders a ``StaleOrderFound`` alert was raised for, while they stay stale."""

    async def handle(self, sync: AccountSync, confirmations: Confirmations) -> None:
        policy = sync.live.policy()
        if policy is None:
            return  # tier unknown until the first balance: no basis for a decision
        now = sync.clock.now()
        view = sync.view
        candidates = (
            view.stale
            # The listing's view, judged at its time (a few ms ago) unless the cycle
            # changed the book since.
            if view is not None and view.stale is not None
            else await sync.in_book(
                stale_orders, now, policy.stale_max_age_s, policy.stale_includes_exits
            )
        )
        stale = [order for order in candidates if order.id not in confirmations]
        if policy.stale_action is StaleAction.ALERT:
            live_ids = {order.id for order in stale}
            self.alerted &= live_ids
            fresh = [order for order in stale if order.id not in self.alerted]
            self.alerted.update(order.id for order in fresh)
            sync.publish(
                [
                    StaleOrderFound(
                        account_id=sync.account_id,
                        at=now,
                        order=order,
                        max_age_s=policy.stale_max_age_s,
                        action="alert",
                    )
                    for order in fresh
                ]
            )
            return
        for order in stale[: sync.settings.stale_cancel_budget]:
            try:
                answer = await sync.ask(
                    partial(sync.exchange.cancel_order, order.id, order.symbol), "cancel_order"
                )
            except AccountFatal:
                raise
            except OrderError:
                # Already closed or unknown: find out what happened before anything changes.
                confirmations.owe(order.id)
                continue
            except ExchangeError:
                continue  # transient; a lost answer shows up as a vanished order next cycle
            sync.publish(
                [
                    StaleOrderFound(
                        account_id=sync.account_id,
                        at=now,
                        order=order,
                        max_age_s=policy.stale_max_age_s,
                        action="cancel",
                    )
                ]
            )
            # Cancelled only on the exchange's answer (which may also say it filled first).
            event = resolve(order, answer, sync.clock.now())
            if event is not None:
                await sync.commit([event])


# Run on the book's owner thread, through AccountSync.in_book.
def stale_orders(
    book: AccountBook, now: datetime, max_age_s: float, include_exits: bool
) -> list[Order]:
    return book.orders.stale_orders(now, max_age_s, include_exits=include_exits)
