"""Every account's balances, orders and fills, and the one place a fill or a close changes them.

:class:`Books` executes a fill (balances, fee, the order's own hold, the fill record),
closes an order (releasing its hold) and keeps each symbol's resting orders. Deciding
*what* fills — a resting order the price reaches, an incoming taker, self-trade
prevention — is :mod:`adapters.sim._matching`'s; cancelling is :mod:`adapters.sim._cancels`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from nija_broker.core.errors import InsufficientFunds
from nija_broker.core.models import Fill, OrderStatus, OrderType, Side

from ._events import EventHub, OrderChange
from ._fees import FeeCharge, fee_charge, plain_sum
from ._state import SimAccount, SimOrder

# Funds checks forgive float dust, so "exactly enough" money is enough.
FUNDS_SLACK = 1e-12

_CLOSES = {
    OrderStatus.CANCELLED: OrderChange.CANCELLED,
    OrderStatus.EXPIRED: OrderChange.EXPIRED,
    OrderStatus.REJECTED: OrderChange.REJECTED,
}
"""The change an order closed with each status goes through (a fill closes in execute)."""


class Books:
    """The books of every account of one engine. Not thread-safe; the engine's loop only.

    ``prices`` are the engine's own, read here and never written: a fee in a third asset
    is valued at that asset's current price.
    """

    def __init__(
        self,
        *,
        now: Callable[[], datetime],
        prices: Mapping[str, float],
        maker_fee: float,
        taker_fee: float,
        fee_decimals: int,
    ) -> None:
        self._now = now
        self._prices = prices
        self._maker_fee = maker_fee
        self._taker_fee = taker_fee
        self._fee_decimals = fee_decimals
        self.accounts: dict[str, SimAccount] = {}
        self.resting: dict[str, dict[int, SimOrder]] = {}
        """Symbol -> resting orders by sequence number, so oldest first."""
        self.fills: list[Fill] = []
        """Every fill of every account, in the order they happened."""
        self.is_maker: dict[str, bool] = {}
        self.events = EventHub(now=now)
        """Where every change to an order or a balance is told (the engine delivers it)."""
        self._next_trade = 1

    def check_funds(self, account: SimAccount, order: SimOrder, now_price: float) -> None:
        """``InsufficientFunds`` unless ``account`` can pay for the new ``order`` now."""
        if order.type is OrderType.MARKET and order.side is Side.BUY:
            # It fills within this call at now_price, so its fee is known: count it only
            # when it is taken in quote.
            currency = order.quote
            charge = self.fee_charge(
                account, order, order.amount, now_price, maker=False, holding=False
            )
            need = order.amount * now_price + (charge.cost if charge.currency == currency else 0)
        elif order.type is OrderType.MARKET:
            currency, need = order.base, order.amount
        else:
            currency, need = order.lock(account.hold_fee_rate)
        free = account.free(currency)
        if need > free + FUNDS_SLACK * max(1.0, need):
            raise InsufficientFunds(
                f"{order.symbol} {order.side} {order.amount}: needs {need!r} {currency}, "
                f"{max(free, 0.0)!r} free",
                account_id=account.account_id,
            )

    def rest(self, order: SimOrder) -> None:
        """Put ``order`` on its symbol's book, to fill when the price reaches it."""
        self.resting[order.symbol][order.seq] = order

    def take(self, order: SimOrder, price: float, amount: float | None = None) -> list[Fill]:
        """Fill ``amount`` (default: all that remains) at ``price`` as taker, if the account
        can pay."""
        amount = order.remaining if amount is None else amount
        if order.side is Side.BUY:
            account = self.accounts[order.account_id]
            _, held = order.lock(account.hold_fee_rate)
            free = account.free(order.quote)
            charge = self.fee_charge(account, order, amount, price, maker=False, holding=True)
            cost = amount * price + (charge.cost if charge.currency == order.quote else 0.0)
            if cost > free + held + FUNDS_SLACK * max(1.0, cost):
                # A stop-market buy that gapped past what it holds: the exchange drops it.
                failed = OrderStatus.REJECTED if order.filled == 0 else OrderStatus.EXPIRED
                self.close(order, failed)
                return []
        return [self.execute(order, amount, price, maker=False)]

    def execute(self, order: SimOrder, amount: float, price: float, *, maker: bool) -> Fill:
        """Book a fill of ``amount`` of ``order`` at ``price``: both legs, the fee, the hold."""
        account = self.accounts[order.account_id]
        notional = order.notional(amount, price)
        charge = self.fee_charge(account, order, amount, price, maker=maker, holding=True)
        if order.side is Side.BUY:
            legs = {order.quote: -notional, order.base: amount}
        else:
            legs = {order.base: -amount, order.quote: notional}
        # One booking per currency: a buy's base fee is credited as amount - fee.
        legs[charge.currency] = plain_sum(legs.get(charge.currency, 0.0), -charge.cost)
        for currency, change in legs.items():
            account.add(currency, change)
        account.hold(order, sign=-1)
        final = amount >= order.remaining * (1 - 1e-9)
        order.filled = order.amount if final else order.filled + amount
        order.cost = plain_sum(order.cost, notional)
        order.fee = plain_sum(order.fee, charge.value)
        order.status = OrderStatus.FILLED if final else OrderStatus.PARTIALLY_FILLED
        account.hold(order)
        if final:
            self._unlist(order)
        now = self._now()
        order.touch(now)
        trade_id = str(self._next_trade)
        self._next_trade += 1
        fill = Fill(
            account_id=order.account_id,
            order_id=order.id,
            trade_id=trade_id,
            symbol=order.symbol,
            side=order.side,
            amount=amount,
            price=price,
            fee=charge.value,
            fee_currency=charge.currency,
            fee_cost=charge.cost,
            timestamp=now,
            cumulative_filled=order.filled,
            role=order.role,
        )
        self.is_maker[trade_id] = maker
        account.fills.append(fill)
        self.fills.append(fill)
        self.events.order_changed(account, order, OrderChange.TRADE, fill, maker=maker)
        return fill

    def fee_charge(
        self,
        account: SimAccount,
        order: SimOrder,
        amount: float,
        price: float,
        *,
        maker: bool,
        holding: bool,
    ) -> FeeCharge:
        """The fee a fill of ``amount`` at ``price`` of ``order`` would take now (``holding``:
        the order is listed and holds funds, which its own fill may use)."""
        asset = account.fee_mode.asset
        # A third asset is valued at its market against the order's quote; with no such
        # market it cannot be valued, and the fee falls back (see _fees).
        asset_price = (
            None
            if asset is None
            else (1.0 if asset == order.quote else self._prices.get(f"{asset}/{order.quote}"))
        )
        asset_free = (
            0.0
            if asset is None or asset_price is None
            else account.free_after(order, amount, price, asset, holding=holding)
        )
        return fee_charge(
            account.fee_mode,
            side=order.side,
            base=order.base,
            quote=order.quote,
            amount=amount,
            price=price,
            rate=self._maker_fee if maker else self._taker_fee,
            asset_price=asset_price,
            asset_free=asset_free,
            fee_decimals=self._fee_decimals,
            slack=FUNDS_SLACK * max(1.0, asset_free),
        )

    def close(self, order: SimOrder, status: OrderStatus) -> None:
        """End ``order`` with ``status``: its hold is released and it leaves every book."""
        account = self.accounts[order.account_id]
        account.hold(order, sign=-1)
        order.status = status
        self._unlist(order)
        order.touch(self._now())
        self.events.order_changed(account, order, _CLOSES[status])

    def _unlist(self, order: SimOrder) -> None:
        self.accounts[order.account_id].unlist(order)
        self.resting[order.symbol].pop(order.seq, None)
