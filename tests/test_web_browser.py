"""The live web page in a real headless Chromium, over a real Broker, ccxt and the emulator.

What a trader relies on: the page lists every account; a fill, a guard block and
a closed trade show on it without a reload; a pause made from the page shows and
the next entry is blocked with rule ``paused``; the cancel and release buttons act
through the exchange and the guard; a stopped API shows "connection lost"; the
shell is served without the token while every data endpoint still needs it; and
without a token no other web site can reach the API.

Chromium is the system's (``/usr/bin/chromium``, installed by ``.ci/run``); the
tests skip only when it is absent outside CI (``CI=true`` fails instead). Every
wait is on a condition of the page, with a generous timeout.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio

from adapters.base import OrderRequest
from adapters.emulator import EmulatorServer, binance_ccxt_config
from adapters.sim import SimEngine
from nija_broker.core.clock import FakeClock, SystemClock
from nija_broker.core.errors import EntryBlocked
from nija_broker.core.models import Market, OrderStatus, OrderType, Side
from nija_broker.service.api import ApiContext, ApiServer
from nija_broker.service.config import parse_config
from nija_broker.service.prom import BrokerMetrics
from nija_broker.service.runtime import Broker
from nija_broker.state.store import Store
from nija_broker.sync.reconciler import ReconcilerSettings
from tests._guard_support import T0, account_live, make_guard

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Belt and braces for the suite's loopback rule: no name resolves but the loopback.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
PAGE_TIMEOUT_MS = 60_000  # generous: a condition of the page, never a speed figure

PLATFORM, ALICE, BOB = "PLATFORM", "USER:alice", "USER:bob"
ACCOUNTS = {
    PLATFORM: ("PLATFORM", 10_000.0),
    ALICE: ("ALICE", 400.0),
    BOB: ("BOB", 1_000.0),
}
KEYS = {
    a: (f"{env.lower()}-key-01", f"{env.lower()}-secret-01") for a, (env, _) in ACCOUNTS.items()
}
TOKEN = "web-Page-t0ken-42"
ENV = {
    "NIJA_API_TOKEN": TOKEN,
    **{f"{env}_KEY": KEYS[a][0] for a, (env, _) in ACCOUNTS.items()},
    **{f"{env}_SECRET": KEYS[a][1] for a, (env, _) in ACCOUNTS.items()},
}
MARKETS = [
    (
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
    ),
    (
        Market(
            symbol="ETH/USDT",
            base="ETH",
            quote="USDT",
            amount_step=0.0001,
            price_step=0.01,
            min_amount=0.0001,
            min_notional=5.0,
        ),
        3_000.0,
    ),
]
FAST = ReconcilerSettings(
    poll_interval_s=0.2,
    balance_interval_s=0.2,
    visibility_window_s=0.0,
    call_timeout_s=5.0,
    full_listing_interval_s=1.0,
)


def _playwright() -> Any:
    """The async Playwright entry point, or a skip (outside CI) / failure (in CI) saying why."""
    in_ci = os.environ.get("CI") == "true"
    if not CHROMIUM.exists():
        why = (
            f"{CHROMIUM} is missing: the browser tests drive the system's Chromium "
            "(apt-get install chromium; .ci/run installs it)"
        )
        if in_ci:
            pytest.fail(why)
        pytest.skip(why)
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        why = f"playwright is not installed (pip install -e '.[test]'): {exc}"
        if in_ci:
            pytest.fail(why)
        pytest.skip(why)
    return async_playwright


# ---------------------------------------------------------------------------- rigs


@dataclass
class Browser:
    """One Chromium profile; what its pages asked off loopback and what broke in them."""

    context: Any
    shots: Path
    off_loopback: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def page(self, width: int = 1280) -> Any:
        page = await self.context.new_page()
        await page.set_viewport_size({"width": width, "height": 900})
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        page.on("pageerror", lambda exc: self.page_errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: self._console(page, msg))
        return page

    def _console(self, page: Any, msg: Any) -> None:
        # Chromium logs each answer the page expects (a 401 before the token, a refused
        # connection once the API stops) as "Failed to load resource"; anything else
        # logged as an error (a script's, a Content-Security-Policy refusal) is a fault.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.page_errors.append(f"{page.url}: console: {msg.text}")

    async def screenshot(self, page: Any, name: str, width: int, *, whole: bool = True) -> Path:
        """The page at ``width`` px (the whole of it, else what a 900 px high screen shows),
        saved for a person to look at; its path printed."""
        await page.set_viewport_size({"width": width, "height": 900})
        # Laid out again at the new width (the charts follow their boxes) before the shot.
        await page.wait_for_function(
            "w => document.documentElement.clientWidth === w && [...document"
            ".querySelectorAll('.uplot')].every(u => u.getBoundingClientRect().width <= w)",
            arg=width,
        )
        await page.evaluate(
            "() => { window.scrollTo(0, 0); "
            "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); }"
        )
        path = self.shots / f"{name}-{width}.png"
        await page.screenshot(path=str(path), full_page=whole)
        print(f"screenshot: {path}")
        return path


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async_playwright = _playwright()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile for each test
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        seen = Browser(context, shots)

        def _request(request: Any) -> None:
            host = urlsplit(request.url).hostname or ""
            if request.url.startswith(("http:", "https:", "ws:", "wss:")) and host not in (
                "127.0.0.1",
                "localhost",
                "::1",
            ):
                seen.off_loopback.append(request.url)

        context.on("request", _request)
        try:
            yield seen
        finally:
            await context.close()
    assert seen.off_loopback == [], "the page asked for something beyond loopback"
    assert seen.page_errors == [], "the page raised or logged errors"


@dataclass
class Rig:
    broker: Broker
    engine: SimEngine
    url: str

    async def until(
        self, predicate: Callable[[], bool], what: str, timeout_s: float = 60.0
    ) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():  # noqa: ASYNC110 - state another task owns
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"waited {timeout_s} s for {what}")

    def held(self, account_id: str, asset: str) -> float:
        live = self.broker.live[account_id].balances.get(asset)
        return live.total if live is not None else 0.0


def _config(url: str, tmp_path: Path, token: bool) -> Any:
    accounts = [
        {
            "id": account_id,
            "exchange": "binance",
            "api_key_env": f"{env}_KEY",
            "secret_env": f"{env}_SECRET",
            "quote_currency": "USDT",
            "ccxt": binance_ccxt_config(url),
        }
        for account_id, (env, _) in ACCOUNTS.items()
    ]
    api: dict[str, Any] = {"host": "127.0.0.1", "port": 0}
    if token:
        api["token_env"] = "NIJA_API_TOKEN"
    return parse_config(
        {"store": {"path": str(tmp_path / "broker.sqlite3")}, "api": api, "accounts": accounts}
    )


@pytest_asyncio.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Three accounts on the emulator, a Broker over them with its API; the API wants a
    token when the test is parametrized ``rig=True``."""
    token = bool(getattr(request, "param", False))
    engine = SimEngine(seed=16, clock=SystemClock())
    for market, price in MARKETS:
        engine.add_market(market, price)
    for account_id, (_, usdt) in ACCOUNTS.items():
        engine.open_account(account_id, {"USDT": usdt})
    async with (
        EmulatorServer(engine, KEYS) as emulator,
        Broker(
            _config(emulator.url, tmp_path, token), environ=ENV, reconciler_settings=FAST
        ) as broker,
    ):
        assert broker.api is not None
        rig = Rig(broker, engine, broker.api.url)
        await rig.until(
            lambda: all(r.sync == "ok" for r in broker.status()), "every account to sync"
        )
        yield rig


