"""Weight, not calls: what the reconciler spends of a venue's rate limit, as the venue counts it.

Binance limits request weight per IP (6,000 a minute; ``openOrders`` is 6 with a
symbol and 80 without). The budget spends each request's documented weight, per IP
and per key; the emulator counts what each request would cost on Binance and answers
with Binance's ``X-MBX-USED-WEIGHT-1M``, so the client's count is checked against the
venue's. End to end through real ccxt on a virtual clock: an account with orders on
two symbols at a 5 s poll spends at most 250 a minute, so one IP carries 24 accounts,
and an order placed on a new symbol is still adopted within ``full_listing_interval_s``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest

from adapters.base import Capabilities, OrderRequest
from adapters.ccxt_adapter import CcxtExchange
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.emulator._binance_weights import request_weight
from adapters.profiles import BINANCE, BINANCE_WEIGHTS, KRAKEN
from adapters.ratelimit import AccountBudget, RateBudget
from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import FakeClock, MockClock, SystemClock
from nija_broker.core.health import AccountLive, RequestWeight, SyncState
from nija_broker.core.models import Market, OrderType, Side
from nija_broker.core.tiers import TierTable
from nija_broker.service import plan_report
from nija_broker.service.cli import main
from nija_broker.service.status import account_status, render_table
from nija_broker.state.books import Books
from nija_broker.sync.reconciler import Reconciler, ReconcilerSettings

ALICE = "USER:alice"
KEYS = {ALICE: ("alice-key-0001", "alice-secret-0001")}


def forget_budgets() -> None:
    """Binance's budgets are process-wide (one per IP, one per key): each test starts afresh."""
    for key in ("binance", f"binance:{ALICE}:per-key"):
        RateBudget.forget(key)


def _market(base: str) -> Market:
    return Market(
        symbol=f"{base}/USDT",
        base=base,
        quote="USDT",
        amount_step=0.0001,
        price_step=0.01,
        min_amount=0.0001,
        min_notional=5.0,
    )


PRICES = {"BTC": 50_000.0, "ETH": 3_000.0, "SOL": 150.0}


# ----------------------------------------------------------------------------- the tables


@pytest.mark.parametrize(
    ("cost_key", "count", "method", "path", "params"),
    [
        ("load_markets", 1, "GET", "/api/v3/exchangeInfo", {}),
        ("fetch_open_orders", 1, "GET", "/api/v3/openOrders", {}),
        ("fetch_open_orders_symbol", 1, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}),
        ("fetch_order", 1, "GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": "1"}),
        ("fetch_order_by_client_id", 1, "GET", "/api/v3/order", {"origClientOrderId": "x"}),
        ("fetch_closed_orders", 1, "GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"}),
        ("fetch_my_trades", 1, "GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}),
        ("fetch_order_trades", 1, "GET", "/api/v3/myTrades", {"symbol": "B", "orderId": "1"}),
        ("fetch_balance", 1, "GET", "/api/v3/account", {}),
        ("create_order", 1, "POST", "/api/v3/order", {"symbol": "BTCUSDT"}),
        ("cancel_order", 1, "DELETE", "/api/v3/order", {"symbol": "BTCUSDT"}),
        ("fetch_tickers", 2, "GET", "/api/v3/ticker/24hr", {"symbols": '["A","B"]'}),
        ("fetch_tickers", 21, "GET", "/api/v3/ticker/24hr", {"symbols": str([0] * 21)}),
        ("fetch_tickers", 101, "GET", "/api/v3/ticker/24hr", {"symbols": str([0] * 101)}),
    ],
)
def test_the_clients_weights_are_the_ones_the_venue_counts(
    cost_key: str, count: int, method: str, path: str, params: dict[str, str]
) -> None:
    assert BINANCE_WEIGHTS.weight(cost_key, count) == request_weight(method, path, params)


# ----------------------------------------------------------------------------- the budget


