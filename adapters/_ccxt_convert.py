"""Pure conversions from ccxt's unified dicts to nija_broker models.

Every function takes plain dicts (as ccxt returns them) and the few facts it
needs (account id, precision mode, a fallback ``now``); none touches the
network. A dict that cannot become a valid model raises
:class:`~nija_broker.core.errors.ExchangeError` naming the field, never a bare
``KeyError`` or pydantic error. Each figure is read by the helpers of
:mod:`adapters._ccxt_fields` (0 or ``None`` is "not known", a negative or
non-finite figure an impossible answer).

Fees are reported in the quote currency (``Order.fee``, ``Fill.fee``). ccxt
reports them in whatever currency the exchange charged:

- quote currency: taken as is;
- base currency (Binance and others charge buys' fees in the asset
  received): converted as ``fee * price``, price being the trade's price or
  the order's average (else limit) price;
- any other currency (e.g. BNB fee discounts): it cannot be valued without a
  rate we do not have at this layer, so it is left out (0) and
  :func:`fee_in_quote` returns ``None`` for it so a caller may log it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import ccxt.async_support as ccxt
from pydantic import ValidationError

from nija_broker.core.clock import from_ms
from nija_broker.core.errors import ImpossibleAnswer
from nija_broker.core.models import (
    Balance,
    Fill,
    Market,
    Order,
    OrderRole,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
)
from nija_broker.core.symbols import normalize_symbol, quote_of, split_symbol

from ._ccxt_fields import non_negative, positive, refuse_unsound, timestamp_or, unreadable

_STATUS = {
    "closed": OrderStatus.FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
# Still live on the exchange: 'canceling' (Binance PENDING_CANCEL) is not a cancellation yet.
# ccxt passes Coinbase's in-flight words through raw (its parse_order_status knows only OPEN,
# FILLED, CANCELLED, EXPIRED, FAILED): PENDING and QUEUED (accepted, not yet resting) and
# CANCEL_QUEUED (a cancel asked, not done) are live, never terminal.
_LIVE = frozenset(
    {"open", "canceling", "new", "partially_filled", "pending", "queued", "cancel_queued"}
)
# A status the exchange itself says it does not know (Coinbase UNKNOWN_ORDER_STATUS): not
# evidence of an end, so the order stays live as PENDING until a real status comes.
_UNKNOWN = frozenset({"unknown_order_status"})
# ccxt folds some venue statuses into 'canceled' (Coinbase EXPIRED and FAILED); the venue's
# own word, in the order's info, keeps the difference.
_FOLDED_INTO_CANCELED = {"EXPIRED": "expired", "FAILED": "rejected"}

# ccxt passes each exchange's own type name through, in several spellings
# ("stop-loss", "STOP_LOSS_LIMIT", "take_profit_market"); keys are lower-case with '_'.
_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "limit_maker": OrderType.LIMIT,
    "stop": OrderType.STOP,
    "stop_market": OrderType.STOP,
    "stop_loss": OrderType.STOP,
    "stop_limit": OrderType.STOP_LIMIT,
    "stop_loss_limit": OrderType.STOP_LIMIT,
    "take_profit": OrderType.TAKE_PROFIT,
    "take_profit_market": OrderType.TAKE_PROFIT,
    "take_profit_limit": OrderType.TAKE_PROFIT,
}


# Exchanges print both figures in decimals of the market's step; a float quotient of
# them may exceed the amount in the last bits only.
_FILLED_SLACK = 1e-9


def convert_status(status: str | None, filled: float) -> OrderStatus:
    """ccxt's status word -> ours. ``None`` (no status reported yet) is PENDING."""
    if status is None:
        return OrderStatus.PENDING
    word = status.lower()
    if word in _LIVE:
        return OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.OPEN
    if word in _UNKNOWN:
        return OrderStatus.PENDING
    if word in _STATUS:
        return _STATUS[word]
    raise ValueError(f"unknown order status {status!r}")


def _status_word(raw: Mapping[str, Any]) -> str | None:
    """ccxt's status, unfolded where ccxt merged a venue status into 'canceled'."""
    status = raw.get("status")
    info = raw.get("info")
    if str(status).lower() == "canceled" and isinstance(info, Mapping):
        return _FOLDED_INTO_CANCELED.get(str(info.get("status") or "").upper(), status)
    return status


