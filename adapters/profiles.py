"""What differs between exchanges, in one place.

:class:`~adapters.ccxt_adapter.CcxtExchange` reads one :class:`ExchangeProfile`
instead of branching on exchange ids. A profile says:

- **symbols**: the bot writes ``BTC-USD``; ccxt's unified form is ``BTC/USD``
  on every exchange, Kraken included, although Kraken itself says ``XBT``.
  Exchange-native currency names the bot may use (``XBT``, ``XDG``) are
  aliases of the unified ones;
- **open orders**: whether one call lists them without a symbol (``None``:
  trust ccxt, and learn at run time if it refuses);
- **client order ids**: the exchange's parameter (ccxt's unified
  ``clientOrderId`` is what we send), its format, how an order is found by
  it (``NATIVE`` look-up, a server-side ``FILTER`` of the open and closed
  lists, or a client-side ``SCAN``), and a reversible encoding where our ids
  do not fit the exchange's format;
- **stop orders**: whether they reserve funds when placed or when triggered;
- **rate limits**: the venue's own units (Binance's request weight, Kraken's
  API counter), what each request costs of them (a listing of one symbol's open
  orders apart from one of all), the documented limit, and whether it counts per
  API key (Kraken) or per IP (Binance: shared by every account on this machine);
- **quirks**: ccxt options, error texts ccxt maps to the wrong class, and
  whether the create answer is only an acknowledgement to be fetched.

Profiles exist for kraken, binance, coinbase and okx; :func:`profile_for`
gives the default profile for any other ccxt id.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nija_broker.core import errors
from nija_broker.core.exchange import RequestWeights
from nija_broker.core.symbols import normalize_symbol, split_symbol

from ._ccxt_errors import NONCE_ADVICE, ErrorOverride

__all__ = [
    "BINANCE",
    "BINANCE_WEIGHTS",
    "COINBASE",
    "DEFAULT",
    "KRAKEN",
    "OKX",
    "ClientIdLookup",
    "ClientIds",
    "ExchangeProfile",
    "RateProfile",
    "StopFunds",
    "profile_for",
]


class ClientIdLookup(StrEnum):
    NATIVE = "native"
    """``fetch_order(id, symbol, {'clientOrderId': ...})`` finds it in one call."""
    FILTER = "filter"
    """The open and closed order lists take the client id as a filter (two calls at most)."""
    SCAN = "scan"
    """Only by listing the symbol's open and closed orders and looking (recent ones only)."""


class StopFunds(StrEnum):
    AT_PLACEMENT = "at_placement"
    """A resting stop holds its funds from the moment it is placed."""
    AT_TRIGGER = "at_trigger"
    """A resting stop holds nothing until it triggers."""


_OUR_ID = re.compile(r"^nb-([0-9a-f]{32})$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _same(client_order_id: str) -> str | None:
    return client_order_id


def _ours_as_hex(client_order_id: str) -> str | None:
    """``nb-`` + 32 hex digits (nija_broker's ids) -> the 32 hex digits; others unchanged."""
    match = _OUR_ID.match(client_order_id)
    return match.group(1) if match else client_order_id


def _hex_as_ours(raw: str) -> str | None:
    return f"nb-{raw}" if _HEX32.match(raw) else raw


def _kraken_from_exchange(raw: str) -> str | None:
    # ccxt reads Kraken's clientOrderId as cl_ord_id, else userref; Kraken reports
    # userref 0 for orders that carry none, which means "no client id".
    if raw == "0":
        return None
    return _hex_as_ours(raw)


_KRAKEN_CL_ORD_ID = re.compile(
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-fA-F]{32}|[\x21-\x7e]{1,18})$"
)
_OKX_CL_ORD_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_BINANCE_CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")


@dataclass(frozen=True, slots=True)
class ClientIds:
    """How an exchange carries our client order id."""

    param: str
    """The exchange's own parameter name (ccxt's unified ``clientOrderId`` maps to it)."""
    lookup: ClientIdLookup = ClientIdLookup.SCAN
    pattern: re.Pattern[str] | None = None
    """What the exchange accepts (after encoding); ``None``: anything."""
    encode: Callable[[str], str | None] = _same
    """Our id -> the exchange's form."""
    decode: Callable[[str], str | None] = _same
    """The exchange's form -> our id (``None``: the order carries no client id)."""
    rule: str = ""
    """The format in words, for error messages."""
    send_native: bool = False
    """ccxt does not map its unified ``clientOrderId`` on this exchange: send ``param`` too."""

    def to_exchange(self, client_order_id: str) -> str | None:
        """The id as sent, or ``None`` when the exchange cannot carry it."""
        encoded = self.encode(client_order_id)
        if encoded is None or (self.pattern is not None and not self.pattern.match(encoded)):
            return None
        return encoded

    def from_exchange(self, raw: Any) -> str | None:
        if raw is None or raw == "":
            return None
        return self.decode(str(raw))


