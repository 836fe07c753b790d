"""``nija-broker import-seed-state DIR``: the seed trackers' JSON state, into the store once.

The seed kept its state in ``DIR`` (its ``data_dir``, ``./data`` by default):

- ``account_orders_state.json``: ``orders_by_account`` (``{account: [order]}``, each
  order the seed's ``OrderInfo.to_dict()``), ``reserved_capital_by_account``,
  ``cleanup_stats`` and a ``timestamp``;
- ``performance_<account>.json``, one per account: ``account_id``,
  ``trade_history`` (``TradeRecord.to_dict()`` each), ``metrics``,
  ``balance_history`` (``[{"timestamp", "balance"}]``) and a ``timestamp``.

Times are the seed's naive ``datetime.now()``: local time. Everything is read
and checked before anything is written; one bad record refuses the whole
import, every problem named. What is taken: orders (as they were, open or
finished; no fills are booked from them, since the seed never knew what filled
at which price), trades (once by trade id), and balance points newer than the
account's last stored one. Running it again takes nothing twice. Not taken:
``reserved_capital_by_account`` (it is the sum of the open orders'
``reserved_capital``; a seed total that drifted from its orders is reported),
``metrics`` (recomputed from trades and balances) and ``cleanup_stats``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nija_broker.compat import STORE_FILE
from nija_broker.compat.records import OrderInfo, TradeRecord, aware, check_reserve
from nija_broker.core.models import EquityPoint, Order
from nija_broker.core.models import TradeRecord as Trade
from nija_broker.state.store import Store, StoreBatch

ORDERS_FILE = "account_orders_state.json"
PERFORMANCE_GLOB = "performance_*.json"


class SeedStateError(ValueError):
    """The seed's files cannot be imported; ``problems`` names every bad record."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class AccountImport:
    """What one account's import took (``*_new``) and found already stored (``*_kept``)."""

    account_id: str
    open_orders_new: int = 0
    finished_orders_new: int = 0
    orders_kept: int = 0
    trades_new: int = 0
    trades_kept: int = 0
    balances_new: int = 0
    balances_kept: int = 0

    def line(self) -> str:
        return (
            f"{self.account_id}: orders {self.open_orders_new + self.finished_orders_new} "
            f"taken ({self.open_orders_new} open, {self.finished_orders_new} finished), "
            f"{self.orders_kept} already stored; trades {self.trades_new} taken, "
            f"{self.trades_kept} already stored; balance points {self.balances_new} taken, "
            f"{self.balances_kept} already stored"
        )


