"""The exchange of ``bench/streams.py`` in its own process, and the bench's handle on it.

::

    python -m bench._streams_proc --dialect binance|kraken --spec SPEC.json
                                  [--keys-out PATH] [--port 0] [--control-port 0]

A :class:`~adapters.sim.engine.SimEngine` on the system clock with the bench's markets
(:func:`markets`: ``IDL`` for idle accounts' resting orders, ``RS0``... the resting-fill
lanes, ``MB00``... one a market buy, every price fixed until the bench moves it) and the
accounts of ``SPEC.json`` (``[{"id", "balances": {currency: amount}, "resting":
[symbol, ...]}]``: each ``resting`` symbol gets one limit buy at half its price, which
nothing fills). Served by :class:`~adapters.emulator.EmulatorServer` (or
:class:`~adapters.emulator.KrakenEmulatorServer`) with the stream endpoints, through
``bench._fleet_exchange``'s counting subclasses: every authenticated REST request is
counted per account at the emulator (and its wall time kept here), and every stream
subscription's wall time too (by wrapping the emulator's subscribe step). Prints one
JSON line, ``{"url", "control_url", ...}``, then serves until SIGTERM or SIGINT.

The control port (JSON over HTTP, for the bench only):

- ``POST /place`` ``{account, symbol, side, type, amount, price?}``: an order placed
  straight in the engine (as the live bot does through its own SDK); answers its wire
  id and the fills it made at once, each with the engine's fill time;
- ``POST /price`` ``{symbol, price}``: the market moved there; answers the fills;
- ``POST /close_streams`` ``{account?}``: the venue ends that account's streams;
- ``GET /requests?since=T``: per account, each authenticated REST request at or after
  wall time ``T`` as ``[t, "METHOD /path"]``, each subscription as ``[t, what]``, and
  the running totals per endpoint.

Times are wall-clock seconds (``time.time()``); the bench's own process reads the same
system clock. Ids are the wire's (Kraken's txids), as the sidecar books them.

:class:`StreamsEmulator` starts the process and talks to it (aiohttp, from the bench's
event loop); the process is ended by its pid (``bench._fleet_proc.terminate``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.base import OrderRequest
from adapters.emulator._kraken_names import order_txid, trade_txid
from adapters.sim.engine import SimEngine
from bench import _fleet_proc as fp
from bench._fleet_exchange import CountingBinance, CountingKraken, fleet_keys
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Fill, Market, OrderType, Side

DIALECTS = ("binance", "kraken")
QUOTES = {"binance": "USDT", "kraken": "USD"}
LISTING_ENDPOINT = {
    "binance": "GET /api/v3/openOrders",
    "kraken": "POST /0/private/OpenOrders",
}
SWEEP_ENDPOINT = {
    "binance": "GET /api/v3/allOrders",
    "kraken": "POST /0/private/ClosedOrders",
}
"""The closed-orders sweep, which runs on the balance cadence only: a cadence marker."""
BALANCE_ENDPOINT = {
    "binance": "GET /api/v3/account",
    "kraken": "POST /0/private/BalanceEx",
}
"""The balance: the first request of a cycle that reads it (a sweeping one always does)."""
IDLE_BASE = "IDL"
LANE_PRICE = 100.0
MARKET_BUY_PRICE = 2.0


def lane_base(k: int) -> str:
    return f"RS{k}"


def market_buy_base(i: int) -> str:
    return f"MB{i:02d}"


def markets(dialect: str, lanes: int, market_buys: int) -> list[tuple[Market, float]]:
    """The bench's markets: one for idle accounts, ``lanes`` for resting fills, one per
    market buy (a market buy needs a symbol the account holds nothing of)."""
    quote = QUOTES[dialect]
    min_notional = 0.5 if dialect == "kraken" else 5.0

    def market(base: str, amount_step: float, price_step: float) -> Market:
        return Market(
            symbol=f"{base}/{quote}",
            base=base,
            quote=quote,
            amount_step=amount_step,
            price_step=price_step,
            min_amount=amount_step,
            min_notional=min_notional,
        )

    found = [(market(IDLE_BASE, 0.001, 0.01), LANE_PRICE)]
    found += [(market(lane_base(k), 0.001, 0.01), LANE_PRICE) for k in range(lanes)]
    found += [
        (market(market_buy_base(i), 0.01, 0.0001), MARKET_BUY_PRICE) for i in range(market_buys)
    ]
    return found


# ---------------------------------------------------------------------------- the process


class _Timed:
    """Wall times of each account's authenticated requests and stream subscriptions."""

    timed_requests: defaultdict[str, list[tuple[float, str]]]
    timed_subscriptions: defaultdict[str, list[tuple[float, str]]]

    def _start_timing(self) -> None:
        self.timed_requests = defaultdict(list)
        self.timed_subscriptions = defaultdict(list)

    def _count(self, account_id: str, request: web.Request, params: Any) -> None:
        super()._count(account_id, request, params)  # type: ignore[misc]
        self.timed_requests[account_id].append((time.time(), f"{request.method} {request.path}"))


