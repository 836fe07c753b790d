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

Threads: :class:`ApiServer` serves on its own thread (``nija-api``) and event
loop, so a guard call never queues behind the runtime loop's work (the
reconciler's parsing, start-up syncs); ``bench/api_load.py`` measures it. Every
read or change a handler makes of the guard, the books, the store or the status
goes through one door, :func:`_owned`: one job on the state's owner thread. What
belongs to the runtime's loop (its event bus) is reached only through
``call_soon_threadsafe`` (the runtime's event sink does that); the Prometheus
metrics are thread-safe.

Endpoints::

    GET  /healthz                              per-account sync health (503 if any failed),
                                               each alert target's state (never a 503)
    GET  /v1/accounts                          the status document (a row per account)
    GET  /v1/accounts/{id}                     one row (with the holdings it cannot value)
    GET  /v1/accounts/{id}/orders?status=open|all
    GET  /v1/accounts/{id}/trades?limit=N
    GET  /v1/accounts/{id}/guard-decisions?limit=N&blocked_only=true
    GET  /v1/accounts/{id}/reservations        what the guard holds now, and why
    GET  /v1/accounts/{id}/positions           held assets: amount, average cost, value,
                                               unrealised P&L, source (ledger|exchange|both)
    GET  /v1/accounts/{id}/equity?limit=N      the equity curve held, with drawdown per point
    GET  /v1/accounts/{id}/{what}.csv|.json    downloads: trades, fills, orders, equity
    POST /v1/accounts/{id}/pause               {by?, reason?}: no entries (rule ``paused``)
    POST /v1/accounts/{id}/resume              {by?}: lift the pause, clear tripped breakers
    POST /v1/accounts/{id}/orders/{oid}/cancel through the exchange; booked on its answer
    POST /v1/guard/check                       dry run: {allowed, rule, reason, ...}
    POST /v1/guard/reserve                     judge and hold the entry's place (idempotent
                                               by client_order_id)
    POST /v1/guard/confirm                     {reservation_id, order_id?}
    POST /v1/guard/release                     {reservation_id} (in flight or settling)
    GET  /metrics                              Prometheus exposition

The web page (:mod:`nija_broker.service.web`; its shell holds no data and is served
without the token, its data comes from the endpoints above with it; without a token
a request from another web site, by ``Origin`` or ``Host``, is refused with 403)::

    GET  /                                     the accounts, a row each, live
    GET  /accounts/{id}                        one account's page
    GET  /web/{name}                           the page's script, styles and uPlot
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, TypeVarTuple, cast

from aiohttp import web
from pydantic import ValidationError

from nija_broker.core.errors import ConfigError, StateError
from nija_broker.core.health import SyncState
from nija_broker.core.intent import Allowed, OrderIntent
from nija_broker.guard.guard import GuardConflict
from nija_broker.service import api_calls as calls
from nija_broker.service.api_body import (
    MAX_BODY_BYTES,
    PauseCall,
    ReservationCall,
    breaker_views,
    decision_json,
    jsonable,
    parse_intent,
    parse_object,
    reservation_json,
)
from nija_broker.service.api_calls import ApiContext, UnknownAccount
from nija_broker.service.api_thread import AppThread
from nija_broker.service.export import WHAT, ExportFormat, ExportWhat, render
from nija_broker.service.logs import fields
from nija_broker.service.status import status_document
from nija_broker.service.web import add_web_routes, cross_site_refusal, is_shell
from nija_broker.sync.cancel import UnknownOrder

__all__ = [
    "CONTEXT",
    "ApiContext",
    "ApiServer",
    "UnknownAccount",
    "check_binding",
    "create_app",
    "is_loopback",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

log = logging.getLogger("nija_broker.api")


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
            "api.token_env names to a token of visible characters",
            key="api.token_env",
        )
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
    refused = cross_site_refusal(request, token)  # tokenless: another web site's request
    if refused is not None:
        return _error(403, refused[0], field=refused[1])
    # The web page's shell holds no data, and a browser cannot send the token on navigation.
    shell = is_shell(request)
    if token and not shell and not _authorized(request.headers.get("Authorization", ""), token):
        return _error(401, "missing or wrong bearer token", field="Authorization")
    try:
        return await handler(request)
    except UnknownAccount as exc:
        return _error(
            404,
            f"unknown account {exc.account_id!r}",
            field="account_id",
            account_id=exc.account_id,
        )
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