async def _unlock(page: Any) -> None:
    """Enter the bearer token the page asks for (once per tab)."""
    form = page.locator("#token-form")
    await form.wait_for(state="visible")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-form button[type=submit]")
    await form.wait_for(state="hidden")


def _account_url(rig: Rig, account_id: str) -> str:
    return f"{rig.url}/accounts/{account_id.replace(':', '%3A')}"


def _row(page: Any, table: str, *texts: str) -> Any:
    """The rows of ``table`` that contain every one of ``texts``."""
    rows = page.locator(f"#{table} tbody tr")
    for text in texts:
        rows = rows.filter(has_text=text)
    return rows


async def _buy_btc(rig: Rig, account_id: str, amount: float) -> Any:
    # A marketable limit: it fills at once, at the book's 50,000.
    return await rig.broker.guarded_exchange(account_id).create_order(
        OrderRequest(
            symbol="BTC/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=amount, price=51_000.0
        )
    )


# ---------------------------------------------------------------------------- pages


@pytest.mark.asyncio
@pytest.mark.parametrize("rig", [True], indirect=True, ids=["with-token"])
async def test_the_page_lists_every_account_and_shows_a_fill_a_block_and_a_trade_live(
    rig: Rig, browser: Browser
) -> None:
    page = await browser.page()
    await page.goto(rig.url + "/")
    await page.locator("#token-form").wait_for()
    await browser.screenshot(page, "index-token", 360, whole=False)
    await _unlock(page)
    for account_id in ACCOUNTS:
        await page.get_by_role("link", name=account_id, exact=True).wait_for()
    platform = _row(page, "accounts", PLATFORM)
    await _row(page, "accounts", PLATFORM, "STANDARD", "USDT", "allowed").wait_for()
    await _row(page, "accounts", ALICE, "MICRO_CAP", "400.00 USDT").wait_for()
    assert "10,000.00 USDT" in await platform.inner_text()

    await page.get_by_role("link", name=ALICE, exact=True).click()
    await page.wait_for_url(_account_url(rig, ALICE))  # the token stays in the tab
    await page.locator("#pause-state", has_text="Entries allowed").wait_for()
    await page.locator("#positions-card .empty", has_text="No positions").wait_for()

    # A fill: the position shows, and the guard's decision that let the entry through.
    first = await _buy_btc(rig, ALICE, 0.002)
    assert first.status is OrderStatus.FILLED
    await _row(page, "positions", "BTC/USDT", "0.002").wait_for()
    await _row(page, "decisions", "allowed", "BTC/USDT").first.wait_for()

    # A block: a second BTC entry on a MICRO_CAP account never reaches the exchange.
    await rig.until(lambda: rig.held(ALICE, "BTC") > 0, "the BTC to show in the balances")
    with pytest.raises(EntryBlocked) as blocked:
        await _buy_btc(rig, ALICE, 0.001)
    rule = blocked.value.rule
    assert rule in {"dca", "duplicate_symbol_entry"}
    await _row(page, "decisions", "blocked", rule, "BTC/USDT").wait_for()
    await page.locator("#last-block", has_text=rule).wait_for()

    # The price moves and the position is sold: the round trip shows in the trades.
    rig.engine.set_price("BTC/USDT", 48_500.0)
    await rig.until(
        lambda: (rig.broker.status(ALICE)[0].drawdown_pct or 0.0) > 0, "the drawdown to show"
    )
    rig.engine.set_price("BTC/USDT", 49_000.0)
    held = rig.engine.balances(ALICE)["BTC"].total
    sold = await rig.broker.guarded_exchange(ALICE).create_order(
        OrderRequest(symbol="BTC/USDT", side=Side.SELL, type=OrderType.MARKET, amount=held)
    )
    assert sold.status is OrderStatus.FILLED
    await _row(page, "trades", "BTC/USDT", "long", "50,000.00", "49,000.00").wait_for()
    await page.locator("#positions-card .empty", has_text="No positions").wait_for()
    # The download link carries the token (a plain link could not): the file is the CSV.
    async with page.expect_download() as downloading:
        await page.click("a[data-csv=trades]")
    download = await downloading.value
    assert download.suggested_filename == "USER_alice-trades.csv"
    saved = Path(await download.path())
    header, *lines = (await asyncio.to_thread(saved.read_text)).splitlines()
    assert "symbol" in header
    assert len(lines) == 1
    assert "BTC/USDT" in lines[0]
    await page.locator("#chart-equity .uplot").wait_for()
    await page.locator("#chart-drawdown .uplot").wait_for()
    await browser.screenshot(page, "account", 1280)
    await browser.screenshot(page, "account", 360)

    # Back on the accounts: Alice's row names the block and counts the trade.
    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.goto(rig.url + "/")
    await _row(page, "accounts", ALICE, rule, "BTC/USDT", "1 trade").wait_for()
    await browser.screenshot(page, "index", 1280)
    await browser.screenshot(page, "index", 360)


