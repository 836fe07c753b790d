"""How :class:`~adapters.ccxt_adapter.CcxtExchange` sends a request, and sends an order once.

:class:`CcxtCalls` is the machinery under the adapter's public methods:

- one request (:meth:`~CcxtCalls._once`): the shared request budget, the
  per-method count, one mapping of ccxt's errors, and, where the exchange
  needs nonces in order (Kraken), one request of the account at a time;
- one deadline per call (:func:`~nija_broker.core.clock.deadline`): the
  caller's where it set one (the reconciler's ``call_timeout_s``), else
  ``call_timeout_s`` from the call's start. Everything the call does ends by
  it: the budget's wait, every attempt and every backoff. That span is the
  retry budget; there is no per-attempt timeout, and ccxt's own ``timeout``
  is kept at least as long as what remains, so it never ends an attempt first;
- retries of transient errors (:meth:`~CcxtCalls._retried`, under the reads,
  the create with a client id and the cancel), with exponential backoff and
  jitter, bounded in attempts and by the deadline (no backoff that would end
  past it), sleeping on the injected clock;
- ccxt's rows converted into orders, and the listings of ended orders read
  page by page as the exchange's profile says.

The look-up of an order by its client id and the two writes that lean on it
(create, cancel) are built on this in :mod:`adapters._ccxt_orders`.

The state it reads is set by ``CcxtExchange.__init__``; the class holds no
public method of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import datetime
from functools import partial, wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import ccxt.async_support as ccxt
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from nija_broker.core.clock import Clock, deadline
from nija_broker.core.errors import ExchangeError, ImpossibleAnswer, TransientError
from nija_broker.core.models import Order

from ._ccxt_convert import OrderMemo, convert_order
from ._ccxt_errors import map_ccxt_error
from ._ccxt_listing import RawRows, raw_rows
from ._shared import SessionPool
from .profiles import ExchangeProfile
from .ratelimit import AccountBudget, RateBudget

__all__ = ["CcxtCalls", "one_deadline"]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S", bound="CcxtCalls")

_log = logging.getLogger("adapters.ccxt_adapter")


class _StopBeforeDeadline(stop_base):
    """Stop retrying when the next backoff would end at or past the call's deadline.

    Loop time: the deadline's own timeline (the injected clock's, where the
    clock drives the loop). tenacity computes ``upcoming_sleep`` before it asks.
    """

    def __init__(self, when: float) -> None:
        self._when = when

    def __call__(self, retry_state: RetryCallState) -> bool:
        now = asyncio.get_running_loop().time()
        return now + retry_state.upcoming_sleep >= self._when


def one_deadline(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Make a public method one exchange call with one deadline, however many requests
    (pages, symbols, retries) it sends: the caller's, else ``call_timeout_s`` from now."""

    @wraps(method)
    async def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            async with deadline(self.call_timeout_s):
                return await method(self, *args, **kwargs)
        except TimeoutError as exc:
            raise TransientError(
                f"{self.exchange_id} account {self._account_id}: {method.__name__}: no answer "
                f"within the call's deadline of {self.call_timeout_s}s, retries included",
                exchange=self.exchange_id,
                account_id=self._account_id,
            ) from exc

    return call