def convert_type(raw: Mapping[str, Any]) -> OrderType:
    """The order type, from ccxt's ``type`` and, where it reports a plain type, the trigger."""
    name = str(raw.get("type") or "").lower().replace("-", "_").replace(" ", "_")
    kind = _TYPES.get(name)
    has_trigger = positive(raw.get("triggerPrice") or raw.get("stopPrice")) is not None
    if positive(raw.get("takeProfitPrice")) is not None and kind in (
        None,
        OrderType.MARKET,
        OrderType.LIMIT,
    ):
        return OrderType.TAKE_PROFIT
    if kind is OrderType.MARKET and has_trigger:
        return OrderType.STOP  # a stop-market reported as 'market' + triggerPrice
    if kind is OrderType.LIMIT and has_trigger and name != "limit_maker":
        return OrderType.STOP_LIMIT
    if kind is not None:
        return kind
    return OrderType.LIMIT if positive(raw.get("price")) is not None else OrderType.MARKET


def fee_in_quote(fee: Mapping[str, Any] | None, symbol: str, price: float | None) -> float | None:
    """One ccxt fee dict in quote currency; ``None`` when it cannot be valued (see module doc)."""
    if not fee:
        return 0.0
    cost = non_negative(fee.get("cost"))
    if cost == 0:
        return 0.0
    base, quote = split_symbol(symbol)
    currency = str(fee.get("currency") or quote).upper()
    if currency == quote:
        return cost
    if currency == base and price is not None:
        return cost * price
    return None


def _fees_in_quote(raw: Mapping[str, Any], symbol: str, price: float | None) -> float:
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    total = 0.0
    for fee in fees:
        value = fee_in_quote(fee, symbol, price)
        total += value or 0.0
    return total


ClientIdDecoder = Callable[[Any], str | None]
"""The exchange's client order id -> ours (an exchange profile's ``from_exchange``)."""


def _plain_client_id(raw: Any) -> str | None:
    return str(raw) if raw else None


def convert_order(
    raw: Mapping[str, Any],
    *,
    account_id: str,
    now: datetime,
    role: OrderRole | None = None,
    client_id: ClientIdDecoder = _plain_client_id,
) -> Order:
    """A ccxt order dict -> :class:`Order`. ``role`` overrides the inferred one.

    A cancelled order keeps its filled amount; 'closed' without a filled
    amount means filled in full. ``client_id`` reads the exchange's client
    order id back into ours.
    """
    for name in ("amount", "filled", "price", "average", "cost"):
        refuse_unsound(raw, name)
    try:
        symbol = normalize_symbol(str(raw.get("symbol")))
        side = Side(str(raw.get("side")).lower())
        amount = positive(raw.get("amount"))
        if amount is None:
            raise ValueError("no amount reported")
        filled = non_negative(raw.get("filled"))
        if filled > amount * (1 + _FILLED_SLACK):
            ident = str(raw.get("id") or "?")
            raise ImpossibleAnswer(
                f"the exchange reports order {ident} filled {filled!r} of an amount of "
                f"{amount!r} (field: filled); nothing is booked from this answer",
                order_id=ident,
                field="filled",
            )
        filled = min(filled, amount)
        if raw.get("filled") is None and str(raw.get("status")).lower() == "closed":
            filled = amount
        status = convert_status(_status_word(raw), filled)
        order_type = convert_type(raw)
        price = positive(raw.get("price"))
        stop_price = positive(
            raw.get("triggerPrice")
            or raw.get("stopPrice")
            or raw.get("stopLossPrice")
            or raw.get("takeProfitPrice")
        )
        if order_type is OrderType.MARKET:
            price = None  # Binance echoes 0 or the fill price; neither is a limit
        elif order_type is OrderType.LIMIT and price is None:
            raise ValueError("limit order without a price")
        average = positive(raw.get("average"))
        created = timestamp_or(raw.get("timestamp"), now)
        updated_ms = raw.get("lastUpdateTimestamp") or raw.get("lastTradeTimestamp")
        updated = timestamp_or(updated_ms, created) if updated_ms else None
        # Binance's cancel answer puts the cancel request's own id in clientOrderId and
        # the order's in origClientOrderId.
        info = raw.get("info")
        original_client_id = info.get("origClientOrderId") if isinstance(info, Mapping) else None
        return Order(
            id=str(raw["id"]),
            client_order_id=client_id(original_client_id or raw.get("clientOrderId")),
            account_id=account_id,
            symbol=symbol,
            side=side,
            type=order_type,
            role=role or OrderRole.infer(side, order_type),
            price=price,
            stop_price=stop_price,
            amount=amount,
            filled=filled,
            average=average,
            status=status,
            created_at=created,
            updated_at=max(updated, created) if updated else None,
            fee=_fees_in_quote(raw, symbol, average or price or stop_price),
            reduce_only=bool(raw.get("reduceOnly")),
        )
    except (KeyError, ValueError, ValidationError) as exc:
        raise unreadable("order", raw, exc) from exc


