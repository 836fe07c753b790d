"""``python -m adapters.emulator [--dialect kraken] --port 8900 [--seed 1]``: a local exchange.

Binance spot by default, Kraken spot with ``--dialect kraken`` (USD pairs,
base64 secrets as Kraken issues them). It serves the demo's accounts
(:data:`~adapters.emulator.demo_accounts.DEMO_BALANCES`). Prints the base URL
and one demo key pair per account (made up here from the seed, valid only
against this process), then serves until interrupted, moving prices one seeded
random-walk step every ``--step-s`` seconds so resting orders fill.

``nija-broker emulator --write-config PATH`` runs the same server and, instead
of the JSON lines, writes a broker configuration and the keys' environment file
for it (nija_broker/demo/rehearsal.py): :func:`serve` hands what it serves to
an ``on_ready`` hook once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.sim.engine import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market

from . import EmulatorServer, KrakenEmulatorServer, binance_ccxt_config, kraken_ccxt_config
from .demo_accounts import DEMO_BALANCES

DEMO_MARKETS = (
    (
        Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        60_000.0,
    ),
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.0001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
    (
        Market(
            symbol="SOL/USDT",
            base="SOL",
            quote="USDT",
            amount_step=0.001,
            price_step=0.01,
            min_amount=0.001,
            min_notional=5.0,
        ),
        150.0,
    ),
)
# Kraken quotes in USD: the same markets under Kraken's minimums (ordermin, costmin 0.5).
KRAKEN_DEMO_MARKETS = (
    (
        Market(
            symbol="BTC/USD",
            base="BTC",
            quote="USD",
            amount_step=1e-8,
            price_step=0.1,
            min_amount=0.00005,
            min_notional=0.5,
        ),
        60_000.0,
    ),
    (
        Market(
            symbol="ETH/USD",
            base="ETH",
            quote="USD",
            amount_step=1e-8,
            price_step=0.01,
            min_amount=0.002,
            min_notional=0.5,
        ),
        3_000.0,
    ),
    (
        Market(
            symbol="SOL/USD",
            base="SOL",
            quote="USD",
            amount_step=1e-8,
            price_step=0.01,
            min_amount=0.02,
            min_notional=0.5,
        ),
        150.0,
    ),
)
# The demo's accounts, one per tier: (id, starting balances); "USDT" is the dialect's quote.
DEMO_ACCOUNTS: tuple[tuple[str, dict[str, float]], ...] = tuple(
    (account_id, {"USDT": amount}) for account_id, amount in DEMO_BALANCES.items()
)
DIALECTS = ("binance", "kraken")
QUOTES: Mapping[str, str] = {"binance": "USDT", "kraken": "USD"}
"""The quote currency of each dialect's markets."""


@dataclass(frozen=True, slots=True)
class Serving:
    """What a listening emulator serves: handed to :func:`serve`'s ``on_ready`` hook."""

    url: str
    """Base URL, with the port actually bound (``--port 0`` picks a free one)."""
    dialect: str
    seed: int
    keys: Mapping[str, tuple[str, str]]
    """Account id -> (api key, secret), in :data:`DEMO_ACCOUNTS` order."""

    @property
    def quote(self) -> str:
        return QUOTES[self.dialect]

    def ccxt_config(self) -> dict[str, Any]:
        """The ``[accounts.ccxt]`` table (no keys) that points ccxt at this emulator."""
        build = kraken_ccxt_config if self.dialect == "kraken" else binance_ccxt_config
        return build(self.url)


ReadyHook = Callable[[Serving], None]


def build_engine(seed: int, dialect: str = "binance") -> SimEngine:
    engine = SimEngine(seed=seed, clock=SystemClock())
    markets = KRAKEN_DEMO_MARKETS if dialect == "kraken" else DEMO_MARKETS
    quote = QUOTES[dialect]
    for market, price in markets:
        engine.add_market(market, price)
    for account_id, balances in DEMO_ACCOUNTS:
        engine.open_account(
            account_id, {quote if c == "USDT" else c: amount for c, amount in balances.items()}
        )
    return engine


def demo_keys(seed: int, dialect: str = "binance") -> dict[str, tuple[str, str]]:
    """Made-up key pairs, reproducible from the seed (never real credentials)."""
    rng = random.Random(f"{seed}:keys")
    keys = {}
    for account_id, _ in DEMO_ACCOUNTS:
        api_key, secret = f"demo{rng.getrandbits(128):032x}", rng.getrandbits(256)
        if dialect == "kraken":  # Kraken issues base64 secrets
            keys[account_id] = (api_key, base64.b64encode(secret.to_bytes(32, "big")).decode())
        else:
            keys[account_id] = (api_key, f"{secret:064x}")
    return keys


def _print_json_lines(serving: Serving) -> None:
    api = f"{serving.url}/0" if serving.dialect == "kraken" else f"{serving.url}/api/v3"
    print(json.dumps({"url": serving.url, "dialect": serving.dialect, "api": api}), flush=True)
    for account_id, (api_key, secret) in serving.keys.items():
        print(json.dumps({"account": account_id, "apiKey": api_key, "secret": secret}), flush=True)
    print(json.dumps({"ccxt_config_without_keys": serving.ccxt_config()}), flush=True)


async def serve(
    host: str,
    port: int,
    seed: int,
    step_s: float,
    dialect: str = "binance",
    *,
    on_ready: ReadyHook | None = None,
) -> None:
    """Serve until cancelled. Once listening, ``on_ready`` gets what is served (default: the
    JSON lines on stdout); an exception from it closes the server and propagates."""
    engine = build_engine(seed, dialect)
    keys = demo_keys(seed, dialect)
    server_cls = KrakenEmulatorServer if dialect == "kraken" else EmulatorServer
    async with server_cls(engine, keys, host=host, port=port) as server:
        (on_ready or _print_json_lines)(
            Serving(url=server.url, dialect=dialect, seed=seed, keys=keys)
        )
        while True:
            await asyncio.sleep(step_s)
            engine.step()


def build_parser(prog: str = "python -m adapters.emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="binance",
        help="which exchange's REST API to speak (default binance)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0: any free port")
    parser.add_argument("--seed", type=int, default=0, help="fixes the keys and the price path")
    parser.add_argument(
        "--step-s", type=float, default=1.0, help="seconds between price steps (default 1)"
    )
    return parser


def main(argv: list[str] | None = None, *, on_ready: ReadyHook | None = None) -> int:
    """Serve until interrupted (exit 0); 1 when the address cannot be bound."""
    args = build_parser().parse_args(argv)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve(args.host, args.port, args.seed, args.step_s, args.dialect, on_ready=on_ready)
            )
    except OSError as exc:
        print(
            f"emulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
            "(another process uses the port? --port 0 picks a free one)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
