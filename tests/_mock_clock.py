"""Running a test's body on a :class:`~nija_broker.core.clock.MockClock` from an async test.

pytest-asyncio (strict mode) runs each ``@pytest.mark.asyncio`` test on a loop
of its own, on real time. A module marked as a whole keeps its mark; a test in
it that needs time to pass on its own hands its body to the clock's loop, in a
thread of its own, and waits for it. Build everything the body uses (stores,
books, reconcilers) inside the body, so that it lives on the clock's loop.
A plain (sync) test simply calls ``clock.run(main())`` (``mock_clock`` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from nija_broker.core.clock import MockClock

T = TypeVar("T")


async def on_mock_clock(clock: MockClock, main: Coroutine[Any, Any, T]) -> T:
    """``main``'s result, run to its end on ``clock``'s loop in another thread."""
    return await asyncio.to_thread(clock.run, main)
