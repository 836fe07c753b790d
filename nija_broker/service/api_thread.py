"""An aiohttp application served on a thread of its own, with its own event loop.

Why: the runtime's loop runs the reconciler (ccxt's parsing of every poll, the
start-up syncs of every account). A request served on that loop waits for
whatever runs before it; served here, it waits at most for the interpreter's
GIL hand-off (``bench/api_load.py`` measures both).

:meth:`AppThread.start` and :meth:`AppThread.aclose` are awaited from the
caller's loop. They cross to the serving thread only through
``concurrent.futures.Future`` objects (wrapped with :func:`asyncio.wrap_future`)
and ``call_soon_threadsafe``, so neither loop ever blocks on the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable

from aiohttp import web

from nija_broker.core.errors import StateError

__all__ = ["AppThread"]

log = logging.getLogger("nija_broker.api")


class AppThread:
    """``make_app()`` served on ``host:port`` by a daemon thread named ``name``.

    The application is built on the serving thread, so everything aiohttp binds
    to a loop is bound to that thread's loop. Start once; close any number of times.
    """

    def __init__(
        self, make_app: Callable[[], web.Application], host: str, port: int, *, name: str
    ) -> None:
        self._make_app = make_app
        self.host = host
        self.port = port
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._ended: concurrent.futures.Future[None] = concurrent.futures.Future()
        # Running at once: asyncio's wrap_future cancels a *pending* source future when the
        # awaiting task is cancelled, and the serving thread must still be able to set it.
        self._ready.set_running_or_notify_cancel()
        self._ended.set_running_or_notify_cancel()
        # Written on the serving thread before ``_ready`` resolves, read only after it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The serving thread, from :meth:`start` until :meth:`aclose` returns."""
        return self._thread

    async def start(self) -> int:
        """Start serving; the bound port once it listens (the error if it cannot bind)."""
        if self._thread is not None or self._ended.done():
            raise StateError(f"{self._name} was started already")
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self.port = await asyncio.wrap_future(self._ready)
        return self.port

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("%s failed after it started listening", self._name)
        finally:
            if not self._ready.done():  # ended by a BaseException: start must still answer
                self._ready.set_exception(StateError(f"{self._name} ended before it listened"))
            self._ended.set_result(None)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop = asyncio.Event()
        runner = web.AppRunner(self._make_app(), access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            port = self.port
            server = site._server  # aiohttp exposes the bound port only here
            sockets = getattr(server, "sockets", None) or []
            if port == 0 and sockets:
                port = sockets[0].getsockname()[1]
        except Exception as exc:
            await runner.cleanup()
            self._ready.set_exception(exc)  # the port in use, say: start raises it
            return
        self._ready.set_result(port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()  # stops intake, lets the requests in flight answer

    async def aclose(self) -> None:
        """Stop serving and wait until the serving thread has ended. Safe twice."""
        thread = self._thread
        if thread is None:
            return
        # A start still binding finishes first: then there is a loop to stop, or none.
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
