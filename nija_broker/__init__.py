"""nija_broker: per-account order state, performance and a pre-trade guard for the NIJA bot.

The public names are re-exported here; everything else is internal.

Each name is imported from its submodule on first access (PEP 562), so that
``import nija_broker.compat`` -- which the live bot does inside its own process --
loads the trackers and the store, and not the runtime, aiohttp or ccxt.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real imports, for mypy and IDEs; at run time see __getattr__
    from nija_broker.core.breakers import Breakers
    from nija_broker.core.clock import Clock, FakeClock, SystemClock
    from nija_broker.core.errors import (
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
    from nija_broker.core.health import AccountHealth, AccountLive, SyncState
    from nija_broker.core.intent import Allowed, Blocked, Decision, OrderIntent, Reason, Reservation
    from nija_broker.core.ledger import Ledger
    from nija_broker.core.models import (
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
    from nija_broker.core.orders import OrderTracker, OrderTrackerRegistry
    from nija_broker.core.performance import (
        PerformanceRegistry,
        PerformanceTracker,
        compute_metrics,
    )
    from nija_broker.core.settings import GuardSettings, ReconcilerSettings
    from nija_broker.core.symbols import normalize_symbol, resolve_symbol
    from nija_broker.core.tiers import TierPolicy, TierTable, TierTracker
    from nija_broker.guard.guard import Guard, GuardConflict
    from nija_broker.guard.guarded import (
        GuardedExchange,
        guard_submit,
        guarded,
        market_order_reader,
    )
    from nija_broker.service.broker_thread import BrokerThread
    from nija_broker.service.config import (
        AccountConfig,
        Config,
        Problem,
        config_problems,
        load_config,
    )
    from nija_broker.service.runtime import Broker
    from nija_broker.state.book import AccountBook, BookSettings
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store, StoreLock, StoreLocked
    from nija_broker.state.store_async import AsyncStore
    from nija_broker.sync.reconciler import Reconciler

    from .client import GuardClient

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS: dict[str, str] = {
    "AccountBook": "state.book",
    "AccountConfig": "service.config",
    "AccountFatal": "core.errors",
    "AccountHealth": "core.health",
    "AccountLive": "core.health",
    "AccountMetrics": "core.models",
    "Allowed": "core.intent",
    "AsyncStore": "state.store_async",
    "AuthenticationFailed": "core.errors",
    "Balance": "core.models",
    "Blocked": "core.intent",
    "BookSettings": "state.book",
    "Books": "state.books",
    "Breakers": "core.breakers",
    "Broker": "service.runtime",
    "BrokerThread": "service.broker_thread",
    "Clock": "core.clock",
    "Config": "service.config",
    "ConfigError": "core.errors",
    "Decision": "core.intent",
    "EntryBlocked": "core.errors",
    "EquityPoint": "core.models",
    "ExchangeError": "core.errors",
    "FakeClock": "core.clock",
    "Fill": "core.models",
    "Guard": "guard.guard",
    "GuardClient": "client",
    "GuardConflict": "guard.guard",
    "GuardSettings": "core.settings",
    "GuardedExchange": "guard.guarded",
    "IllegalTransition": "core.errors",
    "InsufficientFunds": "core.errors",
    "InvalidOrder": "core.errors",
    "Ledger": "core.ledger",
    "Market": "core.models",
    "NijaBrokerError": "core.errors",
    "Order": "core.models",
    "OrderError": "core.errors",
    "OrderIntent": "core.intent",
    "OrderNotFound": "core.errors",
    "OrderRole": "core.models",
    "OrderStatus": "core.models",
    "OrderTracker": "core.orders",
    "OrderTrackerRegistry": "core.orders",
    "OrderType": "core.models",
    "PerformanceRegistry": "core.performance",
    "PerformanceTracker": "core.performance",
    "PermissionDenied": "core.errors",
    "Position": "core.models",
    "Problem": "service.config",
    "RateLimited": "core.errors",
    "Reason": "core.intent",
    "Reconciler": "sync.reconciler",
    "ReconcilerSettings": "core.settings",
    "Reservation": "core.intent",
    "Side": "core.models",
    "StateError": "core.errors",
    "Store": "state.store",
    "StoreLock": "state.store",
    "StoreLocked": "state.store",
    "SyncState": "core.health",
    "SystemClock": "core.clock",
    "Ticker": "core.models",
    "TierPolicy": "core.tiers",
    "TierTable": "core.tiers",
    "TierTracker": "core.tiers",
    "TradeRecord": "core.models",
    "TransientError": "core.errors",
    "compute_metrics": "core.performance",
    "config_problems": "service.config",
    "guard_submit": "guard.guarded",
    "guarded": "guard.guarded",
    "load_config": "service.config",
    "market_order_reader": "guard.guarded",
    "normalize_symbol": "core.symbols",
    "resolve_symbol": "core.symbols",
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
