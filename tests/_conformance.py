"""Shared by the venue conformance tests: recorded bodies in, the unified figures out.

A fixture is one JSON file under ``tests/fixtures/venues/<venue>/``::

    {
      "source": "where the body was recorded (repository, path, method, case, commit)",
      "endpoint": "GET /api/v3/order",
      "ccxt_method": "fetch_order",
      "situation": "a limit buy partly filled, then cancelled",
      "notes": "what the recorded set lacks, and the venue documentation taken instead",
      "input": [...],            # the ccxt call's arguments, as recorded
      "body": {...},             # the venue's answer, exactly as recorded
      "expected": {...}          # the unified figures the project relies on
    }

``order_figures`` and ``fill_figures`` are what the project reads of an order
and of a trade: comparing them between a recorded body and the emulator's
answer for the same situation says whether the emulator answers as the venue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nija_broker.core.models import Fill, Order

FIXTURES = Path(__file__).parent / "fixtures" / "venues"

ORDER_FIELDS = (
    "id",
    "client_order_id",
    "status",
    "filled",
    "remaining",
    "amount",
    "price",
    "average",
    "fee",
    "created_at",
    "updated_at",
    "stop_price",
    "reduce_only",
    "type",
    "side",
    "symbol",
)
FILL_FIELDS = (
    "order_id",
    "trade_id",
    "symbol",
    "side",
    "amount",
    "price",
    "fee",
    "fee_currency",
    "fee_cost",
    "timestamp",
)


def fixtures(venue: str) -> list[tuple[str, dict[str, Any]]]:
    """Every fixture of ``venue``: (file name, content), sorted by name."""
    folder = FIXTURES / venue
    return [
        (path.name, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.json"))
    ]


def fixture(venue: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / venue / name).read_text(encoding="utf-8"))
    return loaded


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def order_figures(order: Order) -> dict[str, Any]:
    """The unified figures of an order the project relies on, as JSON-comparable values."""
    return {name: _plain(getattr(order, name)) for name in ORDER_FIELDS}


def fill_figures(fill: Fill) -> dict[str, Any]:
    """The unified figures of one trade (fill) the project relies on."""
    return {name: _plain(getattr(fill, name)) for name in FILL_FIELDS}


def subset(figures: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """``figures`` restricted to the keys ``expected`` names (a fixture pins what it knows)."""
    return {key: figures.get(key) for key in expected}