@dataclass
class SeedImport:
    """The report of one import: per account, plus notes on what was not taken."""

    source: Path
    store: Path
    accounts: dict[str, AccountImport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def account(self, account_id: str) -> AccountImport:
        return self.accounts.setdefault(account_id, AccountImport(account_id))

    @property
    def taken(self) -> int:
        return sum(
            a.open_orders_new + a.finished_orders_new + a.trades_new + a.balances_new
            for a in self.accounts.values()
        )


@dataclass
class _Parsed:
    orders: dict[str, list[Order]] = field(default_factory=dict)
    trades: dict[str, list[Trade]] = field(default_factory=dict)
    balances: dict[str, list[EquityPoint]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"a time must be ISO-8601 text (value: {value!r})")
    return aware(datetime.fromisoformat(value))


def _optional_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _load(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: not readable as JSON: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name}: must hold a JSON object, not {type(data).__name__}")
        return None
    return data


# The seed's OrderInfo fields without a default, in its order.
_ORDER_FIELDS = (
    "order_id",
    "account_id",
    "symbol",
    "side",
    "price",
    "quantity",
    "size_usd",
    "status",
    "created_at",
)


def _record(raw: Any, account_id: str) -> dict[str, Any]:
    """A record of ``account_id``'s state: an object that says it is that account's."""
    if not isinstance(raw, dict):
        raise ValueError(f"must be an object, not {type(raw).__name__}")
    if raw.get("account_id") != account_id:
        raise ValueError(
            f"account_id {raw.get('account_id')!r} is not the account it is "
            f"filed under ({account_id!r})"
        )
    return raw


def _order(raw: Any, account_id: str) -> Order:
    raw = _record(raw, account_id)
    missing = [f for f in _ORDER_FIELDS if f not in raw]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    info = OrderInfo(
        **{f: raw[f] for f in _ORDER_FIELDS[:-1]},
        created_at=_time(raw["created_at"]),
        filled_at=_optional_time(raw.get("filled_at")),
        cancelled_at=_optional_time(raw.get("cancelled_at")),
        order_type=raw.get("order_type", "market"),
        parent_position_id=raw.get("parent_position_id"),
        reserved_capital=check_reserve(str(raw["order_id"]), raw.get("reserved_capital", 0.0)),
    )
    return info.to_order()


def _parse_orders(path: Path, parsed: _Parsed) -> None:
    data = _load(path, parsed.problems)
    if data is None:
        return
    by_account = data.get("orders_by_account", {})
    if not isinstance(by_account, dict):
        parsed.problems.append(f"{path.name}: orders_by_account must be an object")
        return
    for account_id, rows in by_account.items():
        if not isinstance(rows, list):
            parsed.problems.append(f"{path.name}: orders_by_account[{account_id!r}] must be a list")
            continue
        orders = parsed.orders.setdefault(account_id, [])
        for i, raw in enumerate(rows):
            where = f"{path.name}: orders_by_account[{account_id!r}][{i}]"
            try:
                orders.append(_order(raw, account_id))
            except ValueError as exc:
                parsed.problems.append(f"{where}: {exc}")
    totals = data.get("reserved_capital_by_account", {})
    if isinstance(totals, dict):
        for account_id, total in sorted(totals.items()):
            declared = math.fsum(
                o.declared_reserve or 0.0
                for o in parsed.orders.get(account_id, [])
                if not o.is_terminal
            )
            if isinstance(total, int | float) and not math.isclose(total, declared, abs_tol=0.005):
                parsed.notes.append(
                    f"the seed's reserved_capital_by_account[{account_id!r}] was {total:.2f} "
                    f"but its open orders declare {declared:.2f}: held capital is the "
                    "orders' figure"
                )
    if data.get("cleanup_stats"):
        parsed.notes.append("not taken: cleanup_stats (counters of the seed's own process)")


def _trade(raw: Any, account_id: str) -> Trade:
    raw = _record(raw, account_id)
    fields = {k: v for k, v in raw.items() if k not in ("entry_time", "exit_time")}
    try:
        record = TradeRecord(
            **fields, entry_time=_time(raw.get("entry_time")), exit_time=_time(raw.get("exit_time"))
        )
    except TypeError as exc:  # a missing or unknown key
        raise ValueError(str(exc).replace("TradeRecord.__init__() ", "")) from None
    return record.to_model()


def _parse_performance(path: Path, parsed: _Parsed) -> None:
    data = _load(path, parsed.problems)
    if data is None:
        return
    account_id = data.get("account_id")
    if not isinstance(account_id, str) or not account_id.strip():
        parsed.problems.append(
            f"{path.name}: account_id must be a non-empty string (value: {account_id!r})"
        )
        return
    # The seed's own loader kept the last record of a repeated trade id; so do we.
    trades: dict[str, Trade] = {}
    for i, raw in enumerate(data.get("trade_history", [])):
        try:
            model = _trade(raw, account_id)
        except ValueError as exc:
            parsed.problems.append(f"{path.name}: trade_history[{i}]: {exc}")
            continue
        trades[model.trade_id] = model
    parsed.trades.setdefault(account_id, []).extend(trades.values())
    points = parsed.balances.setdefault(account_id, [])
    for i, raw in enumerate(data.get("balance_history", [])):
        try:
            if not isinstance(raw, dict):
                raise ValueError(f"must be an object, not {type(raw).__name__}")
            points.append(
                EquityPoint(
                    account_id=account_id,
                    timestamp=_time(raw.get("timestamp")),
                    equity=raw.get("balance"),
                )
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            parsed.problems.append(f"{path.name}: balance_history[{i}]: {str(exc).splitlines()[0]}")
    if data.get("metrics"):
        parsed.notes.append(
            f"not taken: {path.name} metrics (recomputed from its trades and balances)"
        )


def read_seed_state(source: Path) -> _Parsed:
    """Parse and check every seed file in ``source``; nothing is written."""
    parsed = _Parsed()
    if not source.is_dir():
        parsed.problems.append(f"{source}: not a directory")
        return parsed
    orders_file = source / ORDERS_FILE
    performance_files = sorted(source.glob(PERFORMANCE_GLOB))
    if not orders_file.exists() and not performance_files:
        parsed.problems.append(
            f"{source}: no seed state here (neither {ORDERS_FILE} nor {PERFORMANCE_GLOB})"
        )
        return parsed
    if orders_file.exists():
        _parse_orders(orders_file, parsed)
    for path in performance_files:
        _parse_performance(path, parsed)
    return parsed


def import_seed_state(
    source: Path, store_path: Path | None = None, *, dry_run: bool = False
) -> SeedImport:
    """Import the seed's state in ``source`` into ``store_path`` (default: compat's store of
    that directory, ``source/nija_broker.sqlite3``). Raises :class:`SeedStateError` naming
    every bad record, before anything is written; ``dry_run`` writes nothing."""
    parsed = read_seed_state(source)
    if parsed.problems:
        raise SeedStateError(parsed.problems)
    target = store_path if store_path is not None else source / STORE_FILE
    report = SeedImport(source=source, store=target, notes=parsed.notes)
    accounts = sorted(set(parsed.orders) | set(parsed.trades) | set(parsed.balances))
    if dry_run and not target.exists():
        with Store(":memory:") as empty:  # nothing stored yet: everything would be taken
            for account_id in accounts:
                _import_account(empty, report.account(account_id), parsed, dry_run=True)
        return report
    # The writer lock: a running sidecar on this store refuses the import.
    with Store(target, exclusive=True) as store:
        for account_id in accounts:
            _import_account(store, report.account(account_id), parsed, dry_run=dry_run)
    return report


def _import_account(store: Store, line: AccountImport, parsed: _Parsed, *, dry_run: bool) -> None:
    account_id = line.account_id
    known_orders = {o.id for o in store.orders(account_id)}
    orders = [o for o in parsed.orders.get(account_id, []) if o.id not in known_orders]
    line.orders_kept = len(parsed.orders.get(account_id, [])) - len(orders)
    line.open_orders_new = sum(1 for o in orders if not o.is_terminal)
    line.finished_orders_new = len(orders) - line.open_orders_new
    known_trades = {t.trade_id for t in store.trades(account_id)}
    trades = [t for t in parsed.trades.get(account_id, []) if t.trade_id not in known_trades]
    line.trades_kept = len(parsed.trades.get(account_id, [])) - len(trades)
    last = max((p.timestamp for p in store.equity_points(account_id)), default=None)
    points = sorted(
        (p for p in parsed.balances.get(account_id, []) if last is None or p.timestamp > last),
        key=lambda p: p.timestamp,
    )
    line.balances_kept = len(parsed.balances.get(account_id, [])) - len(points)
    line.trades_new, line.balances_new = len(trades), len(points)
    if dry_run or not (orders or trades or points):
        return
    store.apply(
        StoreBatch(account_id=account_id, orders=orders, trades=trades, equity_points=points)
    )
