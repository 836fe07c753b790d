"""nija_broker: per-account order state, performance and a pre-trade guard for the NIJA bot.

The public names are re-exported here; everything else is internal.
"""

from __future__ import annotations

from .book import AccountBook, Books, BookSettings
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
from .health import AccountHealth, AccountLive, SyncState
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
    "AsyncStore",
    "AuthenticationFailed",
    "Balance",
    "BookSettings",
    "Books",
    "Clock",
    "Config",
    "ConfigError",
    "EntryBlocked",
    "EquityPoint",
    "ExchangeError",
    "FakeClock",
    "Fill",
    "IllegalTransition",
    "InsufficientFunds",
    "InvalidOrder",
    "Ledger",
    "Market",
    "NijaBrokerError",
    "Order",
    "OrderError",
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
    "load_config",
    "normalize_symbol",
]
