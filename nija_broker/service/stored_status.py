"""Status rows read straight from the store while no sidecar runs (``status``, ``report``).

The store holds the books, the pause journal and the guard's decisions; the
configuration names each account's exchange, quote currency and tier. What only a
running sidecar knows (sync health, exchange balances, the stale cancels it
counted) stays unknown: ``sync`` is ``None`` and reads as offline.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nija_broker.service.config import Config
from nija_broker.service.status import AccountStatus, status_rows, stored_guard_facts
from nija_broker.state.books import Books
from nija_broker.state.store import Store

__all__ = ["stored_status_rows", "with_config"]


def stored_status_rows(
    store: Store, config: Config, now: datetime, account_id: str | None = None
) -> list[AccountStatus]:
    """A row per account of the store (or only ``account_id``'s), sorted by id."""
    rows = status_rows(Books(store), {}, now, account_id, guard=stored_guard_facts(store))
    return [with_config(row, config) for row in rows]


def with_config(row: AccountStatus, config: Config) -> AccountStatus:
    """``row`` with its exchange, quote currency and tier from the configuration (when the
    row does not know them and the configuration has the account)."""
    account = next((a for a in config.accounts if a.id == row.account_id), None)
    if account is None:
        return row
    changes: dict[str, Any] = {}
    if row.exchange is None:
        changes["exchange"] = account.exchange
    if row.quote_currency is None:
        changes["quote_currency"] = account.quote_currency
    if row.tier is None:
        if account.tier != "auto":
            changes["tier"] = account.tier
        elif row.equity_usd is not None:
            # The band of the last equity, without a running tracker's hysteresis.
            changes["tier"] = config.tier_table().band(row.equity_usd).name
    return row.model_copy(update=changes)
