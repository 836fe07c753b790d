"""Streams end to end: the sidecar books what the venue's websocket says; the poll is the net.

Real ccxt.pro against the emulator over loopback, Binance's WebSocket API user data
stream and Kraken's private feeds, with the configuration a trader writes (streams
are on by default). The poll interval is an hour here: whatever is booked within the
test's wait was booked from the stream (or from the one full poll a stream that
comes up asks for, which the tests wait out first).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import (
    EmulatorServer,
    KrakenEmulatorServer,
    binance_ccxt_config,
    kraken_ccxt_config,
)
from adapters.emulator._kraken_names import order_txid
from adapters.sim import SimEngine
from nija_broker.core.clock import SystemClock
from nija_broker.core.models import Market, OrderStatus, OrderType, Side
from nija_broker.service.config import parse_config
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

pytestmark = pytest.mark.integration

ALICE = "USER:alice"
HOUR = 3600.0
SLOW_POLL = ReconcilerSettings(
    poll_interval_s=HOUR,
    balance_interval_s=HOUR,
    full_listing_interval_s=HOUR,
    visibility_window_s=0.0,
    call_timeout_s=5.0,
    stream_poll_interval_s=HOUR,
    stream_settle_s=0.2,
    stream_backoff_initial_s=0.2,
    stream_backoff_max_s=1.0,
)


def _market(quote: str) -> Market:
    return Market(
        symbol=f"BTC/{quote}",
        base="BTC",
        quote=quote,
        amount_step=0.00001,
        price_step=0.01,
        min_amount=0.00001,
        min_notional=5.0,
    )


class Venue:
    """One dialect's emulator, its account and how its ids read on the wire."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.quote = "USD" if dialect == "kraken" else "USDT"
        self.symbol = f"BTC/{self.quote}"
        self.engine = SimEngine(seed=7, clock=SystemClock())
        self.engine.add_market(_market(self.quote), 50_000.0, volatility=0.0)
        self.engine.open_account(ALICE, {self.quote: 400.0})
        secret = (
            base64.b64encode(b"alice-kraken-secret-0123456789ab").decode()
            if dialect == "kraken"
            else "alice-secret-01"
        )
        self.keys = {ALICE: ("alice-key-01", secret)}
        self.server: Any = None

    def wire_id(self, engine_id: str) -> str:
        return order_txid(engine_id) if self.dialect == "kraken" else engine_id

    def config(self, tmp_path: Path, **account: Any) -> Any:
        make = kraken_ccxt_config if self.dialect == "kraken" else binance_ccxt_config
        return parse_config(
            {
                "store": {"path": str(tmp_path / "broker.sqlite3")},
                "api": {"host": "127.0.0.1", "port": 0},
                "accounts": [
                    {
                        "id": ALICE,
                        "exchange": self.dialect,
                        "api_key_env": "K",
                        "secret_env": "S",
                        "quote_currency": self.quote,
                        "ccxt": make(self.server.url),
                        **account,
                    }
                ],
            }
        )

    @property
    def env(self) -> dict[str, str]:
        return {"K": self.keys[ALICE][0], "S": self.keys[ALICE][1]}

    def buy(self, price: float, amount: float = 0.001, type_: OrderType = OrderType.LIMIT) -> Any:
        return self.engine.place_order(
            ALICE,
            OrderRequest(
                symbol=self.symbol,
                side=Side.BUY,
                type=type_,
                amount=amount,
                price=price if type_ is OrderType.LIMIT else None,
            ),
        )


@pytest_asyncio.fixture(params=["binance", "kraken"])
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[Venue]:
    venue = Venue(request.param)
    server_cls = KrakenEmulatorServer if venue.dialect == "kraken" else EmulatorServer
    async with server_cls(venue.engine, venue.keys) as server:
        venue.server = server
        yield venue


async def _until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling state another task owns
            await asyncio.sleep(0.02)


def _stream_state(broker: Broker) -> str | None:
    stream = broker.live[ALICE].stream
    return stream.state if stream is not None else None


async def _streaming(broker: Broker) -> None:
    """The stream is up and the one full poll it asked for has run."""
    await _until(lambda: _stream_state(broker) == "up")
    sync = broker.reconciler._accounts[ALICE]  # type: ignore[union-attr]
    await _until(lambda: not sync.wake.is_set())
    async with sync.turn:  # the poll the stream asked for is over
        pass


