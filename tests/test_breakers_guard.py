"""Circuit breakers in the guard and over HTTP: trips block entries and never exits, each trip
and resume is journaled and published, a manual resume holds until the figures get worse,
and it survives a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from nija_broker.core.clock import FakeClock
from nija_broker.core.events import BreakerResumed, BreakerTripped, Event
from nija_broker.core.health import AccountLive
from nija_broker.core.intent import Allowed, Blocked
from nija_broker.core.models import OrderRole, TradeRecord
from nija_broker.guard.guard import Guard
from nija_broker.service.api import ApiContext, ApiServer
from nija_broker.service.cli import main
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.status import render_table, status_rows
from nija_broker.state.store import Store
from tests._guard_support import ALICE, T0, account_live, buy, make_guard, sell

BOB = "USER:bob"


def losing(
    n: int,
    account_id: str = ALICE,
    *,
    symbol: str = "ETH/USD",
    net: float = -1.0,
    start: int = 0,
    exit_role: OrderRole | None = None,
    at: Any = None,
) -> list[TradeRecord]:
    when = at or T0
    return [
        TradeRecord(
            trade_id=f"{account_id}-T{start + i}",
            account_id=account_id,
            symbol=symbol,
            side="buy",
            entry_price=100.0,
            exit_price=100.0 + net,
            quantity=1.0,
            pnl=net,
            fees=0.0,
            entry_time=when - timedelta(minutes=5),
            exit_time=when,
            exit_role=exit_role,
        )
        for i in range(n)
    ]


@pytest.fixture
def live() -> dict[str, AccountLive]:
    return {
        ALICE: account_live(ALICE, equity=100.0, free=100.0),
        BOB: account_live(BOB, equity=100.0, free=100.0),
    }


@pytest.fixture
def guard(tmp_path: Path, live: dict[str, AccountLive]) -> Guard:
    return make_guard(Store(tmp_path / "state.sqlite3"), FakeClock(T0), live)


def _record(guard: Guard, trades: Sequence[TradeRecord]) -> None:
    for trade in trades:
        guard.books.get(trade.account_id).record_trade(trade)


def test_four_losses_in_a_row_block_entries_never_exits_and_only_on_that_account(
    guard: Guard,
) -> None:
    _record(guard, losing(4))
    blocked = guard.check(buy("BTC/USD"))
    assert isinstance(blocked, Blocked)
    assert blocked.rule == "loss_streak"
    assert blocked.figures["loss_streak"] == 4
    assert isinstance(guard.check(sell("ETH/USD", amount=0.001)), Allowed)
    assert isinstance(guard.check(buy("BTC/USD", account_id=BOB)), Allowed)


def test_a_trip_and_a_resume_are_journaled_and_published(guard: Guard) -> None:
    seen: list[Event] = []
    guard.event_sinks.append(seen.extend)
    _record(guard, losing(4))
    guard.check(buy())
    guard.check(buy())  # the same trip is not reported twice
    breakers, resumed = guard.resume(ALICE)
    assert resumed == ["loss_streak"]
    assert breakers is not None
    assert not breakers.tripped
    assert [type(e) for e in seen] == [BreakerTripped, BreakerResumed]
    assert isinstance(seen[1], BreakerResumed)
    assert seen[1].manual
    assert guard.store is not None
    kinds = [(r.rule, r.kind) for r in reversed(guard.store.breaker_events(ALICE))]
    assert kinds == [("loss_streak", "tripped"), ("loss_streak", "manual_resume")]


def test_a_resume_holds_until_another_losing_trade(guard: Guard) -> None:
    _record(guard, losing(4))
    guard.resume(ALICE)
    assert isinstance(guard.check(buy()), Allowed)
    _record(guard, losing(1, start=4))
    blocked = guard.check(buy())
    assert isinstance(blocked, Blocked)
    assert blocked.rule == "loss_streak"


def test_a_resume_survives_a_restart(guard: Guard, live: dict[str, AccountLive]) -> None:
    _record(guard, losing(4))
    guard.check(buy())
    guard.resume(ALICE)
    assert guard.store is not None
    again = make_guard(guard.store, FakeClock(T0), live)
    assert isinstance(again.check(buy()), Allowed)
    seen: list[Event] = []
    again.event_sinks.append(seen.extend)
    again.check(buy())
    assert seen == []  # nothing new to report after the restart


def test_the_loss_streak_ends_with_its_cooldown(guard: Guard) -> None:
    _record(guard, losing(4))
    clock = guard.clock
    assert isinstance(clock, FakeClock)
    clock.advance(3600.0 - 0.001)
    assert isinstance(guard.check(buy()), Blocked)
    clock.advance(0.001)
    assert isinstance(guard.check(buy()), Allowed)


def test_a_stop_loss_blocks_that_symbol_only(guard: Guard) -> None:
    _record(guard, losing(1, symbol="SOL/USD", exit_role=OrderRole.STOP))
    blocked = guard.check(buy("SOL/USD"))
    assert isinstance(blocked, Blocked)
    assert blocked.rule == "stoploss_cooldown"
    assert isinstance(guard.check(buy("BTC/USD")), Allowed)


def test_a_standard_account_arms_no_breaker(guard: Guard, live: dict[str, AccountLive]) -> None:
    live[BOB].tier.update(5_000.0)
    live[BOB].equity_usd = 5_000.0
    _record(guard, losing(6, BOB))
    assert guard.breaker_report(BOB) is None
    assert guard.resume(BOB) == (None, [])


# ---------------------------------------------------------------------------- HTTP and CLI


@pytest_asyncio.fixture
async def api(guard: Guard, live: dict[str, AccountLive]) -> AsyncIterator[ApiServer]:
    ctx = ApiContext(
        books=guard.books, live=live, guard=guard, metrics=BrokerMetrics(), clock=guard.clock
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as server:
        yield server


async def _call(api: ApiServer, method: str, path: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, json={} if method == "POST" else None) as r,
    ):
        return r.status, await r.json()


@pytest.mark.asyncio
async def test_account_view_shows_tripped_breakers_and_resume_clears_them(
    guard: Guard, api: ApiServer
) -> None:
    _record(guard, losing(4))
    status, view = await _call(api, "GET", f"/v1/accounts/{ALICE}")
    assert status == 200
    assert view["breakers_tripped"] == ["loss_streak"]
    assert set(view["breakers_armed"]) == {
        "drawdown_limit",
        "negative_expectancy",
        "daily_loss_limit",
        "loss_streak",
        "stoploss_cooldown",
    }
    assert view["breakers"]["loss_streak"]["tripped"] is True
    assert "4 trades in a row" in view["breakers"]["loss_streak"]["reason"]
    status, rows = await _call(api, "GET", "/v1/accounts")
    assert [r["breakers_tripped"] for r in rows["accounts"]] == [["loss_streak"], []]

    status, answer = await _call(api, "POST", f"/v1/accounts/{ALICE}/resume")
    assert status == 200
    assert answer["resumed"] == ["loss_streak"]
    assert answer["breakers"]["loss_streak"]["tripped"] is False
    status, view = await _call(api, "GET", f"/v1/accounts/{ALICE}")
    assert view["breakers_tripped"] == []


@pytest.mark.asyncio
async def test_resume_of_an_unknown_account_is_a_json_404(api: ApiServer) -> None:
    status, body = await _call(api, "POST", "/v1/accounts/USER:nobody/resume")
    assert status == 404
    assert body["error"] == "unknown account 'USER:nobody'"


@pytest.mark.asyncio
async def test_cli_resume_prints_what_it_resumed(
    guard: Guard, api: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(guard, losing(4))
    code = await asyncio.to_thread(main, ["resume", "--account", ALICE, "--url", api.url])
    assert code == 0
    out = capsys.readouterr().out
    assert f"{ALICE}: resumed loss_streak at " in out
    code = await asyncio.to_thread(main, ["resume", "--account", ALICE, "--url", api.url])
    assert code == 0
    assert "no breaker was tripped" in capsys.readouterr().out
    code = await asyncio.to_thread(main, ["resume", "--account", "USER:nobody", "--url", api.url])
    assert code == 2


def test_cli_resume_without_a_sidecar_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", "--account", ALICE, "--url", "http://127.0.0.1:9"]) == 1
    assert "did not answer" in capsys.readouterr().err


def test_status_table_names_the_tripped_breakers_and_counts_the_armed(
    guard: Guard, live: dict[str, AccountLive]
) -> None:
    _record(guard, losing(4))
    rows = status_rows(guard.books, live, guard.clock.now(), breakers=guard.breaker_report)
    lines = render_table(rows).splitlines()
    assert lines[0].split()[-1] == "BREAKERS"
    alice, bob = lines[1], lines[2]
    assert alice.startswith(ALICE)
    assert alice.endswith("loss_streak")
    assert bob.endswith("armed 5")
