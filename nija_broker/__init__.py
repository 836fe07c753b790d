"""nija_broker: per-account order state, performance and a pre-trade guard for the NIJA bot.

The public names are re-exported here; everything else is internal.
"""

from __future__ import annotations

from .book import AccountBook, Books, BookSettings
from .client import GuardClient
from .clock import Clock, FakeClock, SystemClock
from .config import AccountConfig, Config, load_config
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
from .guard import Guard, GuardSettings
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
from .store import AsyncStore, Store
from .symbols import normalize_symbol
from .tiers import TierPolicy, TierTable, TierTracker

__version__ = "0.1.0"

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
    "RateLimited",
    "Reason",
    "Reconciler",
    "ReconcilerSettings",
    "Reservation",
    "Side",
    "StateError",
    "Store",
    "SyncState",
    "SystemClock",
    "Ticker",
    "TierPolicy",
    "TierTable",
    "TierTracker",
    "TradeRecord",
    "TransientError",
    "compute_metrics",
    "guard_submit",
    "guarded",
    "load_config",
    "market_order_reader",
    "normalize_symbol",
]
