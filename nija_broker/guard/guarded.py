"""The guard at the places orders leave: an exchange wrapper and a submit-function wrapper.

:class:`GuardedExchange` wraps an :class:`adapters.base.Exchange`, or a raw
ccxt async exchange (anything with ``create_order(symbol, type, side, amount,
price, params)``). ``create_order`` asks the guard first and raises
:class:`~nija_broker.core.errors.EntryBlocked` without a single network call when
the order is blocked; every other attribute passes straight through.

:func:`guard_submit` (and the decorator :func:`guarded`) wraps any function
that submits an order, sync or async, given a function that reads the
:class:`~nija_broker.core.intent.OrderIntent` from its arguments — for example the
live bot's ``place_market_order(symbol, side, quantity, size_type='quote')``
with :func:`market_order_reader`. The guard's per-account lock is a
``threading.Lock``, so the sync form is safe from the bot's threads while the
runtime runs elsewhere.

Every surface follows the same steps: decide (check and reserve under the
account's lock, intent journaled) -> send -> on an answer, confirm; on a
refusal the exchange gave, release; on anything else (timeout, lost response,
cancellation) the order may exist, so the reservation keeps counting until it
expires and the intent waits, as ``sent``, to be resolved by client order id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

from nija_broker.core.errors import AccountFatal, EntryBlocked, OrderError, RateLimited
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.intent import Allowed, OrderIntent, Reservation, new_client_order_id
from nija_broker.core.models import Order, OrderType
from nija_broker.guard.guard import Guard

__all__ = [
    "GuardedExchange",
    "guard_submit",
    "guarded",
    "market_order_reader",
    "order_id_of",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# ccxt's exceptions that mean "the exchange refused this order; it does not exist".
# Matched by name so that nija_broker never imports ccxt (only adapters/ does).
# DuplicateOrderId (a subclass of InvalidOrder) is NOT among them: it says an
# order with our client id already exists.
_CCXT_REFUSALS = frozenset(
    {
        "InvalidOrder",
        "InsufficientFunds",
        "BadRequest",
        "BadSymbol",
        "AuthenticationError",
        "PermissionDenied",
        "AccountSuspended",
        "RateLimitExceeded",
    }
)
_CCXT_MAYBE_EXISTS = frozenset({"DuplicateOrderId"})


def refused(exc: BaseException) -> bool:
    """True when ``exc`` proves the order was not taken; False when it may exist."""
    if isinstance(exc, OrderError | AccountFatal | RateLimited):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    return not names & _CCXT_MAYBE_EXISTS and bool(names & _CCXT_REFUSALS)


def order_id_of(result: Any) -> Order | str | None:
    """What to confirm a reservation with: an :class:`Order`, an id, or ``None``."""
    if isinstance(result, Order):
        return result
    if isinstance(result, str):
        return result or None
    if isinstance(result, Mapping):
        for key in ("id", "order_id", "orderId"):
            value = result.get(key)
            if value:
                return str(value)
    return None


def _decide(guard: Guard, intent: OrderIntent) -> Reservation:
    decision = guard.decide(intent)
    if not isinstance(decision, Allowed):
        raise EntryBlocked(decision.rule, decision.reason)
    for warning in decision.warnings:
        log.warning("guard %s on %s: %s", warning.rule, intent.account_id, warning.message)
    assert decision.reservation is not None
    return decision.reservation


def _settle_failure(guard: Guard, reservation: Reservation, exc: BaseException) -> None:
    if refused(exc):
        guard.release(reservation.id)
    else:
        guard.mark_sent(reservation.id)


async def _run_async(
    guard: Guard,
    intent: OrderIntent,
    send: Callable[[], Awaitable[R]],
    confirm_with: Callable[[R], Order | str | None],
) -> R:
    # The guard's answers come from its owner thread, awaited: the loop never waits on it.
    reservation = await guard.acall(_decide, guard, intent)
    try:
        result = await send()
    except BaseException as exc:
        # Settled even if this task is being cancelled: the reservation must not dangle.
        await asyncio.shield(guard.acall(_settle_failure, guard, reservation, exc))
        raise
    await guard.acall(guard.confirm, reservation.id, confirm_with(result))
    return result


def _run_sync(
    guard: Guard,
    intent: OrderIntent,
    send: Callable[[], R],
    confirm_with: Callable[[R], Order | str | None],
) -> R:
    reservation = _decide(guard, intent)
    try:
        result = send()
    except BaseException as exc:
        _settle_failure(guard, reservation, exc)
        raise
    guard.confirm(reservation.id, confirm_with(result))
    return result


# --------------------------------------------------------------------------- exchange


class GuardedExchange:
    """An exchange whose ``create_order`` passes the guard first; all else passes through."""

    def __init__(self, inner: Any, guard: Guard, account_id: str | None = None) -> None:
        resolved = account_id if account_id is not None else getattr(inner, "account_id", None)
        if not isinstance(resolved, str) or not resolved.strip():
            raise ValueError(
                "GuardedExchange needs the account id: pass account_id= (a raw ccxt exchange "
                "does not know which nija_broker account it trades for)"
            )
        self._inner = inner
        self._guard = guard
        self._account_id = resolved

    @property
    def inner(self) -> Any:
        return self._inner

    @property
    def guard(self) -> Guard:
        return self._guard

    @property
    def account_id(self) -> str:
        return self._account_id

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: everything but create_order.
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"GuardedExchange({self._inner!r}, account_id={self._account_id!r})"

    async def create_order(self, *args: Any, **kwargs: Any) -> Any:
        """``create_order(request)`` (Exchange protocol) or ccxt's
        ``create_order(symbol, type, side, amount, price=None, params={})``.
        """
        request = kwargs.get("request", args[0] if args else None)
        if isinstance(request, OrderRequest):
            return await self._create_request(request)
        return await self._create_ccxt(*args, **kwargs)

    async def _create_request(self, request: OrderRequest) -> Order:
        intent = OrderIntent(
            account_id=self._account_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            amount=request.amount,
            price=request.price,
            stop_price=request.stop_price,
            role=request.role,
            reduce_only=request.reduce_only,
            client_order_id=request.client_order_id or new_client_order_id(),
        )
        request = dataclasses.replace(request, client_order_id=intent.client_order_id)
        inner = self._inner
        result: Order = await _run_async(
            self._guard, intent, lambda: inner.create_order(request), order_id_of
        )
        return result

    async def _create_ccxt(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float | None = None,
        price: float | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        sent = dict(params or {})
        client_order_id = (
            sent.get("clientOrderId") or sent.get("newClientOrderId") or new_client_order_id()
        )
        # ccxt's unified name; each exchange class maps it to its own field
        # (Binance: newClientOrderId, Kraken: cl_ord_id, Coinbase: client_order_id).
        if "newClientOrderId" not in sent:
            sent["clientOrderId"] = client_order_id
        quote_size = sent.get("quoteOrderQty", sent.get("cost"))
        intent = OrderIntent.model_validate(
            {
                "account_id": self._account_id,
                "symbol": symbol,
                "side": str(side).lower(),
                "type": _ccxt_type(type, price),
                "amount": amount or None,
                "size_usd": float(quote_size) if quote_size else None,
                "price": price,
                "stop_price": sent.get("stopPrice", sent.get("triggerPrice")),
                "reduce_only": bool(sent.get("reduceOnly", False)),
                "client_order_id": client_order_id,
            }
        )
        inner = self._inner
        return await _run_async(
            self._guard,
            intent,
            lambda: inner.create_order(symbol, type, side, amount, price, sent),
            order_id_of,
        )


def _ccxt_type(value: str, price: float | None) -> OrderType:
    try:
        return OrderType(value.lower())
    except ValueError:
        # An exchange-specific type (e.g. Binance's LIMIT_MAKER): valued as a limit when priced.
        return OrderType.LIMIT if price is not None else OrderType.MARKET


# --------------------------------------------------------------------------- functions


def guard_submit(
    guard: Guard,
    submit: Callable[P, R],
    to_intent: Callable[P, OrderIntent],
    *,
    client_id_kwarg: str | None = None,
    confirm_with: Callable[[Any], Order | str | None] = order_id_of,
) -> Callable[P, R]:
    """Wrap ``submit`` (sync or async) so every call passes the guard first.

    ``to_intent`` gets the same arguments and returns the order's intent. With
    ``client_id_kwarg``, the intent's client order id is passed to ``submit``
    under that keyword, so the exchange knows the order by it. ``confirm_with``
    turns ``submit``'s result into the exchange's order or its id.
    A blocked entry raises :class:`EntryBlocked` and ``submit`` is not called.
    """

    def prepare(args: Any, kwargs: dict[str, Any]) -> tuple[OrderIntent, dict[str, Any]]:
        intent = to_intent(*args, **kwargs)
        if client_id_kwarg is not None:
            kwargs = {**kwargs, client_id_kwarg: intent.client_order_id}
        return intent, kwargs

    if inspect.iscoroutinefunction(submit):
        async_submit = cast(Callable[..., Awaitable[Any]], submit)

        @functools.wraps(submit)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            intent, sent = prepare(args, kwargs)
            return await _run_async(
                guard, intent, lambda: async_submit(*args, **sent), confirm_with
            )

        return cast(Callable[P, R], guarded_async)

    @functools.wraps(submit)
    def guarded_sync(*args: Any, **kwargs: Any) -> Any:
        intent, sent = prepare(args, kwargs)
        return _run_sync(guard, intent, lambda: submit(*args, **sent), confirm_with)

    return cast(Callable[P, R], guarded_sync)


def guarded(
    guard: Guard,
    to_intent: Callable[..., OrderIntent],
    *,
    client_id_kwarg: str | None = None,
    confirm_with: Callable[[Any], Order | str | None] = order_id_of,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator form of :func:`guard_submit`."""

    def decorate(submit: Callable[P, R]) -> Callable[P, R]:
        return guard_submit(
            guard, submit, to_intent, client_id_kwarg=client_id_kwarg, confirm_with=confirm_with
        )

    return decorate


def market_order_reader(account_id: str) -> Callable[..., OrderIntent]:
    """Reads the intent of the live bot's ``place_market_order(symbol, side, quantity,
    size_type='quote')``: ``quantity`` is quote currency for ``'quote'``, base otherwise.
    """

    def read(
        symbol: str, side: str, quantity: float, size_type: str = "quote", *_: Any, **__: Any
    ) -> OrderIntent:
        size_field = "size_usd" if size_type == "quote" else "amount"
        return OrderIntent.model_validate(
            {
                "account_id": account_id,
                "symbol": symbol,
                "side": str(side).lower(),
                "type": OrderType.MARKET,
                size_field: quantity,
            }
        )

    return read