class TimedBinance(_Timed, CountingBinance):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._start_timing()
        super().__init__(*args, **kwargs)
        subscribe = self.ws_api._subscribe

        def timed(conn: Any, params: dict[str, Any]) -> dict[str, Any]:
            answer = subscribe(conn, params)
            account_id = conn.subscriptions[answer["subscriptionId"]]
            self.timed_subscriptions[account_id].append((time.time(), "userDataStream"))
            return answer

        self.ws_api._subscribe = timed  # type: ignore[method-assign]


class TimedKraken(_Timed, CountingKraken):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._start_timing()
        super().__init__(*args, **kwargs)
        stream = self.stream
        subscription = stream._subscription

        def timed(conn: Any, method: str, params: dict[str, Any], *rest: Any) -> None:
            before = dict(stream.subscriptions)
            subscription(conn, method, params, *rest)
            if conn.account_id is not None and dict(stream.subscriptions) != before:
                channel = str(params.get("channel"))
                self.timed_subscriptions[conn.account_id].append((time.time(), channel))

        stream._subscription = timed  # type: ignore[method-assign,assignment]


def _build(args: argparse.Namespace, spec: list[dict[str, Any]]) -> SimEngine:
    engine = SimEngine(seed=args.seed, clock=SystemClock())
    for market, price in markets(args.dialect, args.lanes, args.market_buys):
        engine.add_market(market, price, volatility=0.0)
    for account in spec:
        engine.open_account(account["id"], account["balances"])
        for symbol in account.get("resting", []):
            market = engine.markets[symbol]
            step = market.amount_step or 0.001
            price = round(engine.price(symbol) / 2, 2)
            amount = round(max(6.0 / price, market.min_amount or 0.0) / step) * step
            engine.place_order(
                account["id"],
                OrderRequest(
                    symbol=symbol,
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=round(amount, 8),
                    price=price,
                ),
            )
    return engine


def _control(server: Any, engine: SimEngine, dialect: str) -> web.Application:
    kraken = dialect == "kraken"

    def wire_order(engine_id: str) -> str:
        return order_txid(engine_id) if kraken else engine_id

    def wire_fill(fill: Fill) -> dict[str, Any]:
        trade_id = fill.trade_id or "0"
        return {
            "account": fill.account_id,
            "order_id": wire_order(fill.order_id),
            "trade_id": trade_txid(trade_id) if kraken else trade_id,
            "amount": fill.amount,
            "price": fill.price,
            "ts": fill.timestamp.timestamp(),
        }

    async def place(request: web.Request) -> web.Response:
        body = await request.json()
        before = len(engine.fills)
        order = engine.place_order(
            body["account"],
            OrderRequest(
                symbol=body["symbol"],
                side=Side(body["side"]),
                type=OrderType(body["type"]),
                amount=float(body["amount"]),
                price=body.get("price"),
            ),
        )
        fills = [wire_fill(f) for f in engine.fills[before:]]
        return web.json_response(
            {"order_id": wire_order(order.id), "status": order.status.value, "fills": fills}
        )

    async def price(request: web.Request) -> web.Response:
        body = await request.json()
        fills = engine.set_price(body["symbol"], float(body["price"]))
        return web.json_response({"fills": [wire_fill(f) for f in fills]})

    async def close_streams(request: web.Request) -> web.Response:
        body = await request.json()
        at = time.time()
        closed = await server.close_streams(body.get("account"))
        return web.json_response({"at": at, "closed": closed})

    async def requests(request: web.Request) -> web.Response:
        since = float(request.query.get("since", "0"))

        def after(rows: dict[str, list[tuple[float, str]]]) -> dict[str, list[Any]]:
            return {a: [list(r) for r in rs if r[0] >= since] for a, rs in rows.items()}

        return web.json_response(
            {
                "requests": after(server.timed_requests),
                "subscriptions": after(server.timed_subscriptions),
                "totals": {a: dict(c) for a, c in server.by_account.items()},
                "process_cpu_s": time.process_time(),
            }
        )

    app = web.Application()
    app.router.add_post("/place", place)
    app.router.add_post("/price", price)
    app.router.add_post("/close_streams", close_streams)
    app.router.add_get("/requests", requests)
    return app


