"""Kraken's error answers: :class:`KrakenError` and the strings for what the engine refuses.

Kraken answers errors with HTTP 200 and ``{"error": ["EOrder:..."], "result": ...}``
(docs.kraken.com, "Spot REST API"); ccxt picks its exception by matching those
strings, so they are Kraken's own, word for word.
"""

from __future__ import annotations

from typing import Any

from nija_broker.core.errors import ExchangeError, InsufficientFunds, InvalidOrder, OrderNotFound


class KrakenError(Exception):
    """An error answer: Kraken sends HTTP 200 with the error strings in a list."""

    def __init__(self, *errors: str, status: int = 200) -> None:
        super().__init__(", ".join(errors))
        self.errors = list(errors)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.errors}


def invalid_arguments(name: str | None = None) -> KrakenError:
    return KrakenError("EGeneral:Invalid arguments" + (f":{name}" if name else ""))


def engine_error(exc: ExchangeError) -> KrakenError:
    """Kraken's answer to an error the engine raised (the strings ccxt matches on)."""
    text = str(exc)
    if isinstance(exc, InsufficientFunds):
        return KrakenError("EOrder:Insufficient funds")
    if isinstance(exc, OrderNotFound):
        return KrakenError("EOrder:Unknown order")
    if isinstance(exc, InvalidOrder):
        if "unknown symbol" in text:
            return KrakenError("EQuery:Unknown asset pair")
        if "duplicate client order id" in text:
            return KrakenError("EOrder:Duplicate cl_ord_id")
        if "post_only" in text:
            return KrakenError("EOrder:Post only order")
        if "would trigger immediately" in text or "tick size" in text:
            return invalid_arguments("price")
        if "lot step" in text:
            return invalid_arguments("volume")
        if "minimum amount" in text:
            return KrakenError("EOrder:Order minimum not met")
        if "minimum notional" in text:
            return KrakenError("EOrder:Cost minimum not met")
        if "already" in text:  # cancelling a closed order: Kraken knows no such open order
            return KrakenError("EOrder:Unknown order")
        return KrakenError("EOrder:Invalid order")
    return KrakenError("EGeneral:Internal error")
