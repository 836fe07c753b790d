"""A small synchronous client for the guard API, standard library only, for the live bot.

::

    from nija_broker.client import GuardClient

    guard = GuardClient("http://127.0.0.1:8765", token=None)
    answer = guard.check("USER:alice", "BTC-USD", "buy", size_usd=25.0)
    if not answer.allowed:
        log.warning("entry blocked by %s: %s", answer.rule, answer.reason)

If the sidecar does not answer, an ENTRY is answered as blocked (rule
``guard_unreachable``): a MICRO_CAP account must not open positions blind.
Exits (sells, reduce-only) are answered as allowed: exits are never blocked.
Pass ``on_unreachable="raise"`` to get :class:`GuardUnavailable` instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import NijaBrokerError

__all__ = ["GuardAnswer", "GuardClient", "GuardUnavailable"]

UNREACHABLE = "guard_unreachable"


class GuardUnavailable(NijaBrokerError):
    """The nija_broker API did not answer, or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class GuardAnswer:
    allowed: bool
    rule: str | None = None
    reason: str | None = None
    client_order_id: str | None = None
    reservation_id: str | None = None
    warnings: tuple[dict[str, Any], ...] = ()
    figures: dict[str, Any] = field(default_factory=dict)


class GuardClient:
    """Talks to ``nija-broker run``'s HTTP API. Thread-safe: no shared connection state."""

    def __init__(self, url: str, token: str | None = None, *, timeout_s: float = 2.0,
                 on_unreachable: Literal["block", "raise"] = "block") -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self.on_unreachable = on_unreachable

    def __repr__(self) -> str:  # never show the token
        return f"GuardClient({self.url!r}, token={'***' if self._token else None})"

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({k: v for k, v in body.items() if v is not None}).encode()
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                detail = exc.reason
            raise GuardUnavailable(f"nija_broker answered {exc.code}: {detail}",
                                   status=exc.code) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise GuardUnavailable(f"nija_broker at {self.url} did not answer: {exc}") from None

    def _ask(self, path: str, body: dict[str, Any]) -> GuardAnswer:
        try:
            answer = self._post(path, body)
        except GuardUnavailable as exc:
            # 4xx answers (bad field, unknown account) are the caller's mistake: always raise.
            if self.on_unreachable == "raise" or (exc.status is not None and exc.status < 500):
                raise
            is_exit = body.get("side") == "sell" or bool(body.get("reduce_only"))
            return GuardAnswer(allowed=is_exit, rule=None if is_exit else UNREACHABLE,
                               reason=None if is_exit else str(exc))
        return GuardAnswer(
            allowed=bool(answer["allowed"]), rule=answer.get("rule"), reason=answer.get("reason"),
            client_order_id=answer.get("client_order_id"),
            reservation_id=answer.get("reservation_id"),
            warnings=tuple(answer.get("warnings") or ()), figures=answer.get("figures") or {},
        )

    @staticmethod
    def _intent(account_id: str, symbol: str, side: str, size_usd: float | None,
                amount: float | None, reduce_only: bool, extra: dict[str, Any]) -> dict[str, Any]:
        return {"account_id": account_id, "symbol": symbol, "side": side, "size_usd": size_usd,
                "amount": amount, "reduce_only": reduce_only, **extra}

    def check(self, account_id: str, symbol: str, side: str, *, size_usd: float | None = None,
              amount: float | None = None, reduce_only: bool = False,
              **extra: Any) -> GuardAnswer:
        """Would this order be allowed now? Reserves nothing."""
        return self._ask("/v1/guard/check", self._intent(account_id, symbol, side, size_usd,
                                                          amount, reduce_only, extra))

    def reserve(self, account_id: str, symbol: str, side: str, *,
                size_usd: float | None = None, amount: float | None = None,
                reduce_only: bool = False, **extra: Any) -> GuardAnswer:
        """Judge and hold the entry's place; then :meth:`confirm` or :meth:`release`.

        Send the order with ``answer.client_order_id`` so a restart can match it.
        """
        return self._ask("/v1/guard/reserve", self._intent(account_id, symbol, side, size_usd,
                                                            amount, reduce_only, extra))

    def confirm(self, reservation_id: str, order_id: str | None = None) -> None:
        self._post("/v1/guard/confirm", {"reservation_id": reservation_id, "order_id": order_id})

    def release(self, reservation_id: str) -> None:
        self._post("/v1/guard/release", {"reservation_id": reservation_id})