@pytest.mark.asyncio
async def test_weight_spent_counts_only_the_requests_inside_the_window_as_they_age_out() -> None:
    clock = FakeClock()
    budget = AccountBudget.for_account(BINANCE.rate, "binance", ALICE, clock=clock, mode="off")
    for _ in range(3):  # 6 each, 20 s apart: at 0, 20 and 40 s
        await budget.spend("fetch_open_orders_symbol")
        clock.advance(20.0)
    await budget.spend("fetch_open_orders")  # 80 at 60 s
    assert budget.weight_spent() == 6 + 6 + 80  # the one at 0 s is a minute old
    assert budget.weight_spent(30.0) == 6 + 80
    clock.advance(25.0)
    assert budget.weight_spent() == 6 + 80
    clock.advance(40.0)
    assert budget.weight_spent() == 0.0
    await budget.spend("fetch_open_orders_symbol")
    assert budget.weight_spent() == 6.0
    assert budget.spent_total == 6 * 4 + 80


@pytest.mark.asyncio
async def test_accounts_on_binance_share_one_budget_per_ip_and_each_its_own_order_limit() -> None:
    clock = FakeClock()
    for key in ("binance", f"binance:{ALICE}:per-key", "binance:USER:bob:per-key"):
        RateBudget.forget(key)
    try:
        alice = AccountBudget.for_account(BINANCE.rate, "binance", ALICE, clock=clock)
        bob = AccountBudget.for_account(BINANCE.rate, "binance", "USER:bob", clock=clock)
        assert alice.bucket is bob.bucket  # Binance limits per IP
        assert alice.key_bucket is not None
        assert alice.key_bucket is not bob.key_bucket  # orders are counted per account
        assert await alice.spend("fetch_open_orders") == 80.0
        assert await alice.spend("fetch_open_orders_symbol") == 6.0
        assert await bob.spend("create_order") == 1.0
        assert alice.bucket.acquired == 87.0
        assert (alice.key_bucket.acquired, bob.key_bucket.acquired) == (0.0, 1.0)  # type: ignore[union-attr]
        assert (alice.weight_spent(), bob.weight_spent()) == (86.0, 1.0)
        clock.advance(61.0)
        assert alice.weight_spent() == 0.0  # only the last minute
        assert alice.spent_total == 86.0
    finally:
        for key in ("binance", f"binance:{ALICE}:per-key", "binance:USER:bob:per-key"):
            RateBudget.forget(key)


@pytest.mark.asyncio
async def test_kraken_keeps_one_counter_per_api_key() -> None:
    clock = FakeClock()
    try:
        alice = AccountBudget.for_account(KRAKEN.rate, "kraken", ALICE, clock=clock)
        bob = AccountBudget.for_account(KRAKEN.rate, "kraken", "USER:bob", clock=clock)
        assert alice.bucket is not bob.bucket
        assert (alice.bucket.rate_per_s, alice.bucket.capacity) == (0.33, 15.0)
        assert alice.key_bucket is None
        assert await alice.spend("fetch_my_trades") == 2.0
    finally:
        for account_id in (ALICE, "USER:bob"):
            RateBudget.forget(f"kraken:{account_id}")


@pytest.mark.asyncio
async def test_a_local_exchange_with_the_budget_off_never_waits_but_still_counts() -> None:
    clock = FakeClock()
    budget = AccountBudget.for_account(BINANCE.rate, "binance", ALICE, clock=clock, mode="off")
    for _ in range(1_000):  # 80,000 weight: thirteen minutes of Binance's limit
        await budget.spend("fetch_open_orders")
    assert clock.monotonic() == 0.0
    assert budget.weight_spent() == 80_000.0
    with pytest.raises(ValueError, match="rate_budget"):
        AccountBudget.for_account(BINANCE.rate, "binance", ALICE, mode="none")


