"""What money truth costs in exchange calls, per venue, through real ccxt; prints JSON.

Against the built-in emulator on loopback (Binance and Kraken dialects), one
reconciler cycle at a time, counting the requests the adapter sent
(``CcxtExchange.calls``, retries included) in each situation:

- ``idle``: nothing changed, for a STANDARD account (DCA allowed) and a
  MICRO_CAP one (whose tier forbids DCA: it also checks its balance every
  cycle, so an entry the bot sent on its own is known within one poll);
- ``resting_fill``: a resting limit order filled between two polls: the
  listing misses it, ``fetch_order`` confirms it, its trades are fetched;
- ``instant_entry``: the bot's own market buy (never rests) on a MICRO_CAP
  account: the next cycle's balance shows it (and fetches the new coin's
  ticker once); the order itself and its trades come with the next sweep.
- ``sweep``: a full balance refresh with the closed-orders sweep, per symbol
  the account touched where the venue needs a symbol (Binance).

Usage: ``python bench/money.py``
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import Counter
from typing import Any

import ccxt.async_support as ccxt

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.ratelimit import RateBudget
from adapters.sim import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.health import AccountLive
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.state.books import Books
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

STANDARD, MICRO = "PLATFORM", "USER:micro"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DIALECTS: dict[str, dict[str, Any]] = {
    "binance": {
        "market": Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        "server": EmulatorServer,
        "ccxt": ccxt.binance,
        "config": binance_ccxt_config,
        "keys": {
            STANDARD: ("platform-key-01", "platform-secret-01"),
            MICRO: ("micro-key-01", "micro-secret-01"),
        },
    },
    "kraken": {
        "market": Market(
            symbol="BTC/USD",
            base="BTC",
            quote="USD",
            amount_step=1e-8,
            price_step=0.1,
            min_amount=0.0001,
            min_notional=0.5,
        ),
        "server": KrakenEmulatorServer,
        "ccxt": ccxt.kraken,
        "config": kraken_ccxt_config,
        "keys": {
            STANDARD: ("platform-kraken-key", _b64("platform-secret-bytes-01")),
            MICRO: ("micro-kraken-key", _b64("micro-secret-bytes-0001")),
        },
    },
}


def _delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in sorted(after) if after[k] - before[k]}


async def _dialect(name: str) -> dict[str, Any]:
    d = DIALECTS[name]
    market: Market = d["market"]
    quote = market.quote
    engine = SimEngine(seed=1, clock=SystemClock(), maker_fee=0.001, taker_fee=0.001)
    engine.add_market(market, 50_000.0, volatility=0.0)
    engine.open_account(STANDARD, {quote: 10_000.0})
    engine.open_account(MICRO, {quote: 300.0})
    result: dict[str, Any] = {}
    async with d["server"](engine, d["keys"]) as server:
        exchanges = {
            a: CcxtExchange(
                d["ccxt"](d["config"](server.url, *d["keys"][a])),
                account_id=a,
                clock=FakeClock(),
                budget=RateBudget(10_000.0),
            )
            for a in (STANDARD, MICRO)
        }
        live = {a: AccountLive.create(a, TierTable()) for a in exchanges}
        settings = ReconcilerSettings(visibility_window_s=0.0, balance_interval_s=3600.0)
        async with Reconciler(
            Books(None), exchanges, live, clock=SystemClock(), settings=settings
        ) as reconciler:
            for account in exchanges:
                await reconciler.startup(account)

            async def cycle(account: str) -> dict[str, int]:
                before = Counter(exchanges[account].calls)
                await reconciler.sync_once(account)
                return _delta(exchanges[account].calls, before)

            result["idle_standard"] = await cycle(STANDARD)
            result["idle_micro_cap"] = await cycle(MICRO)
            engine.place_order(
                STANDARD,
                OrderRequest(
                    symbol=market.symbol,
                    side=Side.BUY,
                    type=OrderType.LIMIT,
                    amount=0.01,
                    price=49_000.0,
                ),
            )
            await cycle(STANDARD)  # the new order is listed (and adopted)
            engine.set_price(market.symbol, 48_000.0)  # it fills between two polls
            result["resting_fill_standard"] = await cycle(STANDARD)
            result["idle_standard_after"] = await cycle(STANDARD)
            engine.place_order(
                MICRO,
                OrderRequest(
                    symbol=market.symbol, side=Side.BUY, type=OrderType.MARKET, amount=0.001
                ),
            )
            result["instant_entry_micro_cap"] = await cycle(MICRO)
            result["idle_micro_cap_after"] = await cycle(MICRO)
            # A full refresh: balances, tickers, the closed-orders sweep and the trades owed.
            reconciler._sync(MICRO).balances.due_mono = float("-inf")
            result["sweep_micro_cap"] = await cycle(MICRO)
            result["micro_cap_position"] = [
                (p.symbol, p.quantity) for p in reconciler._sync(MICRO).book.positions()
            ]
    return result


async def main() -> dict[str, Any]:
    return {name: await _dialect(name) for name in DIALECTS}


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    print(json.dumps(asyncio.run(main()), indent=2))