@dataclass(frozen=True, slots=True)
class RateProfile:
    """One limit of a venue: a bucket of ``capacity`` units refilled at ``rate_per_s``, and
    what each request spends of it (``weights``, in the venue's own units).

    ``rate_per_s=None`` takes ccxt's ``rateLimit`` (one unit a request). ``key_limit`` is a
    second limit the venue counts per API key beside this one (Binance: orders per
    account). :class:`adapters.ratelimit.AccountBudget` spends from both.
    """

    rate_per_s: float | None = None
    capacity: float | None = None
    weights: RequestWeights = field(default_factory=RequestWeights)
    """Cost per cost key (:class:`~nija_broker.core.exchange.RequestWeights`); the same
    value the adapter reports in ``Capabilities.weights``."""
    key_limit: RateProfile | None = None

    @property
    def per_account(self) -> bool:
        """The limit counts per API key (one budget per account), not per IP."""
        return self.weights.per_key

    def cost(self, action: str, count: int = 1) -> float:
        """What one request of ``action`` (a cost key) naming ``count`` symbols spends."""
        return self.weights.weight(action, count)


@dataclass(frozen=True, slots=True)
class ExchangeProfile:
    """Everything the adapter treats differently on one exchange."""

    name: str
    client_ids: ClientIds
    currency_aliases: Mapping[str, str] = field(default_factory=dict)
    """Exchange-native currency names -> ccxt's unified codes (Kraken ``XBT`` -> ``BTC``)."""
    open_orders_without_symbol: bool | None = None
    stop_funds: StopFunds = StopFunds.AT_PLACEMENT
    rate: RateProfile = field(default_factory=RateProfile)
    ccxt_options: Mapping[str, Any] = field(default_factory=dict)
    """Merged into ``exchange.options`` (nested dicts merged, not replaced)."""
    error_overrides: tuple[ErrorOverride, ...] = ()
    create_answer_is_ack: bool = False
    """The create answer lacks the order's state; the adapter fetches the order once."""
    serialize_requests: bool = False
    """One request at a time per account: nonces must reach the exchange in order."""
    closed_orders_params: Mapping[str, Any] = field(default_factory=dict)
    """Extra parameters of the closed-orders listing (Kraken: ``trades=true``, so the
    sweep also brings each order's trade ids)."""
    order_trades_need_ids: bool = False
    """ccxt's ``fetch_order_trades`` needs the order's trade ids (Kraken: QueryOrders with
    ``trades=true`` lists them, QueryTrades reads them): one call more per order."""
    closed_orders_page_size: int | None = None
    """The closed-orders listing answers this many rows a call, newest first, and is paged
    with ``ofs`` (Kraken: 50). ``None``: one call answers the whole window."""
    closed_orders_max_pages: int = 20
    """Pages asked at most per sweep; a longer history is logged as cut, never read as done."""
    all_orders_page: int | None = None
    """Where set, closed orders are read from ccxt's ``fetch_orders`` (every status; the
    terminal ones kept) in pages of this many rows, oldest first from ``since``, each next
    page from the last order id + 1 (Binance's ``orderId``), until a short page."""
    all_orders_open_statuses: frozenset[str] = frozenset()
    """Raw ``status`` values of ``fetch_orders`` rows that ccxt reads as open: the sweep
    leaves those rows unparsed (it keeps ended orders only). Binance: NEW and
    PARTIALLY_FILLED (ccxt 4.5.90 binance.py ``parse_order_status``; the others, FILLED,
    CANCELED, PENDING_CANCEL, REJECTED, EXPIRED, EXPIRED_IN_MATCH, are parsed)."""
    nonce_advice: str = NONCE_ADVICE

    def unified_currency(self, code: str) -> str:
        code = code.upper()
        return self.currency_aliases.get(code, code)

    def unified_symbol(self, symbol: str) -> str:
        """``BTC-USD``, ``btc/usd`` or (on Kraken) ``XBT-USD`` -> ccxt's ``BTC/USD``."""
        base, quote = split_symbol(normalize_symbol(symbol))
        return f"{self.unified_currency(base)}/{self.unified_currency(quote)}"

    def apply_ccxt_options(self, exchange: Any) -> None:
        """Set this profile's ccxt options on ``exchange`` (a ccxt instance)."""
        _merge(exchange.options, self.ccxt_options)


