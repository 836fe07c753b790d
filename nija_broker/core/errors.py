"""One error hierarchy for the whole project.

::

    NijaBrokerError
    ├── ConfigError                 bad configuration; fail at start, never retry
    ├── StateError                  an update that would break an invariant
    │   └── IllegalTransition       e.g. filled -> open, or filled decreasing
    ├── ExchangeError               anything an exchange answered or failed to answer
    │   ├── TransientError          retry: network, timeout, 5xx, rate limit, maintenance
    │   │   └── RateLimited
    │   ├── ImpossibleAnswer        an answer no real execution can give (filled > amount)
    │   ├── Unsupported             the exchange offers no such call
    │   ├── OrderError              this order is refused; do not retry
    │   │   ├── InvalidOrder
    │   │   ├── InsufficientFunds
    │   │   └── OrderNotFound
    │   └── AccountFatal            this account cannot work until a human acts
    │       ├── AuthenticationFailed
    │       └── PermissionDenied
    └── EntryBlocked                the guard refused an entry (attributes rule, reason)

Exchange libraries' exceptions are mapped into this tree once, at the adapter
boundary, and always raised ``from`` the original.
"""

from __future__ import annotations


class NijaBrokerError(Exception):
    """Base of every error nija_broker raises on purpose."""


class ConfigError(NijaBrokerError):
    """Configuration is wrong. Names the file, the key and (unless secret) the value."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        super().__init__(message)


class StateError(NijaBrokerError):
    """An update would break one of the tracker's invariants; nothing was changed."""


class IllegalTransition(StateError):
    """An order status or filled amount would move backwards."""


class ExchangeError(NijaBrokerError):
    """Raised for anything an exchange answered or failed to answer."""

    def __init__(
        self, message: str, *, exchange: str | None = None, account_id: str | None = None
    ) -> None:
        self.exchange = exchange
        self.account_id = account_id
        super().__init__(message)


class TransientError(ExchangeError):
    """Worth retrying: network errors, timeouts, 5xx, maintenance, rate limits."""


class RateLimited(TransientError):
    """The exchange asked us to slow down."""


class ImpossibleAnswer(ExchangeError):
    """The exchange reported figures no execution can produce (filled above the amount, a
    negative or non-finite number, a buy filled above its limit): nothing is booked from it.

    ``order_id`` and ``field`` name what was wrong, for the attention event.
    """

    def __init__(
        self,
        message: str,
        *,
        order_id: str | None = None,
        field: str | None = None,
        exchange: str | None = None,
        account_id: str | None = None,
    ) -> None:
        self.order_id = order_id
        self.field = field
        super().__init__(message, exchange=exchange, account_id=account_id)


class Unsupported(ExchangeError):
    """The exchange (or its library) has no such call; asking again will not help."""


class OrderError(ExchangeError):
    """The exchange refused this order or does not know it. Retrying will not help."""


class InvalidOrder(OrderError):
    """Bad price, amount, symbol or parameter for this market."""


class InsufficientFunds(OrderError):
    """The account lacks the free balance for this order."""


class OrderNotFound(OrderError):
    """The exchange says it has no such order (never proof of cancellation on its own)."""


class AccountFatal(ExchangeError):
    """The account cannot operate until a human fixes it (keys, permissions)."""


class AuthenticationFailed(AccountFatal):
    """Keys are wrong, revoked, or the signature / nonce was rejected."""


class PermissionDenied(AccountFatal):
    """The keys work but lack a permission this call needs."""


class EntryBlocked(NijaBrokerError):
    """The guard refused an entry order before it reached the exchange."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"entry blocked by {rule}: {reason}")
