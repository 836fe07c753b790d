"""Alerts: what happened, told to the trader's webhook, Telegram chat, Discord or Slack channel.

Who runs what (STYLE 13):

- :meth:`AlertDispatcher.offer` runs on whichever thread calls it: the runtime loop's
  event consumer, and the guard's decision observer (the owner's thread). It never
  waits: each target that wants the alert takes it into its own bounded queue under a
  lock held for one append, and an idle target's worker is woken with
  ``call_soon_threadsafe``. A full queue drops its oldest alert and counts it.
- Delivery runs on the thread ``nija-alerts``, on an asyncio loop of its own: one
  worker task per target (one alert at a time, in order) and one aiohttp session.
  A transient failure (no connection, a timeout, HTTP 408, 429 or 5xx) is retried by
  tenacity with exponential backoff and jitter, waiting at least what the service's
  ``Retry-After`` asks; any other answer is final. A target whose alert is still
  undelivered after ``max_attempts`` is ``failing`` until a delivery succeeds.
- :meth:`AlertDispatcher.report` runs on the API's thread (``/healthz``).

A slow or dead target therefore costs the reconciler and the guard one append per
alert, never a wait (``bench/alerts.py``), and it is never fatal. Tokens and webhook
URLs (Discord's and Slack's carry their secret) are registered with
:func:`~nija_broker.service.logs.register_secret` and appear in no log line and no
``/healthz`` answer.

What the services take, as documented: Telegram ``POST {api_url}/bot<token>/sendMessage``
with ``chat_id`` and ``text`` (1-4096 characters; the answer's ``ok`` says whether it was
sent; flood control answers 429 with ``parameters.retry_after``); a Discord webhook JSON
with ``content`` (at most 2000 characters; 204 on success; 429 with ``Retry-After``); a
Slack incoming webhook JSON with ``text`` (``&``, ``<``, ``>`` escaped as HTML entities;
400/403/404/410 for a bad payload or channel, 429 when over one message a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import ConfigError, StateError
from nija_broker.service.alert_texts import Alert, block_alert, event_alerts
from nija_broker.service.config import TELEGRAM_API_URL, AlertConfig
from nija_broker.service.config_problems import url_problem
from nija_broker.service.logs import redact, register_secret
from nija_broker.service.loop_thread import LoopThread

__all__ = ["Alert", "AlertDispatcher", "block_alert", "event_alerts"]  # the texts re-exported

log = logging.getLogger("nija_broker.alerts")

FLUSH_S = 2.0
"""How long closing waits for queued alerts to go out before it gives up on them."""
_TEXT_LIMITS = {"telegram": 4096, "discord": 2000}
_ERROR_CHARS = 200  # of a refusal's body, in last_error


# ---------------------------------------------------------------------------- targets


class _Transient(Exception):
    """Worth another attempt; ``retry_after_s`` is what the service asked us to wait."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Refused(Exception):
    """The service refused the alert for good (a wrong URL, token or chat): not retried."""


def _seconds(value: object) -> float | None:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # an HTTP date, or nothing: the backoff decides
    return seconds if seconds >= 0 else None


