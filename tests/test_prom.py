"""Prometheus metrics: per-account series, own registry, parsed back from the exposition."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from adapters.sim import SimEngine, SimExchange
from nija_broker.core.clock import SystemClock
from nija_broker.core.errors import EntryBlocked
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Market, Order
from nija_broker.core.tiers import TierTable
from nija_broker.service.config import parse_config
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.runtime import Broker
from nija_broker.state.books import Books

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _samples(metrics: BrokerMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _get(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _live(account: str, equity_usd: float | None) -> AccountLive:
    live = AccountLive.create(account, TierTable())
    if equity_usd is not None:
        live.tier.update(equity_usd)
        live.equity_usd = equity_usd
    return live


def _books() -> Books:
    books = Books()
    books.get("USER:micro").apply_order(
        Order(
            id="o1",
            account_id="USER:micro",
            symbol="BTC/USD",
            side="buy",
            price=100.0,
            amount=0.5,
            created_at=T0,
        )
    )
    platform = books.get("PLATFORM")
    platform.update_equity(10_000.0, T0)
    platform.update_equity(8_000.0, T0 + timedelta(hours=1))
    platform.update_equity(9_000.0, T0 + timedelta(hours=2))
    return books


def test_gauges_are_set_per_account_from_each_books_own_figures() -> None:
    metrics = BrokerMetrics()
    lives = {"USER:micro": _live("USER:micro", 100.0), "PLATFORM": _live("PLATFORM", 9_000.0)}

    metrics.refresh(_books(), lives, T0 + timedelta(hours=3))
    s = _samples(metrics)

    held = 0.5 * 100.0 * 1.004
    assert _get(s, "nija_broker_equity_usd", account="USER:micro") == 100.0
    assert _get(s, "nija_broker_open_orders", account="USER:micro") == 1.0
    assert _get(s, "nija_broker_held_capital_usd", account="USER:micro") == pytest.approx(held)
    assert _get(s, "nija_broker_fragmentation_ratio", account="USER:micro") == pytest.approx(
        held / 100.0
    )
    assert _get(s, "nija_broker_equity_usd", account="PLATFORM") == 9_000.0
    assert _get(s, "nija_broker_open_orders", account="PLATFORM") == 0.0
    assert _get(s, "nija_broker_held_capital_usd", account="PLATFORM") == 0.0
    assert _get(s, "nija_broker_drawdown_pct", account="PLATFORM") == pytest.approx(10.0)
    assert _get(s, "nija_broker_max_drawdown_pct", account="PLATFORM") == pytest.approx(20.0)
    # No series without an account label: nothing is totalled across accounts.
    body = metrics.render()[0].decode()
    for line in body.splitlines():
        if line.startswith("nija_broker_") and not line.startswith("nija_broker_sync_cycle"):
            assert 'account="' in line, line


def test_unknown_equity_is_an_absent_series_and_zero_equity_with_holds_is_infinite() -> None:
    metrics = BrokerMetrics()
    books = _books()

    metrics.refresh(books, {"USER:micro": _live("USER:micro", None)}, T0)
    s = _samples(metrics)
    assert _get(s, "nija_broker_equity_usd", account="USER:micro") is None
    assert _get(s, "nija_broker_fragmentation_ratio", account="USER:micro") is None
    assert _get(s, "nija_broker_open_orders", account="USER:micro") == 1.0

    metrics.refresh(books, {"USER:micro": _live("USER:micro", 0.0)}, T0)
    ratio = _get(_samples(metrics), "nija_broker_fragmentation_ratio", account="USER:micro")
    assert ratio == math.inf


def test_counters_count_events_per_account_and_label() -> None:
    metrics = BrokerMetrics()
    metrics.record_fill("PLATFORM")
    metrics.record_fill("PLATFORM")
    metrics.record_fill("USER:micro")
    metrics.record_cancellation("USER:micro", stale=True)
    metrics.record_cancellation("USER:micro", stale=False)
    metrics.record_guard_block("USER:micro", "no_dca")
    metrics.record_guard_block("USER:micro", "no_dca")
    metrics.record_guard_block("USER:micro", "duplicate_symbol")
    metrics.record_exchange_error("PLATFORM", "rate_limited")

    s = _samples(metrics)

    assert _get(s, "nija_broker_fills_total", account="PLATFORM") == 2.0
    assert _get(s, "nija_broker_fills_total", account="USER:micro") == 1.0
    assert _get(s, "nija_broker_cancellations_total", account="USER:micro") == 2.0
    assert _get(s, "nija_broker_stale_cancellations_total", account="USER:micro") == 1.0
    assert _get(s, "nija_broker_guard_blocks_total", account="USER:micro", rule="no_dca") == 2.0
    assert (
        _get(s, "nija_broker_guard_blocks_total", account="USER:micro", rule="duplicate_symbol")
        == 1.0
    )
    assert (
        _get(s, "nija_broker_exchange_errors_total", account="PLATFORM", kind="rate_limited") == 1.0
    )
    assert _get(s, "nija_broker_guard_blocks_total", account="PLATFORM", rule="no_dca") is None


def test_refresh_starts_event_counters_at_zero_for_every_account() -> None:
    metrics = BrokerMetrics()
    metrics.refresh(_books(), {}, T0)
    s = _samples(metrics)
    for account in ("PLATFORM", "USER:micro"):
        assert _get(s, "nija_broker_fills_total", account=account) == 0.0
        assert _get(s, "nija_broker_stale_cancellations_total", account=account) == 0.0


def test_sync_cycle_histogram_buckets_observations_per_account() -> None:
    metrics = BrokerMetrics()
    metrics.observe_sync_cycle("PLATFORM", 0.03)
    metrics.observe_sync_cycle("PLATFORM", 0.7)
    metrics.observe_sync_cycle("USER:micro", 12.0)

    s = _samples(metrics)

    name = "nija_broker_sync_cycle_seconds"
    assert _get(s, f"{name}_count", account="PLATFORM") == 2.0
    assert _get(s, f"{name}_sum", account="PLATFORM") == pytest.approx(0.73)
    assert _get(s, f"{name}_bucket", account="PLATFORM", le="0.05") == 1.0
    assert _get(s, f"{name}_bucket", account="PLATFORM", le="1.0") == 2.0
    assert _get(s, f"{name}_bucket", account="USER:micro", le="10.0") == 0.0
    assert _get(s, f"{name}_bucket", account="USER:micro", le="30.0") == 1.0
    with pytest.raises(ValueError, match="sync cycle"):
        metrics.observe_sync_cycle("PLATFORM", -1.0)


def test_an_account_that_goes_away_leaves_no_stale_gauges() -> None:
    metrics = BrokerMetrics()
    books = _books()
    metrics.refresh(books, {"USER:gone": _live("USER:gone", 50.0)}, T0)
    assert _get(_samples(metrics), "nija_broker_equity_usd", account="USER:gone") == 50.0

    metrics.refresh(books, {}, T0)

    assert _get(_samples(metrics), "nija_broker_equity_usd", account="USER:gone") is None


def test_two_instances_have_separate_registries_and_leave_the_global_one_alone() -> None:
    first, second = BrokerMetrics(), BrokerMetrics()
    first.record_fill("PLATFORM")

    assert _get(_samples(first), "nija_broker_fills_total", account="PLATFORM") == 1.0
    assert _get(_samples(second), "nija_broker_fills_total", account="PLATFORM") is None
    assert REGISTRY.get_sample_value("nija_broker_fills_total", {"account": "PLATFORM"}) is None


def test_an_empty_account_name_is_refused() -> None:
    with pytest.raises(ValueError, match="account"):
        BrokerMetrics().record_fill(" ")


@pytest.mark.asyncio
async def test_guard_blocks_total_counts_blocked_checks_and_each_blocked_reserve_once(
    tmp_path: Path,
) -> None:
    account = "USER:tiny"
    engine = SimEngine(seed=1, clock=SystemClock())
    engine.add_market(
        Market(
            symbol="BTC/USDT",
            base="BTC",
            quote="USDT",
            amount_step=0.00001,
            price_step=0.01,
            min_amount=0.00001,
            min_notional=5.0,
        ),
        50_000.0,
    )
    engine.open_account(account, {"USDT": 10.0})  # below $15: no entries at all
    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "accounts": [{"id": account, "exchange": "binance", "quote_currency": "USDT"}],
        }
    )

    def entry() -> OrderIntent:
        return OrderIntent(account_id=account, symbol="BTC/USDT", side="buy", size_usd=10.0)

    async with Broker(
        config, exchanges={account: SimExchange(engine, account)}, serve_api=False
    ) as broker:
        assert broker.guard is not None
        for _ in range(2):
            decision = broker.check(entry())  # a dry run reserves nothing, but was blocked
            assert isinstance(decision, Blocked)
            assert decision.rule == "below_min_tier"
        with pytest.raises(EntryBlocked):
            broker.guard.reserve(entry())
        assert not broker.guard.decide(entry()).allowed
        # Exits always pass and count nothing.
        assert broker.check(
            OrderIntent(account_id=account, symbol="BTC/USDT", side="sell", amount=0.0001)
        ).allowed
        samples = _samples(broker.metrics)
    assert (
        _get(samples, "nija_broker_guard_blocks_total", account=account, rule="below_min_tier")
        == 4.0
    )
