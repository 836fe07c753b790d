"""Reading the loosely typed figures in ccxt's unified dicts.

ccxt passes each exchange's figures through as it got them: numbers, numeric
strings, ``None`` or 0 for "not known", now and then something broken. The
converters in :mod:`adapters._ccxt_convert` read every figure through these
helpers, so that one rule holds everywhere: 0 or ``None`` is "not known", a
negative or non-finite figure is an impossible answer, and a dict that cannot
become a model is an :class:`~nija_broker.core.errors.ExchangeError` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from nija_broker.core.clock import from_ms
from nija_broker.core.errors import ExchangeError, ImpossibleAnswer

__all__ = ["non_negative", "positive", "refuse_unsound", "timestamp_or", "unreadable"]


def positive(value: Any) -> float | None:
    """A finite, strictly positive float, else None (ccxt reports 0 for "no price")."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def non_negative(value: Any) -> float:
    number = positive(value)
    return number if number is not None else 0.0


def refuse_unsound(raw: Mapping[str, Any], name: str, what: str = "order") -> None:
    """Refuse a figure no exchange can mean: negative, NaN or infinite.

    ccxt reports 0 or None for "not known", which the readers above take as such;
    a negative or non-finite figure is a broken answer, and reading it as 0
    would book something the exchange never did.
    """
    value = raw.get(name)
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        return
    if not math.isfinite(number) or number < 0:
        ident = str(raw.get("id") or "?")
        raise ImpossibleAnswer(
            f"the exchange reports {what} {ident} with {name} = {value!r}; nothing is booked "
            "from this answer",
            order_id=ident if what == "order" else None,
            field=name,
        )


def timestamp_or(ts_ms: Any, fallback: datetime) -> datetime:
    """ccxt's epoch milliseconds as a datetime; ``fallback`` where none is reported (0 too)."""
    return from_ms(ts_ms) if isinstance(ts_ms, int | float) and ts_ms > 0 else fallback


def unreadable(what: str, raw: Mapping[str, Any], exc: Exception) -> ExchangeError:
    """The error for a ``what`` dict that cannot become a model, naming it by id or symbol."""
    ident = raw.get("id") or raw.get("symbol") or "?"
    return ExchangeError(f"cannot read {what} {ident!r} from the exchange: {exc}")