@pytest.mark.asyncio
async def test_a_fill_is_booked_from_the_stream_once_and_the_poll_books_it_no_twice(
    venue: Venue, tmp_path: Path
) -> None:
    config = venue.config(tmp_path)
    async with Broker(config, environ=venue.env, reconciler_settings=SLOW_POLL) as broker:
        await _streaming(broker)
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        resting = venue.buy(49_000.0)
        order_id = venue.wire_id(resting.id)
        await _until(lambda: book.orders.get(order_id) is not None)
        venue.engine.set_price(venue.symbol, 48_500.0)  # it fills, at its limit
        await _until(
            lambda: book.orders.get(order_id).status is OrderStatus.FILLED  # type: ignore[union-attr]
        )
        await _until(lambda: bool(book.ledger.positions()))
        # A full poll now finds the same fill: booked once.
        await broker.reconciler.sync_once(ALICE)  # type: ignore[union-attr]
        assert broker.store is not None
        fills = [f for f in broker.store.fills(ALICE) if f.order_id == order_id]
        assert len(fills) == 1
        assert fills[0].amount == pytest.approx(0.001)
        assert fills[0].fee > 0
        (position,) = book.ledger.positions()
        assert position.quantity == pytest.approx(0.001)
        assert broker.api is not None
        url = f"{broker.api.url}/healthz"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            health = await response.json()
        stream = health["accounts"][ALICE]["stream"]
        assert stream["state"] == "up"
        assert stream["last_message"] is not None


@pytest.mark.asyncio
async def test_an_external_market_buy_is_known_to_the_guard_from_the_stream(
    venue: Venue, tmp_path: Path
) -> None:
    config = venue.config(tmp_path)
    async with Broker(config, environ=venue.env, reconciler_settings=SLOW_POLL) as broker:
        await _streaming(broker)
        venue.buy(0.0, amount=0.002, type_=OrderType.MARKET)  # the bot, on its own
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        await _until(lambda: bool(book.ledger.positions()))
        guard = broker.guard
        assert guard is not None
        decision = guard.check(
            _intent(venue.symbol)  # a second BTC entry of a MICRO_CAP account: DCA
        )
        assert decision.rule == "dca"  # type: ignore[union-attr]


def _intent(symbol: str) -> Any:
    from nija_broker.core.intent import OrderIntent

    return OrderIntent(account_id=ALICE, symbol=symbol, side="buy", size_usd=20.0)


@pytest.mark.asyncio
async def test_a_dropped_stream_turns_polling_to_full_rate_and_reconnects(
    venue: Venue, tmp_path: Path
) -> None:
    config = venue.config(tmp_path, poll_interval_s=2.0)
    settings = dataclasses.replace(SLOW_POLL, poll_interval_by_account={ALICE: 2.0})
    async with Broker(config, environ=venue.env, reconciler_settings=settings) as broker:
        await _streaming(broker)
        sync = broker.reconciler._accounts[ALICE]  # type: ignore[union-attr]
        assert sync.interval_s() == HOUR
        await venue.server.close_streams()  # the venue ends every stream
        await _until(lambda: _stream_state(broker) in ("down", "connecting"))
        assert sync.interval_s() == 2.0
        # It subscribes again; what happened meanwhile is found by one full poll.
        resting = venue.buy(40_000.0)
        order_id = venue.wire_id(resting.id)
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        await _until(lambda: _stream_state(broker) == "up")
        stream = broker.live[ALICE].stream
        assert stream is not None
        assert stream.reconnects >= 1
        await _until(lambda: book.orders.get(order_id) is not None)
        assert sync.interval_s() == HOUR


@pytest.mark.asyncio
async def test_with_stream_false_the_account_polls_only(venue: Venue, tmp_path: Path) -> None:
    config = venue.config(tmp_path, stream=False)
    async with Broker(config, environ=venue.env, reconciler_settings=SLOW_POLL) as broker:
        assert broker.live[ALICE].stream is None
        sync = broker.reconciler._accounts[ALICE]  # type: ignore[union-attr]
        assert sync.interval_s() == HOUR
        assert not sync.stream_up
