"""One account's trades, fills, orders or equity curve as CSV or JSON, for a spreadsheet or taxes.

What ``nija-broker export`` writes and the page's downloads
(``GET /v1/accounts/{id}/trades.csv`` and the like) serve: the same rows, from the
store (the whole history, not only what the running books keep in memory). A CSV has
one header row of the record's field names, in the model's order, then one row per
record, oldest first; times are
ISO-8601 UTC; a list (a trade's unvalued fees) is joined with ``"; "``; an unknown
figure is an empty cell, never 0.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel

from nija_broker.core.errors import StateError
from nija_broker.core.models import EquityPoint, Fill, Order, TradeRecord
from nija_broker.state.books import Books

__all__ = ["FORMATS", "WHAT", "ExportFormat", "ExportWhat", "export_rows", "render"]

ExportWhat = Literal["trades", "fills", "orders", "equity"]
ExportFormat = Literal["csv", "json"]
WHAT: tuple[str, ...] = get_args(ExportWhat)
FORMATS: tuple[str, ...] = get_args(ExportFormat)

_MODELS: dict[str, type[BaseModel]] = {
    "trades": TradeRecord,
    "fills": Fill,
    "orders": Order,
    "equity": EquityPoint,
}


def export_rows(books: Books, account_id: str, what: ExportWhat) -> list[BaseModel]:
    """The account's records of one kind from the store, oldest first. On the state's owner."""
    store = books.store
    if store is None:
        raise StateError("no store: exports read the store, which keeps the whole history")
    rows: Sequence[BaseModel]
    if what == "trades":
        rows = store.trades(account_id)  # booking order
    elif what == "fills":
        rows = store.fills(account_id)
    elif what == "orders":
        orders = sorted(store.orders(account_id), key=_order_key)
        rows = orders
    else:
        rows = store.equity_points(account_id)
    return list(rows)


def _order_key(order: Order) -> tuple[datetime, str]:
    return order.created_at, order.id


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "; ".join(_cell(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(what: ExportWhat, rows: Sequence[BaseModel], fmt: ExportFormat) -> str:
    """The rows as CSV (header first) or as a JSON array of objects."""
    dumped = [row.model_dump(mode="json") for row in rows]
    if fmt == "json":
        return json.dumps(dumped, indent=2) + "\n"
    columns = list(_MODELS[what].model_fields)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180, what spreadsheets expect
    writer.writerow(columns)
    for row in dumped:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return out.getvalue()
