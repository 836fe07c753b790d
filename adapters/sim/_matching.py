"""What fills, and when: an incoming order (time in force, liquidity, self-trade prevention)
and the resting orders each time the price moves.

The rules are the engine's (see :mod:`adapters.sim.engine`); :class:`Matcher` decides and
:class:`~adapters.sim._books.Books` books each fill and close it decides on.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from datetime import datetime

from nija_broker.core.models import Fill, Market, OrderStatus, OrderType, Side

from ._books import Books
from ._events import OrderChange
from ._rules import crosses, snap, snap_down, triggers
from ._state import SimOrder


class Matcher:
    """Matches the orders of one engine's :class:`Books`. Not thread-safe; the engine's loop.

    ``markets`` and ``prices`` are the engine's own, read here and never written.
    """

    def __init__(
        self,
        books: Books,
        *,
        now: Callable[[], datetime],
        markets: Mapping[str, Market],
        prices: Mapping[str, float],
        partial_fill_prob: float,
        fill_rng: random.Random,
    ) -> None:
        self._books = books
        self._now = now
        self._markets = markets
        self._prices = prices
        self._partial_fill_prob = partial_fill_prob
        self._fill_rng = fill_rng
        self.liquidity: dict[str, float] = {}
        """Symbol -> what a taker finds at the current price; absent: unlimited."""

    def incoming(self, order: SimOrder, price: float) -> None:
        """A just-listed ``order`` at the current ``price``: it takes, expires or rests."""
        if order.type is OrderType.MARKET or (
            order.type is OrderType.LIMIT and crosses(order.side, order.price, price)
        ):
            self._take_incoming(order, price)
        elif order.time_in_force != "GTC":
            self._books.close(order, OrderStatus.EXPIRED)  # nothing crosses: IOC and FOK end here
        else:
            self._books.rest(order)

    def price_moved(self, symbol: str) -> list[Fill]:
        """The fills of the resting orders of ``symbol`` that its current price reaches."""
        price = self._prices[symbol]
        fills: list[Fill] = []
        # Books are filled in id order and never re-sorted, so this is oldest first.
        for order in list(self._books.resting[symbol].values()):
            if not order.status.is_open or order.cancel_pending:
                continue
            if order.waits_for_trigger:
                if not triggers(order.type, order.side, order.trigger_price, price):
                    continue
                order.triggered = True
                order.touch(self._now())
                account = self._books.accounts[order.account_id]
                self._books.events.order_changed(account, order, OrderChange.TRIGGERED)
                limit = order.rest_price
                if limit is None or crosses(order.side, limit, price):
                    fills.extend(self._books.take(order, price))
            elif order.rest_price is not None and crosses(order.side, order.rest_price, price):
                fills.append(
                    self._books.execute(
                        order, self._maker_amount(order), order.rest_price, maker=True
                    )
                )
        return fills

    def _take_incoming(self, order: SimOrder, price: float) -> None:
        """A new taker against the liquidity at ``price``, then self-trade prevention."""
        available = self.liquidity.get(order.symbol)
        if available is None:
            self._books.take(order, price)
            return
        if order.time_in_force == "FOK" and available < order.remaining * (1 - 1e-9):
            self._books.close(order, OrderStatus.EXPIRED)
            return
        amount = snap_down(min(order.remaining, available), self._markets[order.symbol].amount_step)
        if 0 < amount <= order.remaining * (1 + 1e-9):
            self._books.take(order, price, amount)
        if not order.status.is_open:
            return
        makers = self._own_makers(order)
        if makers and order.stp_mode in ("EXPIRE_MAKER", "EXPIRE_BOTH"):
            for maker in makers:
                maker.expired_in_match = True
                self._books.close(maker, OrderStatus.EXPIRED)
        if makers and order.stp_mode in ("EXPIRE_TAKER", "EXPIRE_BOTH"):
            order.expired_in_match = True
            self._books.close(order, OrderStatus.EXPIRED)
        elif order.type is OrderType.MARKET or order.time_in_force != "GTC":
            self._books.close(order, OrderStatus.EXPIRED)  # what the liquidity could not fill
        else:
            self._books.rest(order)

    def _own_makers(self, order: SimOrder) -> list[SimOrder]:
        """The same account's resting orders on the other side that ``order``'s limit reaches:
        the only ones it could trade with once the liquidity is used up."""
        if order.price is not None:
            limit = order.price
        else:  # a market order takes any price: up to infinity to buy, down to 0 to sell
            limit = math.inf if order.side is Side.BUY else 0.0
        return [
            o
            for o in self._books.accounts[order.account_id].open.values()
            if o.symbol == order.symbol
            and o.side is not order.side
            and o is not order
            and not o.waits_for_trigger
            and o.rest_price is not None
            and crosses(order.side, limit, o.rest_price)
        ]

    def _maker_amount(self, order: SimOrder) -> float:
        """All of the remaining amount, or with ``partial_fill_prob`` a seeded part of it."""
        remaining = order.remaining
        if self._partial_fill_prob <= 0 or self._fill_rng.random() >= self._partial_fill_prob:
            return remaining
        step = self._markets[order.symbol].amount_step
        part = remaining * self._fill_rng.uniform(0.1, 0.9)
        if step is not None:
            part = snap(part, step)
        return part if 0 < part < remaining else remaining