@pytest.mark.asyncio
async def test_a_full_budget_makes_the_next_request_wait_for_its_weight() -> None:
    clock = FakeClock()
    budget = AccountBudget(BINANCE.rate, RateBudget(90.0, capacity=600.0, clock=clock), clock=clock)
    for _ in range(7):
        await budget.spend("fetch_open_orders")  # 560 of 600
    await budget.spend("fetch_open_orders")  # 40 short: waits 40 / 90 s
    assert clock.monotonic() == pytest.approx(40 / 90)


# ----------------------------------------------------------------------------- the sim


@pytest.mark.asyncio
async def test_the_sim_lists_the_symbols_asked_for_one_by_one_and_says_so() -> None:
    engine = SimEngine(seed=1, clock=FakeClock())
    for base in PRICES:
        engine.add_market(_market(base), PRICES[base])
    engine.open_account(ALICE, {"USDT": 100_000.0})
    for base in ("BTC", "ETH"):
        engine.place_order(
            ALICE,
            OrderRequest(f"{base}/USDT", Side.BUY, OrderType.LIMIT, 0.01, PRICES[base] * 0.9),
        )
    caps = Capabilities(True, True, False, weights=BINANCE_WEIGHTS)
    exchange = SimExchange(engine, ALICE, capabilities=caps)

    every = await exchange.fetch_open_orders()
    one = await exchange.fetch_open_orders(["BTC-USDT"])

    assert (every.symbols, len(every.orders), every.calls) == (None, 2, 1)
    assert (one.symbols, [o.symbol for o in one.orders], one.calls) == (
        ("BTC/USDT",),
        ["BTC/USDT"],
        1,
    )
    assert exchange.weight_spent() == 80 + 6


# ----------------------------------------------------------------------------- the emulator


@asynccontextmanager
async def emulator(clock: Any, **server: Any) -> AsyncIterator[tuple[SimEngine, EmulatorServer]]:
    """The Binance emulator on loopback; the engine stamps orders on ``clock``, the server
    checks ccxt's signatures on real time (ccxt stamps requests with it)."""
    engine = SimEngine(seed=7, clock=clock)
    for base, price in PRICES.items():
        engine.add_market(_market(base), price)
    engine.open_account(ALICE, {"USDT": 20_000.0, "BTC": 0.1, "ETH": 1.0})
    async with EmulatorServer(engine, KEYS, **server) as srv:
        yield engine, srv


def _raw(server: EmulatorServer) -> Any:
    api_key, secret = KEYS[ALICE]
    return ccxt.binance(binance_ccxt_config(server.url, api_key, secret))


@pytest.mark.asyncio
async def test_the_emulator_answers_with_the_weight_used_this_minute() -> None:
    async with emulator(SystemClock()) as (_engine, server):
        raw = _raw(server)
        try:
            await raw.load_markets()  # exchangeInfo: 20
            await raw.fetch_open_orders("BTC/USDT")  # 6
            assert raw.last_response_headers["X-MBX-USED-WEIGHT-1M"] in ("26", "6")
            await raw.fetch_open_orders()  # 80
        finally:
            await raw.close()
    assert server.weights.total == 20 + 6 + 80
    assert server.weight_by_path["GET /api/v3/openOrders"] == 86


@pytest.mark.asyncio
async def test_past_its_limit_the_emulator_refuses_as_binance_does() -> None:
    async with emulator(SystemClock(), weight_limit_per_min=100) as (_engine, server):
        raw = _raw(server)
        try:
            await raw.load_markets()  # 20
            await raw.fetch_open_orders()  # 100
            with pytest.raises(ccxt.DDoSProtection, match=r"429 .*-1003"):  # ccxt's class for it
                await raw.fetch_open_orders()
        finally:
            await raw.close()


# ----------------------------------------------------------------------------- end to end


