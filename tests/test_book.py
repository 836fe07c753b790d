"""An account's books stay in step with the store: restarts rebuild everything exactly."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nija_broker.core.errors import IllegalTransition, StateError
from nija_broker.core.models import Fill, Order, OrderStatus, TradeRecord
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.store import AccountSnapshot, BatchResult, Store, StoreBatch

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)


def _order(account: str, oid: str, side: str = "buy", **changes: Any) -> Order:
    fields: dict[str, Any] = dict(
        id=oid,
        account_id=account,
        symbol="BTC/USD",
        side=side,
        price=100.0,
        amount=1.0,
        created_at=T0,
    )
    fields.update(changes)
    return Order(**fields)


def _fill(
    account: str,
    oid: str,
    side: str,
    amount: float,
    price: float,
    tid: str,
    minutes: int = 0,
    fee: float = 0.1,
) -> Fill:
    return Fill(
        account_id=account,
        order_id=oid,
        trade_id=tid,
        symbol="BTC/USD",
        side=side,
        amount=amount,
        price=price,
        fee=fee,
        timestamp=T0 + timedelta(minutes=minutes),
    )


def _trade_day(book: AccountBook) -> None:
    book.apply_order(_order(book.account_id, "B1"))
    book.apply_order(_order(book.account_id, "B1", status=OrderStatus.FILLED, filled=1.0))
    book.book_fills([_fill(book.account_id, "B1", "buy", 1.0, 100.0, "t1")])
    book.update_equity(1_000.0, T0)
    book.update_equity(900.0, T0 + timedelta(days=1))
    book.book_fills([_fill(book.account_id, "S1", "sell", 0.5, 110.0, "t2", minutes=60)])
    book.update_equity(950.0, T0 + timedelta(days=2))
    book.book_fills([_fill(book.account_id, "S2", "sell", 0.5, 90.0, "t3", minutes=120)])
    book.apply_order(_order(book.account_id, "B2", price=95.0, amount=2.0))


def test_restart_rebuilds_orders_positions_and_every_metric_exactly(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Store(path) as store:
        book = Books(store).get("USER:alice")
        _trade_day(book)
        before = (
            book.metrics(),
            book.positions(),
            book.orders.held_capital(),
            book.orders.open_orders(),
        )
    with Store(path) as store:
        again = Books(store).get("USER:alice")
        after = (
            again.metrics(),
            again.positions(),
            again.orders.held_capital(),
            again.orders.open_orders(),
        )
    assert after == before
    metrics = after[0]
    assert metrics.total_trades == 2
    assert metrics.max_drawdown == pytest.approx(100.0)
    assert metrics.current_loss_streak == 1


def test_drawdown_survives_new_trades_and_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Store(path) as store:
        book = Books(store).get("PLATFORM")
        book.update_equity(10_000.0, T0)
        book.update_equity(8_000.0, T0 + timedelta(hours=1))
        book.update_equity(9_000.0, T0 + timedelta(hours=2))
        book.record_trade(
            TradeRecord(
                trade_id="T-1",
                account_id="PLATFORM",
                symbol="ETH/USD",
                side="buy",
                entry_price=2_000,
                exit_price=2_100,
                quantity=1,
                pnl=100,
                fees=2,
                entry_time=T0,
                exit_time=T0 + timedelta(hours=3),
            )
        )
        assert book.metrics().max_drawdown == pytest.approx(2_000.0)
    with Store(path) as store:
        metrics = Books(store).get("PLATFORM").metrics()
    assert metrics.max_drawdown == pytest.approx(2_000.0)
    assert metrics.max_drawdown_pct == pytest.approx(20.0)
    assert metrics.current_drawdown == pytest.approx(1_000.0)
    assert metrics.total_trades == 1


def test_fills_replayed_after_a_restart_are_booked_once(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    fills = [
        _fill("A", "B1", "buy", 1.0, 100.0, "t1"),
        _fill("A", "S1", "sell", 1.0, 120.0, "t2", minutes=5),
    ]
    with Store(path) as store:
        first = Books(store).get("A").book_fills(fills)
    with Store(path) as store:
        book = Books(store).get("A")
        replay = book.book_fills(fills)
        assert [r.duplicate for r in replay.results] == [True, True]
        assert replay.trades == ()
        assert book.metrics().total_trades == 1
        assert len(store.trades("A")) == 1
    assert len(first.trades) == 1


def test_illegal_order_update_raises_and_writes_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        book.apply_order(_order("A", "O1", status=OrderStatus.FILLED, filled=1.0))
        with pytest.raises(IllegalTransition):
            book.apply_order(_order("A", "O1", status=OrderStatus.OPEN))
        assert [o.status for o in store.orders("A")] == [OrderStatus.FILLED]
        assert book.orders.get("O1") is not None
        assert book.orders.get("O1").status is OrderStatus.FILLED  # type: ignore[union-attr]


def test_an_order_of_another_account_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        with pytest.raises(StateError):
            book.apply_order(_order("B", "O1"))
        assert store.orders("A") == []
        assert store.orders("B") == []


class _FailingStore(Store):
    fail_next = False

    def apply(self, batch: StoreBatch) -> BatchResult:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        return super().apply(batch)


def test_failed_write_leaves_memory_equal_to_the_store(tmp_path: Path) -> None:
    with _FailingStore(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        book.book_fills([_fill("A", "B1", "buy", 1.0, 100.0, "t1")])
        store.fail_next = True
        with pytest.raises(OSError, match="disk full"):
            book.book_fills([_fill("A", "S1", "sell", 1.0, 130.0, "t2")])
        assert book.metrics().total_trades == 0
        position = book.ledger.position("BTC/USD")
        assert position is not None
        assert position.quantity == 1.0
        # The same fill, retried once the disk is back, is booked now (not lost as a "duplicate").
        retried = book.book_fills([_fill("A", "S1", "sell", 1.0, 130.0, "t2")])
        assert len(retried.trades) == 1


def test_eight_threads_writing_orders_for_eight_accounts_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    per_thread = 200
    with Store(path) as store:
        books = Books(store)

        def work(account: str) -> None:
            book = books.get(account)
            for i in range(per_thread):
                book.apply_order(_order(account, f"{account}-{i}", price=100.0 + i))

        threads = [threading.Thread(target=work, args=(f"USER:{n}",)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = {a: books.get(a).orders.count() for a in books.accounts()}
    assert counts == {f"USER:{n}": per_thread for n in range(8)}
    with Store(path) as store:
        assert {a: len(store.orders(a)) for a in store.accounts()} == counts


def test_oversell_is_reported_not_invented(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        book.book_fills([_fill("A", "B1", "buy", 1.0, 100.0, "t1")])
        result = book.book_fills([_fill("A", "S1", "sell", 1.5, 120.0, "t2")])
    assert len(result.trades) == 1
    assert result.trades[0].quantity == pytest.approx(1.0)
    assert result.unmatched[0][1] == pytest.approx(0.5)


def test_a_batch_updating_one_order_twice_is_checked_step_by_step(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        opened = _order("A", "O1")
        filled = _order("A", "O1", status=OrderStatus.FILLED, filled=1.0)
        with pytest.raises(IllegalTransition):
            book.apply_orders([opened, filled, opened])
        assert store.orders("A") == []
        assert book.orders.get("O1") is None
        book.apply_orders([opened, filled])
        assert [o.status for o in store.orders("A")] == [OrderStatus.FILLED]


class _UnreadableStore(_FailingStore):
    unreadable = False

    def load_account(self, account_id: str, **bounds: Any) -> AccountSnapshot:
        if self.unreadable:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return super().load_account(account_id, **bounds)


def test_a_failed_reload_keeps_the_last_good_state_and_marks_the_book_degraded(
    tmp_path: Path,
) -> None:
    with _UnreadableStore(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        _trade_day(book)
        before = (book.metrics(), book.positions(), book.orders.open_orders())
        assert book.degraded_reason is None
        store.unreadable = True
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            book.reload()
        # Not an empty tracker: the guard still sees every open entry and position.
        assert (book.metrics(), book.positions(), book.orders.open_orders()) == before
        assert book.degraded_reason is not None
        assert "malformed" in book.degraded_reason
        store.unreadable = False
        book.reload()
        assert book.degraded_reason is None
        assert (book.metrics(), book.positions(), book.orders.open_orders()) == before


def test_a_failed_write_whose_reload_fails_too_degrades_the_book_and_raises_the_write_error(
    tmp_path: Path,
) -> None:
    with _UnreadableStore(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        book.apply_order(_order("A", "O1"))
        store.fail_next = True
        store.unreadable = True
        with pytest.raises(OSError, match="disk full"):
            book.apply_order(_order("A", "O2"))
        assert [o.id for o in book.orders.open_orders()] == ["O1"]
        assert book.degraded_reason is not None


def test_a_degraded_book_refuses_changes_until_the_store_reads_again(tmp_path: Path) -> None:
    with _UnreadableStore(tmp_path / "s.sqlite3") as store:
        book = Books(store).get("A")
        first = _order("A", "O1")
        book.apply_order(first)
        store.unreadable = True
        with pytest.raises(sqlite3.DatabaseError):
            book.reload()
        second = _order("A", "O2")
        with pytest.raises(StateError, match="degraded"):
            book.apply_order(second)  # each change tries a reload first: still unreadable
        assert store.orders("A") == [first]

        store.unreadable = False
        with pytest.raises(StateError, match="report it again"):
            book.apply_order(second)  # computed while degraded: refused, but the book is back
        assert book.degraded_reason is None
        book.apply_order(second)
        assert [o.id for o in store.orders("A")] == ["O1", "O2"]
        assert [o.id for o in book.orders.open_orders()] == ["O1", "O2"]
