"""Bodies of the HTTP API: requests read with limits and strict types, answers as JSON.

Pure: bytes in, a value or a :class:`BodyProblem` out; guard values in, JSON
objects out (:func:`decision_json`, :func:`reservation_json`), so a handler
renders its answer without touching the state the answer came from.

Requests: What a guard request may
hold is small and flat, so anything far beyond it is refused before it costs
anything: a body over :data:`MAX_BODY_BYTES` (413), nesting deeper than
:data:`MAX_JSON_DEPTH` (checked before parsing, without recursion: Python's
parser would recurse once per level), an integer of more than
:data:`MAX_INT_DIGITS` digits, ``NaN`` or ``Infinity`` (not JSON numbers).

Fields are then validated strictly, as JSON types: a number must be a JSON
number (not ``"10"``, not ``true``), a flag a JSON boolean (``reduce_only:
"yes"`` is refused rather than read as true). :class:`~nija_broker.core.intent.OrderIntent`
itself stays lax for Python callers; only the API applies ``strict=True``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from nija_broker.core.intent import Blocked, Decision, OrderIntent, Reason
from nija_broker.core.models import NonBlank
from nija_broker.guard.board import verdict_view
from nija_broker.guard.pauses import MAX_REASON_CHARS

if TYPE_CHECKING:
    from nija_broker.core.breakers import Breakers
    from nija_broker.guard.state import ReservationView

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "BodyProblem",
    "PauseCall",
    "ReservationCall",
    "breaker_views",
    "decision_json",
    "jsonable",
    "parse_intent",
    "parse_object",
    "reservation_json",
]

MAX_BODY_BYTES = 64 * 1024
"""A guard request is a few hundred bytes; aiohttp's own default is 1 MiB."""
MAX_JSON_DEPTH = 32
"""Guard requests are flat objects; 32 leaves room for any client's envelope."""
MAX_INT_DIGITS = 20
"""More digits than any amount, price or count (2**64 has 20)."""

# A JSON string, escapes included; possessive so a malformed body cannot backtrack.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a body is refused: the HTTP status, a sentence, and the field (or ``body``)."""

    status: int
    message: str
    field: str = "body"


class ReservationCall(BaseModel):
    """``POST /v1/guard/confirm`` and ``/v1/guard/release``."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    reservation_id: NonBlank
    order_id: NonBlank | None = None


OneLine = Annotated[
    str, StringConstraints(max_length=MAX_REASON_CHARS, pattern=r"^[^\x00-\x1f\x7f]*$")
]


class PauseCall(BaseModel):
    """``POST /v1/accounts/{id}/pause`` and ``/resume`` (the body is optional): who acts,
    and, for a pause, why; both one line, shown on the page and in alerts."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    by: OneLine = "api"
    reason: OneLine = ""


class _Refused:
    """Put by the parser where a value JSON cannot carry (or we will not) stood."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _parse_int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"an integer of {digits} digits is out of range (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _depth_exceeds(text: str, limit: int) -> bool:
    """Does the JSON text nest deeper than ``limit``? Brackets inside strings don't count."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _refused_at(value: Any, path: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """The dotted path and reason of the first refused value (depth is already bounded)."""
    if isinstance(value, _Refused):
        return ".".join(path) or "body", value.why
    children: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        found = _refused_at(child, (*path, str(key)))
        if found is not None:
            return found
    return None


def parse_object(raw: bytes) -> dict[str, Any] | BodyProblem:
    """The body as a JSON object, or why it is refused (400, or 422 naming the field)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return BodyProblem(400, "request body must be UTF-8 JSON")
    if _depth_exceeds(text, MAX_JSON_DEPTH):
        return BodyProblem(400, f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except (json.JSONDecodeError, RecursionError):
        return BodyProblem(400, "request body must be a JSON object")
    if not isinstance(body, dict):
        return BodyProblem(400, "request body must be a JSON object")
    refused = _refused_at(body)
    if refused is not None:
        field, why = refused
        return BodyProblem(422, f"{field}: {why}", field)
    return body


def parse_intent(raw: bytes) -> OrderIntent:
    """Strict validation of a body :func:`parse_object` accepted; pydantic's
    ``ValidationError`` names each bad field."""
    return OrderIntent.model_validate_json(raw, strict=True)


# ---------------------------------------------------------------------------- answers


def jsonable(value: Any) -> Any:
    """JSON has no infinity: say it in words rather than emit invalid JSON."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _reason_json(reason: Reason) -> dict[str, Any]:
    return {"rule": reason.rule, "reason": reason.message, "figures": jsonable(reason.figures)}


def decision_json(decision: Decision) -> dict[str, Any]:
    """``{allowed, account_id, client_order_id, figures, rule, reason[, warnings]}``."""
    intent = decision.intent
    answer: dict[str, Any] = {
        "allowed": decision.allowed,
        "account_id": intent.account_id,
        "client_order_id": intent.client_order_id,
        "figures": jsonable(decision.figures),
    }
    if isinstance(decision, Blocked):
        answer.update(rule=decision.rule, reason=decision.reason)
    else:
        answer.update(rule=None, reason=None, warnings=[_reason_json(w) for w in decision.warnings])
    return answer


def breaker_views(breakers: Breakers | None) -> dict[str, Any]:
    return {rule: verdict_view(v) for rule, v in (breakers.verdicts.items() if breakers else ())}


def reservation_json(view: ReservationView) -> dict[str, Any]:
    r = view.reservation
    return {
        "reservation_id": r.id,
        "state": view.state,
        "why": view.why,
        "symbol": r.symbol,
        "side": r.side.value,
        "type": r.type.value,
        "is_entry": r.is_entry,
        "reserved_usd": r.reserved_usd,
        "client_order_id": r.client_order_id,
        "order_id": view.order_id,
        "created_at": r.created_at.isoformat(),
        "age_s": view.age_s,
        "expires_in_s": view.expires_in_s,
        "unknown_to_exchange_s": view.unknown_to_exchange_s,
    }