@pytest.mark.asyncio
async def test_a_pause_made_on_the_page_shows_and_blocks_the_next_entry_with_rule_paused(
    rig: Rig, browser: Browser
) -> None:
    page = await browser.page()
    await page.goto(_account_url(rig, ALICE))
    await page.locator("#pause-state", has_text="Entries allowed").wait_for()
    await page.fill("#pause-reason", "rehearsal: news at 14:00")
    await page.click("#pause-button")
    state = page.locator("#pause-state")
    await state.filter(has_text="Entries paused").wait_for()
    shown = await state.inner_text()
    assert "by web page" in shown
    assert "rehearsal: news at 14:00" in shown
    await page.locator("#chips .chip", has_text="paused").wait_for()
    await page.locator("#resume-button").wait_for(state="visible")

    with pytest.raises(EntryBlocked) as blocked:
        await _buy_btc(rig, ALICE, 0.002)
    assert blocked.value.rule == "paused"
    assert "web page" in blocked.value.reason
    await _row(page, "decisions", "blocked", "paused", "BTC/USDT").wait_for()
    await page.locator("#last-block", has_text="paused").wait_for()
    await browser.screenshot(page, "account-paused", 1280)

    index = await browser.page()
    await index.goto(rig.url + "/")
    await _row(index, "accounts", ALICE, "paused").wait_for()
    await _row(index, "accounts", BOB, "allowed").wait_for()

    await page.click("#resume-button")
    await state.filter(has_text="Entries allowed").wait_for()
    await _row(index, "accounts", ALICE, "allowed").wait_for()
    assert (await _buy_btc(rig, ALICE, 0.002)).status is OrderStatus.FILLED