class CcxtCalls:
    """Requests to one account of one ccxt exchange; the base of ``CcxtExchange``."""

    _ex: Any
    _account_id: str
    _clock: Clock
    _profile: ExchangeProfile
    _budget: RateBudget
    _spending: AccountBudget
    _secrets: tuple[str, ...]
    _memo: OrderMemo
    _serial: asyncio.Lock | None
    _pooled: bool
    _session_key: tuple[int, int] | None
    _parse_orders: Callable[..., Any] | None
    """ccxt's own ``parse_orders`` where its listings can answer raw rows (RawRows)."""
    call_timeout_s: float
    max_attempts: int
    retry_initial_s: float
    retry_max_wait_s: float
    calls: Counter[str]

    if TYPE_CHECKING:  # defined by CcxtExchange, with the public API

        @property
        def exchange_id(self) -> str: ...

    def _retrying(self, when: float) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_any(stop_after_attempt(self.max_attempts), _StopBeforeDeadline(when)),
            # Exponential from retry_initial_s, capped, plus up to one initial step of
            # jitter so many accounts retrying together do not hit the exchange in step.
            wait=wait_exponential(multiplier=self.retry_initial_s, max=self.retry_max_wait_s)
            + wait_random(0, self.retry_initial_s),
            retry=retry_if_exception_type(TransientError),
            sleep=self._clock.sleep,
            reraise=True,
        )

    def _one_at_a_time(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Where nonces must arrive in order (Kraken), one request of this account at a time.

        ccxt signs each request with a growing nonce, but two requests in
        flight can overtake each other on the way; Kraken then refuses the
        later-arriving lower nonce as if another program used the key.
        """
        if not self._profile.serialize_requests:
            return contextlib.nullcontext()
        if self._serial is None:
            self._serial = asyncio.Lock()
        return self._serial

    async def _once(
        self,
        action: str,
        call: Callable[[], Awaitable[T]],
        cost_key: str | None = None,
        count: int = 1,
    ) -> T:
        """One request under the call's deadline: budget, count, error mapping. No retry.

        ``cost_key`` names the request's weight in the profile where it differs from
        ``action``'s (a listing of one symbol weighs less than one of all)."""
        try:
            # Under _retried (or a caller) this is the enclosing deadline, not a second one.
            async with deadline(self.call_timeout_s) as when:
                await self._spending.spend(cost_key or action, count)
                self.calls[action] += 1
                self._cover_ccxt_timeout(when)
                if self._pooled and self._session_key is None:
                    self._join_pool()
                async with self._one_at_a_time():
                    try:
                        return await call()
                    finally:
                        # ccxt keeps the last body on the instance: a listing's is about
                        # 500 bytes an order, held for nothing once the call has ended
                        # (Kraken's cancel reads it back within the call, one request of
                        # the account at a time).
                        self._ex.last_http_response = None
        except (ccxt.BaseError, TimeoutError) as exc:
            if isinstance(exc, ccxt.ArgumentsRequired | ccxt.NotSupported):
                self.calls[action] -= 1  # ccxt refused locally: nothing was sent
            raise self._mapped(exc, action) from exc

    def _join_pool(self) -> None:
        """Send this account's requests through the process's shared session (one
        connection pool for every account), unless ccxt already opened its own."""
        ex = self._ex
        if ex.session is not None or not ex.own_session:
            return
        ssl = ex.ssl_context if ex.verify else False
        if ex.verify and ssl is None:
            return  # ccxt would build a context with extra certificates: leave it to ccxt
        ex.session, self._session_key = SessionPool.acquire(ssl, bool(ex.aiohttp_trust_env))
        ex.own_session = False

    def _mapped(self, exc: BaseException, action: str) -> ExchangeError:
        return map_ccxt_error(
            exc,
            exchange_id=self.exchange_id,
            account_id=self._account_id,
            secrets=self._secrets,
            action=action,
            overrides=self._profile.error_overrides,
            nonce_advice=self._profile.nonce_advice,
        )

    def _cover_ccxt_timeout(self, when: float) -> None:
        """Keep ccxt's own ``timeout`` (ms, per HTTP request) longer than what remains of
        the call: the call's deadline is the only one that ends an attempt.

        A second beyond it, because aiohttp rounds its timers up to whole seconds and
        a tie would let ccxt's fire first. It only ever grows, so calls sharing the
        ccxt object cannot shorten each other's.
        """
        current = getattr(self._ex, "timeout", None)
        if not isinstance(current, int | float):
            return
        needed_ms = math.ceil((when - asyncio.get_running_loop().time() + 1.0) * 1000)
        if needed_ms > current:
            self._ex.timeout = needed_ms

    def _gave_up(
        self, exc: ExchangeError, attempts: int, cause: BaseException | None
    ) -> ExchangeError:
        again = type(exc)(
            f"{exc} (gave up after {attempts} attempt(s))",
            exchange=exc.exchange,
            account_id=exc.account_id,
        )
        again.__cause__ = cause
        return again

    async def _retried(self, action: str, attempt: Callable[[int], Awaitable[T]]) -> T:
        """``attempt(1)``, ``attempt(2)``, ... while it raises :class:`TransientError`.

        All under the call's one deadline (the caller's, else ``call_timeout_s``
        from now), bounded by :meth:`_retrying` (attempts, and no backoff past
        the deadline); any other error ends it at once. The last transient
        error, or the missed deadline as a transient error, is raised saying
        how many attempts were made.
        """
        attempts = 0
        try:
            async with deadline(self.call_timeout_s) as when:
                async for retry in self._retrying(when):
                    with retry:
                        attempts += 1
                        return await attempt(attempts)
        except TransientError as exc:
            raise self._gave_up(exc, attempts, exc.__cause__) from exc.__cause__
        except TimeoutError as exc:  # this call's own deadline passed mid-attempt
            raise self._gave_up(self._mapped(exc, action), attempts, exc) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _read(
        self,
        action: str,
        call: Callable[[], Awaitable[T]],
        cost_key: str | None = None,
        count: int = 1,
    ) -> T:
        """A read, retried on transient errors."""
        return await self._retried(
            action, lambda _attempt: self._once(action, call, cost_key, count)
        )

    def _order(self, raw: Mapping[str, Any]) -> Order:
        return self._convert(raw, self._clock.now())

    def _convert(self, raw: Mapping[str, Any], now: datetime) -> Order:
        return convert_order(
            raw, account_id=self._account_id, now=now, client_id=self._memo.client_id
        )

    def _orders(
        self,
        raws: Iterable[Mapping[str, Any]],
        problems: list[ImpossibleAnswer] | None = None,
        *,
        polled: bool = False,
    ) -> list[Order]:
        """Convert a listing. With ``problems``, an impossible row is left out and reported
        there (one broken order must not blind the account to every other).

        ``polled``: a listing asked again and again (open orders, where ccxt's rows are
        not reached before parsing): unchanged orders come from the memo of converted
        orders. Other answers (one order, the closed orders of a sweep) are converted
        plainly and not remembered: an order is held once, by the book.
        """
        now = self._clock.now()
        convert = self._memo.convert if polled else self._convert
        if problems is None:
            return [convert(raw, now) for raw in raws]
        orders = []
        for raw in raws:
            try:
                orders.append(convert(raw, now))
            except ImpossibleAnswer as exc:
                problems.append(exc)
        return orders

    async def _closed_order_rows(
        self, wanted: str | None, since_ms: int | None, params: Mapping[str, Any]
    ) -> list[Any]:
        """ccxt's rows of the orders that ended since ``since_ms``, every page the
        exchange's profile says to read (one call where none is set)."""
        if self._profile.all_orders_page is not None:
            return await self._all_orders_pages(
                wanted, since_ms, params, self._profile.all_orders_page
            )
        if self._profile.closed_orders_page_size is not None:
            return await self._closed_pages(
                wanted, since_ms, params, self._profile.closed_orders_page_size
            )
        rows: list[Any] = await self._read(
            "fetch_closed_orders",
            partial(self._closed_orders_method(), wanted, since_ms, None, params),
        )
        return rows

    async def _closed_pages(
        self, wanted: str | None, since_ms: int | None, params: Mapping[str, Any], page_size: int
    ) -> list[Any]:
        """Every page of a newest-first listing paged with ``ofs`` (Kraken's ClosedOrders).

        Asked for all symbols and filtered here: ccxt filters a page by symbol after the
        fact, so a short filtered page would not say the history ended. An order closing
        between two calls shifts the rows down by one, so a row may come twice (kept once),
        never be skipped.
        """
        method = self._closed_orders_method()
        rows: dict[str, Any] = {}
        for page in range(self._profile.closed_orders_max_pages):
            got = await self._read(
                "fetch_closed_orders",
                partial(method, None, since_ms, None, {**params, "ofs": page * page_size}),
            )
            for row in got:
                rows.setdefault(str(row.get("id")), row)
            if len(got) < page_size:
                break
        else:
            _log.warning(
                "%s account %s: closed orders run past %d pages of %d; older ones "
                "are left to the look-ups by id",
                self.exchange_id,
                self._account_id,
                self._profile.closed_orders_max_pages,
                page_size,
            )
        return [r for r in rows.values() if wanted is None or r.get("symbol") == wanted]

    async def _all_orders_pages(
        self, symbol: str | None, since_ms: int | None, params: Mapping[str, Any], page_size: int
    ) -> list[Any]:
        """Every order since ``since_ms``, page after page forward by order id (Binance).

        allOrders answers the first ``page_size`` rows from ``startTime`` (without one,
        the most recent rows): a full page means more may follow, asked from the highest
        order id seen + 1. Without ``since_ms``, the most recent page only.
        """
        rows: dict[str, Any] = {}
        cursor: dict[str, Any] = {}
        seen: set[str] = set()
        for _ in range(self._profile.closed_orders_max_pages):
            call = partial(
                self._ex.fetch_orders,
                symbol,
                None if cursor else since_ms,
                page_size,
                {**params, **cursor},
            )
            page = await self._all_orders_page(call)
            fresh = [(i, r) for i, r in page if i not in seen]
            seen.update(i for i, _ in fresh)
            rows.update((i, r) for i, r in fresh if r is not None)
            ids = [int(i) for i, _ in fresh if i.isdigit()]
            if since_ms is None or len(page) < page_size or not ids:
                break
            cursor = {"orderId": max(ids) + 1}
        else:
            _log.warning(
                "%s account %s: orders run past %d pages of %d; later ones are "
                "left to the look-ups by id",
                self.exchange_id,
                self._account_id,
                self._profile.closed_orders_max_pages,
                page_size,
            )
        return list(rows.values())

    async def _all_orders_page(
        self, call: Callable[[], Awaitable[Any]]
    ) -> list[tuple[str, Any | None]]:
        """One page of ``fetch_orders``: each row's order id, with ccxt's order (``None``
        for a row still open, which the sweep does not keep).

        Most rows of a page are the account's resting orders: where the profile names
        the raw statuses ccxt reads as open (Binance: NEW, PARTIALLY_FILLED), those rows
        are not parsed at all, and ccxt parses the rest as it would have (the page holds
        at most ``limit`` rows, so its filter by time alone decides, row by row)."""
        open_statuses = self._profile.all_orders_open_statuses
        parse_orders = self._parse_orders if open_statuses else None
        with raw_rows() if parse_orders is not None else contextlib.nullcontext():
            raw = await self._read("fetch_closed_orders", call)
        if parse_orders is None or not isinstance(raw, RawRows):  # ccxt parsed the rows
            return [(str(r.get("id")), r) for r in raw]
        page: list[tuple[str, Any | None]] = []
        ended = []
        for row in raw.rows or ():
            if isinstance(row, Mapping) and row.get("status") in open_statuses:
                page.append((str(row.get("orderId")), None))
            else:
                ended.append(row)
        parsed = parse_orders(ended, raw.market, raw.since, raw.limit, raw.params or {})
        page += [(str(r.get("id")), r) for r in parsed]
        return page

    def _closed_orders_method(self) -> Callable[..., Awaitable[Any]]:
        has = getattr(self._ex, "has", {}) or {}
        # ccxt is untyped: the annotation says what its async methods are.
        method: Callable[..., Awaitable[Any]] = (
            self._ex.fetch_canceled_and_closed_orders
            if has.get("fetchCanceledAndClosedOrders")
            else self._ex.fetch_closed_orders
        )
        return method
