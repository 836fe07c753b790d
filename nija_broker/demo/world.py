"""The demo's world: the emulated exchange, its markets and accounts, and the configuration for it.

Everything here is loopback and made up for one run: markets listed on a
seeded :class:`~adapters.sim.SimEngine`, accounts funded so that each lands in
a different tier, and random demo-only keys that exist nowhere but in this
process. ``config/demo.toml`` is the broker's side; :func:`demo_config` fills
in what only a running emulator knows (see that file's header).
"""

from __future__ import annotations

import base64
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.emulator.demo_accounts import DEMO_BALANCES
from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.models import Market
from nija_broker.service.config import Config, parse_config

if TYPE_CHECKING:
    from adapters.emulator import EmulatorServer
    from adapters.sim import SimEngine
    from nija_broker.core.exchange import Exchange

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEMO_DURATION_S",
    "EXCHANGES",
    "DemoWorld",
    "demo_config",
    "demo_keys",
    "local_exchanges",
    "start_world",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "demo.toml"
DEMO_DURATION_S = 40.0
"""The run length ``demo.toml``'s timings are written for."""
MIN_STALE_AGE_S = 3.0

EXCHANGES: dict[str, str] = {"binance": "USDT", "kraken": "USD"}
"""Supported dialects and the quote currency the demo's markets use on each."""

# Starting quote balance per account: one per tier (STANDARD, MICRO_CAP, SMALL_CAP). The
# emulator's own list, so `nija-broker emulator` serves the demo's accounts.
BALANCES: dict[str, float] = dict(DEMO_BALANCES)

# (base, price, amount step, price step, min amount); every market is against the quote.
_LISTINGS: tuple[tuple[str, float, float, float, float], ...] = (
    ("BTC", 50_000.0, 0.00001, 0.1, 0.00001),
    ("ETH", 3_000.0, 0.0001, 0.01, 0.0001),
    ("SOL", 150.0, 0.001, 0.01, 0.001),
)
# Per-step stdev of the log return: a calm market, so only the scripted moves reach the
# resting orders the story depends on.
_VOLATILITY = 0.0004


@dataclass(frozen=True, slots=True)
class DemoWorld:
    """A running emulator and what the broker needs to reach it."""

    exchange: str
    quote: str
    engine: SimEngine
    server: EmulatorServer
    environ: Mapping[str, str]

    def symbol(self, base: str) -> str:
        return f"{base}/{self.quote}"


