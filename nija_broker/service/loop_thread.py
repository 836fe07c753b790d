"""A daemon thread running an asyncio loop of its own: started, ready, stopped.

The API (:class:`~nija_broker.service.api_thread.AppThread`, thread ``nija-api``) and the
alerts (:class:`~nija_broker.service.alerts.AlertDispatcher`, thread ``nija-alerts``) each
run their work here, so the runtime's loop never waits for it.

Who runs what: :meth:`LoopThread.start` and :meth:`LoopThread.aclose` are awaited from the
caller's loop; the body runs on the thread, under ``asyncio.run``. They cross only through
``concurrent.futures.Future`` objects (awaited with :func:`asyncio.wrap_future`) and
``call_soon_threadsafe``, so neither loop ever blocks on the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from nija_broker.core.errors import StateError

__all__ = ["LoopBody", "LoopThread"]

T = TypeVar("T")

LoopBody = Callable[[Callable[[T], None], asyncio.Event], Awaitable[None]]
"""``body(ready, stop)``, run on the thread's loop: it calls ``ready(value)`` once it is up
(or raises why it cannot come up), then returns once ``stop`` is set."""


class LoopThread(Generic[T]):
    """``body`` run by a daemon thread named ``name`` on an asyncio loop of its own.

    :meth:`start` returns the value the body passed to ``ready``, or raises what the body
    raised before it. Start once; close any number of times.
    """

    def __init__(self, body: LoopBody[T], *, name: str, log: logging.Logger) -> None:
        self._body = body
        self.name = name
        self._log = log  # the owner's: a failure after ready is told where its lines go
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Running at once: asyncio's wrap_future cancels a *pending* source future when the
        # awaiting task is cancelled, and the thread must still be able to set it.
        self._ready.set_running_or_notify_cancel()
        self._ended.set_running_or_notify_cancel()
        # Written on the thread before ``_ready`` resolves, read only after it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The thread, from :meth:`start` until :meth:`aclose` returns."""
        return self._thread

    async def start(self) -> T:
        """Start the thread; the body's ready value once it is up (its error if it fails)."""
        if self._thread is not None or self._ended.done():
            raise StateError(f"{self.name} was started already")
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        return await asyncio.wrap_future(self._ready)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                self._log.exception("%s failed after it was ready", self.name)
        finally:
            if not self._ready.done():  # ended by a BaseException: start must still answer
                self._ready.set_exception(StateError(f"{self.name} ended before it was ready"))
            self._ended.set_result(None)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        await self._body(self._ready.set_result, stop)

    async def aclose(self) -> None:
        """Stop the body and wait until the thread has ended. Safe twice."""
        thread = self._thread
        if thread is None:
            return
        # A start still in progress finishes first: then there is a loop to stop, or none.
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self._ready)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has closed already
                loop.call_soon_threadsafe(stop.set)
        await asyncio.wrap_future(self._ended)
        # ``_ended`` is the thread's last act: the join waits only for its exit.
        thread.join()
        self._thread = None
