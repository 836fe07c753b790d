"""One TLS context for every account's exchange in the process.

ccxt builds an ``ssl.SSLContext`` per exchange instance when it first opens a
session, loading its CA file each time: about 40 ms of CPU and 0.7 MB per
account, paid again for every account of a fleet. A context that only verifies
servers against a CA file holds nothing per connection and is safe to share
across sessions, threads and event loops, so accounts that verify against the
same CA file get the same one.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

__all__ = ["share_tls"]


@functools.cache
def _verifying_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def share_tls(exchange: Any) -> None:
    """Give a ccxt ``exchange`` the process's context for its CA file.

    Left to ccxt (which then builds its own): an exchange that verifies nothing
    (``verify = false``), one that also loads the system's certificates
    (``options.include_OS_certificates``), or one given a context already.
    """
    if exchange.verify is not True or exchange.ssl_context is not None:
        return
    if exchange.safe_bool(exchange.options, "include_OS_certificates", False):
        return
    exchange.ssl_context = _verifying_context(str(exchange.cafile))
