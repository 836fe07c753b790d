"""A restart reads a bounded window of the store, and every figure stays the one a book
that lived through the whole history has: metrics, positions, open orders, breakers,
duplicates refused. Also from a store written by the previous schema (migration 5)."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nija_broker.core.breakers import BREAKERS, Limits, judge
from nija_broker.core.clock import FakeClock
from nija_broker.core.models import Fill, Order, OrderRole, OrderStatus, Side
from nija_broker.core.performance import compute_metrics
from nija_broker.guard.board import history_of
from nija_broker.state.book import AccountBook, BookSettings
from nija_broker.state.schema import schema_version
from nija_broker.state.store import Store, StoreBatch

ACCOUNT = "USER:alice"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = BookSettings(retention_s=6 * 3600.0, history_size=25)
LIMITS = Limits(
    armed=frozenset(BREAKERS), expectancy_window=5, max_loss_streak=3, max_daily_loss_pct=2.0
)
SYMBOLS = ("BTC/USD", "ETH/USD")


def _filled(
    order_id: str,
    symbol: str,
    side: Side,
    amount: float,
    price: float,
    at: datetime,
    role: OrderRole,
) -> tuple[Order, Fill]:
    order = Order(
        id=order_id,
        account_id=ACCOUNT,
        symbol=symbol,
        side=side,
        price=price,
        amount=amount,
        filled=amount,
        average=price,
        status=OrderStatus.FILLED,
        created_at=at,
        updated_at=at,
        role=role,
        fee=amount * price * 0.001,
    )
    fill = Fill(
        account_id=ACCOUNT,
        order_id=order_id,
        trade_id=f"t-{order_id}",
        symbol=symbol,
        side=side,
        amount=amount,
        price=price,
        fee=amount * price * 0.001,
        timestamp=at,
        role=role,
    )
    return order, fill


def _live_history(book: AccountBook, clock: FakeClock, seed: int, steps: int) -> list[Fill]:
    """Months of trading: entries, exits (some stops), equity, resting orders, cleanups,
    and now and then a fill reported after a later one (booked again in time order)."""
    rng = random.Random(seed)
    book.fills_from_trades = True
    fills: list[Fill] = []
    equity = 10_000.0
    for i in range(steps):
        clock.advance(rng.choice((60, 600, 3600, 4 * 3600, 26 * 3600)))
        now = clock.now()
        symbol = rng.choice(SYMBOLS)
        held = book.ledger.position(symbol)
        action = rng.random()
        if action < 0.4 or held is None:
            at = now - timedelta(seconds=30) if rng.random() < 0.05 and fills else now
            order, fill = _filled(
                f"b{i}",
                symbol,
                Side.BUY,
                rng.uniform(0.1, 1.0),
                rng.uniform(90, 110),
                at,
                OrderRole.ENTRY,
            )
        elif action < 0.75:
            amount = held.quantity if rng.random() < 0.6 else held.quantity * 0.5
            role = OrderRole.STOP if rng.random() < 0.3 else OrderRole.EXIT
            order, fill = _filled(
                f"s{i}",
                symbol,
                Side.SELL,
                amount,
                held.avg_price * rng.uniform(0.95, 1.05),
                now,
                role,
            )
        elif action < 0.9:
            equity = max(equity * rng.uniform(0.9, 1.08), 1.0)
            book.update_equity(equity)
            continue
        elif action < 0.95:
            book.apply_orders(
                [
                    Order(
                        id=f"o{i}",
                        account_id=ACCOUNT,
                        symbol=symbol,
                        side=Side.BUY,
                        price=50.0,
                        amount=0.1,
                        created_at=now,
                    )
                ]
            )
            continue
        else:
            book.cleanup_terminal(now)
            continue
        book.apply_changes([order], [fill])
        fills.append(fill)
    return fills


def _figures(book: AccountBook) -> dict[str, object]:
    now = book.clock.now()
    book.cleanup_terminal(now)
    verdicts = judge(history_of(book), LIMITS, now).verdicts
    return {
        "metrics": book.metrics(),
        "positions": book.positions(),
        "open": book.orders.open_orders(),
        "orders": sorted(book.orders.orders(), key=lambda o: o.id),
        "trades": book.performance.trade_history(),
        "equity": book.performance.equity_points(),
        "counts": (book.performance.trade_count, book.performance.equity_count),
        "breakers": {r: (v.tripped, v.message, v.figures) for r, v in verdicts.items()},
        "owed": book.unbooked_orders(),
    }


def _replays_change_nothing(book: AccountBook, fills: list[Fill]) -> None:
    before = _figures(book)
    booked = book.apply_changes([], fills)
    assert booked.trades == ()
    assert all(r.duplicate for r in booked.results)
    assert book.degraded_reason is None
    assert _figures(book) == before


@pytest.mark.parametrize("seed", [3, 11, 2026])
def test_a_restarted_book_has_every_figure_of_the_book_that_lived_through_its_history(
    tmp_path: Path, seed: int
) -> None:
    clock = FakeClock(T0)
    with Store(tmp_path / "state.sqlite3") as store:
        lived = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        fills = _live_history(lived, clock, seed, steps=400)
        restarted = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        restarted.fills_from_trades = True
        assert _figures(restarted) == _figures(lived)
        # The lifetime figures are those of a full replay of the store.
        assert restarted.metrics() == compute_metrics(
            ACCOUNT, store.trades(ACCOUNT), store.equity_points(ACCOUNT)
        )
        # Bounded: the restart holds a window, not the history.
        assert len(restarted.performance.trade_history()) <= SETTINGS.history_size
        assert len(restarted.ledger.fill_keys()) < len(fills) / 2
        # Every fill ever booked, reported again, counts once on both books.
        _replays_change_nothing(restarted, fills[:40])
        _replays_change_nothing(lived, fills[:40])
        assert _figures(restarted) == _figures(lived)


def _downgrade_to_version_4(path: Path) -> None:
    """The file as the previous schema wrote it: the same rows, no accumulators."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE account_pauses")  # version 6
    conn.execute("DROP TABLE performance_totals")
    conn.execute("DROP INDEX fills_by_time")
    conn.execute("DROP INDEX fills_by_symbol_time")
    conn.execute("PRAGMA user_version = 4")
    conn.close()


