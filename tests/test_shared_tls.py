"""Every account of a fleet verifies exchanges with one TLS context, not one each."""

from __future__ import annotations

import asyncio
import ssl

from adapters.ccxt_adapter import CcxtExchange
from nija_broker.core.clock import FakeClock
from nija_broker.core.exchange import ExchangeSpec


def _open(account_id: str, exchange_id: str, **options: object) -> CcxtExchange:
    spec = ExchangeSpec(account_id=account_id, exchange_id=exchange_id, options=options)
    return CcxtExchange.from_spec(spec, clock=FakeClock())


def _context(exchange: CcxtExchange) -> object:
    return exchange._ex.ssl_context


def _close(*exchanges: CcxtExchange) -> None:
    async def close() -> None:
        for exchange in exchanges:
            await exchange.aclose()

    asyncio.run(close())


def test_accounts_of_every_venue_share_one_verifying_tls_context() -> None:
    platform = _open("PLATFORM", "binance")
    alice = _open("USER:alice", "binance")
    bob = _open("USER:bob", "kraken")
    try:
        shared = _context(platform)
        assert isinstance(shared, ssl.SSLContext)
        assert shared.verify_mode is ssl.CERT_REQUIRED
        assert shared.check_hostname
        assert _context(alice) is shared
        assert _context(bob) is shared
    finally:
        _close(platform, alice, bob)


def test_an_account_that_asks_for_other_certificates_keeps_its_own() -> None:
    plain = _open("PLATFORM", "binance")
    unverified = _open("USER:lab", "binance", verify=False)
    with_os = _open("USER:os", "binance", options={"include_OS_certificates": True})
    try:
        assert _context(unverified) is None  # ccxt sends with verify=False itself
        assert _context(with_os) is None  # ccxt builds one with the system's CAs on open
        assert _context(plain) is not None
    finally:
        _close(plain, unverified, with_os)
