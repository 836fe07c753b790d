"""The local HTTP API (aiohttp): status, orders, trades, guard decisions, guard checks, metrics.

Binding: 127.0.0.1 by default. Bound to any other address it refuses to start
without a bearer token, and then requires it on every request (``Authorization:
Bearer <token>``, the scheme in any case); a blank token is refused at start.

Every error is JSON, ``{"error": sentence, "field": name, ...}``: 400 a body that
is not a JSON object or nests too deep, 401 missing or wrong token, 404 unknown
account, endpoint or reservation, 409 a client order id reused for another
request (or after its reservation ended), 413 a body over 64 KiB, 422 a bad
field (named; numbers must be JSON numbers, flags JSON booleans, integers at
most 20 digits), 503 an intent the store could not journal (not allowed).

Endpoints::

    GET  /healthz                              per-account sync health (503 if any failed)
    GET  /v1/accounts                          the status document (a row per account)
    GET  /v1/accounts/{id}                     one row (with the holdings it cannot value)
    GET  /v1/accounts/{id}/orders?status=open|all
    GET  /v1/accounts/{id}/trades?limit=N
    GET  /v1/accounts/{id}/guard-decisions?limit=N&blocked_only=true
    GET  /v1/accounts/{id}/reservations        what the guard holds now, and why
    POST /v1/guard/check                       dry run: {allowed, rule, reason, ...}
    POST /v1/guard/reserve                     judge and hold the entry's place (idempotent
                                               by client_order_id)
    POST /v1/guard/confirm                     {reservation_id, order_id?}
    POST /v1/guard/release                     {reservation_id} (in flight or settling)
    GET  /metrics                              Prometheus exposition
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from nija_broker.core.breakers import Breakers
from nija_broker.core.clock import Clock
from nija_broker.core.errors import ConfigError, StateError
from nija_broker.core.health import AccountLive, SyncState
from nija_broker.core.intent import Allowed, Blocked, Decision, OrderIntent, Reason
from nija_broker.guard.board import verdict_view
from nija_broker.guard.guard import Guard, GuardConflict, ReservationView
from nija_broker.service.api_body import MAX_BODY_BYTES, ReservationCall, parse_intent, parse_object
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.status import account_status, status_document, status_rows
from nija_broker.state.book import Books

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("nija_broker.api")


@dataclass(frozen=True, slots=True)
class ApiContext:
    """What the API reads. The runtime builds it; tests can build it by hand."""

    books: Books
    live: Mapping[str, AccountLive]
    guard: Guard
    metrics: BrokerMetrics
    clock: Clock
    token: str | None = field(default=None, repr=False)


CONTEXT: web.AppKey[ApiContext] = web.AppKey("context", ApiContext)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token, and any blank token."""
    if token is not None and (not token.strip() or token != token.strip()):
        # A blank token would let anyone in; one with spaces around it can never match
        # (HTTP strips a header value's ends): both are configuration mistakes.
        raise ConfigError(
            "the API token is blank or starts or ends with whitespace: set the variable "
            "api.token_env names to a token of visible characters", key="api.token_env")
    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"api.host is {host!r}, not a loopback address: set api.token_env to the name of an "
            "environment variable holding a bearer token, or bind to 127.0.0.1",
            key="api.host",
        )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _authorized(header: str, token: str) -> bool:
    """``Bearer <token>``; the scheme is case-insensitive (RFC 7235, section 2.1)."""
    scheme, _, given = header.strip().partition(" ")
    right_scheme = scheme.lower() == "bearer"
    return hmac.compare_digest(given.strip().encode(), token.encode()) and right_scheme


@web.middleware
async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[CONTEXT].token
    if token and not _authorized(request.headers.get("Authorization", ""), token):
        return _error(401, "missing or wrong bearer token", field="Authorization")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404 and request.match_info.route.resource is None:
            return _error(404, f"no such endpoint: {request.method} {request.path}")
        if exc.status == 405:
            return _error(405, f"method {request.method} not allowed on {request.path}")
        if exc.status >= 400:
            return _error(exc.status, exc.reason)
        raise
    except Exception:
        # Still JSON, and nothing of the exception (it may quote a request) in the answer.
        log.exception("API %s %s failed", request.method, request.path)
        return _error(500, "internal error; the sidecar's log has the details")


