"""The exchange of ``bench/fleet.py``: N accounts x K resting orders, in its own process.

::

    python -m bench._fleet_exchange --accounts N --orders K [--dialect binance|kraken]
                                    [--port 0] [--control-port 0] [--keys-out PATH]

A :class:`~adapters.sim.engine.SimEngine` with the demo markets of
``python -m adapters.emulator`` (``DEMO_MARKETS``, or ``KRAKEN_DEMO_MARKETS``
for ``--dialect kraken``) and N accounts named as the bot names them
(``PLATFORM``, then ``USER:fleet0001`` ...), each holding ``--quote-balance``
of the quote (a STANDARD-tier account) and K resting limit buys at about half
the price, alternating between two symbols. The orders are placed straight in
the engine, so the sidecar adopts them as orders placed elsewhere. Prices never
step: every listing answers the same orders, the steady cost of polling.

Served by :class:`~adapters.emulator.EmulatorServer` (or
:class:`~adapters.emulator.KrakenEmulatorServer`) on ``--port`` (0: a free one),
with key pairs made up from ``--seed`` (valid against this process only).
Prints one JSON line, ``{"url", "control_url", "dialect", "accounts", ...}``,
then serves until SIGTERM or SIGINT. The keys go to ``--keys-out`` as JSON
(``{"account id": [api_key, secret], ...}``, in account order); without it,
one JSON line per account follows the first.

The control port answers ``GET /counts``: every authenticated request counted
per account and ``METHOD /path`` (an open-orders request for one symbol as
``...openOrders?symbol=``), and each account's listing cycles: open-orders
requests, those closer than ``--cycle-gap-s`` to the previous one of the same
account counted once (``{"accounts": {id: {endpoint: n}}, "cycles": {id: n},
"endpoints": {...}, "not_found": {...}, "open_orders_endpoint": ...,
"process_cpu_s": ...}``), so the bench counts each account's cycles from the
venue's side, whatever the sidecar says of itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.base import OrderRequest
from adapters.emulator import EmulatorServer, KrakenEmulatorServer
from adapters.emulator.__main__ import DEMO_MARKETS, KRAKEN_DEMO_MARKETS
from adapters.emulator.server import Params
from adapters.sim.engine import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import OrderType, Side

DIALECTS = ("binance", "kraken")
OPEN_ORDERS_ENDPOINT = {
    "binance": "GET /api/v3/openOrders",
    "kraken": "POST /0/private/OpenOrders",
}
# The two symbols the resting orders alternate between (the first two demo markets).
ORDER_SYMBOLS = 2
# Each resting buy is worth just over this much quote at its own price (above every
# demo market's minimum notional).
ORDER_NOTIONAL = 6.0


def account_ids(n: int) -> list[str]:
    """The bot's ids: one ``PLATFORM`` account, then ``USER:fleet0001`` ..."""
    return ["PLATFORM"] + [f"USER:fleet{i:04d}" for i in range(1, n)]


def fleet_keys(ids: list[str], seed: int, dialect: str) -> dict[str, tuple[str, str]]:
    """Made-up key pairs, the same for the same seed (never real credentials)."""
    keys: dict[str, tuple[str, str]] = {}
    for account_id in ids:
        digest = hashlib.sha256(f"fleet:{seed}:{account_id}".encode()).digest()
        api_key = "fleet" + hashlib.sha256(digest + b"key").hexdigest()[:32]
        secret_bytes = hashlib.sha256(digest + b"secret").digest()
        if dialect == "kraken":  # Kraken issues base64 secrets
            keys[account_id] = (api_key, base64.b64encode(secret_bytes).decode())
        else:
            keys[account_id] = (api_key, secret_bytes.hex())
    return keys


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.partition(".")[2])


