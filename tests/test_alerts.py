"""Alerts: a running broker tells a fill, a block, a failed sync or a pause to the trader's
webhook, Telegram chat, Discord and Slack channel (local receivers speaking each format);
each target gets only the events and accounts it asks for; a dead target is retried, then
reported failing in /healthz while the broker stays healthy; nothing waits on a target."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.base import OrderRequest
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.events import (
    AccountPaused,
    AccountResumed,
    AttentionRequired,
    HealthChanged,
    OrderCancelled,
)
from nija_broker.core.health import AccountHealth, SyncState
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Order, OrderStatus, OrderType, Side
from nija_broker.service.alerts import Alert, AlertDispatcher, block_alert, event_alerts
from nija_broker.service.cli import main
from nija_broker.service.config import AlertConfig, config_problems, parse_config
from nija_broker.service.runtime import Broker
from tests.test_runtime import ALICE, ENV, FAST, KEYS, MARKETS, PLATFORM

HOOK_TOKEN = "hook-bearer-Secret-42"
TG_TOKEN = "123456789:tg-bot-Secret-Token"
SLACK_SECRET = "slackSecret0123456789"


# ---------------------------------------------------------------------------- receivers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A local server answering as each service does (Telegram's ``ok``, Discord's 204,
    Slack's ``ok``); ``answers`` overrides a path's answers in order, then 200 again."""

    url: str = ""
    got: list[Received] = field(default_factory=list)
    answers: dict[str, list[tuple[int, dict[str, str], str]]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    """Paths answering 500 until removed."""
    hold: asyncio.Event | None = None
    """While set to an unset event, every request waits for it (a hung target)."""

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r.body for r in self.got if r.path == path]

    def events(self, path: str) -> list[tuple[str, str]]:
        return [(b["event"], b["account_id"]) for b in self.bodies(path)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.got.append(Received(request.path, dict(request.headers), await request.json()))
        if self.hold is not None:
            await self.hold.wait()
        planned = self.answers.get(request.path)
        if planned:
            status, headers, text = planned.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        if request.path in self.failing:
            return web.Response(status=500, text="upstream on fire")
        if request.path.startswith("/bot"):
            return web.json_response({"ok": True, "result": {"message_id": len(self.got)}})
        if request.path.startswith("/discord"):
            return web.Response(status=204)
        return web.Response(text="ok")


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"http://127.0.0.1:{port}"
    yield rx
    if rx.hold is not None:
        rx.hold.set()
    await runner.cleanup()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


# ---------------------------------------------------------------------------- broker rig


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    engine = SimEngine(seed=11, clock=SystemClock())
    for market, price in MARKETS:
        engine.add_market(market, price)
    engine.open_account(PLATFORM, {"USDT": 10_000.0})
    engine.open_account(ALICE, {"USDT": 100.0})
    async with EmulatorServer(engine, KEYS) as server:
        yield server


def _config(url: str, tmp_path: Path, alerts: list[dict[str, Any]], **more: Any) -> Any:
    accounts = [
        {
            "id": account_id,
            "exchange": "binance",
            "api_key_env": f"{env}_KEY",
            "secret_env": f"{env}_SECRET",
            "quote_currency": "USDT",
            "ccxt": binance_ccxt_config(url),
        }
        for account_id, env in ((PLATFORM, "PLATFORM"), (ALICE, "ALICE"))
    ]
    return parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "api": {"host": "127.0.0.1", "port": 0},
            "accounts": accounts,
            "alerts": alerts,
            **more,
        }
    )


FAST_RETRY = {"backoff_initial_s": 0.01, "backoff_max_s": 0.02}
SECRETS = {**ENV, "HOOK_TOKEN": HOOK_TOKEN, "TG_TOKEN": TG_TOKEN}


async def _until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling what other threads deliver
            await asyncio.sleep(0.02)