def demo_keys(
    exchange: str, account_ids: list[str], env_names: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Fresh random keys per account: the emulator's table and the broker's environment.

    Kraken issues base64 secrets, and its dialect checks that they are.
    """
    keys: dict[str, tuple[str, str]] = {}
    environ: dict[str, str] = {}
    for account_id in account_ids:
        api_key = "demo-" + secrets.token_hex(12)
        raw = secrets.token_bytes(32)
        secret = base64.b64encode(raw).decode() if exchange == "kraken" else raw.hex()
        keys[account_id] = (api_key, secret)
        key_env, secret_env = env_names[account_id]
        environ[key_env] = api_key
        environ[secret_env] = secret
    return keys, environ


def _engine(exchange: str, seed: int) -> SimEngine:
    from adapters.sim import SimEngine

    quote = EXCHANGES[exchange]
    # Real time: the broker's reconciler and ccxt's request stamps run on it too.
    engine = SimEngine(seed=seed, clock=SystemClock())
    for base, price, amount_step, price_step, min_amount in _LISTINGS:
        engine.add_market(
            Market(
                symbol=f"{base}/{quote}",
                base=base,
                quote=quote,
                amount_step=amount_step,
                price_step=price_step,
                min_amount=min_amount,
                min_notional=5.0,
            ),
            price,
            volatility=_VOLATILITY,
        )
    for account_id, amount in BALANCES.items():
        engine.open_account(account_id, {quote: amount})
    return engine


def read_demo_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: the demo configuration is missing; run the demo from a checkout of "
            "nija_broker (it ships config/demo.toml)",
            file=str(path),
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", file=str(path)) from None


def _env_names(raw: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    names: dict[str, tuple[str, str]] = {}
    for account in raw.get("accounts", []):
        account_id = account.get("id")
        if account_id not in BALANCES:
            raise ConfigError(
                f"demo.toml: account {account_id!r} has no emulated balance; "
                f"the demo's accounts are {sorted(BALANCES)}",
                key="accounts",
            )
        key_env, secret_env = account.get("api_key_env"), account.get("secret_env")
        if not key_env or not secret_env:
            raise ConfigError(
                f"demo.toml: account {account_id!r} needs api_key_env and "
                "secret_env (the demo puts its made-up keys there)",
                key=f"accounts.{account_id}",
            )
        names[account_id] = (key_env, secret_env)
    return names


def stale_age_scale(duration_s: float) -> float:
    """``demo.toml``'s stale ages are for a 40 s run; the beats scale with the run, so do they.

    Shorter, so the stale cancellation still happens; longer, so the micro entry
    is still resting when the duplicate-entry beat needs it.
    """
    return duration_s / DEMO_DURATION_S


def demo_config(
    raw: Mapping[str, Any], *, exchange: str, server_url: str, out_dir: Path, duration_s: float
) -> Config:
    """``demo.toml`` with the run-time parts filled in (see that file's header)."""
    from adapters.emulator import binance_ccxt_config, kraken_ccxt_config

    ccxt_table = (
        kraken_ccxt_config(server_url) if exchange == "kraken" else binance_ccxt_config(server_url)
    )
    data: dict[str, Any] = {
        key: value for key, value in raw.items() if key not in ("accounts", "store", "tiers")
    }
    store = dict(raw.get("store", {}))
    store["path"] = str(out_dir / Path(store.get("path", "demo.sqlite3")).name)
    data["store"] = store
    scale = stale_age_scale(duration_s)
    tiers: dict[str, Any] = {}
    for name, override in raw.get("tiers", {}).items():
        override = dict(override)
        if "stale_max_age_s" in override:
            override["stale_max_age_s"] = max(
                MIN_STALE_AGE_S, float(override["stale_max_age_s"]) * scale
            )
        tiers[name] = override
    data["tiers"] = tiers
    # The emulator is local and enforces no limit: no rate budget (rate_budget = "off").
    data["accounts"] = [
        {
            **account,
            "exchange": exchange,
            "quote_currency": EXCHANGES[exchange],
            "ccxt": ccxt_table,
            "rate_budget": "off",
        }
        for account in raw.get("accounts", [])
    ]
    return parse_config(data, "demo.toml")


def local_exchanges(world: DemoWorld, config: Config, clock: Clock) -> dict[str, Exchange]:
    """Exchanges for the broker that wait for no request budget: the emulator is local.

    The venues' own budgets would stall the demo: Binance's weighs one listing of
    every symbol at 80 of 6,000 a minute per IP, Kraken's counts each key at 0.33
    calls a second (15 burst), and three accounts polling twice a second spend far
    more. The demo's accounts say ``rate_budget = "off"``; they are built here with
    a budget that never waits, whether or not the adapter reads that key yet.
    """
    from adapters.ccxt_adapter import CcxtExchange
    from adapters.ratelimit import RateBudget

    return {
        account.id: CcxtExchange.from_config(
            account,
            clock=clock,
            environ=world.environ,
            budget=RateBudget.unlimited(clock=clock),
        )
        for account in config.accounts
    }


async def start_world(exchange: str, seed: int, raw: Mapping[str, Any]) -> DemoWorld:
    """Start the emulator for ``exchange`` on a free loopback port; the caller closes it."""
    if exchange not in EXCHANGES:
        raise ConfigError(
            f"--exchange must be one of {sorted(EXCHANGES)}, got {exchange!r}", key="exchange"
        )
    names = _env_names(raw)
    keys, environ = demo_keys(exchange, list(names), names)
    engine = _engine(exchange, seed)
    server: EmulatorServer
    if exchange == "kraken":
        from adapters.emulator import KrakenEmulatorServer

        server = KrakenEmulatorServer(engine, keys, host="127.0.0.1", port=0)
    else:
        from adapters.emulator import EmulatorServer

        server = EmulatorServer(engine, keys, host="127.0.0.1", port=0)
    await server.start()
    return DemoWorld(
        exchange=exchange, quote=EXCHANGES[exchange], engine=engine, server=server, environ=environ
    )
