"""A trader's pause of one account's entries, as a value: who, since when, why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Pause"]


@dataclass(frozen=True, slots=True)
class Pause:
    """An account's entries are paused: by whom, since when, why (may be empty).

    While it holds, the guard's entry rule ``paused`` blocks every entry of the
    account, whatever its tier; exits pass (DESIGN invariant 6)."""

    by: str
    at: datetime
    reason: str = ""