def _wired(exchange: CcxtExchange) -> bool:
    """The adapter reports its profile's weights (the lead's line in
    ``CcxtExchange.capabilities``: ``weights=self._profile.rate.weights``)."""
    return exchange.capabilities.open_orders_symbol_weight is not None


NOT_WIRED = (
    "CcxtExchange.capabilities does not report its profile's weights yet "
    "(weights=self._profile.rate.weights): the reconciler lists every symbol each cycle"
)


@dataclass
class Run:
    server: EmulatorServer
    engine: SimEngine
    live: AccountLive
    exchange: CcxtExchange
    reconciler: Reconciler


@asynccontextmanager
async def polled(clock: MockClock, settings: ReconcilerSettings) -> AsyncIterator[Run]:
    """Alice on the Binance emulator through real ccxt, her reconciler polling on ``clock``."""
    async with emulator(clock) as (engine, server):
        for base in ("BTC", "ETH"):  # resting buys on two symbols, placed by the bot itself
            engine.place_order(
                ALICE,
                OrderRequest(f"{base}/USDT", Side.BUY, OrderType.LIMIT, 0.01, PRICES[base] * 0.9),
            )
        exchange = CcxtExchange(_raw(server), account_id=ALICE, clock=clock)
        live = AccountLive.create(ALICE, TierTable(), quote_currency="USDT")
        reconciler = Reconciler(
            Books(), {ALICE: exchange}, {ALICE: live}, clock=clock, settings=settings
        )
        task = asyncio.create_task(reconciler.run(), name="reconciler")
        try:
            yield Run(server, engine, live, exchange, reconciler)
        finally:
            await reconciler.aclose()
            await asyncio.gather(task, return_exceptions=True)


def test_an_account_with_orders_on_two_symbols_spends_at_most_250_weight_a_minute(
    mock_clock: MockClock,
) -> None:
    forget_budgets()
    settings = ReconcilerSettings()  # 5 s polls, 60 s balances, the default full interval
    minutes = 10

    async def body() -> tuple[bool, list[int], RequestWeight | None]:
        async with polled(mock_clock, settings) as run:
            if not _wired(run.exchange):
                return False, [], None
            await mock_clock.sleep(60.0)  # start-up: markets, the first sweep's look-back
            assert run.live.health.state is SyncState.OK
            totals = [run.server.weights.total]
            for _ in range(minutes):
                await mock_clock.sleep(60.0)
                totals.append(run.server.weights.total)
            return (
                True,
                [later - earlier for earlier, later in itertools.pairwise(totals)],
                run.live.request_weight,
            )

    try:
        wired, per_minute, weight = mock_clock.run(body())
    finally:
        forget_budgets()
    if not wired:
        pytest.skip(NOT_WIRED)
    average = sum(per_minute) / minutes
    assert average <= 250, per_minute
    assert 6000 // average >= 24  # accounts one IP carries at Binance's limit
    assert weight is not None
    assert weight.planned_per_min <= 250
    assert abs(weight.planned_per_min - average) < 25  # the plan says what is spent


def test_an_order_placed_on_a_new_symbol_is_adopted_within_full_listing_interval_s(
    mock_clock: MockClock,
) -> None:
    forget_budgets()
    settings = ReconcilerSettings(full_listing_interval_s=120.0)

    async def body() -> float | None:
        async with polled(mock_clock, settings) as run:
            if not _wired(run.exchange):
                return None
            await mock_clock.sleep(30.0)  # listing BTC/USDT and ETH/USDT one by one now
            placed = run.engine.place_order(
                ALICE, OrderRequest("SOL/USDT", Side.BUY, OrderType.LIMIT, 1.0, 100.0)
            )
            started = mock_clock.monotonic()
            book = run.reconciler._sync(ALICE).book
            while book.orders.get(placed.id) is None:
                await mock_clock.sleep(1.0)
                assert mock_clock.monotonic() - started <= 120.0 + settings.poll_interval_s * 1.2
            return mock_clock.monotonic() - started

    try:
        waited_s = mock_clock.run(body())
    finally:
        forget_budgets()
    if waited_s is None:
        pytest.skip(NOT_WIRED)
    assert waited_s > settings.poll_interval_s  # not on the next per-symbol cycle, at a full one


