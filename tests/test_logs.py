"""Structured log lines: key=value, redacted, the account in context; the runtime's INFO lines."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.base import OrderRequest
from adapters.sim import SimEngine, SimExchange
from adapters.sim.faults import FaultInjector, FaultKind, FaultPlan
from nija_broker.core.clock import SystemClock
from nija_broker.core.events import OrderCancelled, StaleOrderFound
from nija_broker.core.health import SyncState
from nija_broker.core.intent import OrderIntent
from nija_broker.core.models import Market, Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.service.config import parse_config
from nija_broker.service.logs import (
    KeyValueFormatter,
    account_context,
    fields,
    redact,
    register_secret,
)
from nija_broker.service.runtime import Broker
from nija_broker.sync.reconciler import ReconcilerSettings

KEY = "Kx9LmN2pQr7StUv4WxYz-demo-key"


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("nija_broker.test", logging.WARNING, __file__, 1, message, args, None)


def test_keys_read_from_the_environment_are_redacted_in_every_line() -> None:
    config = parse_config(
        {"accounts": [{"id": "A", "exchange": "kraken", "api_key_env": "K", "secret_env": "S"}]}
    )
    config.account("A").credentials({"K": KEY, "S": "another-secret-value"})
    line = KeyValueFormatter().format(
        _record("ccxt said: bad key %s / %s", KEY, "another-secret-value")
    )
    assert KEY not in line
    assert "another-secret-value" not in line
    assert "***" in line


def test_tracebacks_are_redacted_too() -> None:
    register_secret("trace-secret-123456")
    try:
        raise RuntimeError("request failed with secret=trace-secret-123456")
    except RuntimeError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "boom", (), __import__("sys").exc_info()
        )
    assert "trace-secret-123456" not in KeyValueFormatter().format(record)


def test_short_values_are_not_treated_as_secrets() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


def test_every_one_of_two_thousand_keys_is_redacted_where_it_appears() -> None:
    # A fleet of a thousand accounts registers a key and a secret each.
    keys = [f"fleet-{n:04d}-{'k' if n % 2 else 's'}-{n * 7919:012d}" for n in range(2000)]
    for key in keys:
        register_secret(key)
    for key in (keys[0], keys[1234], keys[-1]):
        line = redact(f"GET /api?apiKey={key}&x=1 said {key}.")
        assert line == "GET /api?apiKey=***&x=1 said ***."
    assert redact("fleet-0001-k- is not a whole key") == "fleet-0001-k- is not a whole key"


def test_secrets_sharing_a_start_overlapping_or_inside_another_leave_nothing_shown() -> None:
    register_secret("samestart-one-secret")
    register_secret("samestart-two-secret-longer")
    register_secret("overlap-AAAA-BBBB")
    register_secret("BBBB-CCCC-tail")
    register_secret("outer-inner-secret-outer")
    register_secret("inner-secret")
    text = (
        "a samestart-one-secret b samestart-two-secret-longer c overlap-AAAA-BBBB-CCCC-tail "
        "d outer-inner-secret-outer e inner-secret f"
    )
    assert redact(text) == "a *** b *** c *** d *** e *** f"


def test_account_comes_from_context_or_the_poller_task_name() -> None:
    formatter = KeyValueFormatter()
    token = account_context.set("USER:alice")
    try:
        assert "account=USER:alice" in formatter.format(_record("hello"))
    finally:
        account_context.reset(token)

    async def poller() -> str:
        return formatter.format(_record("cycle"))

    async def main() -> str:
        return await asyncio.create_task(poller(), name="reconcile:USER:bob")

    assert "account=USER:bob" in asyncio.run(main())
    assert "account=" not in formatter.format(_record("no account here"))


@pytest.mark.parametrize("message", ['quote " and newline \n inside'])
def test_messages_are_one_line(message: str) -> None:
    line = KeyValueFormatter().format(_record(message))
    assert "\n" not in line
    assert line.startswith("ts=")


def test_a_records_own_fields_follow_the_message_as_key_value_pairs() -> None:
    register_secret("field-secret-987654")
    record = _record("fill booked")
    for key, value in fields(
        "USER:alice",
        event="fill_booked",
        symbol="BTC/USDT",
        side=Side.BUY,
        amount=0.0005,
        fee=None,
        note="two words",
        leak="field-secret-987654",
        ok=True,
    ).items():
        setattr(record, key, value)
    line = KeyValueFormatter().format(record)
    assert line.endswith(
        ' account=USER:alice msg="fill booked" event=fill_booked '
        'symbol=BTC/USDT side=buy amount=0.0005 note="two words" leak=*** '
        "ok=true"
    )
    assert "fee=" not in line


# ----------------------------------------------------------------------------- the runtime

ALICE = "USER:alice"
BTC = Market(
    symbol="BTC/USDT",
    base="BTC",
    quote="USDT",
    amount_step=0.00001,
    price_step=0.01,
    min_amount=0.00001,
    min_notional=5.0,
)
FAST = ReconcilerSettings(
    poll_interval_s=0.05,
    balance_interval_s=0.05,
    visibility_window_s=0.0,
    call_timeout_s=5.0,
    failed_after=3,
)


def _info(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.INFO and getattr(r, "fields", {}).get("event") == event
    ]


async def _logged(
    caplog: pytest.LogCaptureFixture, event: str, timeout_s: float = 10.0
) -> logging.LogRecord:
    async with asyncio.timeout(timeout_s):
        while not _info(caplog, event):  # noqa: ASYNC110 - the broker's tasks log it
            await asyncio.sleep(0.02)
    (record,) = _info(caplog, event)
    return record


@pytest.mark.asyncio
async def test_the_runtime_logs_each_fill_trade_block_adoption_and_recovery_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nija_broker.runtime")
    engine = SimEngine(seed=3, clock=SystemClock())
    engine.add_market(BTC, 50_000.0, volatility=0.0)
    engine.open_account(ALICE, {"USDT": 100.0})
    faults = FaultInjector(FaultPlan(), SystemClock())
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "accounts": [{"id": ALICE, "exchange": "binance", "quote_currency": "USDT"}],
        }
    )
    exchanges = {ALICE: SimExchange(engine, ALICE, faults=faults)}
    async with Broker(
        config, exchanges=exchanges, reconciler_settings=FAST, serve_api=False
    ) as broker:
        # Placed straight on the exchange: adopted, then filled by a price move.
        resting = engine.place_order(
            ALICE,
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0004,
                price=49_000.0,
            ),
        )
        adopted = await _logged(caplog, "order_adopted")
        engine.set_price("BTC/USDT", 48_000.0)
        fill = await _logged(caplog, "fill_booked")
        # A second BTC entry on a MICRO_CAP account is DCA.
        blocked = broker.check(
            OrderIntent(account_id=ALICE, symbol="BTC/USDT", side="buy", size_usd=10.0)
        )
        assert not blocked.allowed
        block = await _logged(caplog, "entry_blocked")
        # The exit closes the round trip.
        await broker.guarded_exchange(ALICE).create_order(
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.SELL,
                type=OrderType.LIMIT,
                amount=0.0004,
                price=47_000.0,
                role=OrderRole.EXIT,
            )
        )
        trade = await _logged(caplog, "trade_closed")
        # Listings fail for a while, then work again.
        faults.set_plan(
            FaultPlan(
                rate=1.0,
                kinds=frozenset({FaultKind.SERVER_ERROR}),
                methods=frozenset({"fetch_open_orders"}),
            )
        )
        async with asyncio.timeout(10):
            while broker.live[ALICE].health.state is SyncState.OK:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        faults.disable()
        recovered = await _logged(caplog, "account_recovered")

    assert adopted.fields["order_id"] == resting.id
    assert adopted.fields["price"] == 49_000.0
    assert fill.fields["order_id"] == resting.id
    assert (fill.fields["amount"], fill.fields["price"]) == (0.0004, 49_000.0)
    assert block.fields["rule"] == "dca"
    assert trade.fields["symbol"] == "BTC/USDT"
    assert trade.fields["quantity"] == pytest.approx(0.0004)
    assert trade.fields["exit_price"] == pytest.approx(48_000.0)
    assert recovered.fields["failures"] >= 1
    for record in (adopted, fill, block, trade, recovered):
        line = KeyValueFormatter().format(record)
        assert f"account={ALICE} " in line
        assert f"event={record.fields['event']}" in line
    assert "48000" in KeyValueFormatter().format(trade)


def test_a_stale_cancel_is_logged_when_found_and_when_the_exchange_confirms_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nija_broker.runtime")
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "accounts": [{"id": ALICE, "exchange": "binance"}],
        }
    )
    broker = Broker(config, exchanges={}, serve_api=False)
    at = SystemClock().now()
    resting = Order(
        id="7",
        account_id=ALICE,
        symbol="ETH/USDT",
        side="buy",
        price=2_000.0,
        amount=0.01,
        created_at=at - timedelta(minutes=61),
    )
    broker._on_event(
        StaleOrderFound(account_id=ALICE, at=at, order=resting, max_age_s=3600.0, action="cancel")
    )
    broker._on_event(
        OrderCancelled(
            account_id=ALICE,
            at=at,
            previous=resting,
            order=resting.replace(status=OrderStatus.CANCELLED),
        )
    )
    (found,) = _info(caplog, "stale_order")
    assert found.fields["age_s"] == pytest.approx(3660.0)
    assert found.fields["action"] == "cancel"
    (cancelled,) = _info(caplog, "stale_cancelled")
    assert cancelled.fields["order_id"] == "7"