def _trade_fee(
    raw: Mapping[str, Any], symbol: str, price: float | None
) -> tuple[float, str | None, float | None, bool]:
    """(fee in quote, currency charged, amount charged, valued) of one ccxt trade.

    A fee in a third currency (BNB, KFEE) cannot be valued here: it comes back
    unvalued (0 in quote, ``valued`` False) with its currency and amount, for the
    reconciler to value at the exchange's prices.
    """
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    quote = quote_of(normalize_symbol(symbol))
    by_currency: dict[str, float] = {}
    for fee in fees:
        if not isinstance(fee, Mapping):
            continue
        refuse_unsound(fee, "cost", "fee of trade")
        cost = non_negative(fee.get("cost"))
        if cost > 0:
            currency = str(fee.get("currency") or quote).upper()
            by_currency[currency] = by_currency.get(currency, 0.0) + cost
    if not by_currency:
        return 0.0, None, None, True
    if len(by_currency) > 1:
        raise ValueError(f"fees in several currencies {sorted(by_currency)}")
    ((currency, cost),) = by_currency.items()
    value = fee_in_quote({"cost": cost, "currency": currency}, symbol, price)
    return (value or 0.0), currency, cost, value is not None


def convert_trade(raw: Mapping[str, Any], *, account_id: str, now: datetime) -> Fill:
    """A ccxt trade -> :class:`Fill`, keyed by the exchange's trade id, fee as charged."""
    for name in ("amount", "price", "cost"):
        refuse_unsound(raw, name, "trade")
    try:
        symbol = normalize_symbol(str(raw.get("symbol")))
        price = positive(raw.get("price"))
        order_id = raw.get("order")
        if not order_id:
            raise ValueError("trade without an order id")
        fee, currency, cost, valued = _trade_fee(raw, symbol, price)
        return Fill(
            account_id=account_id,
            order_id=str(order_id),
            trade_id=str(raw["id"]) if raw.get("id") not in (None, "") else None,
            symbol=symbol,
            side=Side(str(raw.get("side")).lower()),
            amount=raw.get("amount"),
            price=price,
            fee=fee,
            fee_currency=currency,
            fee_cost=cost,
            fee_valued=valued,
            timestamp=timestamp_or(raw.get("timestamp"), now),
        )
    except (KeyError, ValueError, ValidationError) as exc:
        raise unreadable("trade", raw, exc) from exc


def convert_balance(raw: Mapping[str, Any]) -> dict[str, Balance]:
    """ccxt's balance structure -> one :class:`Balance` per currency with anything in it.

    Currencies at zero are dropped: Binance lists every asset it knows.
    """
    result: dict[str, Balance] = {}
    for currency, entry in raw.items():
        if currency in ("info", "free", "used", "total", "debt", "timestamp", "datetime"):
            continue
        if not isinstance(entry, Mapping):
            continue
        free = non_negative(entry.get("free"))
        used = non_negative(entry.get("used"))
        total = positive(entry.get("total"))
        total_value = total if total is not None else free + used
        if free == used == total_value == 0:
            continue
        result[currency.upper()] = Balance(
            currency=currency.upper(), free=free, used=used, total=total_value
        )
    return result


def convert_ticker(raw: Mapping[str, Any]) -> Ticker:
    try:
        ts = raw.get("timestamp")
        return Ticker(
            symbol=normalize_symbol(str(raw.get("symbol"))),
            last=positive(raw.get("last") if raw.get("last") is not None else raw.get("close")),
            bid=positive(raw.get("bid")),
            ask=positive(raw.get("ask")),
            timestamp=from_ms(ts) if isinstance(ts, int | float) and ts > 0 else None,
        )
    except (ValueError, ValidationError) as exc:
        raise unreadable("ticker", raw, exc) from exc