class _Target:
    """One ``[[alerts]]`` entry: its secrets read, its queue, its figures. The queue and the
    figures are shared by the offering threads, the alerts thread and the API's: every
    access holds ``_lock``, for one append, pop or copy."""

    def __init__(self, index: int, config: AlertConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.name = config.target_name
        self.kind = config.type
        self.events = frozenset(config.events)
        self.accounts = frozenset(config.accounts) if config.accounts else None
        self.token = self._env(index, "token_env", environ)
        url = self._env(index, "url_env", environ) if config.url_env else config.url
        if self.kind == "telegram":
            if self.token is None or config.chat_id is None:
                raise ConfigError(
                    f"alert target {self.name!r}: telegram needs token_env and chat_id",
                    key=f"alerts[{index}].{'token_env' if self.token is None else 'chat_id'}",
                )
            url = f"{(config.api_url or TELEGRAM_API_URL).rstrip('/')}/bot{self.token}/sendMessage"
        if url is None or url_problem(url) is not None:
            field = "url_env" if config.url_env else "api_url" if self.kind == "telegram" else "url"
            raise ConfigError(
                f"alert target {self.name!r}: {field} needs an http:// or https:// URL "
                "(the value is not shown)",
                key=f"alerts[{index}].{field}",
            )
        self.url = url
        # Discord's and Slack's webhook URLs carry their secret in the path.
        path = urllib.parse.urlsplit(url).path if self.kind in ("discord", "slack") else None
        for secret in (self.token, url, path):
            register_secret(secret)
        self._secrets = tuple(s for s in (self.token, url) if s)
        self.wait = self._backoff(config)
        self.wake: asyncio.Event | None = None  # made on the alerts loop
        self._lock = threading.Lock()
        self._queue: deque[Alert] = deque()
        self._idle = False
        self._repeats: dict[tuple[str, ...], tuple[float, int]] = {}
        self._figures: dict[str, Any] = {
            "type": self.kind,
            "state": "ok",
            "delivered": 0,
            "failed": 0,
            "dropped": 0,
            "repeats_not_sent": 0,
            "last_error": None,
            "last_error_at": None,
            "last_delivered_at": None,
        }

    def _env(self, index: int, field: str, environ: Mapping[str, str]) -> str | None:
        name = getattr(self.config, field)
        if name is None:
            return None
        value = environ.get(name, "").strip()
        if not value:
            raise ConfigError(
                f"alert target {self.name!r}: environment variable {name} ({field}) is not set",
                key=f"alerts[{index}].{field}",
            )
        return value

    @staticmethod
    def _backoff(config: AlertConfig) -> Callable[[RetryCallState], float]:
        """Exponential with jitter (``initial * 2**n`` plus up to ``initial`` at random, at
        most ``backoff_max_s``), and never less than what the service asked for."""
        initial_s, most_s = config.backoff_initial_s, config.backoff_max_s

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            asked: float | None = error.retry_after_s if isinstance(error, _Transient) else None
            exponent = min(state.attempt_number - 1, 60)  # no float overflow on long runs
            base = min(initial_s * 2.0**exponent + random.uniform(0, initial_s), most_s)
            return max(base, min(asked, most_s)) if asked is not None else base

        return wait

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(" ".join(text.split()))

    def wants(self, alert: Alert) -> bool:
        return alert.event in self.events and (
            self.accounts is None or alert.account_id in self.accounts
        )

    def put(self, alert: Alert, now_s: float) -> bool:
        """Queue ``alert`` (dropping the oldest when full); True when the worker must wake."""
        repeat_s, key = self.config.block_repeat_s, alert.repeat_key
        with self._lock:
            if key is not None and repeat_s > 0:
                sent_s, repeats = self._repeats.get(key, (None, 0))
                if sent_s is not None and now_s - sent_s < repeat_s:
                    self._repeats[key] = (sent_s, repeats + 1)
                    self._figures["repeats_not_sent"] += 1
                    return False
                if repeats:
                    alert = replace(
                        alert,
                        text=f"{alert.text} ({repeats} repeats in {repeat_s:g} s not sent)",
                        fields={**alert.fields, "repeats_not_sent": repeats},
                    )
                if len(self._repeats) > 10_000:  # forget keys whose window has passed
                    self._repeats = {
                        k: v for k, v in self._repeats.items() if now_s - v[0] < repeat_s
                    }
                self._repeats[key] = (now_s, 0)
            if len(self._queue) >= self.config.queue_size:
                self._queue.popleft()
                self._figures["dropped"] += 1
            self._queue.append(alert)
            wake, self._idle = self._idle, False
            return wake

    def take(self) -> Alert | None:
        """The oldest queued alert; ``None`` (and idle, to be woken) when there is none."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            self._idle = True
            return None

    def settle(self, error: str | None, at: datetime) -> None:
        """One alert delivered (``error`` None) or given up on; logs a change of state."""
        with self._lock:
            figures = self._figures
            was = figures["state"]
            if error is None:
                figures["delivered"] += 1
                figures["last_delivered_at"] = at.isoformat()
                figures["state"] = "ok"
            else:
                figures["failed"] += 1
                figures["last_error"] = error
                figures["last_error_at"] = at.isoformat()
                figures["state"] = "failing"
            now = figures["state"]
        if now != was and error is not None:
            log.warning("alert target %s (%s) is failing: %s", self.name, self.kind, error)
        elif now != was:
            log.info("alert target %s (%s) delivers again", self.name, self.kind)

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {**self._figures, "queued": len(self._queue)}

    def request(self, alert: Alert) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and headers this target's service takes for ``alert``."""
        text = alert.text
        limit = _TEXT_LIMITS.get(self.kind)
        if limit is not None and len(text) > limit:
            text = text[: limit - 1] + "…"
        if self.kind == "webhook":
            body = {
                "event": alert.event,
                "account_id": alert.account_id,
                "at": alert.at.isoformat(),
                "text": text,
                **alert.fields,
            }
            return body, {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if self.kind == "telegram":
            return {"chat_id": self.config.chat_id, "text": text}, {}
        if self.kind == "discord":
            # No @everyone or role pings from a reason string.
            return {"content": text, "allowed_mentions": {"parse": []}}, {}
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": escaped}, {}


# ---------------------------------------------------------------------------- dispatcher


class AlertDispatcher:
    """Every configured target, delivered on a thread of its own. Start once, close any
    number of times; :meth:`offer` and :meth:`report` are safe from any thread."""

    def __init__(
        self,
        configs: Sequence[AlertConfig],
        *,
        environ: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        flush_s: float = FLUSH_S,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.targets = [_Target(i, c, env) for i, c in enumerate(configs)]
        self.clock: Clock = clock or SystemClock()
        self.flush_s = flush_s
        self._sleep = sleep or asyncio.sleep
        self._delivering = LoopThread(self._serve, name="nija-alerts", log=log)
        self._loop: asyncio.AbstractEventLoop | None = None  # the alerts loop, once workers run
        self._closing = False
        self._closed = False

    # ------------------------------------------------------------------ any thread

    def offer(self, alert: Alert) -> None:
        """Queue ``alert`` for every target that wants it. Never waits, never raises."""
        if self._closed:
            return
        try:
            now_s = self.clock.monotonic()
            for target in self.targets:
                if target.wants(alert) and target.put(alert, now_s):
                    self._wake(target)
        except Exception:  # an alert must never break what offered it
            log.exception("queueing a %s alert failed", alert.event)

    def _wake(self, target: _Target) -> None:
        loop, wake = self._loop, target.wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wake.set)

    def report(self) -> dict[str, dict[str, Any]]:
        """Each target's state (``ok`` or ``failing``), counts and last error, by name."""
        return {target.name: target.report() for target in self.targets}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the alerts thread; returns once its loop and session are up."""
        if self._closed:  # closed, whether it ran or not: it runs once at most
            raise StateError(f"{self._delivering.name} was started already")
        await self._delivering.start()

    async def aclose(self) -> None:
        """Stop taking alerts, give the queued ones ``flush_s`` to go out, end the thread."""
        if self._closed:
            return
        self._closed = True
        await self._delivering.aclose()

    async def _serve(self, ready: Callable[[None], None], stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for target in self.targets:
            target.wake = asyncio.Event()
        session = aiohttp.ClientSession(headers={"User-Agent": "nija-broker-alerts"})
        try:
            async with asyncio.timeout(None) as flush:
                async with asyncio.TaskGroup() as group:
                    for target in self.targets:
                        group.create_task(self._work(target, session), name=f"alerts:{target.name}")
                    self._loop = loop
                    ready(None)
                    await stop.wait()
                    self._closing = True
                    flush.reschedule(loop.time() + self.flush_s)
                    for target in self.targets:
                        assert target.wake is not None
                        target.wake.set()
        except TimeoutError:
            left = {t.name: t.report()["queued"] for t in self.targets}
            log.warning("closing: alerts not delivered within %.1f s: %s", self.flush_s, left)
        finally:
            await session.close()

    async def _work(self, target: _Target, session: aiohttp.ClientSession) -> None:
        wake = target.wake
        assert wake is not None
        while True:
            alert = target.take()
            if alert is None:
                if self._closing:
                    return
                await wake.wait()
                wake.clear()
                continue
            await self._deliver(target, session, alert)

    async def _deliver(self, target: _Target, session: aiohttp.ClientSession, alert: Alert) -> None:
        config = target.config
        tries = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(config.max_attempts),
                wait=target.wait,
                retry=retry_if_exception_type(_Transient),
                sleep=self._sleep,
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    await self._post(target, session, alert)
        except (_Transient, _Refused) as exc:
            target.settle(f"{exc} ({tries} attempt{'s' if tries > 1 else ''})", self.clock.now())
        except Exception as exc:  # a bug here must not stop this target's worker
            log.exception("alert target %s: delivering a %s alert failed", target.name, alert.event)
            target.settle(f"{type(exc).__name__}", self.clock.now())
        else:
            target.settle(None, self.clock.now())

    async def _post(self, target: _Target, session: aiohttp.ClientSession, alert: Alert) -> None:
        body, headers = target.request(alert)
        try:
            async with session.post(
                target.url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=target.config.timeout_s),
                allow_redirects=False,  # a bearer token never follows a redirect
            ) as response:
                status = response.status
                raw = await response.content.read(4096)
                asked = _seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _Transient(target.scrub(f"{type(exc).__name__}: {exc}")) from exc
        text = raw.decode("utf-8", "replace")
        answer = _json(text) if target.kind in ("telegram", "discord") else {}
        if target.kind == "telegram":
            # Flood control: ResponseParameters.retry_after, in seconds.
            parameters = answer.get("parameters")
            if isinstance(parameters, dict) and asked is None:
                asked = _seconds(parameters.get("retry_after"))
        elif target.kind == "discord" and asked is None:
            asked = _seconds(answer.get("retry_after"))
        why = target.scrub(f"HTTP {status}: {answer.get('description') or text}")[:_ERROR_CHARS]
        if status == 429 or status == 408 or status >= 500:
            raise _Transient(why, asked)
        if not 200 <= status < 300:
            raise _Refused(why)
        if target.kind == "telegram" and answer.get("ok") is not True:
            raise _Refused(why)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
