"""The trader's pause of an account's entries: who paused it, when, and why.

Private to :mod:`nija_broker.guard`. Runs on the owner's thread, like every guard
call. A pause is journaled in the store (``account_pauses``) before it counts, so it
survives a restart: an account's pause is read back from its last journal row the
first time the guard asks. While paused, the entry rule ``paused`` blocks every entry
of the account, whatever its tier; exits pass (DESIGN invariant 6).
"""

from __future__ import annotations

from datetime import datetime

from nija_broker.core.events import AccountPaused, AccountResumed
from nija_broker.core.pause import Pause
from nija_broker.state.store import PauseRecord, Store

__all__ = ["MAX_REASON_CHARS", "Pause", "Pauses", "check_pause_text"]

MAX_REASON_CHARS = 500
"""A pause's ``by`` and ``reason`` are shown on the page and in alerts: short lines."""


def check_pause_text(field: str, value: str) -> str:
    """``by`` / ``reason`` stripped, or a :class:`ValueError` naming the field."""
    if len(value) > MAX_REASON_CHARS:
        raise ValueError(f"{field} is longer than {MAX_REASON_CHARS} characters")
    if any(ord(c) < 32 for c in value):
        raise ValueError(f"{field} must be one line of printable text")
    return value.strip()


class Pauses:
    """Every account's pause (``None``: not paused), journaled in the store."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._known: dict[str, Pause | None] = {}

    def of(self, account_id: str) -> Pause | None:
        """The account's pause now; read from the store's journal the first time."""
        if account_id not in self._known:
            self._known[account_id] = self._stored(account_id)
        return self._known[account_id]

    def pause(
        self, account_id: str, by: str, reason: str, at: datetime
    ) -> tuple[Pause, AccountPaused | None]:
        """Pause the account's entries; the pause already in force stays as it was (the
        event is ``None`` then). Journaled before it counts."""
        current = self.of(account_id)
        if current is not None:
            return current, None
        by = check_pause_text("by", by) or "unknown"
        reason = check_pause_text("reason", reason)
        self._journal(
            PauseRecord(account_id=account_id, ts=at, kind="paused", by=by, reason=reason)
        )
        pause = self._known[account_id] = Pause(by=by, at=at, reason=reason)
        return pause, AccountPaused(account_id=account_id, at=at, by=by, reason=reason)

    def resume(self, account_id: str, by: str, at: datetime) -> AccountResumed | None:
        """Lift the account's pause (``None`` when it was not paused). Journaled first."""
        if self.of(account_id) is None:
            return None
        by = check_pause_text("by", by) or "unknown"
        self._journal(PauseRecord(account_id=account_id, ts=at, kind="resumed", by=by))
        self._known[account_id] = None
        return AccountResumed(account_id=account_id, at=at, by=by)

    def _journal(self, record: PauseRecord) -> None:
        if self.store is not None:
            self.store.journal_pause(record)

    def _stored(self, account_id: str) -> Pause | None:
        if self.store is None:
            return None
        last = self.store.pause_events(account_id, limit=1)
        if not last or last[0].kind != "paused":
            return None
        return Pause(by=last[0].by, at=last[0].ts, reason=last[0].reason)
