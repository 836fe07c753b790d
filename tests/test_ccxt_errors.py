"""ccxt's exceptions map once, into the right branch of our error tree, without secrets."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from adapters._ccxt_errors import is_duplicate_order, map_ccxt_error, scrub
from nija_broker.core import errors

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def mapped(exc: BaseException, action: str = "fetch_balance") -> errors.ExchangeError:
    return map_ccxt_error(
        exc,
        exchange_id="binance",
        account_id="USER:alice",
        secrets=(API_KEY, SECRET),
        action=action,
    )


@pytest.mark.parametrize(
    ("ccxt_error", "expected"),
    [
        (ccxt.RequestTimeout, errors.TransientError),
        (ccxt.NetworkError, errors.TransientError),
        (ccxt.ExchangeNotAvailable, errors.TransientError),
        (ccxt.OnMaintenance, errors.TransientError),
        (ccxt.BadResponse, errors.TransientError),
        (ccxt.NullResponse, errors.TransientError),
        (ccxt.ChecksumError, errors.TransientError),
        (ccxt.DDoSProtection, errors.RateLimited),
        (ccxt.RateLimitExceeded, errors.RateLimited),
        (ccxt.InvalidOrder, errors.InvalidOrder),
        (ccxt.OrderImmediatelyFillable, errors.InvalidOrder),
        (ccxt.DuplicateOrderId, errors.InvalidOrder),
        (ccxt.BadSymbol, errors.InvalidOrder),
        (ccxt.BadRequest, errors.InvalidOrder),
        (ccxt.MarketClosed, errors.InvalidOrder),
        (ccxt.InsufficientFunds, errors.InsufficientFunds),
        (ccxt.OrderNotFound, errors.OrderNotFound),
        (ccxt.OrderNotCached, errors.OrderNotFound),
        (ccxt.AuthenticationError, errors.AuthenticationFailed),
        (ccxt.InvalidNonce, errors.AuthenticationFailed),
        (ccxt.PermissionDenied, errors.PermissionDenied),
        (ccxt.AccountNotEnabled, errors.PermissionDenied),
        (ccxt.AccountSuspended, errors.PermissionDenied),
        (ccxt.RestrictedLocation, errors.PermissionDenied),
        (ccxt.ArgumentsRequired, errors.ExchangeError),
        (ccxt.NotSupported, errors.ExchangeError),
        (ccxt.ExchangeError, errors.ExchangeError),
    ],
)
def test_each_ccxt_error_lands_on_exactly_its_branch(
    ccxt_error: type[Exception], expected: type[errors.ExchangeError]
) -> None:
    result = mapped(ccxt_error("binance says no"))
    assert type(result) is expected
    assert result.exchange == "binance"
    assert result.account_id == "USER:alice"


def test_order_not_found_is_not_retried_as_an_invalid_order_nor_transient() -> None:
    result = mapped(ccxt.OrderNotFound('binance {"code":-2013,"msg":"Order does not exist."}'))
    assert isinstance(result, errors.OrderError)
    assert not isinstance(result, errors.TransientError)


def test_invalid_nonce_is_fatal_and_tells_the_user_to_use_a_key_of_its_own() -> None:
    # ccxt files InvalidNonce under NetworkError (retry); a shared key never heals by retrying.
    assert issubclass(ccxt.InvalidNonce, ccxt.NetworkError)
    result = mapped(ccxt.InvalidNonce("kraken EAPI:Invalid nonce"))
    assert isinstance(result, errors.AccountFatal)
    assert "own API key" in str(result)
    assert "clock" in str(result)


def test_timeout_from_our_own_deadline_is_transient() -> None:
    result = mapped(TimeoutError(), action="fetch_open_orders")
    assert type(result) is errors.TransientError
    assert "fetch_open_orders" in str(result)
    assert "timeout" in str(result)


def test_message_names_exchange_account_action_and_ccxt_text() -> None:
    result = mapped(
        ccxt.InsufficientFunds("binance Account has insufficient balance"), action="create_order"
    )
    assert str(result).startswith("binance account USER:alice: create_order: insufficient funds")
    assert "Account has insufficient balance" in str(result)


def test_key_and_secret_are_scrubbed_from_our_message_and_from_the_cause() -> None:
    url = (
        f"https://api.binance.com/api/v3/account?apiKey={API_KEY}&timestamp=1"
        f"&secret={SECRET.replace('/', '%2F')} headers={{'X-MBX-APIKEY': '{API_KEY}'}}"
    )
    cause = ccxt.AuthenticationError(f"binance GET {url} 401")

    result = mapped(cause)

    for text in (str(result), str(cause), repr(cause)):
        assert API_KEY not in text
        assert SECRET not in text
    assert "***" in str(result)


def test_url_encoded_secret_is_scrubbed_too() -> None:
    secret = "abc+def/ghi=="
    text = "POST body=secret%3Dabc%2Bdef%2Fghi%3D%3D and secret=abc%2Bdef%2Fghi%3D%3D"
    cleaned = scrub(text, [secret])
    assert "abc%2Bdef%2Fghi%3D%3D" not in cleaned
    assert "abc+def/ghi==" not in cleaned


def test_very_long_exchange_messages_are_cut() -> None:
    result = mapped(ccxt.ExchangeError("x" * 10_000))
    assert len(str(result)) < 800


@pytest.mark.parametrize(
    ("error", "duplicate"),
    [
        (ccxt.DuplicateOrderId("clientOrderId taken"), True),
        (
            errors.InvalidOrder("binance create_order: request refused (Duplicate order sent.)"),
            True,
        ),
        (errors.InvalidOrder("binance create_order: Filter failure: LOT_SIZE"), False),
    ],
)
def test_duplicate_client_order_id_is_recognised(error: Exception, duplicate: bool) -> None:
    assert is_duplicate_order(error) is duplicate