def test_a_store_of_the_previous_schema_migrates_its_whole_history_into_the_figures(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    clock = FakeClock(T0)
    with Store(path) as store:
        lived = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        fills = _live_history(lived, clock, 7, steps=300)
        expected = _figures(lived)
    _downgrade_to_version_4(path)
    with Store(path) as store:
        conn = sqlite3.connect(path)
        assert schema_version(conn) == 6
        conn.close()
        restarted = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        restarted.fills_from_trades = True
        assert _figures(restarted) == expected
        _replays_change_nothing(restarted, fills[:20])


def test_a_fill_older_than_the_memory_window_reported_again_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with Store(tmp_path / "state.sqlite3") as store:
        book = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        book.fills_from_trades = True
        first_order, first = _filled("b0", "BTC/USD", Side.BUY, 1.0, 100.0, T0, OrderRole.ENTRY)
        book.apply_changes([first_order], [first])
        for day in range(1, 4):  # exchange time moves on: the first key leaves memory
            clock.advance(86_400)
            order, fill = _filled(
                f"b{day}", "ETH/USD", Side.BUY, 0.1, 10.0, clock.now(), OrderRole.ENTRY
            )
            book.apply_changes([order], [fill])
        assert first.key not in book.ledger.fill_keys()
        held = book.positions()
        booked = book.apply_changes([], [first])
        assert booked.trades == ()
        assert booked.results[0].duplicate
        assert book.positions() == held
        assert book.degraded_reason is None
        assert store.fills(ACCOUNT).count(first) == 1


def test_a_long_running_book_forgets_finished_orders_figures_and_still_books_a_replay_once(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)
    with Store(tmp_path / "state.sqlite3") as store:
        book = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)  # cumulative rule
        order, _ = _filled("b0", "BTC/USD", Side.BUY, 1.0, 100.0, T0, OrderRole.ENTRY)
        book.apply_changes([order.replace(status=OrderStatus.OPEN, filled=0.0)])
        book.apply_changes([order])  # filled: booked from the filled amount
        held = book.positions()
        clock.advance(SETTINGS.retention_s + 60)
        assert book.cleanup_terminal() == ["b0"]
        assert "b0" not in dict(book._order_fills)  # memory holds no figures of it
        booked = book.apply_changes([order])  # the exchange reports it again
        assert [r for r in booked.results if not r.duplicate] == []
        assert book.positions() == held
        assert book.booked_amount("b0") == 1.0  # read back from the store