@pytest.mark.asyncio
async def test_the_cancel_and_release_buttons_act_through_the_exchange_and_the_guard(
    rig: Rig, browser: Browser
) -> None:
    page = await browser.page()
    await page.goto(_account_url(rig, PLATFORM))
    resting = await rig.broker.guarded_exchange(PLATFORM).create_order(
        OrderRequest(
            symbol="ETH/USDT", side=Side.BUY, type=OrderType.LIMIT, amount=0.01, price=2_000.0
        )
    )
    assert resting.status is OrderStatus.OPEN
    order_row = _row(page, "orders", "ETH/USDT", resting.id)
    await order_row.wait_for()
    button = order_row.get_by_role("button")
    await button.click()  # the first click only arms it
    await button.filter(has_text="Confirm cancel").wait_for()
    assert rig.engine.get_order(PLATFORM, resting.id).status is OrderStatus.OPEN
    await button.click()
    await page.locator("#action-msg", has_text="confirmed by the exchange").wait_for()
    await order_row.wait_for(state="detached")
    assert rig.engine.get_order(PLATFORM, resting.id).status is OrderStatus.CANCELLED

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{rig.url}/v1/guard/reserve",
            json={"account_id": PLATFORM, "symbol": "BTC-USDT", "side": "buy", "size_usd": 25.0},
        ) as r,
    ):
        reserved = await r.json()
    assert reserved["allowed"] is True
    held = _row(page, "reservations", "BTC/USDT", "in flight")
    await held.wait_for()
    await held.get_by_role("button").click()
    await held.get_by_role("button").filter(has_text="Confirm release").click()
    await held.wait_for(state="detached")
    await page.locator("#reservations-card .empty").wait_for()
    assert rig.broker.guard is not None
    assert rig.broker.guard.reservation_views(PLATFORM) == []


@pytest.mark.asyncio
async def test_the_page_says_connection_lost_when_the_api_stops_answering(
    rig: Rig, browser: Browser
) -> None:
    page = await browser.page()
    await page.goto(rig.url + "/")
    await page.locator("#conn.live").wait_for()
    await _row(page, "accounts", BOB).wait_for()
    assert await page.locator("#lost").is_hidden()
    assert rig.broker.api is not None
    await rig.broker.api.aclose()
    await page.locator("#lost", has_text="Connection lost").wait_for()
    await page.locator("#conn.lost").wait_for()
    await page.wait_for_function("document.body.classList.contains('stale')")
    # What was shown stays, marked as old: the trader still sees the last figures.
    assert await _row(page, "accounts", BOB).count() == 1
    await browser.screenshot(page, "index-lost", 360, whole=False)  # the banner is fixed


