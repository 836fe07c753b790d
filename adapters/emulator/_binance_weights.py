"""What each request would cost on Binance spot: its request weight, counted per IP a minute.

The emulator's own table, written from Binance's spot API documentation
(developers.binance.com/docs/binance-spot-api-docs/rest-api, "General endpoints",
"Market data endpoints", "Trading endpoints", "Account endpoints"), apart from the
client's (:data:`adapters.profiles.BINANCE_WEIGHTS`) so that a test can check the
client's count against the venue's. Binance answers every request with
``X-MBX-USED-WEIGHT-1M``, "the current used weight for the IP" in the current
minute ("LIMITS", "IP Limits"); the emulator does the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["LIMIT_PER_MINUTE", "WeightCounter", "request_weight"]

LIMIT_PER_MINUTE = 6000
"""exchangeInfo's ``REQUEST_WEIGHT`` limit: 6,000 a minute per IP."""

_FIXED: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/ping"): 1,
    ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/account"): 20,
    ("GET", "/api/v3/order"): 4,
    ("POST", "/api/v3/order"): 1,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/allOrders"): 20,
}


def _symbols_named(params: Mapping[str, str]) -> int | None:
    """How many symbols ``symbols=[...]`` names; ``None`` without it."""
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        named = json.loads(raw)
    except ValueError:
        return None
    return len(named) if isinstance(named, list) else None


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """Binance's documented weight of one request (1 for endpoints it lists no weight for)."""
    key = (method, path)
    if key in _FIXED:
        return _FIXED[key]
    if key == ("GET", "/api/v3/openOrders"):
        # "6 for a single symbol; 80 when the symbol parameter is omitted"
        return 6 if params.get("symbol") else 80
    if key == ("GET", "/api/v3/myTrades"):
        # "Without orderId 20, With orderId 5"
        return 5 if params.get("orderId") else 20
    if key == ("GET", "/api/v3/ticker/24hr"):
        # symbol: 2; symbols: 2 for 1-20, 40 for 21-100, 80 for 101 or more; neither: 80
        if params.get("symbol"):
            return 2
        named = _symbols_named(params)
        if named is None:
            return 80
        return 2 if named <= 20 else 40 if named <= 100 else 80
    if key in (("GET", "/api/v3/ticker/price"), ("GET", "/api/v3/ticker/bookTicker")):
        return 2 if params.get("symbol") else 4  # one symbol: 2; several or all: 4
    return 1


@dataclass(slots=True)
class WeightCounter:
    """Request weight per IP in the current minute (as Binance counts it), and in all."""

    minute: dict[str, tuple[int, int]] = field(default_factory=dict)
    """IP -> (the minute, as epoch minutes; the weight used in it so far)."""
    total: int = 0
    """Every request's weight since the server started."""

    def used(self, ip: str, epoch_minute: int) -> int:
        """The weight ``ip`` used in ``epoch_minute`` so far."""
        at, used = self.minute.get(ip, (epoch_minute, 0))
        return used if at == epoch_minute else 0

    def add(self, ip: str, epoch_minute: int, weight: int) -> int:
        """Count one request; the IP's weight in this minute, that request included."""
        used = self.used(ip, epoch_minute) + weight
        self.minute[ip] = (epoch_minute, used)
        self.total += weight
        return used
