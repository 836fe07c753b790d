"""Startup resolution of journaled submissions (DESIGN invariant 4), by client order id.

The guard journals each order intent with its clientOrderId before the request
leaves. After a restart, every intent still ``pending`` or ``sent`` is looked
up on the exchange:

- found (in the tracker after the first listing, or by ``fetch_order_by_client_id``):
  its order is recorded (role taken from the intent) and the intent ``resolved``;
- not found once the exchange's visibility window has passed: ``released``;
- not found inside the window, or any error: left pending, retried next cycle.

Only intents pending at startup are handled here; those the running guard
journals afterwards are the guard's to settle (no race on a request in flight).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from nija_broker.core.errors import AccountFatal, ExchangeError, OrderNotFound
from nija_broker.core.events import AttentionRequired, IntentReleased, IntentResolved, order_event
from nija_broker.core.models import OrderRole
from nija_broker.core.reconcile import adopt, resolve
from nija_broker.core.symbols import normalize_symbol
from nija_broker.state.book import Followed
from nija_broker.state.store import Intent

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

log = logging.getLogger("nija_broker.reconciler")


async def resolve_intents(sync: AccountSync) -> None:
    """Settle what can be settled now; keep the rest on ``sync.intents`` for the next cycle."""
    remaining: list[Intent] = []
    for intent in sync.intents:
        try:
            settled = await _resolve_intent(sync, intent)
        except AccountFatal:
            raise
        except ExchangeError as exc:
            log.info("account %s: intent %s unresolved for now: %s", sync.account_id,
                     intent.client_order_id, exc)
            settled = False
        if not settled:
            remaining.append(intent)
    sync.intents = remaining


async def _resolve_intent(sync: AccountSync, intent: Intent) -> bool:
    client_id = intent.client_order_id
    request = _request_fields(intent.request_json)
    role = _role(request.get("role"))
    known = sync.book.orders.by_client_id(client_id)
    if known is None:
        symbol = request.get("symbol")
        if not isinstance(symbol, str):
            sync.publish([AttentionRequired(
                account_id=sync.account_id, at=sync.clock.now(),
                reason=f"intent {client_id} names no symbol; it cannot be looked up")])
            return False
        try:
            answer = await sync.ask(
                partial(sync.exchange.fetch_order_by_client_id, client_id, symbol),
                "fetch_order_by_client_id")
        except OrderNotFound:
            age_s = (sync.clock.now() - intent.created_at).total_seconds()
            if age_s < sync.settings.visibility_window_s:
                return False  # may still appear: the exchange is allowed its lag
            return await _release(sync, intent)
        event = resolve(None, adopt(answer, role), sync.clock.now())
        if event is not None:
            await sync.commit([event])
        known = sync.book.orders.get(answer.id)
        if known is None:
            return False
    elif role is not None and known.role is not role:
        # Adopted from a listing before its intent was read: the intent knows its role.
        fixed = known.model_copy(update={"role": role})
        await sync.commit([order_event(known, fixed, None, sync.clock.now())])
    now = sync.clock.now()
    if sync.store is not None:
        await sync.run_book(partial(sync.store.set_intent_status, sync.account_id,
                                    client_id, "resolved", now, known.id))
    sync.publish([IntentResolved(account_id=sync.account_id, at=now,
                                 client_order_id=client_id, order_id=known.id)])
    return True


async def _release(sync: AccountSync, intent: Intent) -> bool:
    now = sync.clock.now()
    if sync.store is not None:
        await sync.run_book(partial(sync.store.set_intent_status, sync.account_id,
                                    intent.client_order_id, "released", now))
    sync.publish([IntentReleased(account_id=sync.account_id, at=now,
                                 client_order_id=intent.client_order_id)])
    return True


def followed_of(intent: Intent) -> Followed:
    """The order a resolved intent names, to be followed until the book has it."""
    request = _request_fields(intent.request_json)
    symbol = request.get("symbol")
    return Followed(symbol=normalize_symbol(symbol) if isinstance(symbol, str) else "",
                    order_id=intent.order_id, client_order_id=intent.client_order_id,
                    role=_role(request.get("role")))


def _request_fields(request_json: str) -> dict[str, Any]:
    """The journaled request's fields (``symbol``, ``role``, ...).

    The guard journals ``{"intent": {...}, "reserved_usd": ...}``; a flat object
    or one nested under ``"request"`` is read the same way.
    """
    try:
        data = json.loads(request_json)
    except ValueError:
        return {}
    for key in ("intent", "request"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    return data if isinstance(data, dict) else {}


def _role(value: object) -> OrderRole | None:
    try:
        return OrderRole(value) if isinstance(value, str) else None
    except ValueError:
        return None