async def _owned(fn: Callable[[ApiContext, *Ts], T], ctx: ApiContext, *args: *Ts) -> T:
    """The one door from a handler to the guard, the books, the store and the status.

    Every handler reaches that state only through here, one call per request: the
    call runs on the state's owner thread (``ctx.books.owner``) as one job, and the
    handler awaits its answer, so the API's loop never waits on the owner or on
    SQLite, and a reply is one consistent view of the account.
    """
    return await ctx.books.owner.acall(fn, ctx, *args)


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
        return _error(
            413,
            f"request body is larger than {MAX_BODY_BYTES} bytes",
            field="body",
            limit_bytes=MAX_BODY_BYTES,
        )


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
    accounts = await _owned(calls.health, request.app[CONTEXT])
    states = {a["state"] for a in accounts.values()}
    failed = SyncState.FAILED.value in states
    overall = "failed" if failed else "ok" if states <= {SyncState.OK.value} else "degraded"
    body: dict[str, Any] = {"status": overall, "accounts": accounts}
    alerts = request.app[CONTEXT].alerts
    if alerts is not None:  # a failing alert target is reported, never a failed broker
        body["alerts"] = alerts()
    return web.json_response(body, status=503 if failed else 200)


async def list_accounts(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    now = ctx.clock.now()
    rows = await _owned(calls.rows, ctx, now)
    return web.json_response(status_document(rows, now))


async def get_account(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row, breakers = await _owned(
        calls.account_row, ctx, request.match_info["account_id"], ctx.clock.now()
    )
    view = row.model_dump(mode="json")
    view["breakers"] = breaker_views(breakers)
    return web.json_response(view)


async def _pause_call(request: web.Request) -> PauseCall | web.Response:
    """The optional ``{"by", "reason"}`` body of a pause or resume (empty: by ``api``)."""
    raw = await _raw_body(request)
    if isinstance(raw, web.Response):
        return raw
    if not raw.strip():
        return PauseCall()
    body = parse_object(raw)
    if not isinstance(body, dict):
        return _error(body.status, body.message, field=body.field)
    try:
        return PauseCall.model_validate(body)
    except ValidationError as exc:
        return _validation_error(exc)


async def account_pause(request: web.Request) -> web.Response:
    """Pause the account's entries (rule ``paused``; exits pass); journaled, and kept
    across a restart. Pausing a paused account keeps the pause in force."""
    ctx = request.app[CONTEXT]
    account_id = request.match_info["account_id"]
    call = await _pause_call(request)
    if isinstance(call, web.Response):
        return call
    pause = await _owned(calls.pause, ctx, account_id, call.by, call.reason)
    log.info(
        "account %s: entries paused by %s%s",
        account_id,
        pause.by,
        f" ({pause.reason})" if pause.reason else "",
        extra=fields(account_id, event="paused", by=pause.by, reason=pause.reason),
    )
    return web.json_response(
        {
            "account_id": account_id,
            "paused": True,
            "by": pause.by,
            "at": pause.at.isoformat(),
            "reason": pause.reason,
        }
    )


async def account_resume(request: web.Request) -> web.Response:
    """Lift the account's pause and clear its tripped circuit breakers (both journaled);
    the breakers trip again only when their figures get worse than they are now."""
    ctx = request.app[CONTEXT]
    account_id = request.match_info["account_id"]
    call = await _pause_call(request)
    if isinstance(call, web.Response):
        return call
    breakers, resumed, unpaused = await _owned(calls.resume, ctx, account_id, call.by)
    if unpaused:
        log.info(
            "account %s: entries resumed by %s",
            account_id,
            call.by,
            extra=fields(account_id, event="resumed", by=call.by),
        )
    return web.json_response(
        {
            "account_id": account_id,
            "at": ctx.clock.now().isoformat(),
            "paused": False,
            "unpaused": unpaused,
            "resumed": resumed,
            "breakers": breaker_views(breakers),
        }
    )


async def account_cancel(request: web.Request) -> web.Response:
    """Cancel one order through the account's exchange; it is booked cancelled only on
    the exchange's answer (``confirmed``), which may also say it filled first."""
    ctx = request.app[CONTEXT]
    account_id = request.match_info["account_id"]
    order_id = request.match_info["order_id"]
    await _owned(calls.require, ctx, account_id)
    if ctx.cancel_order is None:
        return _error(
            503,
            "no reconciler runs here, so a cancel could not be confirmed: cancel it on the "
            "exchange, the sidecar books what the exchange says",
            field="order_id",
            order_id=order_id,
        )
    log.info(
        "account %s: cancel of order %s requested",
        account_id,
        order_id,
        extra=fields(account_id, event="cancel_requested", order_id=order_id),
    )
    try:
        answer = await asyncio.wrap_future(ctx.cancel_order(account_id, order_id))
    except UnknownOrder:
        return _error(
            404,
            f"account {account_id!r} tracks no order {order_id!r}",
            field="order_id",
            order_id=order_id,
        )
    except StateError as exc:
        return _error(503, str(exc), field="account_id", account_id=account_id)
    status = 200 if answer.confirmed else 409 if answer.sent else 502
    return web.json_response(
        {
            "account_id": account_id,
            "order_id": order_id,
            "status": answer.order.status.value,
            "confirmed": answer.confirmed,
            "sent": answer.sent,
            "message": answer.message,
            "order": answer.order.model_dump(mode="json"),
        },
        status=status,
    )


async def account_positions(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    quote, rows = await _owned(calls.positions, request.app[CONTEXT], account_id)
    return web.json_response(
        {
            "account_id": account_id,
            "quote_currency": quote,
            "positions": [row.model_dump(mode="json") for row in rows],
        }
    )


async def account_equity(request: web.Request) -> web.Response:
    """The equity curve the books hold (oldest first), each point with its drawdown from
    the highest equity before it among the points returned."""
    limit = _int_query(request, "limit", 500, 10_000)
    if isinstance(limit, web.Response):
        return limit
    account_id = request.match_info["account_id"]
    quote, points = await _owned(calls.equity, request.app[CONTEXT], account_id, limit)
    peak = 0.0
    rows = []
    for point in points:
        peak = max(peak, point.equity)
        drawdown = (peak - point.equity) / peak * 100.0 if peak > 0 else 0.0
        rows.append(
            {"at": point.timestamp.isoformat(), "equity": point.equity, "drawdown_pct": drawdown}
        )
    return web.json_response({"account_id": account_id, "quote_currency": quote, "points": rows})


async def account_download(request: web.Request) -> web.Response:
    """``GET /v1/accounts/{id}/{what}.csv`` (or ``.json``): the store's whole history of
    one kind, as ``nija-broker export`` writes it."""
    account_id = request.match_info["account_id"]
    what = request.match_info["what"]
    fmt = request.match_info["format"]
    if what not in WHAT:
        return _error(404, f"no such export {what!r}: one of {', '.join(WHAT)}", field="what")
    try:
        rows = await _owned(calls.export, request.app[CONTEXT], account_id, cast(ExportWhat, what))
    except StateError as exc:
        return _error(503, str(exc), field="what")
    body = render(cast(ExportWhat, what), rows, cast(ExportFormat, fmt))
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in account_id)
    return web.Response(
        text=body,
        content_type="text/csv" if fmt == "csv" else "application/json",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{safe}-{what}.{fmt}"'},
    )


async def account_orders(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    which = request.query.get("status", "open")
    if which not in ("open", "live", "all"):
        return _error(422, f"status must be open, live or all, got {which!r}", field="status")
    orders = await _owned(calls.orders, request.app[CONTEXT], account_id, which)
    return web.json_response(
        {"account_id": account_id, "orders": [o.model_dump(mode="json") for o in orders]}
    )


async def account_trades(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100, 10_000)
    if isinstance(limit, web.Response):
        return limit
    account_id = request.match_info["account_id"]
    trades = await _owned(calls.trades, request.app[CONTEXT], account_id, limit)
    return web.json_response(
        {"account_id": account_id, "trades": [t.model_dump(mode="json") for t in trades]}
    )


async def account_decisions(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100, 10_000)
    if isinstance(limit, web.Response):
        return limit
    account_id = request.match_info["account_id"]
    blocked_only = request.query.get("blocked_only", "false").lower() in ("1", "true", "yes")
    records = await _owned(calls.decisions, request.app[CONTEXT], account_id, limit, blocked_only)
    return web.json_response(
        {
            "account_id": account_id,
            "decisions": [
                {
                    "at": r.ts.isoformat(),
                    "allowed": r.allowed,
                    "rule": r.rule,
                    "reason": r.reason,
                    "client_order_id": r.client_order_id,
                    "symbol": r.symbol,
                    "side": r.side.value if r.side else None,
                    "figures": jsonable(r.figures),
                }
                for r in records
            ],
        }
    )


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await _owned(calls.refresh_metrics, ctx, ctx.clock.now())
    body, content_type = ctx.metrics.render()  # prometheus_client's registry is thread-safe
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# ---------------------------------------------------------------------------- guard


async def _intent_from(request: web.Request) -> OrderIntent | web.Response:
    parsed = await _json_body(request)
    if isinstance(parsed, web.Response):
        return parsed
    try:
        return parse_intent(parsed[0])
    except ValidationError as exc:
        return _validation_error(exc)


def _conflict(exc: GuardConflict) -> web.Response:
    return _error(409, str(exc), field=exc.field, **{exc.field: exc.value})


async def guard_check(request: web.Request) -> web.Response:
    intent = await _intent_from(request)
    if isinstance(intent, web.Response):
        return intent
    decision = await _owned(calls.check, request.app[CONTEXT], intent)
    return web.json_response(decision_json(decision))


async def guard_reserve(request: web.Request) -> web.Response:
    intent = await _intent_from(request)
    if isinstance(intent, web.Response):
        return intent
    ctx = request.app[CONTEXT]
    try:
        decision = await _owned(calls.decide, ctx, intent)
    except GuardConflict as exc:
        return _conflict(exc)
    except StateError as exc:
        return _error(
            503,
            f"the intent could not be journaled, so it is not allowed: {exc}",
            field="client_order_id",
            client_order_id=intent.client_order_id,
        )
    answer = decision_json(decision)
    if isinstance(decision, Allowed) and decision.reservation is not None:
        reservation = decision.reservation
        answer.update(
            reservation_id=reservation.id,
            expires_in_s=max(reservation.expires_at - ctx.clock.monotonic(), 0.0),
        )
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
    try:
        await _owned(calls.settle, request.app[CONTEXT], call, confirm)
    except GuardConflict as exc:
        return _conflict(exc)
    except (KeyError, StateError) as exc:
        return _error(
            404,
            f"unknown or settled reservation {reservation_id!r}: {exc}",
            field="reservation_id",
            reservation_id=reservation_id,
        )
    return web.json_response(
        {"reservation_id": reservation_id, "status": "confirmed" if confirm else "released"}
    )


async def account_reservations(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    views = await _owned(calls.reservations, request.app[CONTEXT], account_id)
    return web.json_response(
        {"account_id": account_id, "reservations": [reservation_json(v) for v in views]}
    )


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
    app.router.add_get("/v1/accounts/{account_id}/positions", account_positions)
    app.router.add_get("/v1/accounts/{account_id}/equity", account_equity)
    app.router.add_get(
        "/v1/accounts/{account_id}/{what:[a-z]+}.{format:csv|json}", account_download
    )
    app.router.add_post("/v1/accounts/{account_id}/pause", account_pause)
    app.router.add_post("/v1/accounts/{account_id}/resume", account_resume)
    app.router.add_post("/v1/accounts/{account_id}/orders/{order_id}/cancel", account_cancel)
    app.router.add_post("/v1/guard/check", guard_check)
    app.router.add_post("/v1/guard/reserve", guard_reserve)
    app.router.add_post("/v1/guard/confirm", guard_confirm)
    app.router.add_post("/v1/guard/release", guard_release)
    app.router.add_get("/metrics", metrics)
    add_web_routes(app)
    return app


class ApiServer:
    """The API on a TCP port, on its own thread (``nija-api``) and event loop
    (:class:`~nija_broker.service.api_thread.AppThread`), as an async context manager:
    :meth:`start` returns once the port listens (or raises why it could not bind);
    :meth:`aclose` stops intake, lets the requests in flight answer, and returns once
    the thread has ended. Safe twice."""

    def __init__(self, ctx: ApiContext, host: str = "127.0.0.1", port: int = 8765) -> None:
        check_binding(host, ctx.token)
        self.ctx = ctx
        self.host = host
        self.port = port
        self._served: AppThread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def thread(self) -> threading.Thread | None:
        """The thread serving the API while it runs."""
        return self._served.thread if self._served is not None else None

    async def start(self) -> None:
        if self._served is not None:
            raise StateError("the API server is already started")
        self._served = AppThread(
            lambda: create_app(self.ctx), self.host, self.port, name="nija-api"
        )
        self.port = await self._served.start()

    async def aclose(self) -> None:
        served = self._served
        if served is not None:
            await served.aclose()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
