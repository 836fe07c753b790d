"""nija_broker: per-account order state, performance and a pre-trade guard for the NIJA bot.

The public names are re-exported here; everything else is internal.

Each name is imported from its submodule on first access (PEP 562), so that
``import nija_broker.compat`` -- which the live bot does inside its own process --
loads the trackers and the store, and not the runtime, aiohttp or ccxt.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports, for mypy and IDEs; at run time see __getattr__
    from .book import AccountBook, Books, BookSettings
    from .breakers import Breakers
    from .client import GuardClient
    from .clock import Clock, FakeClock, SystemClock
    from .config import AccountConfig, Config, Problem, config_problems, load_config
    from .errors import (
        AccountFatal,
        AuthenticationFailed,
        ConfigError,
        EntryBlocked,
        ExchangeError,
        IllegalTransition,
        InsufficientFunds,
        InvalidOrder,
        NijaBrokerError,
        OrderError,
        OrderNotFound,
        PermissionDenied,
        RateLimited,
        StateError,
        TransientError,
    )
    from .guard import Guard, GuardConflict, GuardSettings
    from .guarded import GuardedExchange, guard_submit, guarded, market_order_reader
    from .health import AccountHealth, AccountLive, SyncState
    from .intent import Allowed, Blocked, Decision, OrderIntent, Reason, Reservation
    from .ledger import Ledger
    from .models import (
        AccountMetrics,
        Balance,
        EquityPoint,
        Fill,
        Market,
        Order,
        OrderRole,
        OrderStatus,
        OrderType,
        Position,
        Side,
        Ticker,
        TradeRecord,
    )
    from .orders import OrderTracker, OrderTrackerRegistry
    from .performance import PerformanceRegistry, PerformanceTracker, compute_metrics
    from .reconciler import Reconciler, ReconcilerSettings
    from .runtime import Broker, BrokerThread
    from .store import AsyncStore, Store, StoreLock, StoreLocked
    from .symbols import normalize_symbol, resolve_symbol
    from .tiers import TierPolicy, TierTable, TierTracker

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "AccountBook": "book",
    "AccountConfig": "config",
    "AccountFatal": "errors",
    "AccountHealth": "health",
    "AccountLive": "health",
    "AccountMetrics": "models",
    "Allowed": "intent",
    "AsyncStore": "store",
    "AuthenticationFailed": "errors",
    "Balance": "models",
    "Blocked": "intent",
    "BookSettings": "book",
    "Books": "book",
    "Breakers": "breakers",
    "Broker": "runtime",
    "BrokerThread": "runtime",
    "Clock": "clock",
    "Config": "config",
    "ConfigError": "errors",
    "Decision": "intent",
    "EntryBlocked": "errors",
    "EquityPoint": "models",
    "ExchangeError": "errors",
    "FakeClock": "clock",
    "Fill": "models",
    "Guard": "guard",
    "GuardClient": "client",
    "GuardConflict": "guard",
    "GuardSettings": "guard",
    "GuardedExchange": "guarded",
    "IllegalTransition": "errors",
    "InsufficientFunds": "errors",
    "InvalidOrder": "errors",
    "Ledger": "ledger",
    "Market": "models",
    "NijaBrokerError": "errors",
    "Order": "models",
    "OrderError": "errors",
    "OrderIntent": "intent",
    "OrderNotFound": "errors",
    "OrderRole": "models",
    "OrderStatus": "models",
    "OrderTracker": "orders",
    "OrderTrackerRegistry": "orders",
    "OrderType": "models",
    "PerformanceRegistry": "performance",
    "PerformanceTracker": "performance",
    "PermissionDenied": "errors",
    "Position": "models",
    "Problem": "config",
    "RateLimited": "errors",
    "Reason": "intent",
    "Reconciler": "reconciler",
    "ReconcilerSettings": "reconciler",
    "Reservation": "intent",
    "Side": "models",
    "StateError": "errors",
    "Store": "store",
    "StoreLock": "store",
    "StoreLocked": "store",
    "SyncState": "health",
    "SystemClock": "clock",
    "Ticker": "models",
    "TierPolicy": "tiers",
    "TierTable": "tiers",
    "TierTracker": "tiers",
    "TradeRecord": "models",
    "TransientError": "errors",
    "compute_metrics": "performance",
    "config_problems": "config",
    "guard_submit": "guarded",
    "guarded": "guarded",
    "load_config": "config",
    "market_order_reader": "guarded",
    "normalize_symbol": "symbols",
    "resolve_symbol": "symbols",
}

__all__ = [
    "AccountBook",
    "AccountConfig",
    "AccountFatal",
    "AccountHealth",
    "AccountLive",
    "AccountMetrics",
    "Allowed",
    "AsyncStore",
    "AuthenticationFailed",
    "Balance",
    "Blocked",
    "BookSettings",
    "Books",
    "Breakers",
    "Broker",
    "BrokerThread",
    "Clock",
    "Config",
    "ConfigError",
    "Decision",
    "EntryBlocked",
    "EquityPoint",
    "ExchangeError",
    "FakeClock",
    "Fill",
    "Guard",
    "GuardClient",
    "GuardConflict",
    "GuardSettings",
    "GuardedExchange",
    "IllegalTransition",
    "InsufficientFunds",
    "InvalidOrder",
    "Ledger",
    "Market",
    "NijaBrokerError",
    "Order",
    "OrderError",
    "OrderIntent",
    "OrderNotFound",
    "OrderRole",
    "OrderStatus",
    "OrderTracker",
    "OrderTrackerRegistry",
    "OrderType",
    "PerformanceRegistry",
    "PerformanceTracker",
    "PermissionDenied",
    "Position",
    "Problem",
    "RateLimited",
    "Reason",
    "Reconciler",
    "ReconcilerSettings",
    "Reservation",
    "Side",
    "StateError",
    "Store",
    "StoreLock",
    "StoreLocked",
    "SyncState",
    "SystemClock",
    "Ticker",
    "TierPolicy",
    "TierTable",
    "TierTracker",
    "TradeRecord",
    "TransientError",
    "compute_metrics",
    "config_problems",
    "guard_submit",
    "guarded",
    "load_config",
    "market_order_reader",
    "normalize_symbol",
    "resolve_symbol",
]


class _Package(ModuleType):
    """This package's module type: a public name is never shadowed by a submodule.

    ``guarded`` is both a public function and the submodule defining it.
    Importing ``nija_broker.guarded`` (runtime.py does) makes the import system
    set the submodule as the package's ``guarded`` attribute; the eager imports
    this package used to make overwrote it with the function right away. The
    submodule stays reachable in ``sys.modules`` and by ``from nija_broker.guarded
    import ...``.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and isinstance(value, ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


# Hidden from mypy, which would otherwise type every misspelt attribute as this
# function's return type instead of reporting it.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        try:
            submodule = _EXPORTS[name]
        except KeyError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(import_module(f".{submodule}", __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
