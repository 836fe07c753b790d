"""Attention events said once: the reconciler's de-duplication of what needs a human.

The same contradiction (an impossible answer, held capital or a position that
disagrees with the exchange) is seen every cycle until someone acts; it is
raised once, and raised again only after the check that found it passed in
between (:meth:`Alerts.forget`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nija_broker.core.events import AttentionRequired, Event

__all__ = ["AlertKey", "Alerts"]

AlertKey = tuple[str | None, str]
"""(order id or None, what was found): one alert per key."""

log = logging.getLogger("nija_broker.reconciler")


@dataclass(slots=True)
class Alerts:
    """One account's attention events already raised. Runs on the event loop only."""

    account_id: str
    raised: set[AlertKey] = field(default_factory=set)

    def fresh(self, events: Sequence[Event]) -> list[Event]:
        """``events`` without the attention events raised before (each new one is logged)."""
        kept: list[Event] = []
        for event in events:
            if isinstance(event, AttentionRequired):
                key = (event.order_id, event.reason)
                if not self.once(key):
                    continue
                log.warning("account %s needs attention: %s", self.account_id, event.reason)
            kept.append(event)
        return kept

    def once(self, key: AlertKey) -> bool:
        """True the first time ``key`` is seen (and remember it); False after."""
        if key in self.raised:
            return False
        self.raised.add(key)
        return True

    def forget(self, keys: Iterable[AlertKey]) -> None:
        """The checks behind ``keys`` passed: raise them again if they fail again."""
        self.raised.difference_update(keys)
