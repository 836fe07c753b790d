"""The simulated exchange: an in-memory matching engine with ground truth and seeded faults.

:class:`SimEngine` is the exchange itself, shared by every account;
:class:`SimExchange` is one account's :class:`~nija_broker.core.exchange.Exchange` over it;
:class:`FaultInjector` makes its calls fail the ways real APIs do, reproducibly.
"""

from ._events import BalanceChanged, Deposit, EngineEvent, OrderChange, OrderChanged, Subscriber
from ._state import AccountTruth
from .engine import SimEngine
from .exchange import DEFAULT_CAPABILITIES, SimExchange
from .faults import (
    ALL_FAULTS,
    ALL_STREAM_FAULTS,
    LISTING_METHODS,
    FaultInjector,
    FaultKind,
    FaultPlan,
    StreamFaultInjector,
    StreamFaultKind,
    StreamFaultPlan,
)

__all__ = [
    "ALL_FAULTS",
    "ALL_STREAM_FAULTS",
    "DEFAULT_CAPABILITIES",
    "LISTING_METHODS",
    "AccountTruth",
    "BalanceChanged",
    "Deposit",
    "EngineEvent",
    "FaultInjector",
    "FaultKind",
    "FaultPlan",
    "OrderChange",
    "OrderChanged",
    "SimEngine",
    "SimExchange",
    "StreamFaultInjector",
    "StreamFaultKind",
    "StreamFaultPlan",
    "Subscriber",
]
