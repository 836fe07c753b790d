"""What the reconciler still owes an order: a look-up the exchange has not answered yet.

Shared by the steps that ask about one order at a time (confirmations of
vanished orders, orders followed by id, trades owed) so each counts its failed
attempts the same way and raises its attention event once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Owed"]


@dataclass(slots=True)
class Owed:
    """An order the exchange has not yet said what the reconciler asked: a vanished order
    awaiting confirmation, a followed order, an order whose trades are owed."""

    attempts: int = 0
    alerted: bool = False
    skipped: int = 0
    """Cycles left out since the last look-up, once alerted
    (see :meth:`nija_broker.sync.fills.Lookups.follow_known`)."""

    def failed(self, attention_after: int) -> bool:
        """Count a failed look-up; True once, when ``attention_after`` is reached: the
        caller then raises its attention event."""
        self.attempts += 1
        if self.attempts >= attention_after and not self.alerted:
            self.alerted = True
            return True
        return False