def precision_step(value: Any, precision_mode: int) -> float | None:
    """A precision figure as a step size.

    ccxt 4 reports precision as the step itself (``TICK_SIZE``, e.g. 0.01) on
    most exchanges and as a number of decimals (``DECIMAL_PLACES``, e.g. 2) on
    others; ``SIGNIFICANT_DIGITS`` has no fixed step.
    """
    number = positive(value)
    if number is None:
        return None
    if precision_mode == ccxt.TICK_SIZE:
        return number
    if precision_mode == ccxt.DECIMAL_PLACES:
        return 10.0 ** -round(number)
    return None


def is_spot_market(raw: Mapping[str, Any]) -> bool:
    """A spot market whose symbol we can store (``BASE/QUOTE``)."""
    if raw.get("spot") is False or raw.get("type") not in (None, "spot"):
        return False
    if raw.get("active") is False:
        return False
    try:
        normalize_symbol(str(raw.get("symbol")))
    except ValueError:
        return False
    return True


def convert_market(raw: Mapping[str, Any], precision_mode: int) -> Market:
    try:
        precision = raw.get("precision") or {}
        limits = raw.get("limits") or {}
        amount_limits = limits.get("amount") or {}
        cost_limits = limits.get("cost") or {}
        symbol = normalize_symbol(str(raw.get("symbol")))
        base, quote = split_symbol(symbol)
        return Market(
            symbol=symbol,
            base=base,
            quote=quote,
            amount_step=precision_step(precision.get("amount"), precision_mode),
            price_step=precision_step(precision.get("price"), precision_mode),
            min_amount=positive(amount_limits.get("min")),
            min_notional=positive(cost_limits.get("min")),
        )
    except (ValueError, ValidationError) as exc:
        raise unreadable("market", raw, exc) from exc


# Every field convert_order reads. Two ccxt dicts equal on these give equal Orders.
_ORDER_FIELDS = (
    "id",
    "clientOrderId",
    "symbol",
    "side",
    "type",
    "status",
    "price",
    "triggerPrice",
    "stopPrice",
    "takeProfitPrice",
    "stopLossPrice",
    "amount",
    "filled",
    "average",
    "timestamp",
    "lastUpdateTimestamp",
    "lastTradeTimestamp",
    "reduceOnly",
)


class OrderMemo:
    """:func:`convert_order` for one account, remembering what it converted.

    A poll lists the same open orders again and again, mostly unchanged;
    validating each into a model every time is most of the adapter's cost on
    top of ccxt. An order whose fields are all unchanged gets the Order built
    the first time (models are frozen, so sharing one is safe). Bounded: the
    oldest entries go first.
    """

    def __init__(
        self,
        account_id: str,
        *,
        max_entries: int = 2_000,
        client_id: ClientIdDecoder = _plain_client_id,
    ) -> None:
        self.account_id = account_id
        self.client_id = client_id
        self.max_entries = max_entries
        self._orders: dict[tuple[Any, ...], Order] = {}
        self.hits = 0

    def clear(self) -> None:
        self._orders.clear()

    @staticmethod
    def _key(raw: Mapping[str, Any]) -> tuple[Any, ...]:
        fee = raw.get("fee")
        info = raw.get("info")
        return (
            tuple(map(raw.get, _ORDER_FIELDS)),
            tuple((f.get("currency"), f.get("cost")) for f in raw.get("fees") or ()),
            (fee.get("currency"), fee.get("cost")) if isinstance(fee, Mapping) else None,
            info.get("origClientOrderId") if isinstance(info, Mapping) else None,
            info.get("status") if isinstance(info, Mapping) else None,  # see _status_word
        )

    def convert(self, raw: Mapping[str, Any], now: datetime) -> Order:
        try:
            key = self._key(raw)
            known = self._orders.get(key)
        except (TypeError, AttributeError):  # an unhashable or odd field: convert plainly
            return convert_order(raw, account_id=self.account_id, now=now, client_id=self.client_id)
        if known is not None:
            self.hits += 1
            return known
        order = convert_order(raw, account_id=self.account_id, now=now, client_id=self.client_id)
        if len(self._orders) >= self.max_entries:
            del self._orders[next(iter(self._orders))]
        self._orders[key] = order
        return order
