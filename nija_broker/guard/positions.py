"""What an account holds, as the guard's rules count it: holdings per asset, and positions.

Positions are matched by base asset: a BTC holding is a BTC position whichever
quote an order uses (BTC/USD, BTC/USDT), and entries on BTC/USD and BTC/USDT
are entries on the same asset. An asset counts as a position when the account
holds it worth at least ``dust_usd``, by the larger of two sources: the
exchange's balance (``total``, so coins locked in an exit order count) and the
ledger's average-cost positions (which know about fills the last balance poll
has not seen yet). Either one seeing a position is enough to block a DCA entry:
the guard errs towards refusing an entry, never towards a second one. Money is
no position: the account's quote and what is at par with it (USDT on a USD
account). Holdings are valued in the account's quote by
:mod:`nija_broker.core.valuation` at the last prices, else at the ledger's cost;
those no price values are reported in the figures and not counted: a micro
account's forgotten dust coins must not fill its position slots.

Pure like the rules (no state, lock, clock or I/O):
:func:`~nija_broker.guard.state.account_state` calls these to build the
:class:`~nija_broker.guard.rules.AccountState` snapshot, and
:mod:`nija_broker.guard.rules` re-exports them.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping

from nija_broker.core.models import Balance, Position
from nija_broker.core.symbols import base_of, quote_of
from nija_broker.core.valuation import held_amount, is_cash, rate

__all__ = ["holdings_of", "positions_of"]


def holdings_of(
    balances: Mapping[str, Balance],
    ledger: Iterable[Position],
    quote_currency: str,
    *,
    believe_balance: Container[str] = (),
) -> dict[str, float]:
    """Quantity held per base asset, money excluded: the larger of the balance's total and
    the ledger's positions in that asset (summed over the quotes it was bought with).

    For the assets in ``believe_balance`` (ledger and exchange have disagreed on two
    fetches in a row, and the ledger has not changed since) the exchange's balance
    alone counts: a position the ledger keeps but the exchange does not hold must not
    block every later entry as DCA.
    """
    held: dict[str, float] = {}
    for position in ledger:
        if position.quantity > 0:
            base = base_of(position.symbol)
            if base not in believe_balance:
                held[base] = held.get(base, 0.0) + position.quantity
    for currency, balance in balances.items():
        total = held_amount(balance)
        if total > 0:
            held[currency] = max(held.get(currency, 0.0), total)
    return {
        asset: quantity for asset, quantity in held.items() if not is_cash(asset, quote_currency)
    }


def _cost_basis(
    asset: str,
    quote_currency: str,
    avg_prices: Mapping[str, float],
    last_prices: Mapping[str, float],
) -> float | None:
    """The ledger's average cost of ``asset`` in the account's quote (first symbol that has one)."""
    for symbol, avg_price in sorted(avg_prices.items()):
        if base_of(symbol) != asset or not avg_price > 0:
            continue
        unit = rate(quote_of(symbol), quote_currency, last_prices)
        if unit is not None:
            return avg_price * unit
    return None


def positions_of(
    holdings: Mapping[str, float],
    last_prices: Mapping[str, float],
    avg_prices: Mapping[str, float],
    *,
    quote_currency: str,
    dust_usd: float,
) -> tuple[dict[str, float], tuple[str, ...]]:
    """Holdings worth at least ``dust_usd`` (asset -> value), and the assets no price values.

    A holding is valued in ``quote_currency`` at the last prices (symbol ->
    price) through :func:`nija_broker.core.valuation.rate` (a direct ticker, or a
    stablecoin or USD leg), else at the ledger's average cost (``avg_prices``,
    symbol -> price in that symbol's quote).
    """
    positions: dict[str, float] = {}
    unpriced: list[str] = []
    for asset, quantity in holdings.items():
        unit = rate(asset, quote_currency, last_prices)
        if unit is None:
            unit = _cost_basis(asset, quote_currency, avg_prices, last_prices)
        if unit is None:
            unpriced.append(asset)
            continue
        value = quantity * unit
        if value >= dust_usd:
            positions[asset] = value
    return positions, tuple(sorted(unpriced))
