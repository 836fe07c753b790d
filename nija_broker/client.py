"""A small synchronous client for the guard API, standard library only, for the live bot.

::

    from nija_broker.client import GuardClient

    guard = GuardClient("http://127.0.0.1:8765", token=None)
    answer = guard.check("USER:alice", "BTC-USD", "buy", size_usd=25.0)
    if not answer.allowed:
        log.warning("entry blocked by %s: %s", answer.rule, answer.reason)

:meth:`GuardClient.check` and :meth:`GuardClient.reserve` always answer; they
raise only for the caller's own mistakes (a side that is neither ``buy`` nor
``sell``, a size that is not a number, no size at all). When the sidecar cannot
judge the order, an ENTRY is answered as blocked — a MICRO_CAP account must not
open positions blind — and an EXIT (a sell, reduce-only, an exit role) as
allowed, since exits are never blocked:

- the sidecar does not answer (refused, timed out, cut off): rule
  ``guard_unreachable``;
- it answers with an HTTP error (401 wrong token, 404 unknown account, 409
  reused client order id, 422 bad field, 5xx): rule ``guard_error``, with the
  HTTP ``status`` and the sidecar's message in ``reason`` and ``error``.

:meth:`~GuardClient.confirm` and :meth:`~GuardClient.release` return whether the
sidecar recorded the call (a reservation nobody confirms stops counting after
``guard.reservation_ttl_s``). Pass ``on_unreachable="raise"`` to get
:class:`GuardUnavailable` from every call instead.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal

from nija_broker.core.errors import NijaBrokerError

__all__ = ["Answer", "GuardAnswer", "GuardClient", "GuardUnavailable"]

UNREACHABLE = "guard_unreachable"
GUARD_ERROR = "guard_error"

log = logging.getLogger("nija_broker.client")


class GuardUnavailable(NijaBrokerError):
    """The nija_broker API did not answer (``status`` None), or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class GuardAnswer:
    """The guard's answer. ``status`` and ``error`` are set only when the sidecar could not
    judge the order: ``status`` is the HTTP status of its error answer (``None`` if it did
    not answer at all) and ``error`` says what went wrong."""

    allowed: bool
    rule: str | None = None
    reason: str | None = None
    client_order_id: str | None = None
    reservation_id: str | None = None
    warnings: tuple[dict[str, Any], ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    error: str | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


Answer = GuardAnswer
"""The name the guard's answers go by in the README and the issue tracker."""


class GuardClient:
    """Talks to ``nija-broker run``'s HTTP API. Thread-safe: no shared connection state."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout_s: float = 2.0,
        on_unreachable: Literal["block", "raise"] = "block",
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.on_unreachable = on_unreachable

    def __repr__(self) -> str:  # never show the token
        return f"GuardClient({self.url!r}, token={'***' if self._token else None})"

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The sidecar's status and JSON object answer; :class:`GuardUnavailable` for an
        error status, no answer, or an answer that is not a JSON object."""
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            raise GuardUnavailable(
                f"nija_broker answered {exc.code}: {_detail(exc)}", status=exc.code
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise GuardUnavailable(f"nija_broker at {self.url} did not answer: {exc}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise GuardUnavailable(
                f"nija_broker answered {status} with a body that is not a JSON object",
                status=status,
            )
        return status, answer

    def _ask(self, path: str, body: dict[str, Any]) -> GuardAnswer:
        try:
            status, answer = self._post(path, body)
            allowed = answer.get("allowed")
            if not isinstance(allowed, bool):
                raise GuardUnavailable(
                    f"nija_broker answered {status} without an 'allowed' flag", status=status
                )
        except GuardUnavailable as exc:
            if self.on_unreachable == "raise":
                raise
            return _cannot_judge(body, exc)
        return GuardAnswer(
            allowed=allowed,
            rule=answer.get("rule"),
            reason=answer.get("reason"),
            client_order_id=answer.get("client_order_id"),
            reservation_id=answer.get("reservation_id"),
            warnings=tuple(answer.get("warnings") or ()),
            figures=answer.get("figures") or {},
        )

    def _tell(self, path: str, body: dict[str, Any]) -> bool:
        try:
            self._post(path, body)
        except GuardUnavailable as exc:
            if self.on_unreachable == "raise":
                raise
            log.warning(
                "%s of reservation %s not recorded: %s",
                path.rsplit("/", 1)[-1],
                body.get("reservation_id"),
                exc,
            )
            return False
        return True

    @staticmethod
    def _intent(
        account_id: str,
        symbol: str,
        side: str,
        size_usd: float | None,
        amount: float | None,
        reduce_only: bool,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        # The caller's own mistakes raise here: the sidecar would refuse them every time.
        if not isinstance(account_id, str) or not isinstance(symbol, str):
            raise TypeError("account_id and symbol must be strings")
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
        if size_usd is None and amount is None:
            raise ValueError("give the order size as size_usd (quote) or amount (base)")
        for name, value in (("size_usd", size_usd), ("amount", amount)):
            if value is not None and not _is_number(value):
                raise TypeError(f"{name} must be a number, got {value!r}")
        if not isinstance(reduce_only, bool):
            raise TypeError(f"reduce_only must be True or False, got {reduce_only!r}")
        return {
            "account_id": account_id,
            "symbol": symbol,
            "side": side,
            "size_usd": size_usd,
            "amount": amount,
            "reduce_only": reduce_only,
            **extra,
        }

    def check(
        self,
        account_id: str,
        symbol: str,
        side: str,
        *,
        size_usd: float | None = None,
        amount: float | None = None,
        reduce_only: bool = False,
        **extra: Any,
    ) -> GuardAnswer:
        """Would this order be allowed now? Reserves nothing. Never raises for the sidecar's
        failures (see the module docstring)."""
        return self._ask(
            "/v1/guard/check",
            self._intent(account_id, symbol, side, size_usd, amount, reduce_only, extra),
        )

    def reserve(
        self,
        account_id: str,
        symbol: str,
        side: str,
        *,
        size_usd: float | None = None,
        amount: float | None = None,
        reduce_only: bool = False,
        **extra: Any,
    ) -> GuardAnswer:
        """Judge and hold the entry's place; then :meth:`confirm` or :meth:`release`.

        Send the order with ``answer.client_order_id`` so a restart can match it.
        Passing ``client_order_id=`` makes a retry safe: the same request again gets
        the same reservation. Never raises for the sidecar's failures.
        """
        return self._ask(
            "/v1/guard/reserve",
            self._intent(account_id, symbol, side, size_usd, amount, reduce_only, extra),
        )

    def confirm(self, reservation_id: str, order_id: str | None = None) -> bool:
        """The exchange accepted the order. False (logged) if the sidecar did not record it."""
        return self._tell(
            "/v1/guard/confirm", {"reservation_id": reservation_id, "order_id": order_id}
        )

    def release(self, reservation_id: str) -> bool:
        """The order was refused or never sent. False (logged) if the sidecar did not record it."""
        return self._tell("/v1/guard/release", {"reservation_id": reservation_id})


def _detail(exc: urllib.error.HTTPError) -> str:
    """The sidecar's own error sentence, else the HTTP reason."""
    try:
        detail = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        detail = None
    return str(detail) if detail else str(exc.reason)


def _cannot_judge(body: dict[str, Any], failure: GuardUnavailable) -> GuardAnswer:
    """Entries blocked, exits allowed, when the sidecar could not judge the order."""
    is_exit = (
        body.get("side") == "sell"
        or body.get("reduce_only") is True
        or body.get("role", "entry") != "entry"
    )
    rule = UNREACHABLE if failure.status is None else GUARD_ERROR
    return GuardAnswer(
        allowed=is_exit,
        rule=None if is_exit else rule,
        reason=None if is_exit else str(failure),
        client_order_id=body.get("client_order_id"),
        status=failure.status,
        error=str(failure),
    )