def build_engine(
    n_accounts: int, n_orders: int, dialect: str, quote_balance: float, seed: int
) -> SimEngine:
    engine = SimEngine(seed=seed, clock=SystemClock())
    markets = KRAKEN_DEMO_MARKETS if dialect == "kraken" else DEMO_MARKETS
    for market, price in markets:
        engine.add_market(market, price)
    quote = markets[0][0].quote
    chosen = markets[:ORDER_SYMBOLS]
    for account_id in account_ids(n_accounts):
        engine.open_account(account_id, {quote: quote_balance})
        for i in range(n_orders):
            market, price = chosen[i % len(chosen)]
            price_step, amount_step = market.price_step or 0.01, market.amount_step or 1e-8
            # About half the price (which never moves: no steps), a distinct price per
            # order: nothing fills, every listing is the same.
            limit = round(price / 2 + (i // len(chosen)) * price_step * 10, _decimals(price_step))
            amount = round(ORDER_NOTIONAL / limit + amount_step, _decimals(amount_step))
            amount = max(amount, market.min_amount or 0.0)
            engine.place_order(
                account_id,
                OrderRequest(
                    symbol=market.symbol,
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=amount,
                    price=limit,
                ),
            )
    return engine


class _PerAccount:
    """Counts every authenticated request per account and ``METHOD /path``, and each
    account's listing cycles: its open-orders requests, those less than ``cycle_gap_s``
    after the previous one counted as one cycle (a cycle that lists symbol by symbol
    sends several in a row)."""

    by_account: defaultdict[str, Counter[str]]
    cycles: Counter[str]
    cycle_gap_s: float
    _fleet_listing_key: str
    _last_listing: dict[str, float]

    def _start_counting(self, dialect: str, cycle_gap_s: float) -> None:
        self.by_account = defaultdict(Counter)
        self.cycles = Counter()
        self.cycle_gap_s = cycle_gap_s
        self._fleet_listing_key = OPEN_ORDERS_ENDPOINT[dialect]
        self._last_listing = {}

    def _count(self, account_id: str, request: web.Request, params: Params) -> None:
        key = f"{request.method} {request.path}"
        if key == self._fleet_listing_key:
            now = time.monotonic()
            last = self._last_listing.get(account_id)
            if last is None or now - last > self.cycle_gap_s:
                self.cycles[account_id] += 1
            self._last_listing[account_id] = now
            if "symbol" in params:
                key += "?symbol="
        self.by_account[account_id][key] += 1


class CountingBinance(_PerAccount, EmulatorServer):
    def __init__(self, *args: Any, cycle_gap_s: float, **kwargs: Any) -> None:
        self._start_counting("binance", cycle_gap_s)
        super().__init__(*args, **kwargs)

    def _authenticate(
        self, request: web.Request, query_raw: str, body_raw: str, params: Params
    ) -> str:
        account_id = super()._authenticate(request, query_raw, body_raw, params)
        self._count(account_id, request, params)
        return account_id


class CountingKraken(_PerAccount, KrakenEmulatorServer):
    def __init__(self, *args: Any, cycle_gap_s: float, **kwargs: Any) -> None:
        self._start_counting("kraken", cycle_gap_s)
        super().__init__(*args, **kwargs)

    def _authenticate_kraken(self, request: web.Request, body_raw: str, params: Params) -> str:
        account_id = super()._authenticate_kraken(request, body_raw, params)
        self._count(account_id, request, params)
        return account_id


async def serve(
    args: argparse.Namespace, engine: SimEngine, keys: dict[str, tuple[str, str]], built_s: float
) -> None:
    server_cls = CountingKraken if args.dialect == "kraken" else CountingBinance
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server_cls(
        engine, keys, host=args.host, port=args.port, cycle_gap_s=args.cycle_gap_s
    ) as server:

        async def counts(request: web.Request) -> web.Response:
            return web.json_response(
                {
                    "accounts": {a: dict(c) for a, c in server.by_account.items()},
                    "cycles": dict(server.cycles),
                    "cycle_gap_s": server.cycle_gap_s,
                    "endpoints": dict(server.requests),
                    "not_found": dict(server.not_found),
                    "open_orders_endpoint": OPEN_ORDERS_ENDPOINT[args.dialect],
                    "process_cpu_s": time.process_time(),
                }
            )

        control = web.Application()
        control.router.add_get("/counts", counts)
        runner = web.AppRunner(control, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.control_port)
        await site.start()
        control_port = next(s[1] for s in runner.addresses if isinstance(s, tuple))
        try:
            hello = {
                "url": server.url,
                "control_url": f"http://{args.host}:{control_port}",
                "dialect": args.dialect,
                "accounts": args.accounts,
                "orders_per_account": args.orders,
                "open_orders_endpoint": OPEN_ORDERS_ENDPOINT[args.dialect],
                "engine_built_s": round(built_s, 3),
                "keys_file": args.keys_out,
            }
            print(json.dumps(hello), flush=True)
            if args.keys_out is None:
                for account_id, (api_key, secret) in keys.items():
                    line = {"account": account_id, "apiKey": api_key, "secret": secret}
                    print(json.dumps(line), flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench._fleet_exchange",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--accounts", type=int, required=True)
    parser.add_argument("--orders", type=int, required=True, help="resting orders per account")
    parser.add_argument("--dialect", choices=DIALECTS, default="binance")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--keys-out", default=None, help="write the key pairs here (JSON)")
    parser.add_argument("--quote-balance", type=float, default=25_000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cycle-gap-s",
        type=float,
        default=0.3,
        help="open-orders requests of one account closer than this are one cycle (0.3)",
    )
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.orders < 0:
        parser.error("--accounts must be at least 1 and --orders at least 0")
    built = time.perf_counter()
    engine = build_engine(args.accounts, args.orders, args.dialect, args.quote_balance, args.seed)
    built_s = time.perf_counter() - built
    keys = fleet_keys(account_ids(args.accounts), args.seed, args.dialect)
    if args.keys_out is not None:
        Path(args.keys_out).write_text(
            json.dumps({a: list(k) for a, k in keys.items()}), encoding="utf-8"
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args, engine, keys, built_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
