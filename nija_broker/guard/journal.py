"""The guard's journal: every decision, every intent before its order is sent, every
breaker trip and resume, written to the store.

Private to :mod:`nija_broker.guard`. Runs on the owner's thread, which is the
thread that runs every SQLite statement of the account state: an intent is
stored before :meth:`Guard.decide` answers, so before any request leaves
(DESIGN invariant 4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from nija_broker.core.errors import StateError
from nija_broker.core.events import Event
from nija_broker.core.intent import Allowed, Blocked, Decision, Reservation
from nija_broker.guard.board import BreakerBoard
from nija_broker.guard.state import GuardConflict, decision_record, request_json
from nija_broker.state.store import Store

__all__ = ["Journal", "put_intent"]

log = logging.getLogger("nija_broker.guard")


def put_intent(store: Store, decision: Allowed, reservation: Reservation, now: datetime) -> None:
    """Journal an allowed intent with its decision; :class:`GuardConflict` if the store
    holds its client order id with another request."""
    intent = decision.intent
    try:
        store.put_intent(
            intent.account_id,
            intent.client_order_id,
            request_json(intent, reservation.reserved_usd),
            now,
            decision=decision_record(decision, now),
        )
    except StateError as exc:
        # The store refuses a client order id journaled before (before a restart, or
        # long ago) with another request; its message is the only sign of it.
        if "already journaled" not in str(exc):
            raise
        raise GuardConflict(
            f"client_order_id {intent.client_order_id!r} of account {intent.account_id!r} "
            "was already used for another request",
            field="client_order_id",
            value=intent.client_order_id,
        ) from exc


class Journal:
    """Writes what the guard decided; a guard without a store journals nothing."""

    def __init__(
        self,
        store: Store | None,
        breakers: BreakerBoard,
        event_sinks: list[Callable[[Sequence[Event]], None]],
    ) -> None:
        self.store = store
        self.breakers = breakers
        self.event_sinks = event_sinks

    def decision(self, decision: Decision, now: datetime) -> None:
        """An allowed decision with its intent (pending), or a blocked one; raises if the
        store refuses it (the caller then drops the reservation: not journaled, not sent)."""
        if self.store is None:
            return
        reservation = decision.reservation if isinstance(decision, Allowed) else None
        if isinstance(decision, Allowed) and reservation is not None:
            put_intent(self.store, decision, reservation, now)
        else:
            self.store.journal_decision(decision_record(decision, now))

    def blocked_check(self, decision: Blocked, now: datetime) -> None:
        """A dry run's block: its answer stands even if the store cannot take it."""
        if self.store is None:
            return
        try:
            self.store.journal_decision(decision_record(decision, now))
        except StateError as exc:
            log.warning(
                "account %s: blocked check not journaled: %s", decision.intent.account_id, exc
            )

    def intent_status(
        self,
        account_id: str,
        client_order_id: str,
        status: str,
        at: datetime,
        order_id: str | None = None,
    ) -> None:
        if self.store is not None:
            self.store.set_intent_status(account_id, client_order_id, status, at, order_id=order_id)

    def breaker_events(self, account_id: str) -> None:
        """Journal and publish the trips and resumes the last evaluation found."""
        found = self.breakers.take_events(account_id)
        if not found:
            return
        events = [event for event, _ in found]
        for event, record in found:
            log.warning(
                "account %s: breaker %s %s: %s", account_id, event.rule, record.kind, record.reason
            )
            if self.store is not None:
                try:
                    self.store.journal_breaker(record)
                except StateError as exc:
                    log.warning("account %s: breaker event not journaled: %s", account_id, exc)
        for sink in self.event_sinks:
            sink(events)
