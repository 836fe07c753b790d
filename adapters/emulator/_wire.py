"""What the emulated exchanges' wire dialects share: numbers in, step decimals.

Each dialect (:mod:`~adapters.emulator.binance`, :mod:`~adapters.emulator._kraken_wire`)
keeps its own error type and wording; the helpers here take the dialect's
error constructors as arguments, so a request is judged by one rule and
refused in the exchange's own words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from decimal import Decimal

__all__ = ["decimals_of", "number"]


def number(
    params: Mapping[str, str],
    name: str,
    *,
    required: bool,
    missing: Callable[[str], Exception],
    malformed: Callable[[str], Exception],
) -> float | None:
    """Parameter ``name`` as a finite, non-negative float; ``None`` when absent and optional.

    ``missing(name)`` is raised when a required parameter is absent or empty,
    ``malformed(name)`` when it is not a finite non-negative number.
    """
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise missing(name)
        return None
    try:
        value = float(raw)
    except ValueError:
        raise malformed(name) from None
    if not math.isfinite(value) or value < 0:
        raise malformed(name)
    return value


def decimals_of(step: float | None, default: int = 8) -> int:
    """How many decimals a price or lot step has (``0.01`` -> 2); ``default`` without a step."""
    if step is None:
        return default
    exponent = Decimal(repr(step)).normalize().as_tuple().exponent
    return max(-int(exponent), 0)
