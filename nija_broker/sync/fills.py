"""Fills from the exchange's trades, orders followed to their end, positions against balances.

Three steps of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`),
run after the open-orders listing has been applied:

- :func:`follow_known`: every order the guard confirmed (by order id, or by
  client order id when no id came back) is asked about by id until the book
  has it, even if no listing ever showed it: an entry that filled at once and
  its exit that filled before the next poll are found this way.
- :func:`book_trades`: where the exchange reports trades, each order whose
  filled amount exceeds what was booked for it has its trades fetched and
  booked once by trade id, with the fee the exchange charged (a third-currency
  fee valued at the exchange's price). Trades are booked in exchange time
  order, and a symbol whose earlier order's trades could not be fetched waits
  (a sell must not be booked before the buy it closes). Where the exchange
  has no trades the book's cumulative rule books fills with the orders.
- :func:`check_positions`: at every balance refresh, each ledger position is
  compared with the exchange's balance of its base currency; a disagreement
  above the market's amount step, seen twice in a row, raises one attention
  event naming both figures.

Calls: one ``fetch_order_trades`` per order whose fill grew (Binance:
``myTrades`` with ``orderId``; Kraken: QueryOrders + QueryTrades), one
``fetch_order`` per followed order; nothing when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from nija_broker.core.book_fills import AMOUNT_REL
from nija_broker.core.errors import (
    AccountFatal,
    ExchangeError,
    OrderNotFound,
    StateError,
    Unsupported,
)
from nija_broker.core.events import AttentionRequired, FillsBooked
from nija_broker.core.models import Balance, Fill, Order, Position
from nija_broker.core.reconcile import adopt, resolve
from nija_broker.core.symbols import base_of, quote_of
from nija_broker.core.valuation import prices_of, rate, route
from nija_broker.state.book import Followed, ImpossibleFills, UnknownOrders

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["book_trades", "check_positions", "follow_known", "position_mismatches"]

log = logging.getLogger("nija_broker.reconciler")

@dataclass(slots=True)
class Owed:
    """An order the exchange has not yet said what the reconciler asked: a vanished order
    awaiting confirmation, a followed order, an order whose trades are owed."""

    attempts: int = 0
    alerted: bool = False
    skipped: int = 0
    """Cycles left out since the last look-up, once alerted (see :func:`follow_known`)."""

    def failed(self, attention_after: int) -> bool:
        """Count a failed look-up; True once, when ``attention_after`` is reached: the
        caller then raises its attention event."""
        self.attempts += 1
        if self.attempts >= attention_after and not self.alerted:
            self.alerted = True
            return True
        return False


# Once an attention event said a followed order cannot be found, it is still asked
# for, but only every this many cycles: a wrong id must not cost a call each poll.
_ALERTED_EVERY = 10


# --------------------------------------------------------------------------- following


async def follow_known(sync: AccountSync, *, budget: int | None) -> None:
    """Ask the exchange about every confirmed order the book has not seen; adopt what it says.

    A "no such order" answer is noted on the book (:class:`~nija_broker.state.book.UnknownOrders`,
    first answer's time kept) and cleared by any later answer about the order.
    """
    followed = sync.book.followed()
    sync.book.unknown_orders.retain(followed)
    if budget is not None:
        followed = followed[:budget]
    for item in followed:
        entry = sync.owed.get(UnknownOrders.key(item.order_id, item.client_order_id))
        if entry is not None and entry.alerted:
            entry.skipped += 1
            if entry.skipped % _ALERTED_EVERY:
                continue
        try:
            if item.order_id is not None:
                answer = await sync.ask(partial(sync.exchange.fetch_order, item.order_id,
                                                item.symbol), "fetch_order")
            elif item.client_order_id is not None:
                answer = await sync.ask(
                    partial(sync.exchange.fetch_order_by_client_id, item.client_order_id,
                            item.symbol), "fetch_order_by_client_id")
            else:
                sync.book.unfollow(item)
                continue
        except AccountFatal:
            raise
        except ExchangeError as exc:
            _count_failure(sync, item, exc)
            continue
        sync.book.unknown_orders.clear(item.order_id, item.client_order_id)
        if answer.client_order_id is None and item.client_order_id is not None:
            answer = answer.model_copy(update={"client_order_id": item.client_order_id})
        event = resolve(None, adopt(answer, item.role), sync.clock.now(),
                        sync.price_step(answer.symbol))
        if event is not None:
            await sync.commit([event])
        if sync.book.orders.get(answer.id) is not None:
            sync.book.unfollow(item)


def _count_failure(sync: AccountSync, item: Followed, exc: ExchangeError) -> None:
    key = UnknownOrders.key(item.order_id, item.client_order_id)
    if isinstance(exc, OrderNotFound):
        # The exchange's own answer about this order: the guard releases the entry it
        # confirmed once the order has been unknown past its not_found_grace_s.
        sync.book.unknown_orders.note(item.order_id, item.client_order_id, sync.clock.now())
    entry = sync.owed.setdefault(key, Owed())
    if entry.failed(sync.settings.attention_after):
        what = "not found" if isinstance(exc, OrderNotFound) else f"{type(exc).__name__}: {exc}"
        sync.publish([AttentionRequired(
            account_id=sync.account_id, at=sync.clock.now(), order_id=item.order_id,
            attempts=entry.attempts,
            reason=(f"order {key} ({item.symbol}) was confirmed to the guard but "
                    f"{entry.attempts} look-ups failed ({what}); it is still followed"),
        )])


# --------------------------------------------------------------------------- trades


async def book_trades(sync: AccountSync, *, budget: int | None) -> None:
    """Fetch and book the trades of every order whose fills are owed (see module doc)."""
    book = sync.book
    if not book.fills_from_trades:
        return
    owed = book.unbooked_orders()
    if not owed:
        return
    waiting: set[str] = set()
    fills: list[Fill] = []
    asked = 0
    for order, _missing in owed:
        if order.symbol in waiting:
            continue
        if budget is not None and asked >= budget:
            break
        asked += 1
        try:
            trades = await sync.ask(partial(sync.exchange.fetch_order_trades, order),
                                    "fetch_order_trades")
        except AccountFatal:
            raise
        except Unsupported:
            log.warning("account %s: %s reports no trades; fills follow the cumulative rule",
                        sync.account_id, sync.exchange.exchange_id)
            book.fills_from_trades = False
            await sync.run_book(partial(book.apply_changes, [order]))
            return
        except ExchangeError as exc:
            waiting.add(order.symbol)
            _trades_failed(sync, order, f"{type(exc).__name__}: {exc}")
            continue
        sync.owed.pop(order.id, None)
        fresh = [t.model_copy(update={"role": order.role}) for t in trades
                 if t.order_id == order.id and not book.ledger.is_booked(t)]
        if sum(t.amount for t in trades) < order.filled - order.amount * AMOUNT_REL:
            # Trades can trail the order's own figure by a moment: book what is there,
            # the rest is still owed and asked for next cycle; later orders wait.
            waiting.add(order.symbol)
        fills.extend(fresh)
    if not fills:
        return
    # The book books them in exchange time order (ledger.fill_sort_key).
    await _book(sync, await _value_fees(sync, fills))


async def _book(sync: AccountSync, fills: Sequence[Fill]) -> None:
    try:
        booked = await sync.run_book(partial(sync.book.apply_changes, (), fills))
    except ImpossibleFills as exc:
        _impossible(sync, exc.order_id, str(exc))
        # Book the other orders' trades; the impossible order's stay out.
        rest = [f for f in fills if f.order_id != exc.order_id]
        if rest and len(rest) < len(fills):
            await _book(sync, rest)
        return
    except StateError as exc:
        sync.publish([AttentionRequired(account_id=sync.account_id, at=sync.clock.now(),
                                        reason=f"trades not booked: {exc}")])
        return
    fresh = tuple(r.fill for r in booked.results if not r.duplicate)
    if fresh:
        sync.bus.publish([FillsBooked(account_id=sync.account_id, at=sync.clock.now(),
                                      fills=fresh, trades=booked.trades,
                                      unmatched=booked.unmatched)])


def _impossible(sync: AccountSync, order_id: str, reason: str) -> None:
    entry = sync.owed.setdefault(order_id, Owed())
    if not entry.alerted:
        entry.alerted = True
        sync.publish([AttentionRequired(account_id=sync.account_id, at=sync.clock.now(),
                                        order_id=order_id, reason=reason)])


def _trades_failed(sync: AccountSync, order: Order, why: str) -> None:
    entry = sync.owed.setdefault(order.id, Owed())
    if entry.failed(sync.settings.attention_after):
        sync.publish([AttentionRequired(
            account_id=sync.account_id, at=sync.clock.now(), order_id=order.id,
            attempts=entry.attempts,
            reason=(f"order {order.id} ({order.symbol}) filled {order.filled!r} but its "
                    f"trades could not be fetched {entry.attempts} times (last: {why}); its "
                    "fill is not booked yet and later orders on the symbol wait"),
        )])


async def _value_fees(sync: AccountSync, fills: list[Fill]) -> list[Fill]:
    """Value third-currency fees (BNB, KFEE) in the fill's quote at the exchange's prices,
    by the route equity uses (:func:`nija_broker.core.valuation.route`: a direct ticker, its
    inverse, or a stablecoin or USD leg)."""
    unvalued = [f for f in fills if not f.fee_valued and f.fee_currency is not None]
    if not unvalued:
        return fills
    wanted: set[str] = set()
    for fill in unvalued:
        assert fill.fee_currency is not None
        hops = route(fill.fee_currency, quote_of(fill.symbol), sync.live.markets) or ()
        wanted.update(hop.symbol for hop in hops if hop.symbol is not None)
    prices: dict[str, float] = {}
    if wanted:
        try:
            prices = prices_of(await sync.ask(
                partial(sync.exchange.fetch_tickers, sorted(wanted)), "fetch_tickers"))
        except AccountFatal:
            raise
        except ExchangeError as exc:
            log.warning("account %s: fee currencies cannot be priced now (%s); those fees are "
                        "kept unvalued", sync.account_id, exc)
    result = []
    for fill in fills:
        if not fill.fee_valued and fill.fee_currency is not None and fill.fee_cost:
            price = rate(fill.fee_currency, quote_of(fill.symbol), prices)
            if price is not None:
                fill = fill.model_copy(update={"fee": fill.fee_cost * price, "fee_valued": True})
            else:
                log.warning("account %s: fee %s of trade %s has no price; kept unvalued",
                            sync.account_id, fill.fee_text, fill.trade_id)
        result.append(fill)
    return result


# --------------------------------------------------------------------------- positions


def position_mismatches(positions: Sequence[Position], balances: Mapping[str, Balance],
                        amount_steps: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """Base currency -> (ledger quantity, exchange total) where they differ beyond a step.

    Pure. The ledger's positions of one base currency (``BTC/USD`` and ``BTC/USDT``)
    add up; the tolerance is the coarsest amount step of their markets (a sell is
    rounded to it, leaving dust the ledger also keeps), else a relative 1e-6.
    """
    ledger: dict[str, float] = {}
    step: dict[str, float] = {}
    for position in positions:
        base = base_of(position.symbol)
        ledger[base] = ledger.get(base, 0.0) + position.quantity
        step[base] = max(step.get(base, 0.0), amount_steps.get(position.symbol, 0.0))
    problems: dict[str, tuple[float, float]] = {}
    for base, quantity in sorted(ledger.items()):
        balance = balances.get(base)
        total = balance.total if balance is not None else 0.0
        slack = max(step[base], 1e-6 * max(quantity, total))
        if abs(quantity - total) > slack:
            problems[base] = (quantity, total)
    return problems


def check_positions(sync: AccountSync, balances: Mapping[str, Balance]) -> None:
    """Compare ledger positions with balances; warn once on a disagreement seen twice."""
    positions = sync.book.positions()
    markets = sync.live.markets
    steps = {p.symbol: step for p in positions
             if p.symbol in markets and (step := markets[p.symbol].amount_step)}
    found = position_mismatches(positions, balances, steps)
    persistent = {b: figures for b, figures in found.items() if b in sync.position_mismatches}
    # Said once per disagreement, again only after ledger and balance agreed in between.
    sync.attention_raised -= {(None, f"position:{b}") for b in set(sync.position_mismatches)
                              - set(found)}
    sync.position_mismatches = found
    sync.live.position_mismatches = persistent
    for base, (quantity, total) in persistent.items():
        key = (None, f"position:{base}")
        if key in sync.attention_raised:
            continue
        sync.attention_raised.add(key)
        reason = (f"ledger position {quantity:.8g} {base} disagrees with the exchange's "
                  f"balance {total:.8g} {base} on two refreshes in a row; the guard judges "
                  "positions from the exchange's balance until they agree")
        log.warning("account %s: %s", sync.account_id, reason)
        sync.bus.publish([AttentionRequired(account_id=sync.account_id, at=sync.clock.now(),
                                            reason=reason)])
