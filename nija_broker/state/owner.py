"""The owner of account state: the one thread that changes books and talks to SQLite.

Every change to an account's books (orders, fills, ledger, performance,
followed orders) and to the guard's reservations runs on the owner's thread,
one change at a time, in the order the changes were asked for; so does every
SQLite statement the books and the guard make. Nobody else takes a lock on
that state: other threads and tasks send the owner a function and wait for
its answer (STYLE 13).

There are two doors, one per kind of caller:

* :meth:`Owner.call` for threads (the live bot's threads, the compat layer):
  submits the function and blocks until the owner ran it, at most
  ``wait_s`` seconds, then raises :class:`~nija_broker.core.errors.StateError`
  (the owner is stuck: a guard decision then fails closed at the caller).
* :meth:`Owner.acall` for asyncio code (the reconciler, the API): awaits the
  answer, so the event loop never waits on the owner or on the disk.

Called from the owner's own thread, both run the function at once (a guard
decision that reads the book is one job, not two).

A job cancelled before its turn never runs; one already running finishes
(its change is whole or not at all: the book writes one transaction per
change), and its answer is dropped.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from nija_broker.core.errors import StateError

__all__ = ["Owner", "owned"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Owned(Protocol):
    @property
    def owner(self) -> Owner: ...


_S = TypeVar("_S", bound=_Owned)


def owned(method: Callable[Concatenate[_S, _P], _T]) -> Callable[Concatenate[_S, _P], _T]:
    """Decorate a method of an object with an ``owner``: every call runs on the owner's
    thread (at once when already there), so callers on any thread get the same door."""

    @functools.wraps(method)
    def on_owner(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return self.owner.call(method, self, *args, **kwargs)

    return on_owner


OWNER_WAIT_S = 30.0
"""How long a thread waits for the owner before giving up. The owner's jobs are
in-memory changes and one SQLite transaction each (a millisecond or so); this
long a wait means the disk or the owner is stuck, never a busy queue."""


class Owner:
    """A single thread that runs every change to the account state it owns."""

    def __init__(self, *, name: str = "nija-owner", wait_s: float = OWNER_WAIT_S) -> None:
        if not wait_s > 0:
            raise ValueError(f"wait_s must be > 0 seconds, got {wait_s!r}")
        self.name = name
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._started
        )
        self._ident: int | None = None
        self._closed = False

    def _started(self) -> None:
        self._ident = threading.get_ident()

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The owner's one thread, for ``loop.run_in_executor``."""
        return self._executor

    def owns(self) -> bool:
        """True on the owner's thread."""
        return self._ident == threading.get_ident()

    def call(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn`` on the owner's thread and return its answer (or raise its error)."""
        if self.owns():
            return fn(*args, **kwargs)
        if self._closed:
            raise StateError(f"{self.name} is closed")
        future = self._executor.submit(fn, *args, **kwargs)
        try:
            return future.result(timeout=self.wait_s)
        except FutureTimeout:
            future.cancel()
            raise StateError(
                f"{self.name}: no answer within {self.wait_s}s "
                f"({getattr(fn, '__qualname__', fn)!s})"
            ) from None

    async def acall(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """:meth:`call` for asyncio code: awaits the owner instead of blocking the loop."""
        if self.owns():
            return fn(*args, **kwargs)
        if self._closed:
            raise StateError(f"{self.name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Run the jobs already queued, then stop the thread. Safe twice; not from the owner."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=not self.owns())

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        if self._closed:
            return
        await asyncio.to_thread(self.close)
