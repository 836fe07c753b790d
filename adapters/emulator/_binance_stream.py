"""Binance spot's user data stream over the WebSocket API, pushed from the engine's own events.

What ccxt.pro 4.5 speaks for spot user data (``ccxt/pro/binance.py``:
``ensure_user_data_stream_ws_subscribe_signature``, ``handle_message``): one WebSocket
connection to ``urls['api']['ws']['ws-api']['spot']`` (``/ws-api/v3``), on which it
sends ``userDataStream.subscribe.signature`` with ``apiKey``, ``timestamp`` (and
``recvWindow``) signed as Binance's WebSocket API documents it (every parameter but
``signature``, sorted by name, as ``name=value`` joined by ``&``, HMAC-SHA256 in hex).
The answer is ``{"id", "status": 200, "result": {"subscriptionId": N}}`` or ``{"id",
"status", "error": {"code", "msg"}}``; events then come wrapped as
``{"subscriptionId": N, "event": {...}}`` (Binance spot API docs, "User Data Streams":
``executionReport``, ``outboundAccountPosition``, ``balanceUpdate``,
``eventStreamTerminated``). ccxt sends nothing else on connect (no ``session.logon``),
and keeps the connection alive with protocol-level ping frames; the server answers
them, and pings every ``ping_interval_s`` itself as Binance does (20 s, closing a
connection that sends no pong for a minute). ``ping``, ``time``,
``session.subscriptions`` and ``userDataStream.unsubscribe`` are answered too.

The engine's events (:mod:`adapters.sim._events`) become, per subscription of their
account and rendered by :mod:`._binance_user_data`: an order's change an
``executionReport`` (``x`` NEW, TRADE with the fill's ``t``/``l``/``L``/``n``/``N``/``m``,
CANCELED with ``C`` the order's client id and ``c`` the cancel's, EXPIRED,
TRADE_PREVENTION for self-trade prevention, REJECTED); a balance
change an ``outboundAccountPosition`` of the assets that moved, after a
``balanceUpdate`` when it was a deposit. A cancel left pending pushes nothing (the
order is still open; its CANCELED comes when the cancel completes); a stop reaching
its trigger pushes a NEW report with ``w`` true (the emulator's reading: Binance does
not document that report).

Every pushed message may suffer a :class:`~adapters.sim.faults.StreamFaultKind` from the
:class:`~adapters.sim.faults.StreamFaultInjector` (off by default); answers to requests
never do. :meth:`BinanceUserStream.close_streams` ends streams from the server's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.sim._events import EngineEvent, OrderChange, OrderChanged
from adapters.sim.engine import SimEngine
from adapters.sim.faults import StreamFaultInjector, StreamFaultKind
from nija_broker.core.clock import Clock, to_ms
from nija_broker.core.models import Order

from . import _binance_user_data as ud
from . import binance as bn
from ._binance_trading import Params

__all__ = ["BinanceUserStream", "Verify"]


Verify = Callable[[str, Params, str], str]
"""``(api key, parameters as text, signature payload) -> account id``; raises
:class:`~adapters.emulator.binance.BinanceError` as the REST side would."""

_Kind = Literal["execution", "balance_update", "position"]

_WEIGHTS = {"userDataStream.subscribe.signature": 2, "userDataStream.unsubscribe": 2}


@dataclass(frozen=True, slots=True)
class _Push:
    """One message owed to one subscription, rendered when it is sent."""

    subscription_id: int
    account_id: str
    kind: _Kind
    event: EngineEvent


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    last_pong_s: float
    subscriptions: dict[int, str] = field(default_factory=dict)
    """Subscription id -> account id."""
    next_subscription: int = 0
    queue: asyncio.Queue[_Push] = field(default_factory=asyncio.Queue)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a frame is written: requests' answers and pushes never interleave."""