def _known(ctx: ApiContext, account_id: str) -> bool:
    return account_id in ctx.live or account_id in ctx.books.accounts()


def _account_or_404(request: web.Request) -> str | web.Response:
    ctx = request.app[CONTEXT]
    account_id = request.match_info["account_id"]
    if not _known(ctx, account_id):
        return _error(404, f"unknown account {account_id!r}", field="account_id",
                      account_id=account_id)
    return account_id


def _int_query(request: web.Request, name: str, default: int, maximum: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return _error(422, f"{name} must be an integer, got {raw!r}", field=name)
    if not 1 <= value <= maximum:
        return _error(422, f"{name} must be between 1 and {maximum}, got {value}", field=name)
    return value


async def _raw_body(request: web.Request) -> bytes | web.Response:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes",
                      field="body", limit_bytes=MAX_BODY_BYTES)


async def _json_body(request: web.Request) -> tuple[bytes, dict[str, Any]] | web.Response:
    """The raw body and its JSON object, or the JSON error answer (400, 413, 422)."""
    raw = await _raw_body(request)
    if isinstance(raw, web.Response):
        return raw
    body = parse_object(raw)
    if not isinstance(body, dict):
        return _error(body.status, body.message, field=body.field)
    return raw, body


def _validation_error(exc: ValidationError) -> web.Response:
    problems = [
        {"field": ".".join(str(p) for p in err["loc"]) or None, "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0]
    label = first["field"] or "request"
    return _error(422, f"{label}: {first['message']}", field=first["field"], problems=problems)


# ---------------------------------------------------------------------------- reads


async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    accounts = {}
    for account_id, live in sorted(ctx.live.items()):
        # Degraded while its equity cannot be established; failed while its books cannot
        # be read back from the store (entries fail closed then).
        book = ctx.books.get(account_id) if account_id in ctx.books else None
        health = live.reported_health(book.degraded_reason if book is not None else None)
        accounts[account_id] = {
            "state": health.state.value,
            "last_success": health.last_success.isoformat() if health.last_success else None,
            "consecutive_failures": health.consecutive_failures,
            "last_error": health.last_error,
            "unvalued_holdings": list(live.unvalued_holdings),
        }
    states = {a["state"] for a in accounts.values()}
    failed = SyncState.FAILED.value in states
    overall = "failed" if failed else "ok" if states <= {SyncState.OK.value} else "degraded"
    return web.json_response({"status": overall, "accounts": accounts},
                             status=503 if failed else 200)


async def list_accounts(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    now = ctx.clock.now()
    rows = status_rows(ctx.books, ctx.live, now, breakers=ctx.guard.breaker_report)
    return web.json_response(status_document(rows, now))


async def get_account(request: web.Request) -> web.Response:
    found = _account_or_404(request)
    if isinstance(found, web.Response):
        return found
    ctx = request.app[CONTEXT]
    breakers = ctx.guard.breaker_report(found)
    row = account_status(ctx.books.get(found), ctx.live.get(found), ctx.clock.now(), breakers)
    view = row.model_dump(mode="json")
    view["breakers"] = _breaker_views(breakers)
    return web.json_response(view)


def _breaker_views(breakers: Breakers | None) -> dict[str, Any]:
    return {rule: verdict_view(v) for rule, v in (breakers.verdicts.items() if breakers else ())}


async def account_resume(request: web.Request) -> web.Response:
    """Clear the account's tripped circuit breakers (journaled); they trip again only when
    their figures get worse than they are now."""
    found = _account_or_404(request)
    if isinstance(found, web.Response):
        return found
    ctx = request.app[CONTEXT]
    breakers, resumed = ctx.guard.resume(found)
    return web.json_response({"account_id": found, "at": ctx.clock.now().isoformat(),
                              "resumed": resumed, "breakers": _breaker_views(breakers)})


async def account_orders(request: web.Request) -> web.Response:
    found = _account_or_404(request)
    if isinstance(found, web.Response):
        return found
    which = request.query.get("status", "open")
    if which not in ("open", "live", "all"):
        return _error(422, f"status must be open, live or all, got {which!r}", field="status")
    tracker = request.app[CONTEXT].books.get(found).orders
    orders = {"open": tracker.open_orders, "live": tracker.live_orders,
              "all": tracker.orders}[which]()
    return web.json_response({"account_id": found,
                              "orders": [o.model_dump(mode="json") for o in orders]})


def _account_and_limit(request: web.Request) -> tuple[str, int] | web.Response:
    """The path's account (404 if unknown) and the ``limit`` query (422 if bad)."""
    found = _account_or_404(request)
    if isinstance(found, web.Response):
        return found
    limit = _int_query(request, "limit", 100, 10_000)
    if isinstance(limit, web.Response):
        return limit
    return found, limit


async def account_trades(request: web.Request) -> web.Response:
    asked = _account_and_limit(request)
    if isinstance(asked, web.Response):
        return asked
    found, limit = asked
    ctx = request.app[CONTEXT]
    store = ctx.books.store
    trades = (store.trades(found, limit=limit) if store is not None
              else ctx.books.get(found).performance.trade_history(limit))
    return web.json_response({"account_id": found,
                              "trades": [t.model_dump(mode="json") for t in trades]})


async def account_decisions(request: web.Request) -> web.Response:
    asked = _account_and_limit(request)
    if isinstance(asked, web.Response):
        return asked
    found, limit = asked
    blocked_only = request.query.get("blocked_only", "false").lower() in ("1", "true", "yes")
    ctx = request.app[CONTEXT]
    records = ctx.guard.decisions(found, limit=limit, blocked_only=blocked_only)
    return web.json_response({"account_id": found, "decisions": [
        {"at": r.ts.isoformat(), "allowed": r.allowed, "rule": r.rule, "reason": r.reason,
         "client_order_id": r.client_order_id, "symbol": r.symbol,
         "side": r.side.value if r.side else None, "figures": _jsonable(r.figures)}
        for r in records
    ]})


def _jsonable(value: Any) -> Any:
    """JSON has no infinity: say it in words rather than emit invalid JSON."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ctx.metrics.refresh(ctx.books, ctx.live, ctx.clock.now())
    body, content_type = ctx.metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# ---------------------------------------------------------------------------- guard


def _reason_json(reason: Reason) -> dict[str, Any]:
    return {"rule": reason.rule, "reason": reason.message, "figures": _jsonable(reason.figures)}


def _decision_json(decision: Decision) -> dict[str, Any]:
    intent = decision.intent
    answer: dict[str, Any] = {"allowed": decision.allowed, "account_id": intent.account_id,
                              "client_order_id": intent.client_order_id,
                              "figures": _jsonable(decision.figures)}
    if isinstance(decision, Blocked):
        answer.update(rule=decision.rule, reason=decision.reason)
    else:
        answer.update(rule=None, reason=None,
                      warnings=[_reason_json(w) for w in decision.warnings])
    return answer


async def _intent_from(request: web.Request) -> OrderIntent | web.Response:
    parsed = await _json_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    try:
        intent = parse_intent(parsed[0])
    except ValidationError as exc:
        return _validation_error(exc)
    ctx = request.app[CONTEXT]
    if not _known(ctx, intent.account_id):
        return _error(404, f"unknown account {intent.account_id!r}", field="account_id",
                      account_id=intent.account_id)
    return intent


def _conflict(exc: GuardConflict) -> web.Response:
    return _error(409, str(exc), field=exc.field, **{exc.field: exc.value})


async def guard_check(request: web.Request) -> web.Response:
    intent = await _intent_from(request)
    if isinstance(intent, web.Response):
        return intent
    decision = request.app[CONTEXT].guard.check(intent)
    return web.json_response(_decision_json(decision))


async def guard_reserve(request: web.Request) -> web.Response:
    intent = await _intent_from(request)
    if isinstance(intent, web.Response):
        return intent
    ctx = request.app[CONTEXT]
    try:
        decision = ctx.guard.decide(intent)
    except GuardConflict as exc:
        return _conflict(exc)
    except StateError as exc:
        return _error(503, f"the intent could not be journaled, so it is not allowed: {exc}",
                      field="client_order_id", client_order_id=intent.client_order_id)
    answer = _decision_json(decision)
    if isinstance(decision, Allowed) and decision.reservation is not None:
        reservation = decision.reservation
        answer.update(reservation_id=reservation.id,
                      expires_in_s=max(reservation.expires_at - ctx.clock.monotonic(), 0.0))
    return web.json_response(answer)


async def _reservation_call(request: web.Request, confirm: bool) -> web.Response:
    parsed = await _json_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    try:
        call = ReservationCall.model_validate(parsed[1])
    except ValidationError as exc:
        return _validation_error(exc)
    reservation_id = call.reservation_id
    guard = request.app[CONTEXT].guard
    try:
        if confirm:
            guard.confirm(reservation_id, call.order_id)
        else:
            guard.release(reservation_id)
    except GuardConflict as exc:
        return _conflict(exc)
    except (KeyError, StateError) as exc:
        return _error(404, f"unknown or settled reservation {reservation_id!r}: {exc}",
                      field="reservation_id", reservation_id=reservation_id)
    return web.json_response({"reservation_id": reservation_id,
                              "status": "confirmed" if confirm else "released"})


def _view_json(view: ReservationView) -> dict[str, Any]:
    r = view.reservation
    return {"reservation_id": r.id, "state": view.state, "why": view.why,
            "symbol": r.symbol, "side": r.side.value, "type": r.type.value,
            "is_entry": r.is_entry, "reserved_usd": r.reserved_usd,
            "client_order_id": r.client_order_id, "order_id": view.order_id,
            "created_at": r.created_at.isoformat(), "age_s": view.age_s,
            "expires_in_s": view.expires_in_s,
            "unknown_to_exchange_s": view.unknown_to_exchange_s}


async def account_reservations(request: web.Request) -> web.Response:
    found = _account_or_404(request)
    if isinstance(found, web.Response):
        return found
    views = request.app[CONTEXT].guard.reservation_views(found)
    return web.json_response({"account_id": found,
                              "reservations": [_view_json(v) for v in views]})


async def guard_confirm(request: web.Request) -> web.Response:
    return await _reservation_call(request, confirm=True)


async def guard_release(request: web.Request) -> web.Response:
    return await _reservation_call(request, confirm=False)


def create_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[_errors_and_auth], client_max_size=MAX_BODY_BYTES)
    app[CONTEXT] = ctx
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/accounts", list_accounts)
    app.router.add_get("/v1/accounts/{account_id}", get_account)
    app.router.add_get("/v1/accounts/{account_id}/orders", account_orders)
    app.router.add_get("/v1/accounts/{account_id}/trades", account_trades)
    app.router.add_get("/v1/accounts/{account_id}/guard-decisions", account_decisions)
    app.router.add_get("/v1/accounts/{account_id}/reservations", account_reservations)
    app.router.add_post("/v1/accounts/{account_id}/resume", account_resume)
    app.router.add_post("/v1/guard/check", guard_check)
    app.router.add_post("/v1/guard/reserve", guard_reserve)
    app.router.add_post("/v1/guard/confirm", guard_confirm)
    app.router.add_post("/v1/guard/release", guard_release)
    app.router.add_get("/metrics", metrics)
    return app


class ApiServer:
    """The API on a TCP port, as an async context manager."""

    def __init__(self, ctx: ApiContext, host: str = "127.0.0.1", port: int = 8765) -> None:
        check_binding(host, ctx.token)
        self.ctx = ctx
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        runner = web.AppRunner(create_app(self.ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = sockets[0].getsockname()[1]
        self._runner = runner

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
