"""Impossible answers are refused: nothing booked, one attention event, the last good state kept.

Through the sidecar and real ccxt against the Binance emulator; what ccxt
parses from the wire is bent for one order (as a broken venue or a broken
library version would), then set right again, and a truthful cancel still
ends the order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer
from nija_broker.core.events import AttentionRequired, Event
from nija_broker.core.models import OrderStatus, OrderType, Side
from nija_broker.service.runtime import Broker

from .test_money_truth import ALICE, ENV, KEYS, _config, _engine

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(_engine(), KEYS) as running:
        yield running


def _bend(broker: Broker, order_id: str, change: Callable[[dict[str, Any]], None]) -> Any:
    """Make ccxt's parsed orders of ``order_id`` say what ``change`` makes them say.

    The bend stands for a venue whose answer changed: the adapter's listing memo,
    which parses only rows whose bytes changed, is emptied with it and after it."""
    exchange = broker.exchanges[ALICE]
    assert isinstance(exchange, CcxtExchange)
    raw = exchange._ex  # the ccxt instance
    original = raw.parse_order
    exchange._listed.clear()

    def parse_order(order: Any, market: Any = None) -> Any:
        parsed = original(order, market)
        if str(parsed.get("id")) == order_id:
            change(parsed)
        return parsed

    raw.parse_order = parse_order

    def restore() -> None:
        raw.parse_order = original
        exchange._listed.clear()

    return restore


async def _cycles(broker: Broker, n: int = 4) -> None:
    assert broker.reconciler is not None
    for _ in range(n):
        await broker.reconciler.sync_once(ALICE)


def _attention(events: list[Event], order_id: str) -> list[AttentionRequired]:
    return [e for e in events if isinstance(e, AttentionRequired) and e.order_id == order_id]


@pytest.mark.parametrize(
    ("field", "bent"),
    [
        ("filled", lambda o: o.update(filled=o["amount"] * 2, status="closed")),
        ("average", lambda o: o.update(filled=o["amount"] / 2, average=o["price"] * 10)),
        ("filled", lambda o: o.update(filled=-0.01)),
        ("amount", lambda o: o.update(amount=float("nan"))),
    ],
    ids=["filled-above-amount", "buy-filled-above-limit", "negative-filled", "nan-amount"],
)
async def test_an_impossible_report_books_nothing_and_a_later_cancel_still_ends_the_order(
    server: EmulatorServer, tmp_path: Path, field: str, bent: Callable[[dict[str, Any]], None]
) -> None:
    engine = server.engine
    # The order is placed on a symbol the account had no order on: only a listing of every
    # symbol finds it, here on every cycle (a live Binance account waits 300 s for one).
    config = _config(server.url, tmp_path, poll_interval_s=60.0, full_listing_interval_s=0.001)
    async with Broker(config, environ=ENV) as broker:
        assert broker.reconciler is not None
        assert broker.store is not None
        resting = engine.place_order(
            ALICE,
            OrderRequest(
                symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.001, price=45_000.0
            ),
        )
        await _cycles(broker, 1)
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        good = book.orders.get(resting.id)
        assert good is not None
        assert good.status is OrderStatus.OPEN

        events = broker.reconciler.subscribe()
        restore = _bend(broker, resting.id, bent)
        await _cycles(broker)
        seen = events.drain()
        alerts = _attention(seen, resting.id)
        assert len(alerts) == 1, seen  # said once, not every cycle
        assert field in alerts[0].reason
        assert book.orders.get(resting.id) == good  # its last good state
        assert broker.store.fills(ALICE) == []
        assert book.positions() == []

        restore()
        engine.cancel_order(ALICE, resting.id)
        await _cycles(broker)
        ended = book.orders.get(resting.id)
        assert ended is not None
        assert ended.status is OrderStatus.CANCELLED
        assert broker.store.fills(ALICE) == []
