"""Kraken's private WebSocket v2 endpoint over the engine's change feed, with stream faults.

:class:`KrakenStream` serves ``/v2`` for :class:`~adapters.emulator.kraken.KrakenEmulatorServer`:
the ``executions`` and ``balances`` channels real ``ccxt.pro.kraken`` subscribes to
(``watch_orders``, ``watch_my_trades``, ``watch_balance``), authenticated by the token
the REST call ``GetWebSocketsToken`` hands out, fed by :meth:`SimEngine.subscribe`
(:mod:`adapters.sim._events`). What each engine event makes Kraken say is
:mod:`._kraken_ws_feed`'s, the JSON :mod:`._kraken_ws_wire`'s; this module is the
transport: tokens, connections, subscriptions, faults.

Session rules, after Kraken's documentation (docs.kraken.com: "Get Websockets Token",
"Spot WebSocket v2": executions, balances, ping, heartbeat):

- a token names one account; it must be used within 15 minutes of being issued (server
  clock), and stays good on a connection that subscribed with it. A connection serves
  one account: a token of another account, an unknown or an expired token is refused
  with ``ESession:Invalid session``;
- every connection opens with a ``status`` message; ``{"method": "ping"}`` is answered
  ``pong``; ``{"channel": "heartbeat"}`` goes out about once a second while something is
  subscribed and nothing else was sent;
- a subscription is acknowledged, then its snapshot follows: the account's open orders
  (``snap_orders``, default on) and, as a second message, its last 50 trades
  (``snap_trades``, default off), so ccxt, which files a whole ``executions`` message by
  its first entry's ``exec_type``, files each where it belongs; ``balances`` sends every
  asset's total. Each channel numbers its messages per connection (``sequence`` 1 is the
  snapshot).

Updates (never the session messages, acknowledgements or snapshots) go through the
server's :class:`~adapters.sim.faults.StreamFaultInjector`, drawn per account:

==========  ===================================================================
DROP        the message is not sent (its ``sequence`` number is skipped)
DUPLICATE   sent twice, same ``sequence``
REORDER     held until the next update on that connection went out, or ``hold_s``
STALL       the connection sends nothing (pongs included) for ``hold_s`` on the
            server clock, or until :meth:`KrakenStream.release_stalls`; then all in order
CLOSE       the server closes the connection (close frame 1000); the message, and
            whatever was queued and not yet written, is lost
DISCONNECT  the connection is cut without a close frame; lost as for CLOSE
==========  ===================================================================

What ccxt does next is its own: the pending ``watch_*`` raises ``NetworkError`` and the
next call connects and subscribes again, with the token it cached.

Engine events are turned into messages one loop turn after the engine call that made
them, so what the REST handler records next to an order (its ``userref``, post-only,
``pending``) is known when its ``pending_new`` is written. Heartbeats run on the event
loop's own time, as a wire keepalive: a fake clock's instant sleeps must not spin them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

from adapters.sim import EngineEvent
from adapters.sim.engine import SimEngine
from adapters.sim.faults import StreamFaultInjector, StreamFaultKind
from nija_broker.core.clock import Clock

from . import _kraken_ws_wire as ww
from ._kraken_ws_feed import KrakenFeed, OrderNotes, Update

__all__ = ["TOKEN_EXPIRES_S", "KrakenStream"]

TOKEN_EXPIRES_S = 900
"""What ``GetWebSocketsToken`` answers in ``expires``: use the token within 15 minutes."""
_INVALID_SESSION = "ESession:Invalid session"
_CHANNELS = ("executions", "balances")


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    number: int
    account_id: str | None = None
    tokens: set[str] = field(default_factory=set)
    executions: dict[str, bool] | None = None
    """The executions subscription's options (``snap_orders`` ...); ``None``: not subscribed."""
    balances: bool = False
    sequence: Counter[str] = field(default_factory=Counter)
    outbox: deque[dict[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    held: dict[str, Any] | None = None
    """An update a REORDER keeps back until the next one went out."""
    stalls: int = 0
    """STALLs in force: nothing is written while above zero."""
    sent_since_beat: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class _Token:
    account_id: str
    issued_at: datetime


class KrakenStream:
    """The ``/v2`` websocket of one Kraken emulator (see the module doc)."""

    def __init__(
        self,
        engine: SimEngine,
        notes: OrderNotes,
        *,
        clock: Clock,
        faults: StreamFaultInjector,
        heartbeat_s: float | None = 1.0,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.faults = faults
        self.heartbeat_s = heartbeat_s
        """Seconds between heartbeats on an idle subscribed connection; ``None``: none."""
        self.feed = KrakenFeed(engine, notes, clock=clock)
        """What each engine event makes Kraken push (and the snapshots)."""
        self._tokens: dict[str, _Token] = {}
        self._issued = 0
        self._connections: list[_Connection] = []
        self._next_connection = 1
        self._events: deque[tuple[str, EngineEvent]] = deque()
        self._drain_scheduled = False
        self._unsubscribe: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: set[asyncio.Task[None]] = set()
        self.subscriptions: Counter[str] = Counter()
        """Subscriptions accepted, per channel (a resubscription after a reconnect counts)."""
        self.sent: Counter[str] = Counter()
        """Messages written, per channel (``status``, ``heartbeat``, ``pong`` ...)."""
        self.refusals: Counter[str] = Counter()
        """Requests refused, per error text."""

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Listen to the engine (from the event loop that serves the websocket)."""
        if self._unsubscribe is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.feed.start_from_now()
        self._unsubscribe = self.engine.subscribe(self._on_engine_event)

    async def aclose(self) -> None:
        """Close every connection and stop listening. Safe to call twice."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for conn in list(self._connections):
            await self._close(conn, code=1001)
        timers = list(self._timers)
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)

    @property
    def connections(self) -> int:
        """Open connections."""
        return len(self._connections)

    # ---------------------------------------------------------------- tokens

    def issue_token(self, account_id: str) -> str:
        """A new token for ``account_id`` (what ``GetWebSocketsToken`` answers)."""
        self._issued += 1
        digest = hashlib.sha256(f"kraken-ws:{account_id}:{self._issued}".encode()).digest()
        token = base64.b64encode(digest).decode()
        self._tokens[token] = _Token(account_id, self.clock.now())
        return token

    def _account_of(self, conn: _Connection, token: Any) -> str | None:
        entry = self._tokens.get(token) if isinstance(token, str) else None
        if entry is None:
            return None
        if token not in conn.tokens:
            age = self.clock.now() - entry.issued_at
            if age > timedelta(seconds=TOKEN_EXPIRES_S):
                return None
        if conn.account_id is not None and conn.account_id != entry.account_id:
            return None
        return entry.account_id

    # ----------------------------------------------------------------- knobs

    def release_stalls(self) -> None:
        """End every STALL now: held messages go out, in order."""
        for conn in self._connections:
            conn.stalls = 0
            conn.wake.set()

    async def close_connections(self, account_id: str | None = None) -> int:
        """Close the connections (of ``account_id``, else all) as a server restart would."""
        chosen = [c for c in self._connections if account_id in (None, c.account_id)]
        for conn in chosen:
            await self._close(conn, code=1000)
        return len(chosen)

    # ------------------------------------------------------------- endpoint

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Connection(ws=ws, request=request, number=self._next_connection)
        self._next_connection += 1
        self._connections.append(conn)
        writer = asyncio.create_task(self._write(conn), name=f"kraken-ws-{conn.number}-writer")
        beats = asyncio.create_task(self._beat(conn), name=f"kraken-ws-{conn.number}-beats")
        self._send(conn, ww.status(conn.number))
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    self._on_request(conn, message.data)
        finally:
            self._retire(conn)
            for task in (writer, beats):
                task.cancel()
            for task in (writer, beats):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return ws

    def _on_request(self, conn: _Connection, text: str) -> None:
        time_in = self.clock.now()
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self._refuse(conn, None, "Malformed request", None, time_in)
            return
        method, req_id = request.get("method"), request.get("req_id")
        params = request.get("params")
        if method == "ping":
            self._send(conn, ww.pong(req_id, time_in, self.clock.now()))
        elif method in ("subscribe", "unsubscribe") and isinstance(params, dict):
            self._subscription(conn, method, params, req_id, time_in)
        elif method in ("subscribe", "unsubscribe"):
            self._refuse(conn, method, "EGeneral:Invalid arguments:params", req_id, time_in)
        else:
            # The emulator streams; it takes no orders over the socket (add_order ...).
            error = f"method {method!r} is not served by this emulator"
            self._refuse(conn, str(method), error, req_id, time_in)

    def _subscription(
        self,
        conn: _Connection,
        method: str,
        params: dict[str, Any],
        req_id: Any,
        time_in: datetime,
    ) -> None:
        channel = params.get("channel")
        if channel not in _CHANNELS:
            # Public channels share ccxt's ".../v2" URL here; the emulator has none.
            error = f"channel {channel!r} is not served by this emulator (private channels only)"
            self._refuse(conn, method, error, req_id, time_in)
            return
        account_id = self._account_of(conn, params.get("token"))
        if account_id is None:
            self._refuse(conn, method, _INVALID_SESSION, req_id, time_in)
            return
        subscribed = conn.executions is not None if channel == "executions" else conn.balances
        if method == "unsubscribe":
            if channel == "executions":
                conn.executions = None
            else:
                conn.balances = False
            result = {"channel": channel}
            self._send(conn, ww.subscribed(method, result, req_id, time_in, self.clock.now()))
            return
        if subscribed:
            self._refuse(conn, method, "Already subscribed", req_id, time_in)
            return
        conn.account_id = account_id
        conn.tokens.add(params["token"])
        self.subscriptions[channel] += 1
        # The snapshot reads the engine now: first tell what happened before it.
        self._drain()
        if channel == "executions":
            options = {
                "snap_orders": params.get("snap_orders", True) is not False,
                "snap_trades": params.get("snap_trades", False) is True,
                "order_status": params.get("order_status", True) is not False,
            }
            conn.executions = options
            result = {"channel": channel, "snapshot": options["snap_orders"]}
            self._send(conn, ww.subscribed(method, result, req_id, time_in, self.clock.now()))
            self._executions_snapshot(conn, account_id, options)
        else:
            snapshot = params.get("snapshot", True) is not False
            conn.balances = True
            result = {"channel": channel, "snapshot": snapshot}
            self._send(conn, ww.subscribed(method, result, req_id, time_in, self.clock.now()))
            if snapshot:
                self._send_channel(conn, "balances", "snapshot", self.feed.balances(account_id))

    def _refuse(
        self, conn: _Connection, method: str | None, error: str, req_id: Any, time_in: datetime
    ) -> None:
        self.refusals[error] += 1
        self._send(conn, ww.refused(method, error, req_id, time_in, self.clock.now()))

    def _executions_snapshot(
        self, conn: _Connection, account_id: str, options: dict[str, bool]
    ) -> None:
        if options["snap_orders"]:
            self._send_channel(conn, "executions", "snapshot", self.feed.open_orders(account_id))
        if options["snap_trades"]:
            trades = self.feed.recent_trades(account_id)
            self._send_channel(conn, "executions", "snapshot", trades)

    # ------------------------------------------------------- engine events

    def _on_engine_event(self, account_id: str, event: EngineEvent) -> None:
        # Called inside the engine call: queue it, build the messages a loop turn later.
        self._events.append((account_id, event))
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        while self._events:
            account_id, event = self._events.popleft()
            self._push(account_id, self.feed.updates(account_id, event))

    def push(self, account_id: str, updates: Iterable[Update]) -> None:
        """Send ``updates`` (each one message) to ``account_id``'s subscribed connections,
        after what the engine told before them; each copy meets the stream faults."""
        self._drain()
        self._push(account_id, list(updates))

    def _push(self, account_id: str, updates: list[Update]) -> None:
        for conn in list(self._connections):
            for channel, data in updates:
                if conn.account_id != account_id or conn.closed:
                    break
                if channel == "executions" and (
                    conn.executions is None
                    or (
                        not conn.executions["order_status"]
                        and data[0]["exec_type"] == "pending_new"
                    )
                ):
                    continue  # not subscribed, or order_status=false: no pending_new
                if channel == "balances" and not conn.balances:
                    continue
                self._send_update(conn, ww.channel_message(channel, "update", data, 0))

    # -------------------------------------------------------------- sending

    def _send_update(self, conn: _Connection, message: dict[str, Any]) -> None:
        conn.sequence[message["channel"]] += 1
        message["sequence"] = conn.sequence[message["channel"]]
        fault = self.faults.next(conn.account_id or "")
        if fault is StreamFaultKind.DROP:
            return
        if fault in (StreamFaultKind.CLOSE, StreamFaultKind.DISCONNECT):
            # Nothing more goes out on it, this update included; the close itself awaits.
            abrupt = fault is StreamFaultKind.DISCONNECT
            self._retire(conn)
            self._spawn(self._close(conn, code=1000, abrupt=abrupt), f"{conn.number}-close")
            return
        if fault is StreamFaultKind.REORDER and conn.held is None:
            conn.held = message
            self._spawn(self._release_held(conn, message), f"{conn.number}-reorder")
            return
        if fault is StreamFaultKind.STALL:
            conn.stalls += 1
            self._spawn(self._end_stall(conn), f"{conn.number}-stall")
        self._send(conn, message)
        if fault is StreamFaultKind.DUPLICATE:
            self._send(conn, message)
        if conn.held is not None and conn.held is not message:
            held, conn.held = conn.held, None
            self._send(conn, held)

    def _send_channel(
        self, conn: _Connection, channel: str, kind: str, data: list[dict[str, Any]]
    ) -> None:
        conn.sequence[channel] += 1
        self._send(conn, ww.channel_message(channel, kind, data, conn.sequence[channel]))

    def _send(self, conn: _Connection, message: dict[str, Any]) -> None:
        conn.outbox.append(message)
        conn.wake.set()

    async def _write(self, conn: _Connection) -> None:
        while not conn.closed:
            await conn.wake.wait()
            conn.wake.clear()
            while conn.outbox and conn.stalls == 0 and not conn.closed:
                message = conn.outbox.popleft()
                try:
                    await conn.ws.send_str(json.dumps(message))
                except (ConnectionError, RuntimeError):
                    return  # the peer went away; the reader ends the connection
                name = message.get("channel") or message.get("method") or "?"
                self.sent[name] += 1
                if message.get("channel") != "heartbeat":
                    conn.sent_since_beat = True

    async def _beat(self, conn: _Connection) -> None:
        if self.heartbeat_s is None:
            return
        while not conn.closed:
            await asyncio.sleep(self.heartbeat_s)
            subscribed = conn.executions is not None or conn.balances
            if subscribed and not conn.sent_since_beat:
                self._send(conn, ww.heartbeat())
            conn.sent_since_beat = False

    async def _release_held(self, conn: _Connection, message: dict[str, Any]) -> None:
        await self.clock.sleep(self.faults.plan.hold_s)
        if conn.held is message:
            conn.held = None
            self._send(conn, message)

    async def _end_stall(self, conn: _Connection) -> None:
        await self.clock.sleep(self.faults.plan.hold_s)
        if conn.stalls > 0:
            conn.stalls -= 1
            conn.wake.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A timer or a close, owned here: :meth:`aclose` cancels what is left."""
        task = asyncio.get_running_loop().create_task(coro, name=f"kraken-ws-{name}")
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _retire(self, conn: _Connection) -> None:
        """Nothing more is queued for or written to ``conn``."""
        conn.closed = True
        conn.wake.set()
        with contextlib.suppress(ValueError):
            self._connections.remove(conn)

    async def _close(self, conn: _Connection, *, code: int, abrupt: bool = False) -> None:
        if conn.ws.closed:
            return
        self._retire(conn)
        if abrupt and conn.request.transport is not None:
            conn.request.transport.abort()
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await conn.ws.close(code=code)
