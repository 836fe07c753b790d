"""Fills from the exchange's trades, and orders followed by id to their end.

Two steps of an account's cycle (:class:`~nija_broker.sync.cycle.AccountSync`),
run after the open-orders listing has been applied, both owned by
:class:`Lookups` (what each order's look-ups still owe):

- :meth:`Lookups.follow_known`: every order the guard confirmed (by order id,
  or by client order id when no id came back) is asked about by id until the
  book has it, even if no listing ever showed it: an entry that filled at once
  and its exit that filled before the next poll are found this way.
- :meth:`Lookups.book_trades`: where the exchange reports trades, each order
  whose filled amount exceeds what was booked for it has its trades fetched
  and booked once by trade id, with the fee the exchange charged (a
  third-currency fee valued at the exchange's price). Trades are booked in
  exchange time order, and a symbol whose earlier order's trades could not be
  fetched waits (a sell must not be booked before the buy it closes). Where
  the exchange has no trades the book's cumulative rule books fills with the
  orders.

Calls: one ``fetch_order_trades`` per order whose fill grew (Binance:
``myTrades`` with ``orderId``; Kraken: QueryOrders + QueryTrades), one
``fetch_order`` per followed order; nothing when nothing changed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
from nija_broker.core.models import Fill, Order
from nija_broker.core.reconcile import adopt, resolve
from nija_broker.core.symbols import quote_of
from nija_broker.core.valuation import prices_of, rate, route
from nija_broker.state.book import AccountBook, Followed, ImpossibleFills, UnknownOrders
from nija_broker.sync.owed import Owed

if TYPE_CHECKING:
    from nija_broker.sync.cycle import AccountSync

__all__ = ["Lookups", "followed_orders", "trades_owed"]

log = logging.getLogger("nija_broker.reconciler")

# Once an attention event said a followed order cannot be found, it is still asked
# for, but only every this many cycles: a wrong id must not cost a call each poll.
_ALERTED_EVERY = 10


@dataclass(slots=True)
class Lookups:
    """Followed orders and owed trades, and what their look-ups still owe.
    Runs on the event loop only."""

    owed: dict[str, Owed] = field(default_factory=dict)
    """Orders (or followed ids) whose trades or look-ups failed: attempts, alerted."""

    # ----------------------------------------------------------------------- following

    async def follow_known(self, sync: AccountSync, *, budget: int | None) -> None:
        """Ask the exchange about every confirmed order the book has not seen; adopt what
        it says.

        A "no such order" answer is noted on the book
        (:class:`~nija_broker.state.book.UnknownOrders`, first answer's time kept) and
        cleared by any later answer about the order.
        """
        view = sync.view
        followed = view.followed if view is not None else await sync.in_book(followed_orders)
        if budget is not None:
            followed = followed[:budget]
        for item in followed:
            entry = self.owed.get(UnknownOrders.key(item.order_id, item.client_order_id))
            if entry is not None and entry.alerted:
                entry.skipped += 1
                if entry.skipped % _ALERTED_EVERY:
                    continue
            try:
                if item.order_id is not None:
                    answer = await sync.ask(
                        partial(sync.exchange.fetch_order, item.order_id, item.symbol),
                        "fetch_order",
                    )
                elif item.client_order_id is not None:
                    answer = await sync.ask(
                        partial(
                            sync.exchange.fetch_order_by_client_id,
                            item.client_order_id,
                            item.symbol,
                        ),
                        "fetch_order_by_client_id",
                    )
                else:
                    await sync.in_book(AccountBook.unfollow, item)
                    continue
            except AccountFatal:
                raise
            except ExchangeError as exc:
                await self._count_failure(sync, item, exc)
                continue
            await sync.in_book(_answered, item)
            if answer.client_order_id is None and item.client_order_id is not None:
                answer = answer.model_copy(update={"client_order_id": item.client_order_id})
            event = resolve(
                None, adopt(answer, item.role), sync.clock.now(), sync.price_step(answer.symbol)
            )
            if event is not None:
                await sync.commit([event])
            await sync.in_book(_unfollow_if_booked, item, answer.id)

    async def _count_failure(self, sync: AccountSync, item: Followed, exc: ExchangeError) -> None:
        key = UnknownOrders.key(item.order_id, item.client_order_id)
        if isinstance(exc, OrderNotFound):
            # The exchange's own answer about this order: the guard releases the entry it
            # confirmed once the order has been unknown past its not_found_grace_s.
            await sync.in_book(_not_found, item, sync.clock.now())
        entry = self.owed.setdefault(key, Owed())
        if entry.failed(sync.settings.attention_after):
            what = "not found" if isinstance(exc, OrderNotFound) else f"{type(exc).__name__}: {exc}"
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        order_id=item.order_id,
                        attempts=entry.attempts,
                        reason=(
                            f"order {key} ({item.symbol}) was confirmed to the guard but "
                            f"{entry.attempts} look-ups failed ({what}); it is still followed"
                        ),
                    )
                ]
            )

    # ----------------------------------------------------------------------- trades

    async def book_trades(self, sync: AccountSync, *, budget: int | None) -> None:
        """Fetch and book the trades of every order whose fills are owed (see module doc)."""
        view = sync.view
        owed = view.owed if view is not None else await sync.in_book(trades_owed)
        if not owed:
            return
        waiting: set[str] = set()
        fills: list[Fill] = []
        asked = 0
        for order in owed:
            if order.symbol in waiting:
                continue
            if budget is not None and asked >= budget:
                break
            asked += 1
            try:
                trades = await sync.ask(
                    partial(sync.exchange.fetch_order_trades, order), "fetch_order_trades"
                )
            except AccountFatal:
                raise
            except Unsupported:
                log.warning(
                    "account %s: %s reports no trades; fills follow the cumulative rule",
                    sync.account_id,
                    sync.exchange.exchange_id,
                )
                await sync.in_book(_cumulative_from_now, order)
                return
            except ExchangeError as exc:
                waiting.add(order.symbol)
                self._trades_failed(sync, order, f"{type(exc).__name__}: {exc}")
                continue
            self.owed.pop(order.id, None)
            fresh = await sync.in_book(
                _unbooked,
                [
                    t.model_copy(update={"role": order.role})
                    for t in trades
                    if t.order_id == order.id
                ],
            )
            if sum(t.amount for t in trades) < order.filled - order.amount * AMOUNT_REL:
                # Trades can trail the order's own figure by a moment: book what is there,
                # the rest is still owed and asked for next cycle; later orders wait.
                waiting.add(order.symbol)
            fills.extend(fresh)
        if not fills:
            return
        # The book books them in exchange time order (ledger.fill_sort_key).
        await self._book(sync, await _value_fees(sync, fills))

    async def _book(self, sync: AccountSync, fills: Sequence[Fill]) -> None:
        try:
            booked = await sync.in_book(AccountBook.apply_changes, (), fills)
        except ImpossibleFills as exc:
            self._impossible(sync, exc.order_id, str(exc))
            # Book the other orders' trades; the impossible order's stay out.
            rest = [f for f in fills if f.order_id != exc.order_id]
            if rest and len(rest) < len(fills):
                await self._book(sync, rest)
            return
        except StateError as exc:
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        reason=f"trades not booked: {exc}",
                    )
                ]
            )
            return
        fresh = tuple(r.fill for r in booked.results if not r.duplicate)
        if fresh:
            sync.bus.publish(
                [
                    FillsBooked(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        fills=fresh,
                        trades=booked.trades,
                        unmatched=booked.unmatched,
                    )
                ]
            )

    def _impossible(self, sync: AccountSync, order_id: str, reason: str) -> None:
        entry = self.owed.setdefault(order_id, Owed())
        if not entry.alerted:
            entry.alerted = True
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        order_id=order_id,
                        reason=reason,
                    )
                ]
            )

    def _trades_failed(self, sync: AccountSync, order: Order, why: str) -> None:
        entry = self.owed.setdefault(order.id, Owed())
        if entry.failed(sync.settings.attention_after):
            sync.publish(
                [
                    AttentionRequired(
                        account_id=sync.account_id,
                        at=sync.clock.now(),
                        order_id=order.id,
                        attempts=entry.attempts,
                        reason=(
                            f"order {order.id} ({order.symbol}) filled {order.filled!r} but its "
                            f"trades could not be fetched {entry.attempts} times (last: {why}); "
                            "its fill is not booked yet and later orders on the symbol wait"
                        ),
                    )
                ]
            )


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
            prices = prices_of(
                await sync.ask(
                    partial(sync.exchange.fetch_tickers, sorted(wanted)), "fetch_tickers"
                )
            )
        except AccountFatal:
            raise
        except ExchangeError as exc:
            log.warning(
                "account %s: fee currencies cannot be priced now (%s); those fees are "
                "kept unvalued",
                sync.account_id,
                exc,
            )
    result = []
    for fill in fills:
        if not fill.fee_valued and fill.fee_currency is not None and fill.fee_cost:
            price = rate(fill.fee_currency, quote_of(fill.symbol), prices)
            if price is not None:
                fill = fill.model_copy(update={"fee": fill.fee_cost * price, "fee_valued": True})
            else:
                log.warning(
                    "account %s: fee %s of trade %s has no price; kept unvalued",
                    sync.account_id,
                    fill.fee_text,
                    fill.trade_id,
                )
        result.append(fill)
    return result


# ------------------------------------------- run on the book's owner thread (in_book)


def followed_orders(book: AccountBook) -> list[Followed]:
    """The orders to follow; the unknown-order notes of those no longer followed go."""
    followed = book.followed()
    book.unknown_orders.retain(followed)
    return followed


def _answered(book: AccountBook, item: Followed) -> None:
    book.unknown_orders.clear(item.order_id, item.client_order_id)


def _not_found(book: AccountBook, item: Followed, at: datetime) -> None:
    book.unknown_orders.note(item.order_id, item.client_order_id, at)


def _unfollow_if_booked(book: AccountBook, item: Followed, order_id: str) -> None:
    if book.orders.get(order_id) is not None:
        book.unfollow(item)


def trades_owed(book: AccountBook) -> list[Order]:
    """Orders whose trades are owed, oldest first; none where fills follow the
    cumulative rule."""
    if not book.fills_from_trades:
        return []
    return [order for order, _missing in book.unbooked_orders()]


def _cumulative_from_now(book: AccountBook, order: Order) -> None:
    """The exchange reports no trades: book ``order``'s fill by the cumulative rule, and
    every later one."""
    book.fills_from_trades = False
    book.apply_changes([order])


def _unbooked(book: AccountBook, trades: list[Fill]) -> list[Fill]:
    return [t for t in trades if not book.ledger.is_booked(t)]
