"""Equity in the account's quote currency: every holding valued at the exchange's own prices.

Pure: no I/O, no clock, no state. The reconciler asks :func:`tickers_to_fetch`
which tickers to fetch, turns the answer into prices with :func:`prices_of` and
values the balances with :func:`value_balances`; the guard values its holdings
with :func:`rate` over the last prices it knows.

A holding of currency ``C`` is valued in the account's quote ``Q`` by the
first route that exists (DESIGN, "Words and formulas": Equity):

1. ``C`` is ``Q``: one for one;
2. a ticker ``C/Q`` (its price) or ``Q/C`` (one over its price);
3. ``C`` and ``Q`` both USD-pegged (:data:`USD_PEGGED`, USD itself included)
   and no ticker between them: at par;
4. through a leg ``L`` (USD or a stablecoin, tried in :data:`LEGS` order):
   ``C`` to ``L`` and ``L`` to ``Q``, each by a ticker or at par. So BTC on a
   USDT venue for a USD account is BTC/USDT with USDT at par.

"Exists" means, when valuing, that the ticker has a price and, when planning
what to fetch, that the exchange lists the market: both walk the same routes
with :func:`route`, so fetching what :func:`tickers_to_fetch` asks for values
everything the venue's markets can value. A holding no route reaches is
*unvalued*: it is listed, never counted as zero silently, and an account whose
only value is unvalued has no established equity (:attr:`Valuation.established`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass

from nija_broker.core.models import Balance, Market, Ticker

__all__ = [
    "LEGS",
    "USD_PEGGED",
    "Hop",
    "Valuation",
    "at_par",
    "held_amount",
    "is_cash",
    "order_symbols",
    "prices_of",
    "rate",
    "route",
    "ticker_price",
    "tickers_to_fetch",
    "value_balances",
]

LEGS: tuple[str, ...] = (
    "USD",
    "USDT",
    "USDC",
    "FDUSD",
    "DAI",
    "PYUSD",
    "TUSD",
    "USDP",
    "BUSD",
    "GUSD",
    "USDS",
    "RLUSD",
)
"""Currencies a holding may be valued through when no ticker to the quote exists, in the
order they are tried: USD, then the stablecoins roughly by how widely venues quote in them."""

USD_PEGGED: frozenset[str] = frozenset(LEGS)
"""USD and the fiat-backed USD stablecoins: at par with each other unless the exchange lists a
ticker between the two (then that ticker's price wins, so a depeg the venue shows is seen)."""


def at_par(currency: str, quote: str) -> bool:
    """Whether one ``currency`` counts as one ``quote`` when no ticker says otherwise."""
    return currency == quote or (currency in USD_PEGGED and quote in USD_PEGGED)


def is_cash(currency: str, quote: str) -> bool:
    """Money rather than a position for an account counted in ``quote``: the quote itself, or
    a currency at par with it (USDT on a USD account)."""
    return at_par(currency, quote)


def held_amount(balance: Balance) -> float:
    """What a balance holds: its total, or free plus used where a venue reports no total."""
    return balance.total or balance.free + balance.used


def ticker_price(ticker: Ticker) -> float | None:
    """A ticker's price: the last trade, else the mid of bid and ask, else either one."""
    if ticker.last is not None:
        return ticker.last
    if ticker.bid is not None and ticker.ask is not None:
        return (ticker.bid + ticker.ask) / 2.0
    return ticker.bid if ticker.bid is not None else ticker.ask


def prices_of(tickers: Mapping[str, Ticker]) -> dict[str, float]:
    """Symbol -> price of every ticker that has one."""
    prices: dict[str, float] = {}
    for symbol, ticker in tickers.items():
        price = ticker_price(ticker)
        if price is not None:
            prices[symbol] = price
    return prices


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of a route: a ticker (``inverse``: its base is the target) or par (``None``)."""

    symbol: str | None
    inverse: bool = False


def _hop(currency: str, target: str, listed: Container[str]) -> Hop | None:
    direct = f"{currency}/{target}"
    if direct in listed:
        return Hop(direct)
    inverse = f"{target}/{currency}"
    if inverse in listed:
        return Hop(inverse, inverse=True)
    if at_par(currency, target):
        return Hop(None)
    return None


def route(currency: str, quote: str, listed: Container[str]) -> tuple[Hop, ...] | None:
    """The hops that value ``currency`` in ``quote`` over the ``listed`` symbols, or ``None``.

    ``()`` when ``currency`` is ``quote``. A direct ticker (or par) comes first;
    then the first leg of :data:`LEGS` that both sides reach.
    """
    if currency == quote:
        return ()
    hop = _hop(currency, quote, listed)
    if hop is not None:
        return (hop,)
    for leg in LEGS:
        if leg in (currency, quote):
            continue
        first = _hop(currency, leg, listed)
        if first is None:
            continue
        second = _hop(leg, quote, listed)
        if second is not None:
            # Both at par would mean currency and quote at par: caught by the direct hop.
            return (first, second)
    return None


def _usable(prices: Mapping[str, float]) -> dict[str, float]:
    return {s: p for s, p in prices.items() if math.isfinite(p) and p > 0}


def _rate_over(currency: str, quote: str, usable: Mapping[str, float]) -> float | None:
    hops = route(currency, quote, usable)
    if hops is None:
        return None
    value = 1.0
    for hop in hops:
        if hop.symbol is not None:
            price = usable[hop.symbol]
            value = value / price if hop.inverse else value * price
    return value


def rate(currency: str, quote: str, prices: Mapping[str, float]) -> float | None:
    """What one ``currency`` is worth in ``quote`` at ``prices`` (symbol -> price), or ``None``."""
    return _rate_over(currency, quote, _usable(prices))


# --------------------------------------------------------------------------- balances


@dataclass(frozen=True, slots=True)
class Valuation:
    """One account's balances valued in ``quote``.

    ``values`` has every currency held that a route values (currency -> value
    in ``quote``); ``unvalued`` the ones held that no route reaches, sorted;
    ``equity`` is the sum of ``values``.
    """

    quote: str
    equity: float
    values: Mapping[str, float]
    unvalued: tuple[str, ...] = ()

    @property
    def established(self) -> bool:
        """False when nothing held was valued while something held could not be: the true
        equity is unknown, not zero."""
        return not (self.unvalued and self.equity <= 0)

    @property
    def problem(self) -> str | None:
        """Why equity is not established (a sentence), or ``None`` when it is."""
        if self.established:
            return None
        return (
            f"equity cannot be established in {self.quote}: the account holds "
            f"{', '.join(self.unvalued)} and no ticker of the exchange values "
            f"{'it' if len(self.unvalued) == 1 else 'them'} (directly, or through a "
            "stablecoin or USD leg)"
        )


def value_balances(
    balances: Mapping[str, Balance], prices: Mapping[str, float], quote: str
) -> Valuation:
    """Every currency held, valued in ``quote`` at ``prices`` (symbol -> price)."""
    usable = _usable(prices)
    values: dict[str, float] = {}
    unvalued: list[str] = []
    for currency, balance in sorted(balances.items()):
        amount = held_amount(balance)
        if amount <= 0:
            continue
        unit = _rate_over(currency, quote, usable)
        if unit is None:
            unvalued.append(currency)
        else:
            values[currency] = amount * unit
    return Valuation(
        quote=quote, equity=math.fsum(values.values()), values=values, unvalued=tuple(unvalued)
    )


def _held(balances: Mapping[str, Balance]) -> Iterable[str]:
    return (currency for currency, balance in balances.items() if held_amount(balance) > 0)


def tickers_to_fetch(
    balances: Mapping[str, Balance], quote: str, markets: Collection[str]
) -> list[str]:
    """The ticker symbols that value every currency held in ``quote``, on these ``markets``.

    ``markets`` are the exchange's symbols (a mapping of them will do). With
    none known, the direct ``C/Q`` symbols of the currencies not at par (what
    can be guessed without a market list).
    """
    wanted: set[str] = set()
    for currency in _held(balances):
        if currency == quote:
            continue
        if not markets:
            if not at_par(currency, quote):
                wanted.add(f"{currency}/{quote}")
            continue
        hops = route(currency, quote, markets)
        if hops is not None:
            wanted.update(hop.symbol for hop in hops if hop.symbol is not None)
    return sorted(wanted)


def order_symbols(
    balances: Mapping[str, Balance], quote: str, markets: Mapping[str, Market]
) -> set[str]:
    """Markets where an order on a held currency may rest, for venues listed one symbol at a time.

    For every currency held that is not money for the account: its market
    against the account's quote, against every money currency the account
    holds (BTC/USDT when USDT is held), and the market its value is read from.
    With no markets known, the market against the quote.
    """
    held = set(_held(balances))
    money = {c for c in held if is_cash(c, quote)} | {quote}
    wanted: set[str] = set()
    for currency in held - money:
        if not markets:
            wanted.add(f"{currency}/{quote}")
            continue
        wanted.update(s for s in (f"{currency}/{m}" for m in money) if s in markets)
        hops = route(currency, quote, markets)
        if hops:
            first = hops[0]
            if first.symbol is not None and not first.inverse:
                wanted.add(first.symbol)
    return wanted
