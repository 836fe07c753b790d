"""``python -m adapters.emulator [--dialect kraken] --port 8900 [--seed 1]``: a local exchange.

Binance spot by default, Kraken spot with ``--dialect kraken`` (USD pairs,
base64 secrets as Kraken issues them). Prints the base URL and one demo key
pair per account (made up here, valid only against this process), then
serves until interrupted, moving prices one seeded random-walk step every
``--step-s`` seconds so resting orders fill.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import sys

from adapters.sim.engine import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market

from . import EmulatorServer, KrakenEmulatorServer, binance_ccxt_config, kraken_ccxt_config

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
# One platform account and users from micro to large, as NIJA runs them.
DEMO_ACCOUNTS = (
    ("PLATFORM", {"USDT": 25_000.0, "BTC": 0.1}),
    ("USER:alice", {"USDT": 2_500.0}),
    ("USER:micro", {"USDT": 50.0}),
)
DIALECTS = ("binance", "kraken")


def build_engine(seed: int, dialect: str = "binance") -> SimEngine:
    engine = SimEngine(seed=seed, clock=SystemClock())
    markets = KRAKEN_DEMO_MARKETS if dialect == "kraken" else DEMO_MARKETS
    quote = "USD" if dialect == "kraken" else "USDT"
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


async def serve(host: str, port: int, seed: int, step_s: float, dialect: str = "binance") -> None:
    engine = build_engine(seed, dialect)
    keys = demo_keys(seed, dialect)
    server_cls = KrakenEmulatorServer if dialect == "kraken" else EmulatorServer
    async with server_cls(engine, keys, host=host, port=port) as server:
        api = f"{server.url}/0" if dialect == "kraken" else f"{server.url}/api/v3"
        print(json.dumps({"url": server.url, "dialect": dialect, "api": api}), flush=True)
        for account_id, (api_key, secret) in keys.items():
            print(
                json.dumps({"account": account_id, "apiKey": api_key, "secret": secret}), flush=True
            )
        example = (kraken_ccxt_config if dialect == "kraken" else binance_ccxt_config)(server.url)
        print(json.dumps({"ccxt_config_without_keys": example}), flush=True)
        while True:
            await asyncio.sleep(step_s)
            engine.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.emulator", description=__doc__)
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="binance",
        help="which exchange's REST API to speak (default binance)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--step-s", type=float, default=1.0, help="seconds between price steps (default 1)"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.seed, args.step_s, args.dialect))
    return 0


if __name__ == "__main__":
    sys.exit(main())