# ----------------------------------------------------------------------------- what people see


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def test_check_config_prints_each_accounts_listing_plan_and_its_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    binance_like = Capabilities(True, True, False, weights=BINANCE_WEIGHTS)
    kraken_like = Capabilities(True, True, False, weights=KRAKEN.rate.weights)
    by_exchange: dict[str, Capabilities] = {"binance": binance_like, "kraken": kraken_like}
    fake: Callable[[Any], Capabilities] = lambda account: by_exchange[account.exchange]  # noqa: E731
    monkeypatch.setattr(plan_report, "account_capabilities", fake)
    path = _write(
        tmp_path,
        '[[accounts]]\nid = "USER:alice"\nexchange = "binance"\n\n'
        '[[accounts]]\nid = "USER:bob"\nexchange = "kraken"\n',
    )

    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out

    assert (
        "    open orders: per symbol with orders (6 each), all symbols (80) at start-up and "
        "every 300s\n" in out
    )
    assert (
        "    request weight with orders on 2 symbols: 220/min "
        "(listings 158, balance 22, sweep 40)\n" in out
    )
    assert "      440/min on a tier without DCA" in out
    assert "    limit: 6,000 request weight/min per IP, shared by every binance account" in out
    assert "      27 such accounts per IP, 13 on a tier without DCA\n" in out
    assert "    open orders: all symbols each cycle (1)\n" in out  # Kraken: one call lists all
    assert "    limit: 19.8 API counter/min per API key (each account its own)\n" in out


def test_check_config_with_the_real_adapter_prints_binances_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[[accounts]]\nid = "USER:alice"\nexchange = "binance"\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "    open orders: " in out
    if "request weight" not in out:
        pytest.skip(NOT_WIRED)
    assert "27 such accounts per IP" in out


def test_check_config_warns_when_the_budget_is_off_for_an_exchange_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        '[[accounts]]\nid = "USER:live"\nexchange = "binance"\nrate_budget = "off"\n\n'
        '[[accounts]]\nid = "USER:local"\nexchange = "binance"\nrate_budget = "off"\n'
        '[accounts.ccxt.urls.api]\npublic = "http://127.0.0.1:8900/api/v3"\n'
        'private = "http://localhost:8900/api/v3"\n',
    )
    assert main(["check-config", str(path)]) == 0  # a warning, not a refusal
    captured = capsys.readouterr()
    assert (
        "accounts.USER:live.rate_budget is 'off' but it uses the venue's own URLs" in captured.err
    )
    assert "USER:local" not in captured.err
    assert "    rate budget: off" in captured.out


def test_status_shows_the_planned_and_spent_weight_a_minute_in_a_narrow_column() -> None:
    books = Books()
    live = AccountLive.create(ALICE, TierTable(), quote_currency="USDT")
    live.request_weight = RequestWeight(
        planned_per_min=219.6, spent_last_min=214.0, unit="request weight", limit_per_min=6000.0
    )
    row = account_status(books.get(ALICE), live, datetime(2026, 3, 1, tzinfo=UTC))
    assert (row.weight_planned_per_min, row.weight_spent_last_min) == (219.6, 214.0)
    assert row.weight_unit == "request weight"
    header, line = render_table([row]).splitlines()
    column = header.index("WEIGHT/MIN")
    assert line[column : column + len("WEIGHT/MIN")].strip() == "220/214"
    unknown = account_status(Books().get(ALICE), None, datetime(2026, 3, 1, tzinfo=UTC))
    assert unknown.weight_planned_per_min is None
    assert render_table([unknown]).splitlines()[1].split()[-3] == "-"
