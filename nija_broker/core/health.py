"""What the reconciler knows about each account's sync, shared with the guard and the API.

The reconciler writes an :class:`AccountLive` per account; the guard and the
API only read it. Each field is replaced whole (never edited in place), so a
reader in another thread sees either the old value or the new one.

``health`` records the reconciler's cycles (a cycle that succeeds is ``ok``);
what others are shown is :meth:`AccountLive.reported_health`, which is also
``degraded`` while the account's equity cannot be established (it holds
something no price of its exchange values and nothing that one does), and
``failed`` while the account's book cannot read its store back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from nija_broker.core.models import Balance, Market
from nija_broker.core.tiers import TierPolicy, TierTable, TierTracker


class SyncState(StrEnum):
    SYNCING = "syncing"
    """Never synced yet: state unknown."""
    OK = "ok"
    DEGRADED = "degraded"
    """Recent cycles failed, so the last good state is older than it should be; or the
    cycles succeed but the account's equity cannot be established."""
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


@dataclass(frozen=True, slots=True)
class RequestWeight:
    """What one account's polling costs against its venue's rate limit, in the venue's
    own units a minute (Binance: request weight). Replaced whole by the account's poller
    after every cycle, as ``health`` is."""

    planned_per_min: float
    """From the listing plan, the intervals and the weights the exchange reports."""
    spent_last_min: float | None = None
    """Measured: what the account's requests cost in the last minute, where the
    exchange counts it (``None``: it does not)."""
    listing: str = ""
    """The listing plan in words (``per symbol (2)``, ``all symbols``)."""
    unit: str = "requests"
    limit_per_min: float | None = None
    """The venue's documented limit in the same units a minute, where known."""
    per_key: bool = False
    """The limit counts per API key; else per IP, shared by every account there."""


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """An account's websocket stream: ``up`` (the poll runs at ``stream_poll_interval_s``),
    ``connecting`` or ``down`` (the poll runs at ``poll_interval_s``), since when, why."""

    state: str = "connecting"
    since: datetime | None = None
    last_message: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None


@dataclass
class AccountLive:
    """The latest exchange-side view of one account (balances, equity, markets, health).

    ``equity_usd`` is in ``quote_currency`` (``None`` while unknown, including
    while it cannot be established). ``unvalued_holdings`` are the currencies
    the last balance refresh found held but could not value; ``valuation_problem``
    says why equity could not be established at all (``None`` when it was).
    """

    account_id: str
    tier: TierTracker
    health: AccountHealth = field(default_factory=AccountHealth)
    balances: Mapping[str, Balance] = field(default_factory=dict)
    equity_usd: float | None = None
    quote_currency: str = "USD"
    markets: Mapping[str, Market] = field(default_factory=dict)
    unvalued_holdings: tuple[str, ...] = ()
    valuation_problem: str | None = None
    balances_at: datetime | None = None
    """When ``balances`` were fetched (exchange time of the request)."""
    position_mismatches: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """Base asset -> (ledger quantity, exchange balance) disagreeing on two balance
    fetches in a row: the guard then believes the exchange's balance."""
    request_weight: RequestWeight | None = None
    """What the account's polling costs against its venue's limit; ``None`` until its
    first cycle. Written by its poller, as ``health`` is."""
    exchange: str | None = None
    """The account's ccxt exchange id (``None`` where the caller did not say)."""
    stale_cancels: int = 0
    """Stale orders cancelled since the process started, each confirmed by the exchange."""
    stream: StreamHealth | None = None
    """The account's websocket stream (``None``: it polls only). Written by its stream
    task, replaced whole, as ``health`` is."""

    @classmethod
    def create(
        cls,
        account_id: str,
        table: TierTable,
        pinned: str | None = None,
        quote_currency: str = "USD",
        exchange: str | None = None,
    ) -> AccountLive:
        return cls(
            account_id=account_id,
            tier=TierTracker(table, pinned),
            quote_currency=quote_currency,
            exchange=exchange,
        )

    def update(self, changes: Mapping[str, object]) -> None:
        """Set several fields at once; called on the account state's owner thread, where
        the guard reads them, so a decision sees them all old or all new."""
        for name, value in changes.items():
            setattr(self, name, value)

    def note_stale_cancel(self) -> None:
        """A stale order's cancel was confirmed by the exchange (on the owner's thread)."""
        self.stale_cancels += 1

    def policy(self) -> TierPolicy | None:
        """The account's tier now; ``None`` until its equity is known (unless pinned)."""
        if self.tier.pinned is not None:
            return self.tier.table.get(self.tier.pinned)
        return self.tier.current

    def reported_health(self, book_problem: str | None = None) -> AccountHealth:
        """The health to show and judge on: the cycles' health, ``degraded`` (with the reason
        as ``last_error``) while equity cannot be established although the cycles succeed.

        ``book_problem`` is the account book's ``degraded_reason``: while its store
        cannot be read back, what the book holds may not be what is true, so the
        account's state is unknown (``failed``) and fail-closed tiers get no entry.
        """
        health = self.health
        if book_problem is not None:
            return replace(health, state=SyncState.FAILED, last_error=f"book: {book_problem}")
        problem = self.valuation_problem
        if problem is None or health.state is not SyncState.OK:
            return health
        return replace(health, state=SyncState.DEGRADED, last_error=problem)
