"""An aiohttp application served on a thread of its own, with its own event loop.

Why: the runtime's loop runs the reconciler (ccxt's parsing of every poll, the
start-up syncs of every account). A request served on that loop waits for
whatever runs before it; served here, it waits at most for the interpreter's
GIL hand-off (``bench/api_load.py`` measures both).

The thread and its loop are a :class:`~nija_broker.service.loop_thread.LoopThread`
(started and closed from the caller's loop, never blocking it); this module only serves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from aiohttp import web

from nija_broker.service.loop_thread import LoopThread

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
        self._served = LoopThread(self._serve, name=name, log=log)

    @property
    def thread(self) -> threading.Thread | None:
        """The serving thread, from :meth:`start` until :meth:`aclose` returns."""
        return self._served.thread

    async def start(self) -> int:
        """Start serving; the bound port once it listens (the error if it cannot bind)."""
        self.port = await self._served.start()
        return self.port

    async def aclose(self) -> None:
        """Stop serving and wait until the serving thread has ended. Safe twice."""
        await self._served.aclose()

    async def _serve(self, ready: Callable[[int], None], stop: asyncio.Event) -> None:
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
        except Exception:
            await runner.cleanup()
            raise  # the port in use, say: start raises it
        ready(port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()  # stops intake, lets the requests in flight answer
