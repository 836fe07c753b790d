"""The ledger of one account: fills booked into average-cost spot positions.

Spot and long-only: a BUY fill grows the position of (account, symbol) at a
weighted average price, a SELL fill reduces it and yields one
:class:`TradeRecord` for the reduced quantity. Fees are kept out of
``avg_price``; the fees paid to build a position travel with it
(``entry_fees``) and are released pro rata into the trades that close it.

A fill counts once (DESIGN invariant 3): booking is idempotent by
:attr:`Fill.key`, so replays, restarts and duplicate reports change nothing.
A ledger backed by the store (:class:`StoredKeys`) holds only the recent keys
and asks the store about older ones, so its memory does not grow with the age
of the account (see :class:`Ledger`).

Money state is never guessed. A SELL larger than the held position sells
coins whose cost the ledger does not know (bought before tracking began, or
elsewhere); the excess is reported as ``unmatched_amount`` and no trade is
invented for it.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from nija_broker.core.errors import StateError
from nija_broker.core.models import Fill, Position, Side, TradeRecord
from nija_broker.core.symbols import normalize_symbol

__all__ = [
    "DUST_REL",
    "BookResult",
    "Ledger",
    "StoredKeys",
    "apply_fill",
    "fill_sort_key",
    "replay",
]

# A reduction that leaves less than this fraction of the quantities involved is
# a full close: 0.3 - 0.1 - 0.2 must not leave a 2.8e-17 phantom position.
DUST_REL = 1e-12

# A trade re-reported by the exchange carries the time it was first reported with;
# this much slack covers a venue restating it (rounding, a corrected feed) without
# the memory's answer being trusted near the edge of what it holds.
RESTATED_TIME_S = 3_600.0


@dataclass(frozen=True, slots=True)
class BookResult:
    """What booking one fill did.

    ``position`` is the position after the fill (``None`` when flat).
    ``unmatched_amount`` is the part of a SELL beyond the held position, for
    which no trade exists because its cost is unknown.
    """

    fill: Fill
    duplicate: bool
    trades: tuple[TradeRecord, ...]
    position: Position | None
    unmatched_amount: float


def apply_fill(
    position: Position | None, fill: Fill
) -> tuple[Position | None, tuple[TradeRecord, ...], float]:
    """Pure: the position after ``fill``, the trades it closed and the unmatched SELL amount.

    ``position`` must be of the fill's account and symbol (or ``None`` when flat).
    """
    if fill.side is Side.BUY:
        return _buy(position, fill), (), 0.0
    return _sell(position, fill)


def _unvalued(fill: Fill) -> tuple[str, ...]:
    return () if fill.fee_valued else (fill.fee_text,)


def _buy(position: Position | None, fill: Fill) -> Position:
    # A fee taken in the base currency (Binance without BNB) arrives as less base:
    # the account holds amount - fee, bought at the fill's price; the fee's value
    # (fill.fee) is an entry fee like any other, so cash paid = cost basis + fees.
    received = fill.amount - fill.base_fee
    if received <= 0:
        raise StateError(
            f"fill {fill.key}: a fee of {fill.fee_text} leaves nothing of the "
            f"{fill.amount!r} bought"
        )
    if position is None:
        return Position(
            account_id=fill.account_id,
            symbol=fill.symbol,
            quantity=received,
            avg_price=fill.price,
            entry_fees=fill.fee,
            opened_at=fill.timestamp,
            updated_at=fill.timestamp,
            risk_usd=fill.risk_usd,
            unvalued_fees=_unvalued(fill),
        )
    quantity = position.quantity + received
    avg_price = (position.cost_basis + received * fill.price) / quantity
    risk_usd = position.risk_usd
    if fill.risk_usd is not None:
        risk_usd = (risk_usd or 0.0) + fill.risk_usd
    return Position(
        account_id=position.account_id,
        symbol=position.symbol,
        quantity=quantity,
        avg_price=avg_price,
        entry_fees=position.entry_fees + fill.fee,
        # A late-reported earlier buy means the position existed since then.
        opened_at=min(position.opened_at, fill.timestamp),
        updated_at=max(position.updated_at, fill.timestamp),
        risk_usd=risk_usd,
        unvalued_fees=(*position.unvalued_fees, *_unvalued(fill)),
    )


def _sell(
    position: Position | None, fill: Fill
) -> tuple[Position | None, tuple[TradeRecord, ...], float]:
    # A fee taken in the base currency leaves the account on top of what was sold.
    given = fill.amount + fill.base_fee
    if position is None or position.quantity <= 0:
        return None, (), given
    held = position.quantity
    leftover = held - given
    dust = DUST_REL * max(held, given)
    closes = leftover <= dust
    matched = held if closes else given
    unmatched = given - held if leftover < -dust else 0.0

    # Exact shares on a full close, so the released fees and risk are the
    # position's own numbers, not a product that differs in the last bit.
    share_of_position = 1.0 if closes else matched / held
    share_of_fill = 1.0 if unmatched == 0.0 else matched / given
    entry_fees = position.entry_fees * share_of_position
    risk_usd = position.risk_usd * share_of_position if position.risk_usd is not None else None
    entry_price = position.avg_price
    trade = TradeRecord(
        trade_id=fill.key,
        account_id=fill.account_id,
        symbol=fill.symbol,
        side=Side.BUY,
        entry_price=entry_price,
        exit_price=fill.price,
        quantity=matched,
        size_usd=entry_price * matched,
        pnl=(fill.price - entry_price) * matched,
        fees=entry_fees + fill.fee * share_of_fill,
        # A sell reported with a timestamp before the buys it closes (clock skew
        # between reports) must not make an impossible record.
        entry_time=min(position.opened_at, fill.timestamp),
        exit_time=fill.timestamp,
        risk_usd=risk_usd if risk_usd is not None and risk_usd > 0 else None,
        unvalued_fees=(*position.unvalued_fees, *_unvalued(fill)),
        exit_role=fill.role,
    )
    if closes:
        return None, (trade,), unmatched
    remaining_risk = None
    if position.risk_usd is not None and risk_usd is not None:
        remaining_risk = position.risk_usd - risk_usd
    after = Position(
        account_id=position.account_id,
        symbol=position.symbol,
        quantity=leftover,
        avg_price=position.avg_price,
        entry_fees=max(position.entry_fees - entry_fees, 0.0),
        opened_at=position.opened_at,
        updated_at=max(position.updated_at, fill.timestamp),
        risk_usd=remaining_risk if remaining_risk is not None and remaining_risk > 0 else None,
        unvalued_fees=position.unvalued_fees,
    )
    return after, (trade,), 0.0


def fill_sort_key(fill: Fill) -> tuple[object, ...]:
    """Exchange time order: timestamp, then the trade id where it shows the sequence.

    Two executions of one account in the same millisecond keep the exchange's own
    sequence where its trade ids are numbers (Binance's increase). Where they are
    not (Kraken's ``TXXXXX-XXXXX-XXXXXX``), a buy goes before a sell: if the sell
    really came first it sold coins held before, and the position after both is
    the same; the other way round would book a sale of unknown cost and leave the
    bought coins as a position the exchange no longer holds.
    """
    trade_id = fill.trade_id or ""
    numeric = int(trade_id) if trade_id.isdigit() else -1
    return (fill.timestamp, numeric, fill.side is Side.SELL, trade_id, fill.key)


def replay(fills: Iterable[Fill]) -> tuple[Position | None, list[TradeRecord], float]:
    """Pure: one symbol's position and trades from all its fills, in exchange time order."""
    position: Position | None = None
    trades: list[TradeRecord] = []
    unmatched = 0.0
    for fill in sorted(fills, key=fill_sort_key):
        position, closed, extra = apply_fill(position, fill)
        trades.extend(closed)
        unmatched += extra
    return position, trades, unmatched


@dataclass(frozen=True, slots=True)
class StoredKeys:
    """Where a ledger asks about fill keys it does not hold: the store, whose
    ``UNIQUE (account_id, fill_key)`` holds every key ever booked.

    ``horizon``: every stored key of a fill stamped at or after it was given to the
    ledger. ``retention_s``: how long, in exchange time, a key stays in memory after
    its fill. The reconciler fetches an order's trades again while it follows the
    order, and a terminal order is followed for the book's ``retention_s`` after its
    last change: within that window duplicates are common (every fetch returns all
    of the order's trades) and are answered from memory; beyond it they are rare
    (the old trades of a long-open order) and cost one indexed read each.
    """

    booked: Callable[[str], bool]
    retention_s: float
    horizon: datetime


class Ledger:
    """Average-cost positions of one account, fed by its fills. Thread-safe.

    Restore it from the store with the open ``positions`` and the fill keys
    already booked (``seen_fill_keys``), so a fill replayed after a restart
    is recognised. Without ``stored`` it must be given every key and keeps every
    key it books. With ``stored`` it is given the keys of fills since
    ``stored.horizon`` (a mapping key -> fill time), forgets keys as exchange
    time passes beyond ``stored.retention_s``, and asks ``stored.booked`` about
    a key it does not hold when that fill is older than what memory covers, or
    keyed by its order's cumulative amount (such a fill is stamped when it is
    derived, not when it executed, so its time says nothing about its age).
    """

    def __init__(
        self,
        account_id: str,
        positions: Iterable[Position] = (),
        seen_fill_keys: Iterable[str] | Mapping[str, datetime] = (),
        *,
        stored: StoredKeys | None = None,
    ) -> None:
        if not account_id.strip():
            raise ValueError(f"account_id must not be empty, got {account_id!r}")
        self._account_id = account_id
        self._lock = threading.Lock()
        self._positions: dict[str, Position] = {}
        self._stored = stored
        self._seen: dict[str, datetime | None] = {}
        self._by_time: list[tuple[datetime, str]] = []
        self._horizon = stored.horizon if stored is not None else None
        self._latest: datetime | None = None
        if isinstance(seen_fill_keys, Mapping):
            for key, timestamp in seen_fill_keys.items():
                self._remember(key, timestamp)
        else:
            self._seen.update(dict.fromkeys(seen_fill_keys))
        for position in positions:
            if position.account_id != account_id:
                raise StateError(
                    f"position {position.symbol} of account {position.account_id!r} "
                    f"given to the ledger of {account_id!r}"
                )
            if position.symbol in self._positions:
                raise StateError(f"two positions for {position.symbol} on account {account_id!r}")
            if position.quantity > 0:
                self._positions[position.symbol] = position

    @property
    def account_id(self) -> str:
        return self._account_id

    def _remember(self, key: str, timestamp: datetime) -> None:
        """Hold ``key``; with a store behind, forget keys beyond the retention (lock held)."""
        self._seen[key] = timestamp
        if self._stored is None:
            return
        heapq.heappush(self._by_time, (timestamp, key))
        if self._latest is None or timestamp > self._latest:
            self._latest = timestamp
        cut = self._latest - timedelta(seconds=self._stored.retention_s)
        assert self._horizon is not None
        if cut <= self._horizon:
            return
        self._horizon = cut
        while self._by_time and self._by_time[0][0] < cut:
            stamp, old = heapq.heappop(self._by_time)
            if self._seen.get(old) == stamp:  # not remembered again since, at a later time
                del self._seen[old]

    def _known(self, fill: Fill) -> bool:
        """Whether ``fill`` was booked (lock held): memory, then the store where memory
        cannot say."""
        if fill.key in self._seen:
            return True
        if self._stored is None or self._horizon is None:
            return False
        recent = self._horizon + timedelta(seconds=RESTATED_TIME_S)
        if fill.trade_id is not None and fill.timestamp >= recent:
            return False  # every stored key of a fill this recent is held
        if self._stored.booked(fill.key):
            self._remember(fill.key, fill.timestamp)
            return True
        return False

    def book(self, fill: Fill) -> BookResult:
        """Book ``fill`` once. A replay returns ``duplicate=True`` and changes nothing."""
        if fill.account_id != self._account_id:
            raise StateError(
                f"fill {fill.key} of account {fill.account_id!r} "
                f"booked on the ledger of {self._account_id!r}"
            )
        with self._lock:
            current = self._positions.get(fill.symbol)
            if self._known(fill):
                return BookResult(fill, True, (), current, 0.0)
            # Computed before anything is stored: a failure leaves the ledger as it was.
            after, trades, unmatched = apply_fill(current, fill)
            self._remember(fill.key, fill.timestamp)
            if after is None:
                self._positions.pop(fill.symbol, None)
            else:
                self._positions[fill.symbol] = after
            return BookResult(fill, False, trades, after, unmatched)

    def position(self, symbol: str) -> Position | None:
        """The open position in ``symbol`` (``BTC/USD`` or ``BTC-USD``), ``None`` when flat."""
        key = normalize_symbol(symbol)
        with self._lock:
            return self._positions.get(key)

    def positions(self) -> list[Position]:
        """Open (non-zero) positions, sorted by symbol."""
        with self._lock:
            return [self._positions[s] for s in sorted(self._positions)]

    def fill_keys(self) -> frozenset[str]:
        """Keys of the fills held in memory (all of them, for a ledger without a store)."""
        with self._lock:
            return frozenset(self._seen)

    def mark_seen(self, fills: Iterable[Fill]) -> None:
        """Remember fills as booked without booking them (executions already booked under
        another key: see :meth:`nija_broker.state.book.AccountBook.apply_changes`)."""
        with self._lock:
            for fill in fills:
                self._remember(fill.key, fill.timestamp)

    def is_booked(self, fill: Fill) -> bool:
        with self._lock:
            return self._known(fill)
