"""Time, injected, and the one deadline of an exchange call.

Three clocks implement :class:`Clock`:

- :class:`SystemClock`, in production: wall time, ``time.monotonic`` and
  ``asyncio.sleep``. asyncio's default loop keeps time with ``time.monotonic``
  too, so ``asyncio.timeout``, ``loop.call_later`` and this clock share one
  timeline.
- :class:`MockClock`, for async tests in the manner of trio's ``MockClock``: it
  comes with its own event loop (:meth:`MockClock.new_event_loop`,
  :meth:`MockClock.run`) whose ``time()`` is the clock's virtual monotonic time,
  so ``asyncio.sleep``, ``asyncio.timeout``, ``call_later`` and every
  ``clock.sleep`` run on virtual time. When every task is blocked (no callback
  ready, no loopback I/O arriving within ``autojump_threshold`` real seconds,
  no job handed out by ``run_in_executor`` still running), time jumps to the
  next timer. A 60-minute stale order or a 15 s deadline takes no real time,
  and time never moves while anything could still run.
- :class:`FakeClock`, for synchronous tests that move time by hand
  (:meth:`FakeClock.advance`); its ``sleep`` is a convenience, see there.

:func:`deadline` gives an exchange call its one deadline, on loop time: the
outermost caller that sets one owns it, and calls inside it use that same
deadline instead of starting a second (docs/DESIGN.md, "Time and deadlines").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import selectors
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar, TypeVarTuple

__all__ = [
    "DEFAULT_CALL_TIMEOUT_S",
    "Clock",
    "FakeClock",
    "MockClock",
    "SystemClock",
    "current_deadline",
    "deadline",
    "from_ms",
    "to_ms",
    "utc",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC wall time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _aware_start(start: datetime | None, who: str) -> datetime:
    start = start or _EPOCH
    if start.tzinfo is None:
        raise ValueError(f"{who} start must be timezone-aware")
    return start


class FakeClock:
    """A clock that moves only when told to (:meth:`advance`), for synchronous tests.

    :meth:`sleep` exists so that code which sleeps (a retry's backoff, a rate
    budget) can run on this clock without a driver: ``sleep(s)`` notes the
    deadline ``monotonic() + s`` when it is called, yields to the loop once,
    then moves the clock forward to that deadline unless it is already there
    or past it. Sleepers that start in the same turn of the loop therefore
    share one jump: 300 tasks sleeping 5 s together move time 5 s, not
    1,500 s. A sleeper never wakes before its deadline but may wake after it
    (when another sleeper's later deadline moved the clock first). Its sleeps
    take no loop time, so ``asyncio.timeout`` and :func:`deadline` never see
    them. Tasks that must wake in deadline order, or time that must pass on
    its own while many tasks run, want :class:`MockClock`.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware_start(start, "FakeClock")
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        due = self._mono + max(seconds, 0.0)
        # One turn first, so every sleeper ready in this turn reads the same start.
        await asyncio.sleep(0)
        if due > self._mono:
            self.advance(due - self._mono)


class MockClock:
    """Virtual time that jumps to the next timer only when every task is blocked.

    Run async code on it with :meth:`run` (or ``asyncio.Runner(loop_factory=
    clock.new_event_loop)``). On that loop ``loop.time()`` is :meth:`monotonic`,
    so every asyncio timer and every :meth:`sleep` is on virtual time.

    The loop concludes that everything is blocked, and jumps, only when

    - no callback is ready (a task that yields with ``await asyncio.sleep(0)``
      between CPU-bound steps holds time still);
    - no job handed out through ``loop.run_in_executor`` (``asyncio.to_thread``,
      the book's writer thread, DNS look-ups) is still running: the loop waits
      for it in real time. Work a thread does for the loop by any other road
      (``executor.submit`` wrapped by hand, a thread of one's own calling
      ``call_soon_threadsafe``) is not seen, and time may jump under it;
    - no I/O arrives within ``autojump_threshold`` real seconds, where a socket
      other than the loop's own wake-up pipe is open (a loopback emulator
      answering over TCP), so a reply in flight is read before time moves.

    :meth:`advance` moves time by hand as :meth:`FakeClock.advance` does; the
    timers it makes due fire on the loop's next turn.
    """

    def __init__(self, start: datetime | None = None, *, autojump_threshold: float = 0.002) -> None:
        if not autojump_threshold >= 0:
            raise ValueError(
                f"autojump_threshold must be >= 0 real seconds, got {autojump_threshold!r}"
            )
        self._start = _aware_start(start, "MockClock")
        self._mono = 0.0
        self.autojump_threshold = autojump_threshold
        self.jumps = 0
        """How many times the loop moved time because every task was blocked."""
        self._loop: _MockLoop | None = None

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._mono)

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                "MockClock.sleep runs only on the clock's own loop: "
                "use clock.run(...) or clock.new_event_loop()"
            )
        await asyncio.sleep(max(seconds, 0.0))

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """The clock's event loop (one per clock; a closed one may be replaced)."""
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError("this MockClock already drives an open event loop")
        selector = _JumpingSelector(self)
        self._loop = _MockLoop(self, selector)
        return self._loop

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to its end on the clock's loop, as ``asyncio.run`` would."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main)

    def _jump(self, seconds: float) -> None:
        self._mono += seconds
        self.jumps += 1


