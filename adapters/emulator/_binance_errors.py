"""Binance's error answers: :class:`BinanceError` and the codes for what the engine refuses.

Binance answers errors with an HTTP status and ``{"code": ..., "msg": ...}``
(developers.binance.com, "Spot API": Errors, Error codes); ccxt picks its
exception by the code and by matching the message, so both are Binance's own,
word for word. Re-exported by :mod:`~adapters.emulator.binance`.
"""

from __future__ import annotations

from typing import Any

from nija_broker.core.errors import ExchangeError, InsufficientFunds, InvalidOrder, OrderNotFound

__all__ = [
    "BinanceError",
    "bad_api_key_format",
    "bad_signature",
    "engine_error",
    "illegal",
    "invalid_api_key",
    "invalid_symbol",
    "mandatory",
    "outside_recv_window",
]


class BinanceError(Exception):
    """An error answer: HTTP status and Binance's ``{"code": ..., "msg": ...}`` body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def invalid_api_key() -> BinanceError:
    return BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")


def bad_api_key_format() -> BinanceError:
    return BinanceError(401, -2014, "API-key format invalid.")


def bad_signature() -> BinanceError:
    return BinanceError(400, -1022, "Signature for this request is not valid.")


def outside_recv_window() -> BinanceError:
    return BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def illegal(name: str) -> BinanceError:
    return BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.")


def invalid_symbol() -> BinanceError:
    return BinanceError(400, -1121, "Invalid symbol.")


def engine_error(exc: ExchangeError, *, cancelling: bool = False) -> BinanceError:
    """The Binance answer to an error the engine raised (the messages ccxt matches on)."""
    text = str(exc)
    if isinstance(exc, InsufficientFunds):
        return BinanceError(400, -2010, "Account has insufficient balance for requested action.")
    if isinstance(exc, OrderNotFound):
        if cancelling:
            return BinanceError(400, -2011, "Unknown order sent.")
        return BinanceError(400, -2013, "Order does not exist.")
    if isinstance(exc, InvalidOrder):
        if cancelling:  # the engine refuses to cancel a closed order; Binance says unknown
            return BinanceError(400, -2011, "Unknown order sent.")
        if "unknown symbol" in text:
            return invalid_symbol()
        if "duplicate client order id" in text:
            return BinanceError(400, -2010, "Duplicate order sent.")
        if "would trigger immediately" in text:
            return BinanceError(400, -2010, "Stop price would trigger immediately.")
        if "post_only" in text:
            return BinanceError(400, -2010, "Order would immediately match and take.")
        for needle, name in (
            ("lot step", "LOT_SIZE"),
            ("minimum amount", "LOT_SIZE"),
            ("tick size", "PRICE_FILTER"),
            ("minimum notional", "NOTIONAL"),
        ):
            if needle in text:
                return BinanceError(400, -1013, f"Filter failure: {name}")
        return BinanceError(400, -1013, f"Invalid order: {text}")
    return BinanceError(500, -1000, "An unknown error occurred while processing the request.")
