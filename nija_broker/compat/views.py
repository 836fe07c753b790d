"""The seed trackers' attributes (``orders_by_account``, ``reserved_capital_by_account``,
``trade_history_by_account``, ...) as live, read-mostly views of the real trackers.

The seed kept these as ``defaultdict`` attributes next to its JSON file, and
its callers read them directly (``bot/live_balance_audit.py`` iterates
``orders_by_account`` and ``reserved_capital_by_account``). Here each is a
mapping computed on access from the books, so it can never disagree with the
trackers. Like the seed's ``defaultdict``, an unknown account reads as empty
(``[]``, ``0.0``) and is not created by the read; where the seed's attribute was a
plain ``dict`` (``metrics_by_account``) it raises ``KeyError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

logger = logging.getLogger("nija_broker.compat")

_V = TypeVar("_V")


class AccountView(Mapping[str, _V], Generic[_V]):
    """``{account_id: value}`` over the accounts ``keys`` lists, each value ``read(account)``;
    an account not listed reads ``empty()``, or raises ``KeyError`` without ``empty``."""

    def __init__(
        self,
        keys: Callable[[], list[str]],
        read: Callable[[str], _V],
        empty: Callable[[], _V] | None,
        name: str,
    ) -> None:
        self._keys = keys
        self._read = read
        self._empty = empty
        self._name = name

    def __getitem__(self, account_id: str) -> _V:
        if account_id in self._keys():
            return self._read(account_id)
        if self._empty is None:
            raise KeyError(account_id)
        return self._empty()

    def get(self, account_id: str, default: object = None) -> _V | object:  # type: ignore[override]
        return self._read(account_id) if account_id in self._keys() else default

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"{self._name}({dict(self.items())!r})"


class ReservedView(AccountView[float]):
    """``reserved_capital_by_account``: each account's held capital, the sum of its open
    orders' reservations. The total follows the orders: a write that agrees with it is
    accepted, one that does not is logged and not kept (there is one figure, not two)."""

    def __setitem__(self, account_id: str, value: float) -> None:
        current = self._read(account_id)
        if not math.isclose(float(value), current, rel_tol=1e-9, abs_tol=1e-9):
            logger.warning(
                "reserved_capital_by_account[%r] = %.2f not kept: an account's held capital is "
                "the sum of its open orders' reserved_capital (now %.2f); set reserved_capital "
                "on the order instead",
                account_id,
                value,
                current,
            )
