"""Suite-wide guards (no test may reach beyond loopback) and the virtual clock's fixture."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from nija_broker.core.clock import MockClock

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_local(address):
        raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture
def mock_clock() -> MockClock:
    """Virtual time for a sync test that runs its async body with ``mock_clock.run(main())``.

    pytest-asyncio (strict) gives each ``@pytest.mark.asyncio`` test a loop of
    its own on real time; a test that needs time to pass on its own (pollers,
    deadlines, backoff) is a plain function instead and runs on the clock's
    loop, where time jumps to the next timer once every task is blocked.
    """
    return MockClock()
