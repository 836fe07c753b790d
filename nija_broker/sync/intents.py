"""Startup resolution of journaled submissions (DESIGN invariant 4), by client order id.

The guard journals each order intent with its clientOrderId before the request
leaves. After a restart, every intent still ``pending`` or ``sent`` is looked
up on the exchange:

- found (in the tracker after the first listing, or by ``fetch_order_by_client_id``):
  its order is recorded (role taken from the intent) and the intent ``resolved``;
- not found once the exchange's visibility window has passed: ``released``;
- not found inside the window, or any error: left pending, retried next cycle.

Only intents pending at startup are handled here (:class:`Intents`, step 7 of
an account's cycle until none is left); those the running guard journals
afterwards are the guard's to settle (no race on a request in flight).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from nija_broker.core.errors import AccountFatal, ExchangeError, OrderNotFound
from nija_broker.core.events import AttentionRequired, IntentReleased, IntentResolved, order_event
from nija_broker.core.models import Order, OrderRole
from nija_broker.core.reconcile import adopt, resolve
from nija_broker.core.symbols import normalize_symbol
from nija_broker.state.book import AccountBook, Followed
from nija_broker.state.store import Intent, Store

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Intents"]

log = logging.getLogger("nija_broker.reconciler")


@dataclass(slots=True)
class Intents:
    """The intents journaled before this start and not settled yet. Runs on the event
    loop only."""

    pending: list[Intent] = field(default_factory=list)

    async def load(self, sync: AccountSync, store: Store) -> None:
        """Read the pending intents; follow the orders of those already resolved that the
        book has not seen (they are looked up by id, :class:`~nija_broker.sync.fills.Lookups`)."""
        self.pending = await sync.in_book(_load, store)

    async def resolve(self, sync: AccountSync) -> None:
        """Settle what can be settled now; keep the rest for the next cycle."""
        remaining: list[Intent] = []
        for intent in self.pending:
            try:
                settled = await _resolve_intent(sync, intent)
            except AccountFatal:
                raise
            except ExchangeError as exc:
                log.info(
                    "account %s: intent %s unresolved for now: %s",
                    sync.account_id,
                    intent.client_order_id,
                    exc,
                )
                settled = False
            if not settled:
                remaining.append(intent)
        self.pending = remaining


# Run on the book's owner thread, through AccountSync.in_book.
def _load(book: AccountBook, store: Store) -> list[Intent]:
    pending = store.pending_intents(book.account_id)
    for intent in store.unfollowed_intents(book.account_id):
        book.follow(_followed_of(intent))
    return pending


def _by_client_id(book: AccountBook, client_order_id: str) -> Order | None:
    return book.orders.by_client_id(client_order_id)


def _by_id(book: AccountBook, order_id: str) -> Order | None:
    return book.orders.get(order_id)


async def _resolve_intent(sync: AccountSync, intent: Intent) -> bool:
    client_id = intent.client_order_id
    request = _request_fields(intent.request_json)
    role = _role(request.get("role"))
    known = await sync.in_book(_by_client_id, client_id)
    if known is None:
        symbol = request.get("symbol")
        if not isinstance(symbol, str):
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        reason=f"intent {client_id} names no symbol; it cannot be looked up",
                    )
                ]
            )
            return False
        try:
            answer = await sync.ask(
                partial(sync.exchange.fetch_order_by_client_id, client_id, symbol),
                "fetch_order_by_client_id",
            )
        except OrderNotFound:
            age_s = (sync.clock.now() - intent.created_at).total_seconds()
            if age_s < sync.settings.visibility_window_s:
                return False  # may still appear: the exchange is allowed its lag
            return await _release(sync, intent)
        event = resolve(None, adopt(answer, role), sync.clock.now())
        if event is not None:
            await sync.commit([event])
        known = await sync.in_book(_by_id, answer.id)
        if known is None:
            return False
    elif role is not None and known.role is not role:
        # Adopted from a listing before its intent was read: the intent knows its role.
        fixed = known.model_copy(update={"role": role})
        await sync.commit([order_event(known, fixed, None, sync.clock.now())])
    now = sync.clock.now()
    if sync.store is not None:
        await sync.run_book(
            partial(
                sync.store.set_intent_status, sync.account_id, client_id, "resolved", now, known.id
            )
        )
    sync.publish(
        [
            IntentResolved(
                account_id=sync.account_id, at=now, client_order_id=client_id, order_id=known.id
            )
        ]
    )
    return True


async def _release(sync: AccountSync, intent: Intent) -> bool:
    now = sync.clock.now()
    if sync.store is not None:
        await sync.run_book(
            partial(
                sync.store.set_intent_status,
                sync.account_id,
                intent.client_order_id,
                "released",
                now,
            )
        )
    sync.publish(
        [IntentReleased(account_id=sync.account_id, at=now, client_order_id=intent.client_order_id)]
    )
    return True


def _followed_of(intent: Intent) -> Followed:
    """The order a resolved intent names, to be followed until the book has it."""
    request = _request_fields(intent.request_json)
    symbol = request.get("symbol")
    return Followed(
        symbol=normalize_symbol(symbol) if isinstance(symbol, str) else "",
        order_id=intent.order_id,
        client_order_id=intent.client_order_id,
        role=_role(request.get("role")),
    )


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