class _MockLoop(asyncio.SelectorEventLoop):
    """A selector loop on a :class:`MockClock`'s time that counts its executor jobs."""

    def __init__(self, clock: MockClock, selector: _JumpingSelector) -> None:
        self._mock_clock = clock
        self._jobs = 0
        super().__init__(selector)
        # What the loop registered for itself (the wake-up pipe): only other
        # file descriptors can bring I/O worth waiting for before a jump.
        selector.own_fds = frozenset(selector.get_map())
        selector.jobs = lambda: self._jobs

    def time(self) -> float:
        return self._mock_clock.monotonic()

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._jobs += 1
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, _future: asyncio.Future[Any]) -> None:
        self._jobs -= 1


class _JumpingSelector(selectors.BaseSelector):
    """The real selector, except that a wait with nothing left to run moves virtual time."""

    def __init__(self, clock: MockClock) -> None:
        self._clock = clock
        self._real = selectors.DefaultSelector()
        self.own_fds: frozenset[int] = frozenset()
        self.jobs: Callable[[], int] = lambda: 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # asyncio passes 0 when callbacks are ready, None when no timer is set,
        # otherwise the time to the next timer.
        if timeout is not None and timeout <= 0:
            return self._real.select(0)
        events = self._real.select(0)
        if events:
            return events
        if timeout is None or self.jobs():
            # Nothing to jump to, or a thread is still working for the loop: wait
            # for real (the job's end wakes the loop through its pipe).
            return self._real.select(None if self.jobs() else timeout)
        if set(self._real.get_map()) - self.own_fds:
            events = self._real.select(min(timeout, self._clock.autojump_threshold))
            if events:
                return events
        self._clock._jump(timeout)
        return []

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()


# ------------------------------------------------------------------ the call deadline

DEFAULT_CALL_TIMEOUT_S = 15.0
"""Seconds an exchange call may take, retries included, where nothing else says: the
reconciler's ``call_timeout_s`` and the ccxt adapter's own both default to it."""

_call_deadline: contextvars.ContextVar[tuple[float, asyncio.Task[Any] | None] | None] = (
    contextvars.ContextVar("nija_broker_call_deadline", default=None)
)


def current_deadline() -> float | None:
    """The loop time the current task's exchange call must end by, if a caller set one."""
    found = _call_deadline.get()
    if found is None or found[1] is not asyncio.current_task():
        return None
    return found[0]


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[float]:
    """One deadline, ``seconds`` from now on loop time, for everything inside; yields it.

    Inside a block that already set one (in the same task), the enclosing
    deadline stands and no second timer is started: a call has exactly one
    deadline, the outermost caller's. When it passes, the block raises
    ``TimeoutError`` (from ``asyncio.timeout_at``) where the deadline was set.
    Tasks started inside get their own deadline if they ask for one: an
    enclosing deadline is not inherited by a task that may outlive it.
    """
    enclosing = current_deadline()
    if enclosing is not None:
        yield enclosing
        return
    when = asyncio.get_running_loop().time() + seconds
    token = _call_deadline.set((when, asyncio.current_task()))
    try:
        async with asyncio.timeout_at(when):
            yield when
    finally:
        _call_deadline.reset(token)


# ------------------------------------------------------------------ conversions


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as aware UTC; naive datetimes are taken to be UTC already."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def from_ms(ts_ms: int | float) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000.0, UTC)


def to_ms(dt: datetime) -> int:
    return round(utc(dt).timestamp() * 1000)
