"""Every account's reservations: made, held, settled, expired and forgotten.

Private to :mod:`nija_broker.guard`. Runs on the owner's thread only (the
guard sends every call there), so nothing here locks.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from nija_broker.core.clock import Clock
from nija_broker.core.errors import StateError
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Allowed, OrderIntent, Reservation
from nija_broker.core.settings import GuardSettings
from nija_broker.guard.rules import AccountState
from nija_broker.guard.state import (
    AccountGuard,
    Settling,
    expired_long_ago,
    unknown_past_grace,
    visible,
)
from nija_broker.state.books import Books

__all__ = ["Reservations"]


class Reservations:
    """Each account's :class:`AccountGuard`, and which account holds each reservation id."""

    def __init__(
        self, books: Books, live: Mapping[str, AccountLive], clock: Clock, settings: GuardSettings
    ) -> None:
        self.books = books
        self.live = live
        self.clock = clock
        self.settings = settings
        self._accounts: dict[str, AccountGuard] = {}
        self._where: dict[str, str] = {}  # reservation id -> account id

    def account(self, account_id: str) -> AccountGuard:
        return self._accounts.setdefault(account_id, AccountGuard())

    def find(
        self,
        reservation_id: str,
        *,
        settled: bool = False,
    ) -> tuple[str, AccountGuard, Reservation, Settling | None]:
        """The open reservation (``settled``: or the settling entry) of that id."""
        account_id = self._where.get(reservation_id)
        account = self._accounts.get(account_id) if account_id is not None else None
        reservation = settling = None
        if account is not None:
            reservation = account.unresolved.get(reservation_id)
            settling = account.settling.get(reservation_id) if settled else None
        if reservation is None and settling is not None:
            reservation = settling.reservation
        if account_id is None or account is None or reservation is None:
            raise StateError(
                f"no open reservation {reservation_id!r}: it was already confirmed or "
                "released, or expired long ago"
            )
        return account_id, account, reservation, settling

    def held(self, account_id: str) -> list[Reservation]:
        """Reservations that count now (in flight or settling), oldest first."""
        account = self.account(account_id)
        self.expire(account_id, account)
        held = [*account.in_flight.values(), *(s.reservation for s in account.settling.values())]
        return sorted(held, key=lambda r: (r.created_at, r.id))

    # ------------------------------------------------------------------ a reservation's life

    def new(self, intent: OrderIntent, state: AccountState, now: datetime) -> Reservation:
        reserved_usd = 0.0
        if intent.is_entry:
            notional = intent.notional(state.last_prices.get(intent.symbol)) or 0.0
            reserved_usd = notional * (1.0 + state.fee_rate)
        return self.make(intent, reserved_usd, now)

    def make(self, intent: OrderIntent, reserved_usd: float, created_at: datetime) -> Reservation:
        return Reservation(
            id=f"rsv-{uuid.uuid4().hex}",
            account_id=intent.account_id,
            client_order_id=intent.client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            type=intent.type,
            is_entry=intent.is_entry,
            reserved_usd=reserved_usd,
            created_at=created_at,
            expires_at=self.clock.monotonic() + self.settings.reservation_ttl_s,
        )

    def hold(self, account: AccountGuard, answer: Allowed) -> None:
        reservation = answer.reservation
        assert reservation is not None
        account.in_flight[reservation.id] = reservation
        account.unresolved[reservation.id] = reservation
        account.by_client_id[reservation.client_order_id] = reservation.id
        account.answers[reservation.id] = answer
        self._where[reservation.id] = reservation.account_id

    def settle(
        self, account_id: str, account: AccountGuard, reservation: Reservation, order_id: str | None
    ) -> None:
        """Confirmed: an entry keeps counting (settling) until the account's state shows it."""
        self.forget(account, reservation, "confirmed")
        if reservation.is_entry:
            live = self.live.get(account_id)
            account.settling[reservation.id] = Settling(
                reservation,
                order_id,
                self.clock.monotonic(),
                live.balances if live is not None else None,
            )
            self._where[reservation.id] = account_id

    def drop_settling(self, account: AccountGuard, reservation_id: str) -> None:
        if account.settling.pop(reservation_id, None) is not None:
            self._where.pop(reservation_id, None)

    def forget(
        self, account: AccountGuard, reservation: Reservation, outcome: str | None = None
    ) -> None:
        """Drop an unresolved reservation; ``outcome`` (how it ended) keeps its client
        order id from being reserved again. ``None``: never journaled, the id is free."""
        account.in_flight.pop(reservation.id, None)
        account.unresolved.pop(reservation.id, None)
        account.answers.pop(reservation.id, None)
        if account.by_client_id.get(reservation.client_order_id) == reservation.id:
            del account.by_client_id[reservation.client_order_id]
        if outcome is not None:
            account.finish(reservation.client_order_id, outcome)
        self._where.pop(reservation.id, None)

    def expire(self, account_id: str, account: AccountGuard) -> None:
        """In flight past its ttl: stops counting, stays confirmable, its intent unresolved.
        Settling: gone once the account's state shows the order, or ``settle_max_s``."""
        mono = self.clock.monotonic()
        for rid in [r.id for r in account.in_flight.values() if r.expires_at <= mono]:
            del account.in_flight[rid]
        forget_before = mono - self.settings.settle_max_s
        for rid in [
            r.id for r in account.unresolved.values() if expired_long_ago(r, account, forget_before)
        ]:
            self.forget(account, account.unresolved[rid], "expired")
        if not account.settling:
            return
        live = self.live.get(account_id)
        balances = live.balances if live is not None else None
        book = self.books.get(account_id)
        now = self.clock.now()
        for rid, settling in list(account.settling.items()):
            gone = settling.confirmed_at <= forget_before or (
                balances is not settling.balances_seen and visible(settling, book.orders, balances)
            )
            if not gone:
                gone = unknown_past_grace(
                    account_id, settling, book, now, self.settings.not_found_grace_s
                )
            if gone:
                self.drop_settling(account, rid)