class BinanceUserStream:
    """The WebSocket API endpoint of one emulator server. One event loop: the server's.

    ``verify`` checks a signed request (the server's key table and clock);
    ``type_name(account_id, order)`` is Binance's order type word (``LIMIT_MAKER`` for a
    post-only order: the engine's order does not say); ``cancel_id(account_id, order)``
    the client id of the cancel that closed ``order``; ``weigh(ip, weight)`` counts a
    request's weight with the REST side's and returns what the IP used this minute.
    """

    def __init__(
        self,
        engine: SimEngine,
        *,
        verify: Verify,
        clock: Clock,
        faults: StreamFaultInjector,
        type_name: Callable[[str, Order], str],
        cancel_id: Callable[[str, Order], str],
        weigh: Callable[[str, int], int],
        ping_interval_s: float = 20.0,
        pong_timeout_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.faults = faults
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self._verify = verify
        self._type_name = type_name
        self._cancel_id = cancel_id
        self._weigh = weigh
        self._connections: set[_Connection] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release = asyncio.Event()
        self.subscribed: Counter[str] = Counter()
        """Subscriptions accepted per account."""
        self.methods: Counter[str] = Counter()
        """Requests received, per method (what clients send, answered or not)."""
        self.refused: Counter[int] = Counter()
        """Requests refused, per Binance error code."""
        self.pushed: Counter[str] = Counter()
        """Messages sent per account (a duplicate counts twice, a dropped one not at all)."""
        self.closed: Counter[str] = Counter()
        """Connections the server closed, per reason (``terminated``, ``disconnect``,
        ``no_pong``, ``shutdown``)."""
        self.holding = 0
        """Connections holding messages back right now (a STALL, or a REORDER waiting)."""

    # ------------------------------------------------------------- lifecycle

    def _listen(self) -> None:
        """Listen to the engine, from the first connection on (a server whose clients never
        open one costs the engine nothing)."""
        if self._unsubscribe is None:
            self._loop = asyncio.get_running_loop()
            self._unsubscribe = self.engine.subscribe(self._on_event)

    async def aclose(self) -> None:
        """Stop listening and close every connection (no ``eventStreamTerminated``)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for conn in list(self._connections):
            await self._close(conn, terminated=False, reason="shutdown")

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    def subscriptions(self, account_id: str | None = None) -> int:
        """Active subscriptions (of ``account_id``, else of all accounts)."""
        return sum(
            1
            for conn in self._connections
            for account in conn.subscriptions.values()
            if account_id is None or account == account_id
        )

    def release(self) -> None:
        """Let every message a STALL or REORDER fault holds go now."""
        self._release.set()
        self._release = asyncio.Event()

    async def close_streams(self, account_id: str | None = None, *, terminated: bool = True) -> int:
        """Close every connection that carries a subscription of ``account_id`` (any, when
        ``None``), after ``eventStreamTerminated`` for each of its subscriptions when
        ``terminated``; returns how many connections were closed."""
        doomed = [
            conn
            for conn in self._connections
            if account_id is None or account_id in conn.subscriptions.values()
        ]
        for conn in doomed:
            await self._close(conn, terminated=terminated, reason="terminated")
        return len(doomed)

    # ------------------------------------------------------------ connection

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Serve one WebSocket connection until either side closes it."""
        # autoping off: pongs are read here, to drop a connection that stops answering.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        self._listen()
        conn = _Connection(ws=ws, request=request, last_pong_s=self.clock.monotonic())
        self._connections.add(conn)
        try:
            async with asyncio.TaskGroup() as tasks:
                sender = tasks.create_task(self._send_loop(conn), name="binance-stream-send")
                pinger = tasks.create_task(self._ping_loop(conn), name="binance-stream-ping")
                try:
                    await self._receive_loop(conn)
                finally:
                    sender.cancel()
                    pinger.cancel()
        finally:
            self._connections.discard(conn)
        return ws

    async def _receive_loop(self, conn: _Connection) -> None:
        async for message in conn.ws:
            if message.type is WSMsgType.TEXT:
                await self._request(conn, message.data)
            elif message.type is WSMsgType.PING:
                await conn.ws.pong(message.data)
            elif message.type is WSMsgType.PONG:
                conn.last_pong_s = self.clock.monotonic()
            elif message.type is WSMsgType.BINARY:
                await self._answer(conn, None, error=bn.BinanceError(400, -1100, "Illegal frame."))

    async def _ping_loop(self, conn: _Connection) -> None:
        while not conn.ws.closed:
            await self.clock.sleep(self.ping_interval_s)
            if self.clock.monotonic() - conn.last_pong_s > self.pong_timeout_s:
                await self._close(conn, terminated=False, reason="no_pong")
                return
            with contextlib.suppress(ConnectionError):
                await conn.ws.ping()

    async def _close(self, conn: _Connection, *, terminated: bool, reason: str) -> None:
        if conn.ws.closed:
            return
        self.closed[reason] += 1
        if terminated:
            for subscription_id in list(conn.subscriptions):
                await self._write(conn, ud.terminated(subscription_id, self._now_ms()))
        conn.subscriptions.clear()
        if reason == "disconnect":
            # No close frame: the connection just drops, as when the network goes.
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
            return
        await conn.ws.close(code=WSCloseCode.GOING_AWAY if reason == "shutdown" else 1000)

    async def _write(self, conn: _Connection, payload: dict[str, Any]) -> bool:
        async with conn.lock:
            if conn.ws.closed:
                return False
            try:
                await conn.ws.send_str(json.dumps(payload, separators=(",", ":")))
            except ConnectionError:
                return False
            return True

    # -------------------------------------------------------------- requests

    async def _request(self, conn: _Connection, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self._answer(conn, None, error=bn.BinanceError(400, -1100, "Illegal request."))
            return
        request_id = request.get("id")
        method = str(request.get("method") or "").removeprefix("v3/")
        params = request.get("params") or {}
        self.methods[method] += 1
        weight = _WEIGHTS.get(method, 1)
        used = self._weigh(conn.request.remote or "?", weight)
        try:
            if not isinstance(params, dict):
                raise bn.illegal("params")
            result = self._call(conn, method, params)
        except bn.BinanceError as exc:
            self.refused[exc.code] += 1
            await self._answer(conn, request_id, error=exc, used=used)
            return
        await self._answer(conn, request_id, result=result, used=used)
        if method == "userDataStream.unsubscribe":
            for subscription_id in result.pop("_ended", []):
                await self._write(conn, ud.terminated(subscription_id, self._now_ms()))

    def _call(self, conn: _Connection, method: str, params: dict[str, Any]) -> Any:
        if method == "userDataStream.subscribe.signature":
            return self._subscribe(conn, params)
        if method == "userDataStream.unsubscribe":
            wanted = params.get("subscriptionId")
            ended = [s for s in conn.subscriptions if wanted is None or str(s) == str(wanted)]
            if wanted is not None and not ended:
                raise bn.BinanceError(400, -1100, "Illegal subscriptionId.")
            for subscription_id in ended:
                del conn.subscriptions[subscription_id]
            return {"_ended": ended}
        if method == "session.subscriptions":
            return [{"subscriptionId": s} for s in conn.subscriptions]
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": self._now_ms()}
        raise bn.BinanceError(400, -1020, "This operation is not supported.")

    def _subscribe(self, conn: _Connection, params: dict[str, Any]) -> dict[str, Any]:
        text = {name: _text(value) for name, value in params.items()}
        api_key = text.get("apiKey", "")
        if not api_key:
            raise bn.mandatory("apiKey")
        payload = "&".join(f"{name}={text[name]}" for name in sorted(text) if name != "signature")
        account_id = self._verify(api_key, text, payload)
        if account_id in conn.subscriptions.values():
            # Binance: "An account can only have one active subscription at a time on a
            # given connection"; the code and wording of its refusal are the emulator's.
            raise bn.BinanceError(400, -1000, "This account is already subscribed.")
        subscription_id = conn.next_subscription
        conn.next_subscription += 1
        conn.subscriptions[subscription_id] = account_id
        self.subscribed[account_id] += 1
        return {"subscriptionId": subscription_id}

    async def _answer(
        self,
        conn: _Connection,
        request_id: Any,
        *,
        result: Any = None,
        error: bn.BinanceError | None = None,
        used: int | None = None,
    ) -> None:
        answer: dict[str, Any] = {"id": request_id}
        if error is None:
            answer.update(status=200, result=result)
        else:
            answer.update(status=error.status, error=error.body())
        if used is not None:
            answer["rateLimits"] = [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                    "count": used,
                }
            ]
        await self._write(conn, answer)

    # ---------------------------------------------------------------- pushes

    def _on_event(self, account_id: str, event: EngineEvent) -> None:
        """The engine's subscriber: called on whatever thread changed the engine."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._dispatch, account_id, event)
        else:
            self._dispatch(account_id, event)

    def _dispatch(self, account_id: str, event: EngineEvent) -> None:
        kinds: tuple[_Kind, ...]
        if isinstance(event, OrderChanged):
            kinds = ("execution",) if event.change in ud.EXECUTION_TYPES else ()
        elif event.deposit is not None:
            kinds = ("balance_update", "position")
        else:
            kinds = ("position",)
        for conn in self._connections:
            for subscription_id, account in conn.subscriptions.items():
                if account == account_id:
                    for kind in kinds:
                        conn.queue.put_nowait(_Push(subscription_id, account_id, kind, event))

    async def _send_loop(self, conn: _Connection) -> None:
        held: _Push | None = None  # a REORDERed message, waiting for the next one
        try:
            while not conn.ws.closed:
                if held is None:
                    push = await conn.queue.get()
                else:
                    waited = await self._next_or_release(conn.queue)
                    if waited is None:
                        late, held = held, None
                        self.holding -= 1
                        await self._push(conn, late)
                        continue
                    push = waited
                fault = self.faults.next(push.account_id)
                if fault is StreamFaultKind.DROP:
                    continue
                if fault in (StreamFaultKind.CLOSE, StreamFaultKind.DISCONNECT):
                    terminated = fault is StreamFaultKind.CLOSE
                    reason = "terminated" if terminated else "disconnect"
                    await self._close(conn, terminated=terminated, reason=reason)
                    return  # the message, and any held one, are lost with the connection
                if fault is StreamFaultKind.REORDER and held is None:
                    held = push
                    self.holding += 1
                    continue
                if fault is StreamFaultKind.STALL:
                    self.holding += 1
                    try:
                        await self._hold()
                    finally:
                        self.holding -= 1
                await self._push(conn, push)
                if fault is StreamFaultKind.DUPLICATE:
                    await self._push(conn, push)
                if held is not None:
                    late, held = held, None
                    self.holding -= 1
                    await self._push(conn, late)
        finally:
            if held is not None:
                self.holding -= 1

    async def _next_or_release(self, queue: asyncio.Queue[_Push]) -> _Push | None:
        """The next message, or ``None`` once ``hold_s`` passed or :meth:`release` came."""
        getter: asyncio.Future[_Push] = asyncio.ensure_future(queue.get())
        try:
            await self._hold(getter)
        finally:
            if not getter.done():
                getter.cancel()
        return getter.result() if getter.done() and not getter.cancelled() else None

    async def _hold(self, *also: asyncio.Future[Any]) -> None:
        """Wait the plan's ``hold_s`` on the clock, until :meth:`release`, or until any of
        ``also`` is done."""
        release = asyncio.ensure_future(self._release.wait())
        waits: set[asyncio.Future[Any]] = {release, *also}
        hold_s = self.faults.plan.hold_s
        sleeper = asyncio.ensure_future(self.clock.sleep(hold_s)) if math.isfinite(hold_s) else None
        if sleeper is not None:
            waits.add(sleeper)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            release.cancel()
            if sleeper is not None:
                sleeper.cancel()

    async def _push(self, conn: _Connection, push: _Push) -> None:
        payload = {"subscriptionId": push.subscription_id, "event": self._render(push)}
        if await self._write(conn, payload):
            self.pushed[push.account_id] += 1

    def _render(self, push: _Push) -> dict[str, Any]:
        event = push.event
        if isinstance(event, OrderChanged):
            cancel_id = (
                self._cancel_id(push.account_id, event.order)
                if event.change is OrderChange.CANCELLED
                else None
            )
            return ud.execution_report(
                event,
                type_name=self._type_name(push.account_id, event.order),
                cancel_client_id=cancel_id,
            )
        if push.kind == "balance_update":
            return ud.balance_update(event)
        return ud.account_position(event)

    def _now_ms(self) -> int:
        return to_ms(self.clock.now())


def _text(value: Any) -> str:
    """A JSON parameter as the signature payload spells it (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
