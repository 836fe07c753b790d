"""What one account holds, as a trader reads it: a row per position, and where it is known from.

Positions come from the account's fills (the ledger's average-cost positions) and are
checked against the exchange's balances (DESIGN, "Where each truth comes from"). A row
says which of the two knows the position: ``ledger`` (booked from fills, not in the
last balance: e.g. filled after it), ``exchange`` (held on the exchange with no fills
booked: bought before the sidecar ran, or by hand) or ``both``. ``amount`` is the
ledger's where the ledger has the position, else the balance's; both figures are in
the row. Money is no position: the account's quote and what is at par with it. Value
and unrealised P&L are ``None`` while no price is known; never a guess.

Called on the state's owner (one account's book and live view, read in one job).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from nija_broker.core.health import AccountLive
from nija_broker.core.symbols import base_of
from nija_broker.core.valuation import held_amount, is_cash, rate
from nija_broker.state.book import AccountBook

__all__ = ["PositionView", "account_positions"]

Source = Literal["ledger", "exchange", "both"]


class PositionView(BaseModel):
    """One held asset of one account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbol: str
    asset: str
    amount: float
    average_cost: float | None
    value: float | None
    unrealized_pnl: float | None
    source: Source
    ledger_amount: float
    exchange_amount: float | None
    """``None`` while no balance has been fetched."""


def account_positions(book: AccountBook, live: AccountLive | None) -> list[PositionView]:
    """The account's positions, by symbol; each valued in its quote currency."""
    quote = live.quote_currency if live is not None else "USD"
    balances = live.balances if live is not None else {}
    prices = book.orders.last_prices()
    ledger: dict[str, tuple[str, float, float]] = {}  # asset -> (symbol, quantity, avg cost)
    for position in book.ledger.positions():
        if position.quantity <= 0:
            continue
        asset = base_of(position.symbol)
        _, held, _ = ledger.get(asset, (position.symbol, 0.0, 0.0))
        quantity = held + position.quantity
        # Several quotes of one asset (BTC/USD and BTC/USDT): one row, cost averaged.
        previous_cost = ledger[asset][1] * ledger[asset][2] if asset in ledger else 0.0
        cost = (previous_cost + position.quantity * position.avg_price) / quantity
        symbol = ledger[asset][0] if asset in ledger else position.symbol
        ledger[asset] = (symbol, quantity, cost)
    exchange = {
        currency: held_amount(balance)
        for currency, balance in balances.items()
        if held_amount(balance) > 0 and not is_cash(currency, quote)
    }
    rows = []
    for asset in sorted(set(ledger) | set(exchange)):
        symbol, ledger_amount, cost = ledger.get(asset, (f"{asset}/{quote}", 0.0, 0.0))
        in_exchange = exchange.get(asset)
        source: Source = (
            "both"
            if asset in ledger and in_exchange is not None
            else "ledger"
            if asset in ledger
            else "exchange"
        )
        amount = ledger_amount if asset in ledger else (in_exchange or 0.0)
        price = prices.get(symbol)
        if price is None:
            price = rate(asset, quote, prices)
        value = amount * price if price is not None else None
        average = cost if asset in ledger else None
        pnl = (price - average) * amount if price is not None and average is not None else None
        rows.append(
            PositionView(
                symbol=symbol,
                asset=asset,
                amount=amount,
                average_cost=average,
                value=value,
                unrealized_pnl=pnl,
                source=source,
                ledger_amount=ledger_amount,
                exchange_amount=exchange.get(asset, 0.0) if balances else None,
            )
        )
    return rows