async def _buy_at_once(broker: Broker, account_id: str, symbol: str, amount: float) -> None:
    """A marketable limit entry through the guard: it fills at once."""
    price = {"BTC/USDT": 51_000.0, "ETH/USDT": 3_100.0}[symbol]
    order = await broker.guarded_exchange(account_id).create_order(
        OrderRequest(symbol=symbol, side=Side.BUY, type=OrderType.LIMIT, amount=amount, price=price)
    )
    assert order.status is OrderStatus.FILLED


def _blocked(broker: Broker, account_id: str, symbol: str) -> Blocked:
    """A dry run the guard must block: an entry far below the market's minimum."""
    decision = broker.check(
        OrderIntent(account_id=account_id, symbol=symbol, side="buy", size_usd=1.0)
    )
    assert isinstance(decision, Blocked)
    return decision


async def _healthz(broker: Broker) -> tuple[int, dict[str, Any], str]:
    assert broker.api is not None
    async with aiohttp.ClientSession() as session, session.get(f"{broker.api.url}/healthz") as r:
        text = await r.text()
        return r.status, json.loads(text), text


async def _alert_states(broker: Broker, wanted: dict[str, str], timeout_s: float = 20.0) -> None:
    """Until /healthz shows each named target in the state wanted."""
    async with asyncio.timeout(timeout_s):
        while True:
            _, body, _ = await _healthz(broker)
            if {name: body["alerts"][name]["state"] for name in wanted} == wanted:
                return
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.integration
@pytest.mark.asyncio
async def test_each_format_receives_a_fill_and_a_block_from_a_running_broker(
    emulator: EmulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    rx = receiver.url
    alerts = [
        {"type": "webhook", "url": f"{rx}/hook", "token_env": "HOOK_TOKEN"},
        {"type": "telegram", "api_url": rx, "chat_id": -1001234, "token_env": "TG_TOKEN"},
        {"type": "discord", "url_env": "DISCORD_URL"},
        {"type": "slack", "url": f"{rx}/slack/T0/B0/{SLACK_SECRET}"},
    ]
    environ = {**SECRETS, "DISCORD_URL": f"{rx}/discord/1/discordSecret"}
    config = _config(emulator.url, tmp_path, alerts)
    paths = {
        "webhook": "/hook",
        "telegram": f"/bot{TG_TOKEN}/sendMessage",
        "discord": "/discord/1/discordSecret",
        "slack": f"/slack/T0/B0/{SLACK_SECRET}",
    }
    async with Broker(config, environ=environ, reconciler_settings=FAST) as broker:
        await _buy_at_once(broker, ALICE, "BTC/USDT", 0.0004)
        block = _blocked(broker, ALICE, "ETH/USDT")

        def texts(kind: str) -> list[str]:
            key = {"telegram": "text", "discord": "content", "slack": "text"}[kind]
            return [b[key] for b in receiver.bodies(paths[kind])]

        def told(kind: str, *words: str) -> bool:
            return any(all(w in t for w in words) for t in texts(kind))

        await _until(lambda: {"fill", "block"} <= {e for e, _ in receiver.events("/hook")})
        for kind in ("telegram", "discord", "slack"):
            await _until(lambda kind=kind: told(kind, "filled") and told(kind, "blocked"))
        _, health, _ = await _healthz(broker)

    webhook = {b["event"]: b for b in receiver.bodies("/hook")}
    fill = webhook["fill"]
    assert (fill["account_id"], fill["symbol"], fill["side"]) == (ALICE, "BTC/USDT", "buy")
    assert fill["amount"] == pytest.approx(0.0004)
    assert fill["price"] > 0
    assert fill["quote_currency"] == "USDT"
    assert datetime.fromisoformat(fill["at"]).tzinfo is not None
    blocked = webhook["block"]
    assert (blocked["rule"], blocked["reason"]) == (block.rule, block.reason)
    assert (blocked["account_id"], blocked["symbol"]) == (ALICE, "ETH/USDT")
    hook_headers = [r.headers for r in receiver.got if r.path == "/hook"]
    assert {h["Authorization"] for h in hook_headers} == {f"Bearer {HOOK_TOKEN}"}

    telegram = receiver.bodies(paths["telegram"])
    assert {b["chat_id"] for b in telegram} == {-1001234}
    assert told("telegram", ALICE, "BTC/USDT", "filled")
    assert told("telegram", ALICE, "ETH/USDT", f"blocked by {block.rule}")
    assert all(b["allowed_mentions"] == {"parse": []} for b in receiver.bodies(paths["discord"]))
    assert told("discord", "BTC/USDT", "filled")
    assert told("slack", "ETH/USDT", "blocked")
    assert set(health["alerts"]) == {"webhook", "telegram", "discord", "slack"}
    assert {a["state"] for a in health["alerts"].values()} == {"ok"}
    assert all(a["delivered"] >= 2 for a in health["alerts"].values())


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_target_gets_only_the_events_and_accounts_it_asks_for(
    emulator: EmulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    rx = receiver.url
    alerts = [
        {"type": "webhook", "name": "alice-blocks", "url": f"{rx}/a", "events": ["block"],
         "accounts": [ALICE]},
        {"type": "webhook", "name": "platform-fills", "url": f"{rx}/p", "events": ["fill"],
         "accounts": [PLATFORM]},
        {"type": "webhook", "name": "pauses", "url": f"{rx}/ops", "events": ["paused"]},
        {"type": "webhook", "name": "everything", "url": f"{rx}/all"},
    ]  # fmt: skip
    config = _config(emulator.url, tmp_path, alerts)
    async with Broker(config, environ=SECRETS, reconciler_settings=FAST) as broker:
        assert broker.guard is not None
        await _buy_at_once(broker, ALICE, "BTC/USDT", 0.0004)
        await _buy_at_once(broker, PLATFORM, "ETH/USDT", 0.01)
        _blocked(broker, ALICE, "ETH/USDT")
        _blocked(broker, PLATFORM, "BTC/USDT")
        broker.guard.pause(ALICE, "bob", "news at 14:00")
        broker.guard.unpause(ALICE, "bob")
        wanted = {("fill", ALICE), ("fill", PLATFORM), ("block", ALICE), ("block", PLATFORM)}
        await _until(lambda: wanted | {("paused", ALICE)} <= set(receiver.events("/all")))
    # Closing flushed every queue: what a target did not get, it was never sent.

    assert set(receiver.events("/a")) == {("block", ALICE)}
    assert set(receiver.events("/p")) == {("fill", PLATFORM)}
    pauses = receiver.bodies("/ops")
    assert [(b["paused"], b["by"]) for b in pauses] == [(True, "bob"), (False, "bob")]
    assert pauses[0]["reason"] == "news at 14:00"
    assert "paused by bob: news at 14:00" in pauses[0]["text"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_dead_target_is_retried_then_reported_failing_while_the_broker_stays_healthy(
    emulator: EmulatorServer,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rx = receiver.url
    receiver.failing.add("/dead")
    alerts = [
        {"type": "webhook", "name": "dead", "url": f"{rx}/dead", "token_env": "HOOK_TOKEN",
         "events": ["block"], "max_attempts": 3, **FAST_RETRY},
        {"type": "telegram", "name": "nobody-home", "api_url": f"http://127.0.0.1:{_closed_port()}",
         "chat_id": 7, "token_env": "TG_TOKEN", "events": ["block"], "max_attempts": 2,
         **FAST_RETRY},
    ]  # fmt: skip
    config = _config(emulator.url, tmp_path, alerts)
    with caplog.at_level(logging.DEBUG):
        async with Broker(config, environ=SECRETS, reconciler_settings=FAST) as broker:
            _blocked(broker, ALICE, "BTC/USDT")

            await _alert_states(broker, {"dead": "failing", "nobody-home": "failing"})
            status, body, text = await _healthz(broker)
            assert (status, body["status"]) == (200, "ok")  # an alert target is never fatal
            assert {a["state"] for a in body["accounts"].values()} == {"ok"}
            dead, nobody = body["alerts"]["dead"], body["alerts"]["nobody-home"]
            assert len(receiver.bodies("/dead")) == 3  # one alert, three attempts
            assert (dead["failed"], dead["delivered"]) == (1, 0)
            assert "HTTP 500: upstream on fire (3 attempts)" in dead["last_error"]
            assert nobody["failed"] == 1
            assert "(2 attempts)" in nobody["last_error"]
            assert "connect" in nobody["last_error"].lower()
            for secret in (HOOK_TOKEN, TG_TOKEN):
                assert secret not in text

            # The target comes back: the next alert goes out and it is ok again.
            receiver.failing.discard("/dead")
            _blocked(broker, ALICE, "ETH/USDT")
            await _alert_states(broker, {"dead": "ok"})
            _, body, _ = await _healthz(broker)
            assert (body["alerts"]["dead"]["delivered"], body["alerts"]["dead"]["failed"]) == (1, 1)
            assert receiver.bodies("/dead")[-1]["symbol"] == "ETH/USDT"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "alert target dead (webhook) is failing" in logged
    for secret in (HOOK_TOKEN, TG_TOKEN):
        assert secret not in logged


@pytest.mark.integration
@pytest.mark.asyncio
async def test_an_account_that_cannot_sync_is_told_once_as_sync_failed(
    emulator: EmulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    alerts = [{"type": "webhook", "url": f"{receiver.url}/ops", "events": ["sync_failed"]}]
    config = _config(emulator.url, tmp_path, alerts)
    environ = {**SECRETS, "ALICE_SECRET": "not-the-secret"}
    settings = replace(FAST, fatal_retry_s=0.1)  # refused keys are tried again at once
    async with Broker(config, environ=environ, reconciler_settings=settings) as broker:
        assert broker.live[ALICE].health.state is SyncState.FAILED
        await _until(lambda: receiver.events("/ops") == [("sync_failed", ALICE)])
        for _ in range(3):  # more failing polls: still failed, nothing new to tell
            cycles = broker.live[ALICE].health.consecutive_failures
            await _until(lambda c=cycles: broker.live[ALICE].health.consecutive_failures > c)
    [told] = receiver.bodies("/ops")
    assert told["state"] == "failed"
    assert "fail-closed tiers get no entries" in told["text"]
    assert "not-the-secret" not in json.dumps(told)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_stale_entry_the_broker_cancels_is_told_once_the_exchange_confirms(
    emulator: EmulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    alerts = [{"type": "webhook", "url": f"{receiver.url}/ops", "events": ["stale_cancel"]}]
    tiers = {"MICRO_CAP": {"stale_max_age_s": 0.5}}
    config = _config(emulator.url, tmp_path, alerts, tiers=tiers)
    async with Broker(config, environ=SECRETS, reconciler_settings=FAST) as broker:
        resting = emulator.engine.place_order(  # placed by the bot, far below the market
            ALICE,
            OrderRequest(
                symbol="BTC/USDT",
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=0.0002,
                price=40_000.0,
            ),
        )
        book = broker.books.get(ALICE)  # type: ignore[union-attr]
        await _until(lambda: receiver.events("/ops") == [("stale_cancel", ALICE)])
        cancelled = book.orders.get(resting.id)
        assert cancelled is not None
        assert cancelled.status is OrderStatus.CANCELLED
    [told] = receiver.bodies("/ops")
    assert (told["order_id"], told["symbol"], told["side"]) == (resting.id, "BTC/USDT", "buy")
    assert told["age_s"] >= 0.5
    assert "cancelled; the exchange confirms" in told["text"]


@pytest.mark.asyncio
async def test_the_broker_refuses_to_start_when_a_targets_token_is_not_set(
    tmp_path: Path,
) -> None:
    alerts = [{"type": "telegram", "chat_id": 1, "token_env": "TG_TOKEN"}]
    config = _config("http://127.0.0.1:9", tmp_path, alerts)
    with pytest.raises(ConfigError) as refused:
        async with Broker(config, environ=ENV):
            pass
    assert refused.value.key == "alerts[0].token_env"
    assert "TG_TOKEN" in str(refused.value)
    assert not (tmp_path / "broker.sqlite3").exists()


# ---------------------------------------------------------------------------- delivery


def _alert(n: int, event: str = "fill", account_id: str = ALICE) -> Alert:
    return Alert(event, account_id, SystemClock().now(), f"alert {n}", {"n": n})


def _hook(url: str, **more: Any) -> AlertConfig:
    return AlertConfig.model_validate({"type": "webhook", "url": url, **FAST_RETRY, **more})


@pytest.mark.asyncio
async def test_a_hung_target_never_holds_up_an_offer_and_its_full_queue_drops_the_oldest(
    receiver: Receiver,
) -> None:
    receiver.hold = asyncio.Event()
    dispatcher = AlertDispatcher([_hook(f"{receiver.url}/hung", queue_size=2)], environ={})
    await dispatcher.start()
    try:
        dispatcher.offer(_alert(0))
        await _until(lambda: len(receiver.got) == 1)  # alert 0 is in flight, unanswered
        dispatcher.offer(_alert(1))
        offered = threading.Thread(target=lambda: [dispatcher.offer(_alert(n)) for n in (2, 3)])
        offered.start()  # from another thread, as the guard's observer does
        offered.join()
        dispatcher.offer(_alert(4))
        assert not receiver.hold.is_set()  # every offer returned while the target hangs
        report = dispatcher.report()["webhook"]
        assert (report["queued"], report["dropped"], report["delivered"]) == (2, 2, 0)
        receiver.hold.set()
        await _until(lambda: dispatcher.report()["webhook"]["delivered"] == 3)
    finally:
        await dispatcher.aclose()
    assert [b["n"] for b in receiver.bodies("/hung")] == [0, 3, 4]  # 1 and 2 dropped


@pytest.mark.asyncio
async def test_a_refusal_is_final_and_a_rate_limit_waits_what_the_service_asks(
    receiver: Receiver,
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)  # the backoff's waits, taken at once

    receiver.answers = {
        "/refused": [(404, {}, "channel_not_found")],
        "/limited": [(429, {"Retry-After": "7"}, "rate_limited")],
        f"/bot{TG_TOKEN}/sendMessage": [
            (429, {}, json.dumps({"ok": False, "parameters": {"retry_after": 5}})),
            (200, {}, json.dumps({"ok": False, "description": "Bad Request: chat not found"})),
        ],
    }  # fmt: skip
    configs = [
        _hook(f"{receiver.url}/refused", name="refused", max_attempts=5),
        _hook(f"{receiver.url}/limited", name="limited", max_attempts=5, backoff_max_s=30),
        AlertConfig(
            type="telegram", api_url=receiver.url, chat_id="@desk", token_env="TG",
            max_attempts=5, backoff_initial_s=0.01, backoff_max_s=30,
        ),
    ]  # fmt: skip
    dispatcher = AlertDispatcher(configs, environ={"TG": TG_TOKEN}, sleep=sleep)
    await dispatcher.start()
    dispatcher.offer(_alert(1))
    await dispatcher.aclose()  # flushes: each target settled its one alert
    report = dispatcher.report()
    assert len(receiver.bodies("/refused")) == 1  # a 404 is not retried
    assert report["refused"]["state"] == "failing"
    assert "HTTP 404: channel_not_found (1 attempt)" in report["refused"]["last_error"]
    assert len(receiver.bodies("/limited")) == 2
    assert (report["limited"]["state"], report["limited"]["delivered"]) == ("ok", 1)
    assert len(receiver.bodies(f"/bot{TG_TOKEN}/sendMessage")) == 2  # flood wait, then refused
    assert "chat not found" in report["telegram"]["last_error"]
    assert TG_TOKEN not in json.dumps(report)
    assert sorted(slept)[-2:] == [5.0, 7.0]  # at least what each service asked, once each


@pytest.mark.asyncio
async def test_the_same_block_is_sent_once_a_window_with_its_repeats_counted(
    receiver: Receiver,
) -> None:
    clock = FakeClock()
    dispatcher = AlertDispatcher(
        [_hook(f"{receiver.url}/blocks", block_repeat_s=60)], environ={}, clock=clock
    )
    intent = OrderIntent(account_id=ALICE, symbol="BTC/USDT", side="buy", size_usd=10.0)
    blocked = Blocked(intent=intent, rule="dca", reason="BTC is held already")
    other = Blocked(intent=intent, rule="max_positions", reason="4 positions held")
    await dispatcher.start()
    start_s = clock.monotonic()
    for at_s, decision in ((0, blocked), (10, blocked), (20, other), (30, blocked), (59, blocked)):
        clock.advance(at_s - (clock.monotonic() - start_s))
        dispatcher.offer(block_alert(decision, clock.now()))
    clock.advance(1.0)  # 60 s after the first: the window has passed
    dispatcher.offer(block_alert(blocked, clock.now()))
    await dispatcher.aclose()
    sent = [(b["rule"], b.get("repeats_not_sent")) for b in receiver.bodies("/blocks")]
    assert sent == [("dca", None), ("max_positions", None), ("dca", 3)]
    assert dispatcher.report()["webhook"]["repeats_not_sent"] == 3


# ---------------------------------------------------------------------------- what is told


def _order(**more: Any) -> Order:
    base = {
        "id": "7",
        "account_id": ALICE,
        "symbol": "ETH/USDT",
        "side": "buy",
        "price": 2_000.0,
        "amount": 0.01,
        "created_at": SystemClock().now(),
    }
    return Order.model_validate({**base, **more})


@pytest.mark.parametrize(
    ("before", "after", "told"),
    [
        (None, SyncState.FAILED, "sync_failed"),
        (SyncState.SYNCING, SyncState.FAILED, "sync_failed"),
        (SyncState.OK, SyncState.FAILED, "sync_failed"),
        (SyncState.FAILED, SyncState.FAILED, None),  # still failed: said once
        (SyncState.FAILED, SyncState.OK, "sync_recovered"),
        (SyncState.DEGRADED, SyncState.OK, "sync_recovered"),
        (SyncState.SYNCING, SyncState.OK, None),  # a first sync is not a recovery
        (SyncState.OK, SyncState.DEGRADED, None),
    ],
)
def test_a_sync_is_told_when_it_fails_and_when_it_recovers_only(
    before: SyncState | None, after: SyncState, told: str | None
) -> None:
    event = HealthChanged(
        account_id=ALICE,
        at=SystemClock().now(),
        health=AccountHealth(state=after, consecutive_failures=5, last_error="timeout"),
    )
    seen = AccountHealth(state=before, last_error="timeout") if before is not None else None
    assert [a.event for a in event_alerts(event, before=seen)] == ([told] if told else [])


def test_stale_cancels_attention_and_pauses_are_told_with_their_figures() -> None:
    at = SystemClock().now()
    order = _order(status=OrderStatus.CANCELLED)
    cancelled = OrderCancelled(account_id=ALICE, at=at, order=order, previous=_order())
    assert event_alerts(cancelled) == []  # a cancel nobody asked for as stale
    [stale] = event_alerts(cancelled, stale=True)
    assert (stale.event, stale.fields["order_id"], stale.fields["symbol"]) == (
        "stale_cancel",
        "7",
        "ETH/USDT",
    )
    attention = AttentionRequired(account_id=ALICE, at=at, reason="held capital disagrees")
    [said] = event_alerts(attention)
    assert (said.event, said.fields["reason"]) == ("attention", "held capital disagrees")
    paused = event_alerts(AccountPaused(account_id=ALICE, at=at, by="bob", reason="news"))
    resumed = event_alerts(AccountResumed(account_id=ALICE, at=at, by="bob"))
    assert [(a.event, a.fields["paused"]) for a in paused + resumed] == [
        ("paused", True),
        ("paused", False),
    ]
    for alert in (stale, said, *paused, *resumed):
        json.dumps(alert.fields)  # JSON values only: the webhook posts them as they are


# ---------------------------------------------------------------------------- configuration


ACCOUNTS = [{"id": "PLATFORM", "exchange": "binance"}, {"id": "USER:alice", "exchange": "binance"}]


def _problems(alerts: list[dict[str, Any]], environ: dict[str, str] | None = None) -> list[str]:
    data = {"accounts": ACCOUNTS, "alerts": alerts}
    return [p.text() for p in config_problems(data, environ or {}) if p.key.startswith("alerts")]


def test_alert_config_mistakes_are_each_named_by_alerts_index_and_field() -> None:
    problems = _problems(
        [
            {"type": "telegram", "chanel_id": 5},
            {"type": "slack", "url": f"ftp://hooks.slack.com/services/{SLACK_SECRET}",
             "events": ["fill", "fills"], "accounts": ["USER:alce"]},
            {"type": "webhook", "url_env": "HOOK_URL", "token": HOOK_TOKEN},
            {"type": "webhook", "url": "https://example.com/hook", "timeout_s": 0},
            {"type": "pager", "url": "https://example.com"},
        ],
        {"HOOK_URL": "not a url"},
    )  # fmt: skip
    expected = [
        "alerts[0].chanel_id: unknown key (value: 5); did you mean 'chat_id'?",
        "alerts[0].chat_id: required for telegram",
        "alerts[0].token_env: required for telegram",
        "alerts[1].events[1]: Input should be 'fill', 'trade', 'block'",
        "alerts[1].url: must be an http:// or https:// URL (value not shown)",
        "alerts[1].accounts: unknown account id (value: 'USER:alce'); did you mean 'USER:alice'?",
        "alerts[2].token: a credential may not be written in the file (value not shown); put "
        "it in an environment variable and give that variable's name as token_env",
        "alerts[2].url_env: environment variable HOOK_URL must be an http:// or https:// URL",
        "alerts[3].timeout_s: Input should be greater than 0",
        "alerts[3].name: alert target names must be unique: repeated (first at alerts[2])",
        "alerts[4].type: Input should be 'webhook', 'telegram', 'discord' or 'slack'",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected)
    for secret in (SLACK_SECRET, HOOK_TOKEN, "not a url"):
        assert all(secret not in p for p in problems)


@pytest.mark.parametrize(
    ("alert", "problem"),
    [
        ({"type": "discord"}, "alerts[0].url: required for discord: url, or url_env"),
        (
            {"type": "slack", "url": "https://hooks.slack.com/x", "url_env": "SLACK_URL"},
            "alerts[0].url_env: set url or url_env, not both",
        ),
        (
            {"type": "discord", "url": "https://discord.com/api/webhooks/1/x", "token_env": "T"},
            "alerts[0].token_env: not for discord: the webhook's secret is its URL",
        ),
        (
            {"type": "telegram", "chat_id": 1, "token_env": "TG", "url": "https://x.org"},
            "alerts[0].url: not for telegram",
        ),
        (
            {"type": "webhook", "url": "https://x.org", "chat_id": 1},
            "alerts[0].chat_id: only for type = 'telegram'",
        ),
        (
            {"type": "telegram", "chat_id": 1, "token_env": "TG_TOKEN"},
            "alerts[0].token_env: environment variable TG_TOKEN is not set",
        ),
        ({"type": "webhook", "url": "https://x.org", "events": []}, "alerts[0].events: List"),
    ],
)
def test_each_type_says_which_fields_it_needs(alert: dict[str, Any], problem: str) -> None:
    problems = _problems([alert], {"SLACK_URL": "https://hooks.slack.com/x", "T": "t" * 10})
    assert any(p.startswith(problem) for p in problems), problems


def test_check_config_lists_alert_problems_with_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NB_ALERT_TG", raising=False)
    path = tmp_path / "broker.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/s.sqlite3"\n\n'
        '[[accounts]]\nid = "PLATFORM"\nexchange = "binance"\n\n'
        '[[alerts]]\ntype = "telegram"\nchat_id = 5\ntoken_env = "NB_ALERT_TG"\n'
        'events = ["fill", "blocks"]\naccounts = ["PLATFROM"]\n'
    )
    code = main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "alerts[0].token_env: environment variable NB_ALERT_TG is not set" in err
    assert "alerts[0].events[1]: Input should be" in err
    assert "alerts[0].accounts: unknown account id (value: 'PLATFROM')" in err