def _merge(target: dict[str, Any], changes: Mapping[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


_KRAKEN_NONCE_ADVICE = (
    "Kraken rejected the request nonce (EAPI:Invalid nonce): another program is using this "
    "API key. NIJA's bot drives the nonce of its own Kraken key, so a second program on that "
    "key keeps failing. Create a separate API key for nija_broker on Kraken (query and trade "
    "permissions) and point this account's api_key_env / secret_env at it"
)

KRAKEN = ExchangeProfile(
    name="kraken",
    order_trades_need_ids=True,
    closed_orders_params={"trades": True},
    # "50 results are returned at a time, the most recent by default" (docs.kraken.com,
    # Get Closed Orders); ccxt sends no ofs, so without paging older orders are never seen.
    closed_orders_page_size=50,
    client_ids=ClientIds(
        param="cl_ord_id",
        # OpenOrders and ClosedOrders take cl_ord_id as a filter; QueryOrders does not
        # (ccxt's fetchOrder sends it as userref, an int32, which our ids are not).
        lookup=ClientIdLookup.FILTER,
        # Kraken's cl_ord_id is a UUID (36 characters, or 32 hex digits) or free text up
        # to 18 characters ("Spot Client Order Identifiers" guide). Ours are nb- + 32 hex:
        # sent as the 32 hex digits, read back with the prefix.
        pattern=_KRAKEN_CL_ORD_ID,
        encode=_ours_as_hex,
        decode=_kraken_from_exchange,
        rule="a UUID, 32 hex digits, or up to 18 printable characters",
    ),
    currency_aliases={
        "XBT": "BTC",
        "XXBT": "BTC",
        "XDG": "DOGE",
        "XXDG": "DOGE",
        "XETH": "ETH",
        "ZUSD": "USD",
        "ZEUR": "EUR",
    },
    open_orders_without_symbol=True,
    stop_funds=StopFunds.AT_PLACEMENT,
    # Kraken counts private calls per API key: a counter that starts at 0, rises by 1 a
    # call (2 for ledger and trade history), must stay under 15 (Starter tier) and decays
    # 0.33 a second; AddOrder and CancelOrder are on another limiter (docs.kraken.com,
    # "Spot REST Rate Limits"). ccxt's kraken.py table agrees (cost 3 = 1 point at its
    # rateLimit of 1 s, TradesHistory and Ledgers 6), except that it counts QueryTrades
    # as 1: we count both trade routes at 2, the safe side. Public calls (markets, tickers)
    # are limited per IP (1 a second) and are rare here. OpenOrders takes no pair: one
    # call lists every symbol, so no per-symbol weight is given (unscoped is cheapest).
    rate=RateProfile(
        rate_per_s=0.33,
        capacity=15.0,
        weights=RequestWeights.of(
            {
                "fetch_my_trades": 2.0,
                "fetch_order_trades": 2.0,
                "create_order": 0.0,
                "cancel_order": 0.0,
                "load_markets": 0.0,
                "fetch_tickers": 0.0,
            },
            limit_per_min=0.33 * 60,  # sustained, after a burst of 15
            per_key=True,
            unit="API counter",
        ),
    ),
    error_overrides=(
        # Missing from ccxt's table: it would be a plain ExchangeError.
        ErrorOverride(
            "EAPI:Invalid signature",
            errors.AuthenticationFailed,
            "authentication failed (API key or secret rejected)",
        ),
        # ccxt maps this to InvalidOrder except inside cancelOrder.
        ErrorOverride("EOrder:Unknown order", errors.OrderNotFound, "order not found"),
        # What QueryOrders answers for an id it does not know.
        ErrorOverride(
            "EOrder:Invalid order",
            errors.OrderNotFound,
            "order not found",
            actions=frozenset({"fetch_order", "fetch_order_by_client_id"}),
        ),
        ErrorOverride(
            "EOrder:Post only order",
            errors.InvalidOrder,
            "post-only order would have taken liquidity",
        ),
        ErrorOverride("EOrder:Cost minimum not met", errors.InvalidOrder, "request refused"),
        ErrorOverride("EOrder:Duplicate", errors.InvalidOrder, "duplicate client order id"),
        ErrorOverride("EQuery:Unknown asset pair", errors.InvalidOrder, "unknown pair"),
    ),
    create_answer_is_ack=True,
    serialize_requests=True,
    nonce_advice=_KRAKEN_NONCE_ADVICE,
)

BINANCE_WEIGHTS = RequestWeights.of(
    # Binance spot's documented request weights (developers.binance.com/docs/
    # binance-spot-api-docs/rest-api: "General endpoints", "Market data endpoints",
    # "Trading endpoints", "Account endpoints"), per endpoint the adapter uses. ccxt's
    # binance.py has the same table in its own unit, weight x 0.2 (its comment: "1 IP
    # (api) => cost = 0.2 => (1000 / (50 * 0.2)) * 60 = 6000"): openOrders 1.2 and
    # noSymbol 16, order 0.8, allOrders, account, myTrades and exchangeInfo 4, POST and
    # DELETE order 0.2, ticker/24hr 0.4 and noSymbol 16.
    {
        "load_markets": 20.0,  # GET /api/v3/exchangeInfo
        "fetch_open_orders": 80.0,  # GET /api/v3/openOrders without a symbol
        "fetch_open_orders_symbol": 6.0,  # ... with one symbol
        "fetch_order": 4.0,  # GET /api/v3/order
        "fetch_order_by_client_id": 4.0,  # GET /api/v3/order with origClientOrderId
        "fetch_closed_orders": 20.0,  # GET /api/v3/allOrders (a symbol is required)
        "fetch_my_trades": 20.0,  # GET /api/v3/myTrades
        # GET /api/v3/myTrades with orderId: "Without orderId 20, With orderId 5" (the
        # current "Account trade list"; ccxt 4.5 still counts 20 for both)
        "fetch_order_trades": 5.0,
        "fetch_balance": 20.0,  # GET /api/v3/account
        "create_order": 1.0,  # POST /api/v3/order
        "cancel_order": 1.0,  # DELETE /api/v3/order
    },
    # GET /api/v3/ticker/24hr with symbols=[...] (ccxt's fetch_tickers): 2 for 1-20
    # symbols, 40 for 21-100, 80 for 101 or more (and without symbols).
    by_count={"fetch_tickers": [(20, 2.0), (100, 40.0), (2**31, 80.0)]},
    limit_per_min=6000.0,
    unit="request weight",
    # allOrders and myTrades need a symbol: the sweep asks once per symbol touched.
    per_symbol=("fetch_closed_orders", "fetch_my_trades"),
)
"""Binance spot's request weights, as the adapter's cost keys spend them."""

BINANCE = ExchangeProfile(
    name="binance",
    client_ids=ClientIds(
        param="newClientOrderId",
        lookup=ClientIdLookup.NATIVE,
        pattern=_BINANCE_CLIENT_ID,
        rule="1 to 36 of letters, digits and '.:/_-'",
    ),
    open_orders_without_symbol=True,
    stop_funds=StopFunds.AT_PLACEMENT,
    # ccxt refuses a symbol-less openOrders on Binance unless told we mean it; one call
    # (weight 80) for all symbols is cheaper than one per symbol (weight 6 each). The
    # second spelling is the newer one of the same switch.
    ccxt_options={
        "warnOnFetchOpenOrdersWithoutSymbol": False,
        "fetchOpenOrders": {"warnWithoutSymbol": False},
    },
    # ccxt's fetch_canceled_and_closed_orders asks allOrders with no limit (Binance's
    # default page, 500 rows) and drops EXPIRED / EXPIRED_IN_MATCH orders, which may have
    # filled partly (IOC, self-trade prevention). allOrders pages by orderId: "If orderId
    # is set, it will get orders >= that orderId" (spot API docs, "All orders"; limit <= 1000).
    all_orders_page=1000,
    all_orders_open_statuses=frozenset({"NEW", "PARTIALLY_FILLED"}),
    rate=RateProfile(
        # 6,000 request weight a minute per IP, counted per calendar minute (spot API docs,
        # "LIMITS": "The limits on the API are based on the IPs, not the API keys"; 429,
        # then IP bans of 2 minutes to 3 days, HTTP 418). capacity + 60 s x rate = 6,000,
        # so no minute can pass the limit, and 600 a minute stay free for the bot itself.
        rate_per_s=90.0,
        capacity=600.0,
        weights=BINANCE_WEIGHTS,
        # "The order rate limit is counted against each account" (spot API docs, "Order
        # Rate Limits"): 100 new orders every 10 s (exchangeInfo's ORDERS limits; the
        # daily 200,000 is left to the bot). Cancels are not counted.
        key_limit=RateProfile(
            rate_per_s=9.0,
            capacity=10.0,
            weights=RequestWeights.of(
                {"create_order": 1.0}, default=0.0, per_key=True, unit="orders"
            ),
        ),
    ),
)

COINBASE = ExchangeProfile(
    name="coinbase",
    # ccxt 4.5's coinbase createOrder drops the unified clientOrderId and sends its own
    # "ccxt-<uuid>" unless client_order_id itself is given: ours travels natively.
    client_ids=ClientIds(param="client_order_id", lookup=ClientIdLookup.SCAN, send_native=True),
    open_orders_without_symbol=True,
    stop_funds=StopFunds.AT_PLACEMENT,
    # Advanced Trade answers a create with the new order's id only.
    create_answer_is_ack=True,
    # Advanced Trade limits private REST calls per user (about 30 a second, public 10 per
    # IP; docs.cdp.coinbase.com, "Advanced Trade API rate limits") and tightens them at
    # busy times; no weights per endpoint are published. Left to ccxt's rateLimit, one
    # unit a request, shared per exchange id, and no per-symbol listing (unscoped).
    # ccxt's default balance is the v2 wallets: free = total, no holds, one page of 250.
    # Advanced Trade's List Accounts (v3) gives available_balance and hold, and ccxt follows
    # its cursor (docs.cdp.coinbase.com/api-reference/advanced-trade-api/rest-api/accounts/
    # list-accounts); the held capital check needs the hold.
    ccxt_options={"fetchBalance": "v3PrivateGetBrokerageAccounts"},
    error_overrides=(
        # ccxt's handle_errors raises a plain ExchangeError for any create answer carrying
        # error_response (it reads only preview_failure_reason), before createOrder's own
        # table is consulted (Create Order: success false, error_response.error).
        ErrorOverride(
            "INSUFFICIENT_FUND",
            errors.InsufficientFunds,
            "insufficient funds",
            actions=frozenset({"create_order"}),
        ),
        ErrorOverride(
            "INVALID_LIMIT_PRICE_POST_ONLY",
            errors.InvalidOrder,
            "post-only order would have taken liquidity",
            actions=frozenset({"create_order"}),
        ),
        ErrorOverride(
            "error_response",
            errors.InvalidOrder,
            "order rejected",
            actions=frozenset({"create_order"}),
        ),
        # Get Order answers 404 {"error": "NOT_FOUND", ...} for an id it does not know;
        # ccxt's table has only lower-case 'not_found' (a plain ExchangeError).
        ErrorOverride(
            '"NOT_FOUND"',
            errors.OrderNotFound,
            "order not found",
            actions=frozenset({"fetch_order", "fetch_order_by_client_id", "cancel_order"}),
        ),
    ),
)

OKX = ExchangeProfile(
    name="okx",
    client_ids=ClientIds(
        param="clOrdId",
        lookup=ClientIdLookup.NATIVE,
        pattern=_OKX_CL_ORD_ID,
        # clOrdId is up to 32 letters and digits: no '-', so ours travel as their hex.
        encode=_ours_as_hex,
        decode=_hex_as_ours,
        rule="1 to 32 letters and digits",
    ),
    open_orders_without_symbol=True,
    # OKX's trigger (algo) orders sit outside the order book and freeze nothing until
    # they trigger.
    stop_funds=StopFunds.AT_TRIGGER,
    # OKX limits each private endpoint on its own, per user id (sub-account), in requests
    # per 2 seconds (okx.com/docs-v5, "Rate Limits"), not by a shared weight: left to
    # ccxt's rateLimit, one unit a request, and no per-symbol listing (unscoped).
)

DEFAULT = ExchangeProfile(name="default", client_ids=ClientIds(param="clientOrderId"))

_BY_ID: dict[str, ExchangeProfile] = {
    "kraken": KRAKEN,
    "binance": BINANCE,
    "binanceus": BINANCE,
    "coinbase": COINBASE,
    "coinbaseadvanced": COINBASE,
    "okx": OKX,
    "okxus": OKX,
    "myokx": OKX,
}


def profile_for(exchange_id: str) -> ExchangeProfile:
    """The profile of a ccxt exchange id; :data:`DEFAULT` for ids without one."""
    return _BY_ID.get(exchange_id, DEFAULT)
