"""One data directory of the seed API: its store, its books (one owner thread for all of
them) and the markets its callers gave; one per directory per process."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nija_broker.core.symbols import market_ids
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.owner import Owner
from nija_broker.state.store import Store

__all__ = ["STORE_FILE", "Workspace", "workspace", "workspaces", "workspaces_lock"]

STORE_FILE = "nija_broker.sqlite3"


class Workspace:
    """One data directory: its store, its books and the markets its callers gave."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(data_dir / STORE_FILE)
        self.books = Books(self.store)
        self.markets: dict[str, dict[str, str]] = {}
        self.cleanup_stats: dict[str, Any] = {
            "total_cleaned": 0,
            "last_cleanup": None,
            "orders_cleaned_per_account": defaultdict(int),
        }

    @property
    def owner(self) -> Owner:
        """The thread that runs every call of this directory's trackers."""
        return self.books.owner

    def book(self, account_id: str) -> AccountBook:
        return self.books.get(account_id)

    def set_markets(self, account_id: str, markets: Mapping[str, Any]) -> None:
        """``markets``: ccxt's ``exchange.markets`` or ``{native id: unified symbol}``."""
        if all(isinstance(v, str) for v in markets.values()):
            table = {str(k).upper(): str(v) for k, v in markets.items()}
        else:
            table = market_ids(markets)
        self.markets[account_id] = table


workspaces: dict[Path, Workspace] = {}
workspaces_lock = threading.Lock()


def workspace(data_dir: str | Path) -> Workspace:
    key = Path(data_dir).resolve()
    with workspaces_lock:
        found = workspaces.get(key)
        if found is None:
            found = workspaces[key] = Workspace(key)
        return found