async def _serve(args: argparse.Namespace, engine: SimEngine, keys: dict[str, Any]) -> None:
    server_cls = TimedKraken if args.dialect == "kraken" else TimedBinance
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server_cls(engine, keys, host=args.host, port=args.port, cycle_gap_s=0.3) as server:
        runner = web.AppRunner(_control(server, engine, args.dialect), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.control_port).start()
        control_port = next(s[1] for s in runner.addresses if isinstance(s, tuple))
        try:
            hello = {
                "url": server.url,
                "control_url": f"http://{args.host}:{control_port}",
                "dialect": args.dialect,
                "listing_endpoint": LISTING_ENDPOINT[args.dialect],
                "sweep_endpoint": SWEEP_ENDPOINT[args.dialect],
                "balance_endpoint": BALANCE_ENDPOINT[args.dialect],
            }
            print(json.dumps(hello), flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._streams_proc", description=__doc__)
    parser.add_argument("--dialect", choices=DIALECTS, default="binance")
    parser.add_argument("--spec", required=True, help="the accounts (JSON file)")
    parser.add_argument("--lanes", type=int, default=10)
    parser.add_argument("--market-buys", type=int, default=50)
    parser.add_argument("--keys-out", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    engine = _build(args, spec)
    keys = fleet_keys([a["id"] for a in spec], args.seed, args.dialect)
    Path(args.keys_out).write_text(json.dumps({a: list(k) for a, k in keys.items()}), "utf-8")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args, engine, keys))
    return 0


# ---------------------------------------------------------------------------- the handle


class StreamsEmulator:
    """``python -m bench._streams_proc`` in its own process; its control port from here."""

    def __init__(
        self,
        dialect: str,
        spec: list[dict[str, Any]],
        work: Path,
        *,
        lanes: int,
        market_buys: int,
    ) -> None:
        self.dialect = dialect
        spec_file = work / f"streams-{dialect}.spec.json"
        spec_file.write_text(json.dumps(spec), encoding="utf-8")
        keys_file = work / f"streams-{dialect}.keys.json"
        self._log = work / f"streams-{dialect}.emulator.log"
        argv = [
            sys.executable,
            "-m",
            "bench._streams_proc",
            "--dialect",
            dialect,
            "--spec",
            str(spec_file),
            "--lanes",
            str(lanes),
            "--market-buys",
            str(market_buys),
            "--keys-out",
            str(keys_file),
        ]
        with self._log.open("w", encoding="utf-8") as log:
            self.proc = fp.spawn(argv, cwd=fp.ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise RuntimeError(f"the emulator exited ({code}) before serving:\n{self.log_tail()}")
        hello = json.loads(line)
        self.url: str = hello["url"]
        self.control_url: str = hello["control_url"]
        self.listing_endpoint: str = hello["listing_endpoint"]
        self.sweep_endpoint: str = hello["sweep_endpoint"]
        self.balance_endpoint: str = hello["balance_endpoint"]
        raw = json.loads(keys_file.read_text(encoding="utf-8"))
        self.keys: dict[str, tuple[str, str]] = {a: (k[0], k[1]) for a, k in raw.items()}
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        async with self._session.request(method, self.control_url + path, json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def place(self, **order: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("POST", "/place", order)
        return answer

    async def set_price(self, symbol: str, price: float) -> list[dict[str, Any]]:
        answer = await self._call("POST", "/price", {"symbol": symbol, "price": price})
        fills: list[dict[str, Any]] = answer["fills"]
        return fills

    async def close_streams(self, account: str | None = None) -> float:
        """End the account's streams; the emulator's wall time just before it did."""
        answer = await self._call("POST", "/close_streams", {"account": account})
        at: float = answer["at"]
        return at

    async def requests(self, since: float = 0.0) -> dict[str, Any]:
        answer: dict[str, Any] = await self._call("GET", f"/requests?since={since!r}")
        return answer

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log.read_text(encoding="utf-8").splitlines()[-lines:])

    async def aclose(self) -> int:
        if self._session is not None:
            await self._session.close()
            self._session = None
        return await asyncio.to_thread(fp.terminate, self.proc)


def endpoint_counts(rows: list[list[Any]], start: float, end: float) -> dict[str, int]:
    """``[t, endpoint]`` rows within ``[start, end)``, counted per endpoint."""
    counts: dict[str, int] = defaultdict(int)
    for t, endpoint in rows:
        if start <= t < end:
            counts[endpoint] += 1
    return dict(sorted(counts.items()))


def first_after(rows: list[list[Any]], start: float, match: Callable[[str], bool]) -> float | None:
    """The first wall time at or after ``start`` among ``rows`` whose endpoint matches."""
    times = [t for t, what in rows if t >= start and match(what)]
    return min(times) if times else None


if __name__ == "__main__":
    sys.exit(main())