def test_orders_adopted_in_one_batch_are_looked_up_in_the_store_in_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(T0)
    with Store(tmp_path / "state.sqlite3") as store:
        reads: list[list[str]] = []
        read = store.order_fills_of

        def counting(account_id: str, order_ids: list[str]) -> object:
            reads.append(list(order_ids))
            return read(account_id, order_ids)

        monkeypatch.setattr(store, "order_fills_of", counting)
        book = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        earlier, _ = _filled("b0", "BTC/USD", Side.BUY, 1.0, 100.0, T0, OrderRole.ENTRY)
        book.apply_changes([earlier])  # booked from its filled amount: in the store
        clock.advance(SETTINGS.retention_s + 60)
        assert book.cleanup_terminal() == ["b0"]
        reads.clear()
        resting = [
            _filled(f"r{n}", "ETH/USD", Side.BUY, 0.1, 10.0, clock.now(), OrderRole.ENTRY)[0]
            for n in range(20)
        ]
        adopted = [o.replace(status=OrderStatus.OPEN, filled=0.0) for o in resting]
        book.apply_changes([*adopted, earlier])  # 20 new orders and one reported again
        assert reads == [[*(o.id for o in adopted), "b0"]]
        assert book.booked_amount("b0") == 1.0  # its figures read back in that one read
        book.apply_changes(adopted)
        assert len(reads) == 1  # known now, with or without a fill: never read again


def test_fill_keys_are_unique_in_the_store_and_a_duplicate_insert_is_a_duplicate(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "state.sqlite3") as store:
        _, fill = _filled("b0", "BTC/USD", Side.BUY, 1.0, 100.0, T0, OrderRole.ENTRY)
        assert store.apply(StoreBatch(account_id=ACCOUNT, fills=[fill])).new_fill_keys == (
            fill.key,
        )
        again = store.apply(StoreBatch(account_id=ACCOUNT, fills=[fill]))
        assert again.new_fill_keys == ()
        assert store.has_fill_key(ACCOUNT, fill.key)
    conn = sqlite3.connect(tmp_path / "state.sqlite3")
    unique = [
        name for _, name, is_unique, *_ in conn.execute("PRAGMA index_list(fills)") if is_unique
    ]
    columns = {
        tuple(
            r[0]
            for r in conn.execute("SELECT name FROM pragma_index_info(?) ORDER BY seqno", (name,))
        )
        for name in unique
    }
    assert ("account_id", "fill_key") in columns
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO fills (account_id, fill_key, order_id, symbol, ts, json,"
            " amount) SELECT account_id, fill_key, order_id, symbol, ts, json, amount"
            " FROM fills"
        )
    conn.close()


def test_the_store_keeps_the_lifetime_figures_of_trades_written_directly(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with Store(tmp_path / "state.sqlite3") as store:
        lived = AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock)
        _live_history(lived, clock, 5, steps=120)
        trades = store.trades(ACCOUNT)
        assert store.save_trades(trades[:3]) == []  # replays change no figure
        assert store.totals(ACCOUNT).stats.total_trades == len(trades)
        assert AccountBook(ACCOUNT, store, settings=SETTINGS, clock=clock).metrics() == (
            compute_metrics(ACCOUNT, trades, store.equity_points(ACCOUNT))
        )
