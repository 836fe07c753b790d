"""What the reconciler knows about each account's sync, shared with the guard and the API.

The reconciler writes an :class:`AccountLive` per account; the guard and the
API only read it. Each field is replaced whole (never edited in place), so a
reader in another thread sees either the old value or the new one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .models import Balance, Market
from .tiers import TierPolicy, TierTable, TierTracker


class SyncState(StrEnum):
    SYNCING = "syncing"
    """Never synced yet: state unknown."""
    OK = "ok"
    DEGRADED = "degraded"
    """Recent cycles failed; the last good state is older than it should be."""
    FAILED = "failed"
    """Failing past the limit, or the keys were refused: state unknown."""


@dataclass(frozen=True, slots=True)
class AccountHealth:
    state: SyncState = SyncState.SYNCING
    last_success: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = None

    @property
    def known(self) -> bool:
        """True when the account's state is trustworthy enough to judge entries on."""
        return self.state in (SyncState.OK, SyncState.DEGRADED)


@dataclass
class AccountLive:
    """The latest exchange-side view of one account (balances, equity, markets, health)."""

    account_id: str
    tier: TierTracker
    health: AccountHealth = field(default_factory=AccountHealth)
    balances: Mapping[str, Balance] = field(default_factory=dict)
    equity_usd: float | None = None
    quote_currency: str = "USD"
    markets: Mapping[str, Market] = field(default_factory=dict)

    @classmethod
    def create(cls, account_id: str, table: TierTable, pinned: str | None = None,
               quote_currency: str = "USD") -> AccountLive:
        return cls(account_id=account_id, tier=TierTracker(table, pinned),
                   quote_currency=quote_currency)

    def policy(self) -> TierPolicy | None:
        """The account's tier now; ``None`` until its equity is known (unless pinned)."""
        if self.tier.pinned is not None:
            return self.tier.table.get(self.tier.pinned)
        return self.tier.current
