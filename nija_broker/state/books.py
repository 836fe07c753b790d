"""Every account's :class:`~nija_broker.state.book.AccountBook`, loaded on first use, all
sharing one :class:`~nija_broker.state.owner.Owner`."""

from __future__ import annotations

from collections.abc import Mapping

from nija_broker.core.clock import Clock, SystemClock
from nija_broker.state.book import AccountBook, BookSettings
from nija_broker.state.owner import Owner
from nija_broker.state.store import Store

__all__ = ["Books"]


class Books:
    """One :class:`AccountBook` per account id, loaded from the store on first use.

    Every book shares the one :attr:`owner`: a single thread changes every
    account's books and runs every SQLite statement they make.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: BookSettings | None = None,
        clock: Clock | None = None,
        account_settings: Mapping[str, BookSettings] | None = None,
        owner: Owner | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or BookSettings()
        """For accounts without an entry in ``account_settings``."""
        self.account_settings = dict(account_settings or {})
        self.clock: Clock = clock or SystemClock()
        self.owner = owner if owner is not None else Owner()
        self._books: dict[str, AccountBook] = {}

    def get(self, account_id: str) -> AccountBook:
        book = self._books.get(account_id)
        if book is not None:
            return book
        return self.owner.call(self._load_book, account_id)

    def _load_book(self, account_id: str) -> AccountBook:
        book = self._books.get(account_id)
        if book is None:
            settings = self.account_settings.get(account_id, self.settings)
            book = AccountBook(
                account_id, self.store, settings=settings, clock=self.clock, owner=self.owner
            )
            self._books[account_id] = book
        return book

    def accounts(self) -> list[str]:
        """Accounts in memory plus every account the store knows, sorted."""
        known = set(self._books)
        if self.store is not None:
            known.update(self.owner.call(self.store.accounts))
        return sorted(known)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._books
