"""One place computes a fill: the book, under its lock, from what it holds at that moment.

Two paths can report the same execution (the guard's confirm with the
exchange's answer, the reconciler's listing); whichever comes first and
whatever they saw, the ledger ends at exactly the exchange's amount.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nija_broker.core.errors import IllegalTransition
from nija_broker.core.models import Fill, Order, OrderStatus, OrderType, Side
from nija_broker.state.book import AccountBook, ImpossibleFills
from nija_broker.state.books import Books
from nija_broker.state.schema import MIGRATIONS, migrate
from nija_broker.state.store import Store

ACCOUNT = "USER:alice"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _order(
    filled: float,
    *,
    status: OrderStatus = OrderStatus.PARTIALLY_FILLED,
    amount: float = 1.0,
    order_id: str = "O1",
    side: Side = Side.BUY,
) -> Order:
    return Order(
        id=order_id,
        account_id=ACCOUNT,
        symbol="BTC/USDT",
        side=side,
        type=OrderType.LIMIT,
        price=100.0,
        amount=amount,
        filled=filled,
        average=100.0 if filled else None,
        status=status,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=filled * 10),
    )


def _trade(
    trade_id: str,
    amount: float,
    *,
    order_id: str = "O1",
    seconds: int = 1,
    side: Side = Side.BUY,
    price: float = 100.0,
) -> Fill:
    return Fill(
        account_id=ACCOUNT,
        order_id=order_id,
        trade_id=trade_id,
        symbol="BTC/USDT",
        side=side,
        amount=amount,
        price=price,
        fee=amount * price * 0.001,
        fee_currency="USDT",
        fee_cost=amount * price * 0.001,
        timestamp=T0 + timedelta(seconds=seconds),
    )


def _held(book: AccountBook) -> float:
    return sum(p.quantity for p in book.positions())


@pytest.mark.parametrize(
    ("first", "second"),
    [(0.4, 0.6), (0.6, 0.4)],
    ids=["confirm-then-listing", "listing-then-confirm"],
)
def test_guard_confirm_and_reconciler_listing_book_the_exchange_amount_once(
    first: float, second: float
) -> None:
    book = AccountBook(ACCOUNT)
    book.apply_order(_order(0.0, status=OrderStatus.OPEN))
    book.apply_changes([_order(first)])
    if second < first:
        with pytest.raises(IllegalTransition):  # a shrinking report: the larger one stays
            book.apply_changes([_order(second)])
    else:
        book.apply_changes([_order(second)])
    assert _held(book) == pytest.approx(0.6)
    assert book.booked_amount("O1") == pytest.approx(0.6)


def test_interleaved_threads_reporting_growing_fills_book_exactly_the_final_amount() -> None:
    book = AccountBook(ACCOUNT)
    book.apply_order(_order(0.0, status=OrderStatus.OPEN))
    reports = [round(0.05 * i, 2) for i in range(1, 21)]

    def report(values: list[float]) -> None:
        for value in values:
            status = OrderStatus.FILLED if value == 1.0 else OrderStatus.PARTIALLY_FILLED
            # A stale (smaller) report loses the race: it is refused, nothing booked.
            with contextlib.suppress(IllegalTransition):
                book.apply_changes([_order(value, status=status)])

    threads = [threading.Thread(target=report, args=(reports[k::2],)) for k in range(2)]
    threads += [threading.Thread(target=report, args=(reports,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _held(book) == pytest.approx(1.0)
    assert book.booked_amount("O1") == pytest.approx(1.0)


def test_with_trades_an_order_report_books_nothing_and_each_trade_books_once() -> None:
    book = AccountBook(ACCOUNT)
    book.fills_from_trades = True
    book.apply_changes([_order(0.6)])
    assert book.positions() == []
    assert book.unbooked_orders()[0][1] == pytest.approx(0.6)
    trades = [_trade("t1", 0.4), _trade("t2", 0.2, seconds=2)]
    book.apply_changes([], trades)
    book.apply_changes([_order(0.6)], trades)  # the same trades reported again
    assert _held(book) == pytest.approx(0.6)
    assert book.unbooked_orders() == []


def test_trades_adding_up_to_more_than_the_order_are_refused_whole() -> None:
    book = AccountBook(ACCOUNT)
    book.fills_from_trades = True
    book.apply_changes([_order(0.5, amount=0.5)])
    with pytest.raises(ImpossibleFills, match="more than its amount"):
        book.apply_changes([], [_trade("t1", 0.4), _trade("t2", 0.4, seconds=2)])
    assert book.positions() == []


def test_base_currency_fee_leaves_the_position_at_what_was_received() -> None:
    book = AccountBook(ACCOUNT)
    book.fills_from_trades = True
    book.apply_changes([_order(1.0, status=OrderStatus.FILLED)])
    fee_base = Fill(
        account_id=ACCOUNT,
        order_id="O1",
        trade_id="t1",
        symbol="BTC/USDT",
        side=Side.BUY,
        amount=1.0,
        price=100.0,
        fee=0.1,
        fee_currency="BTC",
        fee_cost=0.001,
        timestamp=T0,
    )
    book.apply_changes([], [fee_base])
    (position,) = book.positions()
    assert position.quantity == pytest.approx(0.999)
    sell = _order(0.999, status=OrderStatus.FILLED, amount=0.999, order_id="S1", side=Side.SELL)
    book.apply_changes([sell], [_trade("t2", 0.999, order_id="S1", side=Side.SELL, price=110.0)])
    (trade,) = book.performance.trade_history()
    # Cash: paid 100.0 for 1 BTC (0.001 of it the fee), got 0.999 x 110 less 0.1% fee.
    cash = -100.0 + 0.999 * 110.0 * (1 - 0.001)
    assert trade.net == pytest.approx(cash, abs=1e-9)
    assert book.positions() == []


def test_store_from_before_trade_ids_does_not_book_the_same_executions_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with Store(path) as store:
        book = Books(store).get(ACCOUNT)
        book.apply_order(_order(0.0, status=OrderStatus.OPEN))
        book.apply_changes([_order(0.4)])  # the cumulative rule, as older versions booked
    with Store(path) as store:
        book = Books(store).get(ACCOUNT)
        book.fills_from_trades = True
        assert book.booked_amount("O1") == pytest.approx(0.4)
        book.apply_changes([_order(1.0, status=OrderStatus.FILLED)])
        trades = [_trade("t1", 0.25), _trade("t2", 0.15, seconds=2), _trade("t3", 0.6, seconds=3)]
        book.apply_changes([], trades)
        assert _held(book) == pytest.approx(1.0)
        book.apply_changes([], trades)
    with Store(path) as store:
        book = Books(store).get(ACCOUNT)
        book.fills_from_trades = True
        book.apply_changes([], trades)  # after a restart too
        assert _held(book) == pytest.approx(1.0)
        assert book.unbooked_orders() == []
        assert sum(f.amount for f in store.fills(ACCOUNT)) == pytest.approx(1.0)


def test_a_version_2_store_migrates_and_its_cumulative_fills_cover_the_first_trades(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, migrations=MIGRATIONS[:2])
    old = Fill(
        account_id=ACCOUNT,
        order_id="O1",
        symbol="BTC/USDT",
        side=Side.BUY,
        amount=0.4,
        price=100.0,
        timestamp=T0,
        cumulative_filled=0.4,
    )
    conn.execute(
        "INSERT INTO fills (account_id, fill_key, order_id, symbol, ts, json)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (ACCOUNT, old.key, "O1", "BTC/USDT", T0.isoformat(), old.model_dump_json()),
    )
    conn.close()
    with Store(path) as store:
        assert store.load_account(ACCOUNT).order_fills == {"O1": (0.4, 0.4, 0.0)}
        book = Books(store).get(ACCOUNT)
        book.fills_from_trades = True
        book.apply_changes([_order(0.7)], [_trade("t1", 0.4), _trade("t2", 0.3, seconds=2)])
        assert book.booked_amount("O1") == pytest.approx(0.7)
        assert [f.trade_id for f in store.fills(ACCOUNT)] == [None, "t2"]


def test_a_buy_reported_after_the_sell_it_closes_leaves_no_phantom_position(tmp_path: Path) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        book = Books(store).get(ACCOUNT)
        book.fills_from_trades = True
        book.apply_changes(
            [_order(1.0, status=OrderStatus.FILLED, order_id="S1", side=Side.SELL)],
            [_trade("t2", 1.0, order_id="S1", side=Side.SELL, seconds=20, price=110.0)],
        )
        assert book.positions() == []
        assert store.trades(ACCOUNT) == []
        booked = book.apply_changes(
            [_order(1.0, status=OrderStatus.FILLED)], [_trade("t1", 1.0, seconds=10)]
        )
        assert book.positions() == []  # not the phantom 1.0 a buy booked last would leave
        (trade,) = store.trades(ACCOUNT)
        assert (trade.entry_price, trade.exit_price, trade.quantity) == (100.0, 110.0, 1.0)
        assert [t.trade_id for t in booked.trades] == [trade.trade_id]
        assert book.metrics().total_trades == 1
    with Store(tmp_path / "state.sqlite3") as store:  # and so after a restart
        book = Books(store).get(ACCOUNT)
        assert book.positions() == []
        assert book.metrics().total_trades == 1


def test_a_buy_and_its_sell_in_the_same_millisecond_book_the_buy_first() -> None:
    book = AccountBook(ACCOUNT)
    book.fills_from_trades = True
    at = T0 + timedelta(seconds=5)
    sell = Fill(
        account_id=ACCOUNT,
        order_id="S1",
        trade_id="TEFGSY-9980G-8T4000",
        symbol="BTC/USDT",
        side=Side.SELL,
        amount=0.5,
        price=101.0,
        timestamp=at,
    )
    buy = Fill(
        account_id=ACCOUNT,
        order_id="O1",
        trade_id="TP78EZ-M4408-ME2000",
        symbol="BTC/USDT",
        side=Side.BUY,
        amount=0.5,
        price=100.0,
        timestamp=at,
    )
    book.apply_changes([], [sell, buy])  # Kraken's ids: the sell's sorts first as text
    assert book.positions() == []
    assert book.metrics().total_trades == 1
