"""ccxt exceptions -> :mod:`nija_broker.core.errors`, once, at the adapter boundary.

The order of the ``isinstance`` checks follows ccxt's hierarchy
(``ccxt.base.errors``), where several classes sit under an unexpected parent:

- ``OrderNotFound`` is an ``InvalidOrder``: it is tested first.
- ``PermissionDenied`` and ``AccountSuspended`` are ``AuthenticationError``\\ s.
- ``InvalidNonce`` is a ``NetworkError`` in ccxt 4 (ccxt retries it as if a
  nonce clash were passing). For us it is account-fatal: a nonce clash comes
  from another program sharing the API key (NIJA's bot drives the nonce of its
  Kraken keys), and on Binance (-1021) from a system clock outside the
  request window. Neither goes away by retrying, so it maps to
  :class:`AuthenticationFailed` with a message that says what to do.
  ``ChecksumError`` (an order book checksum) is an ``InvalidNonce`` too, but
  transient, so it is tested before.
- ``RateLimitExceeded`` and ``DDoSProtection`` are ``NetworkError``\\ s.

Messages never carry a credential: ccxt's text can include request URLs and
parameters, so every known secret (and its URL-encoded form) is replaced,
in our message and in the original exception's ``args`` alike, since a
traceback prints the ``__cause__`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import ccxt.async_support as ccxt

from nija_broker.core import errors

_REDACTED = "***"
_MAX_MESSAGE_CHARS = 600
# Values shorter than this are not credentials worth hiding and would mangle text.
_MIN_SECRET_CHARS = 4

NONCE_ADVICE = (
    "the exchange rejected the request nonce/timestamp. Give nija_broker its own API key: "
    "another program using the same key (e.g. the trading bot) advances the nonce. "
    "If the key is not shared, synchronise this machine's clock (NTP)"
)


@dataclass(frozen=True, slots=True)
class ErrorOverride:
    """An exchange error text that ccxt maps to the wrong class, and the class it means.

    ``needle`` is looked for in ccxt's message (which carries the exchange's
    answer); ``actions`` limits the override to some protocol methods
    (``None``: all). Set per exchange in :mod:`adapters.profiles`.
    """

    needle: str
    error: type[errors.ExchangeError]
    reason: str
    actions: frozenset[str] | None = None

    def applies(self, exc: BaseException, action: str) -> bool:
        return (self.actions is None or action in self.actions) and self.needle in str(exc)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, raw or URL-encoded, replaced by ``***``."""
    for secret in secrets:
        if not secret or len(secret) < _MIN_SECRET_CHARS:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, _REDACTED)
    return text


def _scrub_exception(exc: BaseException, secrets: Iterable[str]) -> str:
    """Scrub ``exc.args`` in place and return its scrubbed message."""
    secrets = tuple(secrets)
    exc.args = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in exc.args)
    return scrub(str(exc), secrets)


def _classify(
    exc: BaseException,
    nonce_advice: str = NONCE_ADVICE,
) -> tuple[type[errors.ExchangeError], str]:
    """The nija_broker class for ``exc`` and a short human reason."""
    # Most specific first: see the module docstring for why this order.
    if isinstance(exc, ccxt.ChecksumError):
        return errors.TransientError, "data checksum mismatch"
    if isinstance(exc, ccxt.InvalidNonce):
        return errors.AuthenticationFailed, nonce_advice
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return errors.RateLimited, "rate limited by the exchange"
    if isinstance(exc, ccxt.OnMaintenance):
        return errors.TransientError, "exchange under maintenance"
    if isinstance(exc, ccxt.RequestTimeout):
        return errors.TransientError, "request timed out"
    if isinstance(exc, ccxt.ExchangeNotAvailable):
        return errors.TransientError, "exchange not available"
    if isinstance(exc, ccxt.NetworkError):
        return errors.TransientError, "network error"
    if isinstance(exc, ccxt.OperationFailed):
        # BadResponse, NullResponse, CancelPending: the answer was unusable, not a refusal.
        return errors.TransientError, "unusable answer from the exchange"
    if isinstance(exc, ccxt.AccountSuspended):
        return errors.PermissionDenied, "account suspended"
    if isinstance(exc, ccxt.PermissionDenied):
        return errors.PermissionDenied, "API key lacks a permission"
    if isinstance(exc, ccxt.AuthenticationError):
        return errors.AuthenticationFailed, "authentication failed (API key or secret rejected)"
    if isinstance(exc, ccxt.RestrictedLocation):
        return errors.PermissionDenied, "restricted location"
    if isinstance(exc, ccxt.OrderNotFound | ccxt.OrderNotCached):
        return errors.OrderNotFound, "order not found"
    if isinstance(exc, ccxt.InsufficientFunds):
        return errors.InsufficientFunds, "insufficient funds"
    if isinstance(exc, ccxt.InvalidOrder | ccxt.BadRequest | ccxt.OperationRejected):
        # BadSymbol and MarketClosed included: this request is refused as sent.
        return errors.InvalidOrder, "request refused"
    if isinstance(exc, ccxt.ArgumentsRequired | ccxt.NotSupported):
        return errors.ExchangeError, "not supported by this exchange as called"
    return errors.ExchangeError, "exchange error"


def map_ccxt_error(
    exc: BaseException,
    *,
    exchange_id: str,
    account_id: str,
    secrets: Iterable[str],
    action: str,
    overrides: Sequence[ErrorOverride] = (),
    nonce_advice: str = NONCE_ADVICE,
) -> errors.ExchangeError:
    """The nija_broker error for ``exc`` (a ccxt error or a timeout); raise it ``from exc``.

    ``action`` names what we were doing ("fetch_open_orders"); it leads the
    message so a log line reads on its own. ``overrides`` (the exchange
    profile's) win over ccxt's class; ``nonce_advice`` is what a rejected
    nonce tells the user.
    """
    if isinstance(exc, TimeoutError):
        cls: type[errors.ExchangeError] = errors.TransientError
        reason, detail = "no answer within the call timeout", ""
    else:
        override = next((o for o in overrides if o.applies(exc, action)), None)
        # An override corrects a refusal's class; it never makes a transient failure final.
        if override is not None and not isinstance(exc, ccxt.NetworkError):
            cls, reason = override.error, override.reason
        else:
            cls, reason = _classify(exc, nonce_advice)
        detail = _scrub_exception(exc, secrets)
    if len(detail) > _MAX_MESSAGE_CHARS:
        detail = detail[:_MAX_MESSAGE_CHARS] + "..."
    message = f"{exchange_id} account {account_id}: {action}: {reason}"
    if detail:
        message += f" ({type(exc).__name__}: {detail})"
    return cls(message, exchange=exchange_id, account_id=account_id)


def is_duplicate_order(exc: BaseException) -> bool:
    """True when the exchange refused an order because its client order id is already used."""
    cause = exc.__cause__ if isinstance(exc, errors.ExchangeError) else exc
    if isinstance(cause, ccxt.DuplicateOrderId):
        return True
    return "duplicate" in str(exc).lower()
