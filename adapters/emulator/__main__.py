"""``python -m adapters.emulator --port 8900 [--seed 1]``: a local Binance to point ccxt at.

Prints the base URL and one demo key pair per account (made up here, valid
only against this process), then serves until interrupted, moving prices one
seeded random-walk step every ``--step-s`` seconds so resting orders fill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys

from adapters.sim.engine import SimEngine
from nija_broker.clock import SystemClock
from nija_broker.models import Market

from . import EmulatorServer, binance_ccxt_config

DEMO_MARKETS = (
    (Market(symbol="BTC/USDT", base="BTC", quote="USDT", amount_step=0.00001, price_step=0.01,
            min_amount=0.00001, min_notional=5.0), 60_000.0),
    (Market(symbol="ETH/USDT", base="ETH", quote="USDT", amount_step=0.0001, price_step=0.01,
            min_amount=0.0001, min_notional=5.0), 3_000.0),
    (Market(symbol="SOL/USDT", base="SOL", quote="USDT", amount_step=0.001, price_step=0.01,
            min_amount=0.001, min_notional=5.0), 150.0),
)
# One platform account and users from micro to large, as NIJA runs them.
DEMO_ACCOUNTS = (
    ("PLATFORM", {"USDT": 25_000.0, "BTC": 0.1}),
    ("USER:alice", {"USDT": 2_500.0}),
    ("USER:micro", {"USDT": 50.0}),
)


def build_engine(seed: int) -> SimEngine:
    engine = SimEngine(seed=seed, clock=SystemClock())
    for market, price in DEMO_MARKETS:
        engine.add_market(market, price)
    for account_id, balances in DEMO_ACCOUNTS:
        engine.open_account(account_id, balances)
    return engine


def demo_keys(seed: int) -> dict[str, tuple[str, str]]:
    """Made-up key pairs, reproducible from the seed (never real credentials)."""
    rng = random.Random(f"{seed}:keys")
    return {account_id: (f"demo{rng.getrandbits(128):032x}", f"{rng.getrandbits(256):064x}")
            for account_id, _ in DEMO_ACCOUNTS}


async def serve(host: str, port: int, seed: int, step_s: float) -> None:
    engine = build_engine(seed)
    keys = demo_keys(seed)
    async with EmulatorServer(engine, keys, host=host, port=port) as server:
        print(json.dumps({"url": server.url, "api": f"{server.url}/api/v3"}), flush=True)
        for account_id, (api_key, secret) in keys.items():
            print(json.dumps({"account": account_id, "apiKey": api_key, "secret": secret}),
                  flush=True)
        example = binance_ccxt_config(server.url)
        print(json.dumps({"ccxt_config_without_keys": example}), flush=True)
        while True:
            await asyncio.sleep(step_s)
            engine.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-s", type=float, default=1.0,
                        help="seconds between price steps (default 1)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.seed, args.step_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