# ---------------------------------------------------------------------------- the token


@pytest_asyncio.fixture
async def bare_api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ApiServer]:
    """An API over hand-made books; with ``TOKEN`` unless the test is parametrized off."""
    token = getattr(request, "param", TOKEN)
    store = Store(tmp_path / "api.sqlite3")
    clock = FakeClock(T0)
    live = {ALICE: account_live(ALICE, equity=100.0, free=100.0)}
    guard = make_guard(store, clock, live)
    ctx = ApiContext(
        books=guard.books,
        live=live,
        guard=guard,
        metrics=BrokerMetrics(),
        clock=clock,
        token=token,
    )
    async with ApiServer(ctx, "127.0.0.1", 0) as api:
        yield api
    store.close()


async def _fetch(
    api: ApiServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, headers=headers or {}) as r,
    ):
        return r.status, dict(r.headers), await r.read()


@pytest.mark.asyncio
async def test_the_shell_is_served_without_the_token_and_holds_no_account_data(
    bare_api: ApiServer,
) -> None:
    status, headers, index = await _fetch(bare_api, "GET", "/")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    _, _, alice_page = await _fetch(bare_api, "GET", "/accounts/USER%3Aalice")
    _, _, other_page = await _fetch(bare_api, "GET", "/accounts/USER%3Anobody")
    assert alice_page == other_page  # the same bytes for every account: nothing of one
    for body in (index, alice_page):
        assert b"alice" not in body
    for name, kind in (
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    ):
        status, headers, body = await _fetch(bare_api, "GET", f"/web/{name}")
        assert (status, headers["Content-Type"].split(";")[0]) == (200, kind), name
        assert body
    for missing in ("/web/nope.js", "/web/README.md", "/web/..%2Fweb.py", "/web/index.html"):
        status, _, _ = await _fetch(bare_api, "GET", missing)
        assert status == 404, missing


@pytest.mark.asyncio
async def test_every_data_endpoint_still_needs_the_token(bare_api: ApiServer) -> None:
    for method, path in (
        ("GET", "/v1/accounts"),
        ("GET", "/v1/accounts/USER:alice"),
        ("GET", "/v1/accounts/USER:alice/orders"),
        ("GET", "/v1/accounts/USER:alice/positions"),
        ("GET", "/v1/accounts/USER:alice/equity"),
        ("GET", "/v1/accounts/USER:alice/trades.csv"),
        ("POST", "/v1/accounts/USER:alice/pause"),
        ("POST", "/v1/guard/release"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/"),  # only reading the shell is free
    ):
        status, _, body = await _fetch(bare_api, method, path)
        assert status == 401, (method, path)
        assert b"bearer token" in body
    status, _, _ = await _fetch(
        bare_api, "GET", "/v1/accounts", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200


@pytest.mark.asyncio
@pytest.mark.parametrize("bare_api", [None], indirect=True)
async def test_without_a_token_another_web_site_cannot_reach_the_api(bare_api: ApiServer) -> None:
    own = bare_api.url
    # A form on another site posting to the API (no CORS needed to *send*): refused.
    status, _, body = await _fetch(
        bare_api, "POST", "/v1/accounts/USER:alice/pause", {"Origin": "http://evil.example"}
    )
    assert status == 403
    assert b"evil.example" in body
    # A DNS name of the attacker's pointing at 127.0.0.1 (rebinding): refused by Host.
    port = urlsplit(own).port
    status, _, body = await _fetch(
        bare_api, "GET", "/v1/accounts", {"Host": f"evil.example:{port}"}
    )
    assert status == 403
    assert b'"field": "Host"' in body
    # The page itself (its own origin), and clients that are not browsers, pass.
    status, _, _ = await _fetch(bare_api, "GET", "/v1/accounts", {"Origin": own})
    assert status == 200
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        status, _, _ = await _fetch(bare_api, "GET", "/v1/accounts", {"Host": host})
        assert status == 200, host
    status, _, _ = await _fetch(bare_api, "GET", "/v1/accounts")
    assert status == 200
