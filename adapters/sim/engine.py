"""An in-memory spot exchange: accounts, balances with holds, and orders matched against a price.

Each symbol has one exogenous price (a seeded random walk, a scripted path, or
whatever a test sets). Orders of different accounts never trade with each
other: every order trades against that price, with unlimited liquidity.

Matching rules:

- a market order fills at once at the current price (taker);
- a limit order that crosses the current price fills at once at the current
  price (taker), unless it is post-only, which is refused with ``InvalidOrder``;
  otherwise it rests and fills at its own price once the price reaches it
  (maker), wholly, or partly with probability ``partial_fill_prob``;
- a stop (stop-loss) triggers when the price moves through ``stop_price``
  against the position (a sell when the price falls to it, a buy when it rises
  to it); a take-profit triggers when the price reaches its trigger
  (``stop_price``, else ``price``) the favourable way. Once triggered, a trigger
  order with a ``price`` works as a limit at that price, one without acts as
  market. A trigger order that would trigger at once is refused, as Binance
  does (error -2021).

Fees follow the account's fee mode, chosen when it is opened
(:class:`~adapters.sim._fees.FeeMode`): ``"quote"`` (the default, ``amount x
price x fee rate`` in quote), ``"base_for_buys"`` (a buy pays ``amount x fee
rate`` out of the base it receives) or a third asset such as ``"BNB"``, valued
at the engine's price of ``BNB/QUOTE``, with a fallback when it cannot pay.
Fees are rounded to ``fee_decimals``. Each :class:`~nija_broker.core.models.Fill`
says what was taken (``fee_currency``, ``fee_cost``) and its quote value
(``fee``); ``Order.fee`` sums the quote values.

Holds: a resting buy holds ``reference price x remaining x (1 + max(maker_fee,
taker_fee))`` of quote, so a fee charged in quote on the fill is always
covered (no fee share when the account's buys pay fees in base); a resting
sell holds its remaining base. Trigger orders hold like the order they become,
at their reference price (``price``, else ``stop_price``). A stop-market buy
that gaps above its stop and can no longer be paid for is rejected (expired if
it had already filled partly).

Venue situations a test can ask for, all off by default:

- ``time_in_force`` ``"IOC"`` / ``"FOK"`` on a limit order (``place_order``): an IOC fills
  what crosses and expires the rest (EXPIRED, with what filled); a FOK fills whole at once
  or expires with nothing;
- :meth:`SimEngine.set_liquidity`: how much a taker finds at the current price; a market
  or crossing limit order takes at most that much (the rest expires for market, IOC and
  FOK orders, and rests for a GTC limit);
- self-trade prevention (``stp_mode``): a taker that is not filled by the liquidity and
  whose limit reaches the same account's resting order on the other side expires itself
  (``EXPIRE_TAKER``), that resting order (``EXPIRE_MAKER``) or both, with what had filled;
  such an order is EXPIRED and flagged ``expired_in_match`` (Binance ``EXPIRED_IN_MATCH``);
- :meth:`SimEngine.delay_cancels`: the next cancels are accepted but leave the order open,
  holding its funds and not filling, flagged ``cancel_pending`` (Binance
  ``PENDING_CANCEL``) until :meth:`SimEngine.complete_cancels`.

Everything random is drawn from generators seeded by ``seed``, so the same seed
and the same calls give the same run. Time comes from ``clock`` and is never
advanced here: time belongs to the caller.

:class:`SimEngine` is the public face: markets and prices, accounts, order intake and
queries. Behind it, :mod:`adapters.sim._matching` decides what fills (an incoming order
with its time in force, the liquidity and self-trade prevention; resting orders as the
price moves), :mod:`adapters.sim._books` books each fill and close, and
:mod:`adapters.sim._cancels` is the cancel path with its pending cancels.

:meth:`SimEngine.subscribe` is the change feed (:mod:`adapters.sim._events`): every change
to an order or a balance, in order, once, after the call that made it returns; the
emulator's streams push from it.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Concatenate, ParamSpec, TypeVar

from nija_broker.core.clock import Clock, FakeClock
from nija_broker.core.errors import AuthenticationFailed, InvalidOrder, OrderNotFound
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.models import Balance, Fill, Market, Order, OrderType, Ticker
from nija_broker.core.symbols import normalize_symbol

from ._books import Books
from ._cancels import Cancels
from ._events import (
    BalanceChanged,
    Deposit,
    EngineEvent,
    OrderChange,
    OrderChanged,
    Subscriber,
)
from ._fees import FEE_DECIMALS, FeeMode
from ._matching import Matcher
from ._rules import order_problem, snap
from ._state import STP_MODES, TIME_IN_FORCE, AccountTruth, OrderFlags, SimAccount, SimOrder

__all__ = [
    "FEE_DECIMALS",
    "BalanceChanged",
    "Deposit",
    "EngineEvent",
    "FeeMode",
    "OrderChange",
    "OrderChanged",
    "SimEngine",
    "Subscriber",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _tells(
    method: Callable[Concatenate[SimEngine, _P], _R],
) -> Callable[Concatenate[SimEngine, _P], _R]:
    """A method that may change orders or balances: subscribers hear of it as it returns
    (or raises, having changed part of the books)."""

    @functools.wraps(method)
    def wrapper(self: SimEngine, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._books.events.flush()

    return wrapper


class SimEngine:
    """The simulated exchange shared by every account. Not thread-safe; one event loop."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Clock | None = None,
        maker_fee: float = 0.001,
        taker_fee: float = 0.001,
        partial_fill_prob: float = 0.0,
        fee_decimals: int = FEE_DECIMALS,
    ) -> None:
        for name, rate in (("maker_fee", maker_fee), ("taker_fee", taker_fee)):
            if not 0 <= rate < 1:
                raise ValueError(f"{name} must be in [0, 1), got {rate!r}")
        if not 0 <= partial_fill_prob <= 1:
            raise ValueError(f"partial_fill_prob must be in [0, 1], got {partial_fill_prob!r}")
        if not 0 <= fee_decimals <= FEE_DECIMALS:
            # Binance prints commissions with 8 decimals: a finer fee could not be shown.
            raise ValueError(f"fee_decimals must be in [0, {FEE_DECIMALS}], got {fee_decimals!r}")
        self.clock: Clock = clock if clock is not None else FakeClock()
        self.seed = seed
        self.maker_fee = maker_fee
        self.taker_fee = taker_fee
        self.partial_fill_prob = partial_fill_prob
        self.fee_decimals = fee_decimals
        # The hold covers the dearer fee: a resting order may still end up a taker.
        self._hold_fee = max(maker_fee, taker_fee)
        # Separate streams (the fill stream is the matcher's, below), so enabling partial
        # fills does not change the price path.
        self._walk_rng = random.Random(f"{seed}:walk")
        self._markets: dict[str, Market] = {}
        self._prices: dict[str, float] = {}
        self._volatility: dict[str, float] = {}
        self._paths: dict[str, deque[float]] = {}
        self._next_order = 1
        # Books own every account's state; the matcher and the cancel path change it only
        # through them (the engine is their one caller, on its one loop).
        self._books = Books(
            now=self._now,
            prices=self._prices,
            maker_fee=maker_fee,
            taker_fee=taker_fee,
            fee_decimals=fee_decimals,
        )
        self._matcher = Matcher(
            self._books,
            now=self._now,
            markets=self._markets,
            prices=self._prices,
            partial_fill_prob=partial_fill_prob,
            fill_rng=random.Random(f"{seed}:fill"),
        )
        self._cancels = Cancels(self._books, now=self._now)

    # ----------------------------------------------------------------- markets

    def add_market(self, market: Market, price: float, *, volatility: float = 0.002) -> None:
        """List ``market`` at ``price``; ``volatility`` is the stdev of a step's log return."""
        if market.symbol in self._markets:
            raise ValueError(f"market {market.symbol} is already listed")
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be positive, got {price!r}")
        if volatility < 0:
            raise ValueError(f"volatility must not be negative, got {volatility!r}")
        self._markets[market.symbol] = market
        self._prices[market.symbol] = snap(price, market.price_step)
        self._volatility[market.symbol] = volatility
        self._books.resting[market.symbol] = {}

    @property
    def markets(self) -> dict[str, Market]:
        return dict(self._markets)

    def price(self, symbol: str) -> float:
        return self._prices[self._market(symbol).symbol]

    def ticker(self, symbol: str) -> Ticker:
        market = self._market(symbol)
        last = self._prices[market.symbol]
        return Ticker(symbol=market.symbol, last=last, bid=last, ask=last, timestamp=self._now())

    @_tells
    def set_price(self, symbol: str, price: float) -> list[Fill]:
        """Move the market to ``price`` and return the fills of the orders it reaches."""
        market = self._market(symbol)
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be positive, got {price!r}")
        self._prices[market.symbol] = price
        return self._matcher.price_moved(market.symbol)

    def set_liquidity(self, symbol: str, amount: float | None) -> None:
        """What a taker finds at the current price from now on; ``None``: unlimited."""
        market = self._market(symbol)
        if amount is None:
            self._matcher.liquidity.pop(market.symbol, None)
        elif math.isfinite(amount) and amount >= 0:
            self._matcher.liquidity[market.symbol] = amount
        else:
            raise ValueError(f"liquidity must be a non-negative amount, got {amount!r}")

    def scripted_path(self, symbol: str, prices: Sequence[float]) -> None:
        """The next ``len(prices)`` steps of ``symbol`` follow ``prices`` (replacing any path)."""
        market = self._market(symbol)
        if any(not (math.isfinite(p) and p > 0) for p in prices):
            raise ValueError(f"scripted prices must be positive, got {list(prices)!r}")
        self._paths[market.symbol] = deque(prices)

    @_tells
    def step(self, n: int = 1) -> list[Fill]:
        """Move every symbol ``n`` steps (scripted, else a seeded walk), matching after each."""
        fills: list[Fill] = []
        for _ in range(n):
            for symbol, market in self._markets.items():
                # Draw even when scripted, so one symbol's script leaves the others' walks alone.
                shock = self._walk_rng.gauss(0.0, 1.0)
                path = self._paths.get(symbol)
                if path:
                    self._prices[symbol] = path.popleft()
                else:
                    walked = self._prices[symbol] * math.exp(self._volatility[symbol] * shock)
                    self._prices[symbol] = snap(walked, market.price_step)
                fills.extend(self._matcher.price_moved(symbol))
        return fills

    # ------------------------------------------------------------------ events

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(account_id, event)`` for every change from now on; returns the
        function that unsubscribes it (harmless to call twice).

        Events (:class:`OrderChanged`, :class:`BalanceChanged`) come in the order the
        changes happened, each once, after the engine call that made them returns; a
        callback that raises is logged and does not disturb the engine or other callbacks.
        """
        self._books.events.subscribe(callback, self._books.accounts)
        return functools.partial(self._books.events.unsubscribe, callback)

    # ---------------------------------------------------------------- accounts

    @_tells
    def open_account(
        self, account_id: str, balances: Mapping[str, float], *, fee_mode: FeeMode | str = "quote"
    ) -> None:
        """Open ``account_id`` with ``balances``; ``fee_mode`` is ``"quote"`` (the default),
        ``"base_for_buys"``, an asset code such as ``"BNB"``, or a :class:`FeeMode`."""
        if account_id in self._books.accounts:
            raise ValueError(f"account {account_id!r} already exists")
        mode = FeeMode.parse(fee_mode)
        # Buys that pay fees in base (or in base when the third asset runs out) never
        # need quote for them: such a resting buy holds only its cost, as on Binance.
        hold_rate = 0.0 if mode.buys_in_base else self._hold_fee
        self._books.accounts[account_id] = SimAccount(
            account_id, hold_fee_rate=hold_rate, fee_mode=mode
        )
        for currency, amount in balances.items():
            self.deposit(account_id, currency, amount)

    def fee_mode(self, account_id: str) -> FeeMode:
        return self._account(account_id).fee_mode

    @_tells
    def deposit(self, account_id: str, currency: str, amount: float) -> None:
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"deposit must be a non-negative amount, got {amount!r}")
        account = self._account(account_id)
        account.add(currency.upper(), amount)
        self._books.events.balances_moved(account, Deposit(currency.upper(), amount))

    @property
    def accounts(self) -> tuple[str, ...]:
        return tuple(self._books.accounts)

    def balances(self, account_id: str) -> dict[str, Balance]:
        return self._account(account_id).balances()

    # ------------------------------------------------------------------ orders

    @_tells
    def place_order(
        self,
        account_id: str,
        request: OrderRequest,
        *,
        time_in_force: str = "GTC",
        stp_mode: str = "NONE",
    ) -> Order:
        """Accept ``request``; ``time_in_force`` (GTC, IOC, FOK: limit orders only) and
        ``stp_mode`` (NONE, EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH) as the module says."""
        account = self._account(account_id)
        market = self._market(request.symbol, account_id)
        now_price = self._prices[market.symbol]
        self._validate(account, market, request, now_price)
        if time_in_force not in TIME_IN_FORCE or stp_mode not in STP_MODES:
            raise InvalidOrder(
                f"{market.symbol}: unknown time in force {time_in_force!r} or "
                f"self-trade prevention mode {stp_mode!r}",
                account_id=account_id,
            )
        if time_in_force != "GTC" and request.type is not OrderType.LIMIT:
            raise InvalidOrder(
                f"{market.symbol}: time in force {time_in_force} applies to "
                f"limit orders, not {request.type}",
                account_id=account_id,
            )
        order = SimOrder(
            seq=self._next_order,
            account_id=account_id,
            symbol=market.symbol,
            base=market.base,
            quote=market.quote,
            side=request.side,
            type=request.type,
            role=request.role,
            amount=request.amount,
            price=None if request.type is OrderType.MARKET else request.price,
            stop_price=request.stop_price,
            client_order_id=request.client_order_id,
            reduce_only=request.reduce_only,
            created_at=self._now(),
            updated_at=self._now(),
            time_in_force=time_in_force,
            stp_mode=stp_mode,
        )
        self._books.check_funds(account, order, now_price)
        self._next_order += 1
        account.list_open(order)
        self._books.events.order_changed(account, order, OrderChange.NEW)
        self._matcher.incoming(order, now_price)
        return order.snapshot()

    def delay_cancels(self, count: int = 1) -> None:
        """The next ``count`` cancels leave their order pending (see the module doc)."""
        self._cancels.delay(count)

    @_tells
    def complete_cancels(self, account_id: str | None = None) -> list[Order]:
        """Cancel every order whose cancel is pending (of ``account_id``, else of all)."""
        return self._cancels.complete(account_id)

    def order_flags(self, account_id: str, order_id: str) -> OrderFlags:
        """Time in force, self-trade prevention mode and what ended or holds the order."""
        return self._order(account_id, order_id).flags

    @_tells
    def cancel_order(self, account_id: str, order_id: str) -> Order:
        """Cancel; ``OrderNotFound`` for an unknown id, ``InvalidOrder`` if already closed."""
        order = self._order(account_id, order_id)
        if order.status.is_terminal:
            raise InvalidOrder(f"order {order_id} is already {order.status}", account_id=account_id)
        return self._cancels.cancel(order)

    def get_order(self, account_id: str, order_id: str) -> Order:
        return self._order(account_id, order_id).snapshot()

    def get_order_by_client_id(self, account_id: str, client_order_id: str) -> Order:
        order = self._account(account_id).by_client_id.get(client_order_id)
        if order is None:
            raise OrderNotFound(
                f"no order with client order id {client_order_id!r}", account_id=account_id
            )
        return order.snapshot()

    def open_orders(self, account_id: str, symbol: str | None = None) -> list[Order]:
        wanted = None if symbol is None else self._market(symbol, account_id).symbol
        return [
            order.snapshot()
            for order in self._account(account_id).open.values()
            if wanted is None or order.symbol == wanted
        ]

    def all_orders(
        self, account_id: str, symbol: str | None = None, since: datetime | None = None
    ) -> list[Order]:
        """Every order of the account, oldest first, created at or after ``since``."""
        wanted = None if symbol is None else self._market(symbol, account_id).symbol
        return [
            order.snapshot()
            for order in self._account(account_id).orders.values()
            if (wanted is None or order.symbol == wanted)
            and (since is None or order.created_at >= since)
        ]

    def trades(
        self, account_id: str, symbol: str | None = None, since: datetime | None = None
    ) -> list[Fill]:
        wanted = None if symbol is None else self._market(symbol, account_id).symbol
        return [
            fill
            for fill in self._account(account_id).fills
            if (wanted is None or fill.symbol == wanted)
            and (since is None or fill.timestamp >= since)
        ]

    def is_maker(self, trade_id: str) -> bool:
        """Whether the fill with this trade id added liquidity (paid the maker fee)."""
        return self._books.is_maker[trade_id]

    @_tells
    def fill_partially(self, account_id: str, order_id: str, amount: float) -> Fill:
        """Test hook: fill ``amount`` of a resting order at its own price, as maker."""
        order = self._order(account_id, order_id)
        if not order.status.is_open or order.waits_for_trigger or order.rest_price is None:
            raise InvalidOrder(
                f"order {order_id} is not a resting limit order", account_id=account_id
            )
        if not (math.isfinite(amount) and 0 < amount <= order.remaining * (1 + 1e-9)):
            raise ValueError(f"amount must be in (0, {order.remaining}], got {amount!r}")
        return self._books.execute(order, amount, order.rest_price, maker=True)

    def truth(self, account_id: str) -> AccountTruth:
        account = self._account(account_id)
        return AccountTruth(
            account_id=account_id,
            orders=tuple(o.snapshot() for o in account.orders.values()),
            open_orders=tuple(o.snapshot() for o in account.open.values()),
            filled={o.id: o.filled for o in account.orders.values()},
            fills=tuple(account.fills),
            balances=account.balances(),
        )

    @property
    def fills(self) -> tuple[Fill, ...]:
        """Every fill of every account, in the order they happened."""
        return tuple(self._books.fills)

    # --------------------------------------------------------------- internals

    def _now(self) -> datetime:
        return self.clock.now()

    def _account(self, account_id: str) -> SimAccount:
        account = self._books.accounts.get(account_id)
        if account is None:
            # What an exchange answers for keys it does not know.
            raise AuthenticationFailed(f"unknown account {account_id!r}", account_id=account_id)
        return account

    def _market(self, symbol: str, account_id: str | None = None) -> Market:
        try:
            market = self._markets.get(normalize_symbol(symbol))
        except ValueError as exc:
            raise InvalidOrder(str(exc), account_id=account_id) from exc
        if market is None:
            raise InvalidOrder(f"unknown symbol {symbol!r}", account_id=account_id)
        return market

    def _order(self, account_id: str, order_id: str) -> SimOrder:
        account = self._account(account_id)
        order = account.orders.get(int(order_id)) if order_id.isdigit() else None
        if order is None:
            raise OrderNotFound(f"order {order_id!r} does not exist", account_id=account_id)
        return order

    def _validate(
        self, account: SimAccount, market: Market, request: OrderRequest, now_price: float
    ) -> None:
        duplicate = request.client_order_id in account.by_client_id
        reason = order_problem(market, request, now_price, duplicate_client_id=duplicate)
        if reason is not None:
            raise InvalidOrder(f"{market.symbol}: {reason}", account_id=account.account_id)
