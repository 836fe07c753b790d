"""The Broker on its own event loop in a background thread, for a synchronous bot."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from nija_broker.core.errors import StateError
from nija_broker.core.intent import Decision, OrderIntent
from nija_broker.guard.guard import Guard
from nija_broker.service.config import Config
from nija_broker.service.runtime import Broker
from nija_broker.service.status import AccountStatus

__all__ = ["BrokerThread"]


class BrokerThread:
    """The Broker on its own event loop in a background thread, for a synchronous bot."""

    def __init__(self, config: Config, **broker_kwargs: Any) -> None:
        self._config = config
        self._kwargs = broker_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.broker: Broker | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        if self._thread is not None:
            raise StateError("already started")
        self._thread = threading.Thread(target=self._main, name="nija-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"nija_broker did not start within {timeout_s:g}s")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with Broker(self._config, **self._kwargs) as broker:
                self.broker = broker
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            if not isinstance(exc, Exception):
                raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down gracefully and wait for the thread. Safe twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout_s)
        self._thread = None

    def _broker(self) -> Broker:
        if self.broker is None:
            raise StateError("nija_broker is not running; call start() first")
        return self.broker

    def check(self, intent: OrderIntent) -> Decision:
        return self._broker().check(intent)

    def decide(self, intent: OrderIntent) -> Decision:
        """Judge and reserve (thread-safe): confirm or release through :attr:`guard`."""
        return self._broker()._require_guard().decide(intent)

    @property
    def guard(self) -> Guard:
        return self._broker()._require_guard()

    def status(self, account_id: str | None = None) -> list[AccountStatus]:
        return self._broker().status(account_id)
