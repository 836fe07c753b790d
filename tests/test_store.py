"""The SQLite store: what a restart, a replay or a crash mid-batch leaves behind."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nija_broker.core.errors import ConfigError, StateError
from nija_broker.core.models import (
    EquityPoint,
    Fill,
    Order,
    OrderRole,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TradeRecord,
)
from nija_broker.state.owner import Owner
from nija_broker.state.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    check_file,
    migrate,
)
from nija_broker.state.store import (
    BatchResult,
    DecisionRecord,
    IntentUpdate,
    Store,
    StoreBatch,
)
from nija_broker.state.store_async import AsyncStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def order(oid: str, account: str = "USER:alice", **changes: object) -> Order:
    fields: dict[str, object] = {
        "id": oid,
        "account_id": account,
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "price": 50_000.0,
        "amount": 0.01,
        "created_at": T0,
    }
    fields.update(changes)
    return Order.model_validate(fields)


def fill(oid: str, trade_id: str | None, account: str = "USER:alice", **changes: object) -> Fill:
    fields: dict[str, object] = {
        "account_id": account,
        "order_id": oid,
        "trade_id": trade_id,
        "symbol": "BTC/USD",
        "side": Side.BUY,
        "amount": 0.01,
        "price": 50_000.0,
        "fee": 0.5,
        "timestamp": at(5),
    }
    fields.update(changes)
    return Fill.model_validate(fields)


def trade(tid: str, account: str = "USER:alice", pnl: float = 10.0) -> TradeRecord:
    return TradeRecord(
        trade_id=tid,
        account_id=account,
        symbol="BTC/USD",
        side=Side.BUY,
        entry_price=50_000.0,
        exit_price=51_000.0,
        quantity=0.01,
        pnl=pnl,
        fees=1.0,
        entry_time=at(0),
        exit_time=at(3600),
        risk_usd=5.0,
    )


def position(symbol: str, account: str = "USER:alice", qty: float = 0.01) -> Position:
    return Position(
        account_id=account,
        symbol=symbol,
        quantity=qty,
        avg_price=50_000.0,
        entry_fees=0.5,
        opened_at=at(0),
        updated_at=at(10),
    )


def equity(value: float, ts: datetime, account: str = "USER:alice") -> EquityPoint:
    return EquityPoint(account_id=account, timestamp=ts, equity=value)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "nija.db")


# ----------------------------------------------------------------------- round trips


def test_order_round_trip_keeps_every_field_and_upsert_replaces(store: Store) -> None:
    stop = order(
        "o2",
        type=OrderType.STOP,
        price=None,
        stop_price=48_000.0,
        side=Side.SELL,
        role=OrderRole.STOP,
        client_order_id="nija-2",
        reduce_only=True,
        parent_position_id="pos-1",
        created_at=at(1),
    )
    entry = order("o1", client_order_id="nija-1")
    store.save_orders([entry, stop])
    assert store.orders("USER:alice") == [entry, stop]

    filled = entry.replace(
        status=OrderStatus.FILLED, filled=0.01, average=49_990.0, fee=0.2, updated_at=at(60)
    )
    store.save_orders([filled])
    assert store.orders("USER:alice") == [filled, stop]


def test_open_only_lists_open_and_partially_filled_orders(store: Store) -> None:
    store.save_orders(
        [
            order("open"),
            order("part", status=OrderStatus.PARTIALLY_FILLED, filled=0.005),
            order("done", status=OrderStatus.FILLED, filled=0.01),
            order("gone", status=OrderStatus.CANCELLED),
        ]
    )
    assert [o.id for o in store.orders("USER:alice", open_only=True)] == ["open", "part"]


def test_load_account_since_keeps_live_and_recently_finished_orders(store: Store) -> None:
    store.save_orders(
        [
            order("old-filled", status=OrderStatus.FILLED, filled=0.01, updated_at=at(10)),
            order("new-cancel", status=OrderStatus.CANCELLED, updated_at=at(7200)),
            order("old-open", created_at=at(-86_400)),
            order("pending", status=OrderStatus.PENDING),
        ]
    )
    snap = store.load_account("USER:alice", since=at(3600))
    assert {o.id for o in snap.orders} == {"new-cancel", "old-open", "pending"}
    assert len(store.load_account("USER:alice").orders) == 4


def test_fill_is_stored_once_and_only_new_keys_are_returned(store: Store) -> None:
    f1, f2 = fill("o1", "t1"), fill("o1", "t2")
    assert store.record_fills("USER:alice", [f1, f2, f1], [], []) == [f1.key, f2.key]
    f3 = fill("o1", None, cumulative_filled=0.03)
    assert store.record_fills("USER:alice", [f2, f3, f1], [], []) == [f3.key]
    assert store.record_fills("USER:alice", [f1, f2, f3], [], []) == []
    assert store.fill_keys("USER:alice") == {f1.key, f2.key, f3.key}
    assert store.fills("USER:alice") == [f1, f2, f3]


def test_trades_are_idempotent_by_trade_id_and_kept_in_booking_order(store: Store) -> None:
    # Booking order, not id or time order, is what replay must reproduce.
    assert store.save_trades([trade("b"), trade("a", pnl=-3.0)]) == ["b", "a"]
    assert store.save_trades([trade("a", pnl=-3.0), trade("c"), trade("c")]) == ["c"]
    assert [t.trade_id for t in store.trades("USER:alice")] == ["b", "a", "c"]
    assert [t.trade_id for t in store.trades("USER:alice", limit=2)] == ["a", "c"]
    assert store.trades("USER:alice")[1] == trade("a", pnl=-3.0)


def test_record_fills_books_trades_and_positions_and_deletes_closed_ones(store: Store) -> None:
    eth = position("ETH/USD")
    store.record_fills("USER:alice", [fill("o1", "t1")], [], [position("BTC/USD"), eth])
    assert store.positions("USER:alice") == [position("BTC/USD"), eth]

    sell = fill("o2", "t9", side=Side.SELL)
    # Closed symbols arrive in the bot's dash form too.
    new = store.record_fills(
        "USER:alice",
        [sell],
        [trade("r1")],
        [position("ETH/USD", qty=2.0)],
        closed_symbols=["BTC-USD"],
    )
    assert new == [sell.key]
    assert store.positions("USER:alice") == [position("ETH/USD", qty=2.0)]
    assert store.trades("USER:alice") == [trade("r1")]


def test_equity_points_replay_in_insertion_order_as_aware_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    points = [
        equity(100.0, at(20)),
        equity(90.0, at(10)),
        equity(95.5, at(10)),
        equity(0.1 + 0.2, at(30).astimezone(plus_two)),
    ]
    store.add_equity_points(points)
    back = store.equity_points("USER:alice")
    assert back == points
    assert [p.equity for p in back] == [100.0, 90.0, 95.5, 0.1 + 0.2]  # exact floats
    assert all(p.timestamp.tzinfo is UTC for p in back)


def test_guard_decisions_read_back_newest_first_with_figures(store: Store) -> None:
    allowed = DecisionRecord(
        account_id="USER:alice",
        ts=at(1),
        allowed=True,
        client_order_id="c1",
        symbol="BTC-USD",
        side=Side.BUY,
        figures={"open_positions": 1, "profit_factor": math.inf},
    )
    blocked = DecisionRecord(
        account_id="USER:alice",
        ts=at(2),
        allowed=False,
        client_order_id="c2",
        symbol="ETH/USD",
        side=Side.BUY,
        rule="no_dca",
        reason="already holds ETH/USD",
    )
    store.journal_decision(allowed)
    store.journal_decision(blocked)

    newest_first = store.decisions("USER:alice")
    assert [d.client_order_id for d in newest_first] == ["c2", "c1"]
    first = newest_first[1]
    assert first.symbol == "BTC/USD"
    assert first.figures == {"open_positions": 1, "profit_factor": math.inf}
    assert first.id is not None
    assert first.ts == at(1)
    assert [d.rule for d in store.decisions("USER:alice", blocked_only=True)] == ["no_dca"]
    assert len(store.decisions("USER:alice", limit=1)) == 1


# ----------------------------------------------------------------------- intents


def test_intent_moves_forward_only_and_keeps_its_order_id(store: Store) -> None:
    store.put_intent("USER:alice", "nija-1", '{"symbol": "BTC/USD"}', at(0))
    store.put_intent("USER:alice", "nija-1", '{"symbol": "BTC/USD"}', at(1))  # retried: no-op
    with pytest.raises(StateError, match="another request"):
        store.put_intent("USER:alice", "nija-1", '{"symbol": "ETH/USD"}', at(2))

    store.set_intent_status("USER:alice", "nija-1", "sent", at(3), order_id="OX1")
    with pytest.raises(StateError, match="cannot go from 'sent' to 'pending'"):
        store.set_intent_status("USER:alice", "nija-1", "pending", at(4))
    [intent] = store.pending_intents("USER:alice")
    assert (intent.status, intent.order_id, intent.created_at, intent.updated_at) == (
        "sent",
        "OX1",
        at(0),
        at(3),
    )

    store.set_intent_status("USER:alice", "nija-1", "resolved", at(5))
    assert store.pending_intents("USER:alice") == []
    with pytest.raises(StateError, match="cannot go from 'resolved' to 'released'"):
        store.set_intent_status("USER:alice", "nija-1", "released", at(6))


def test_unknown_intent_or_status_is_refused(store: Store) -> None:
    with pytest.raises(StateError, match="no intent 'ghost'"):
        store.set_intent_status("USER:alice", "ghost", "sent", at(0))
    store.put_intent("USER:alice", "nija-1", "{}", at(0))
    with pytest.raises(StateError, match="intent status must be one of"):
        store.set_intent_status("USER:alice", "nija-1", "done", at(1))
    # The same clientOrderId on another account is another intent.
    with pytest.raises(StateError, match="no intent"):
        store.set_intent_status("USER:bob", "nija-1", "sent", at(1))


def test_pending_intents_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    with Store(path) as first:
        first.put_intent("USER:alice", "nija-1", '{"n": 1}', at(0))
        first.put_intent("USER:alice", "nija-2", '{"n": 2}', at(1))
        first.put_intent("USER:alice", "nija-3", '{"n": 3}', at(2))
        first.set_intent_status("USER:alice", "nija-2", "sent", at(3))
        first.set_intent_status("USER:alice", "nija-3", "released", at(4))
    with Store(path) as second:
        pending = second.pending_intents("USER:alice")
        assert [(i.client_order_id, i.status, i.request_json) for i in pending] == [
            ("nija-1", "pending", '{"n": 1}'),
            ("nija-2", "sent", '{"n": 2}'),
        ]
        assert second.load_account("USER:alice").pending_intents == tuple(pending)


# ----------------------------------------------------------------------- atomicity, isolation


def test_batch_failing_midway_leaves_nothing_written(store: Store) -> None:
    store.put_intent("USER:alice", "nija-1", "{}", at(0))
    batch = StoreBatch(
        account_id="USER:alice",
        orders=[order("o1")],
        fills=[fill("o1", "t1")],
        trades=[trade("r1")],
        positions=[position("BTC/USD")],
        equity_points=[equity(100.0, at(1))],
        decisions=[DecisionRecord(account_id="USER:alice", ts=at(1), allowed=True)],
        intents=[
            IntentUpdate(client_order_id="nija-1", status="sent", at=at(1)),
            IntentUpdate(client_order_id="missing", status="sent", at=at(1)),
        ],
    )
    with pytest.raises(StateError, match="no intent 'missing'"):
        store.apply(batch)
    snap = store.load_account("USER:alice")
    assert (snap.orders, snap.fill_keys, snap.trades, snap.positions, snap.equity_points) == (
        (),
        frozenset(),
        (),
        (),
        (),
    )
    assert [i.status for i in snap.pending_intents] == ["pending"]
    assert store.decisions("USER:alice") == []


def test_apply_reports_what_was_new(store: Store) -> None:
    batch = StoreBatch(
        account_id="USER:alice",
        orders=[order("o1")],
        fills=[fill("o1", "t1")],
        trades=[trade("r1")],
        equity_points=[equity(100.0, at(1))],
    )
    first = store.apply(batch)
    assert (first.new_fill_keys, first.new_trade_ids, first.orders_saved) == (
        (fill("o1", "t1").key,),
        ("r1",),
        1,
    )
    replay = store.apply(
        StoreBatch(account_id="USER:alice", fills=[fill("o1", "t1")], trades=[trade("r1")])
    )
    assert (replay.new_fill_keys, replay.new_trade_ids) == ((), ())


def test_item_of_another_account_is_refused_and_nothing_written(store: Store) -> None:
    with pytest.raises(StateError, match="holds trade of account 'USER:bob'"):
        store.record_fills("USER:alice", [fill("o1", "t1")], [trade("r1", account="USER:bob")], [])
    with pytest.raises(StateError, match="holds order of account 'USER:bob'"):
        StoreBatch(account_id="USER:alice", orders=[order("o1", account="USER:bob")])
    with pytest.raises(StateError, match="both updates and closes"):
        StoreBatch(
            account_id="USER:alice", positions=[position("BTC/USD")], closed_symbols=["BTC-USD"]
        )
    assert store.accounts() == []


def test_load_account_never_returns_another_accounts_rows(store: Store) -> None:
    for account in ("USER:alice", "USER:bob"):
        store.apply(
            StoreBatch(
                account_id=account,
                orders=[order("o1", account=account)],
                fills=[fill("o1", "t1", account=account)],
                trades=[trade("r1", account=account)],
                positions=[position("BTC/USD", account=account)],
                equity_points=[equity(100.0, at(1), account=account)],
                decisions=[DecisionRecord(account_id=account, ts=at(1), allowed=False)],
            )
        )
        store.put_intent(account, "nija-1", "{}", at(0))
    # Same order id, trade id and fill key on both accounts: two distinct rows each.
    store.save_orders([order("o1", account="USER:bob", status=OrderStatus.CANCELLED)])
    alice = store.load_account("USER:alice")
    rows = [
        *alice.orders,
        *alice.trades,
        *alice.positions,
        *alice.equity_points,
        *alice.pending_intents,
        *store.decisions("USER:alice"),
    ]
    assert len(rows) == 6
    assert {r.account_id for r in rows} == {"USER:alice"}
    assert alice.orders[0].status is OrderStatus.OPEN
    assert store.accounts() == ["USER:alice", "USER:bob"]


# ----------------------------------------------------------------------- files, schema


def test_reopening_the_file_gives_the_same_data(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    with Store(path) as first:
        first.apply(
            StoreBatch(
                account_id="PLATFORM",
                orders=[order("o1", account="PLATFORM")],
                fills=[fill("o1", "t1", account="PLATFORM")],
                trades=[trade("r1", account="PLATFORM"), trade("r0", account="PLATFORM")],
                positions=[position("SOL/USD", account="PLATFORM")],
                equity_points=[equity(15.0, at(1), account="PLATFORM")],
            )
        )
        first.put_intent("PLATFORM", "nija-9", "{}", at(2))
        before = first.load_account("PLATFORM")
    with Store(path) as second:
        assert second.load_account("PLATFORM") == before
        assert second.accounts() == ["PLATFORM"]


def test_file_store_uses_wal_and_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "nija.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_empty_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    path.touch()  # an empty file is a valid v0 SQLite database
    with Store(path) as fresh:
        fresh.save_orders([order("o1")])
        assert fresh.orders("USER:alice") == [order("o1")]


def test_older_schema_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, migrations=MIGRATIONS[:1])
    conn.execute(
        "INSERT INTO equity_points (account_id, ts, equity) VALUES (?, ?, ?)",
        ("USER:alice", "2026-01-01T00:00:00.000000+00:00", 42.0),
    )
    conn.close()
    with Store(path) as upgraded:
        assert upgraded.equity_points("USER:alice") == [equity(42.0, T0)]
        upgraded.put_intent("USER:alice", "nija-1", "{}", at(0))  # a table of version 2
        assert len(upgraded.pending_intents("USER:alice")) == 1


def test_failing_migration_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "nija.db", isolation_level=None)
    broken = Migration(
        version=2,
        description="broken",
        statements=("CREATE TABLE extra (x INTEGER)", "CREATE TABLE orders (x INTEGER)"),
    )
    migrate(conn, migrations=MIGRATIONS[:1])
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn, migrations=(MIGRATIONS[0], broken))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "extra" not in tables
    conn.close()


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot use store"):
        Store(path)


@pytest.mark.parametrize("version", range(SCHEMA_VERSION + 1))
def test_a_file_at_any_of_our_versions_passes_the_layout_check(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "nija.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, migrations=MIGRATIONS[:version])
    assert check_file(conn, where=str(path)) == version
    conn.close()
    with Store(path) as upgraded:
        assert upgraded.accounts() == []


def test_a_table_of_our_own_version_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(ConfigError, match=r"not ours: table notes.*not a nija_broker store"):
        Store(path)


def test_closed_store_refuses_calls_and_closes_twice(store: Store) -> None:
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.save_orders([order("o1")])


# ----------------------------------------------------------------------- concurrency


def test_eight_threads_writing_eight_accounts_lose_nothing(store: Store) -> None:
    accounts = [f"USER:{n}" for n in range(8)]
    batches, per_batch = 20, 25
    errors: list[BaseException] = []
    start = threading.Barrier(len(accounts))

    def writer(account: str) -> None:
        try:
            start.wait()
            for b in range(batches):
                orders = [order(f"{b}-{i}", account=account) for i in range(per_batch)]
                store.save_orders(orders)
                # Every other batch also updates the previous batch's orders.
                if b % 2:
                    store.save_orders(
                        o.replace(status=OrderStatus.CANCELLED, updated_at=at(b)) for o in orders
                    )
                store.record_fills(account, [fill(f"{b}-0", f"t{b}", account=account)], [], [])
        except BaseException as exc:  # surfaced below in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(a,)) for a in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for account in accounts:
        stored = store.orders(account)
        assert len(stored) == batches * per_batch
        assert sum(o.status is OrderStatus.CANCELLED for o in stored) == batches // 2 * per_batch
        assert len(store.fill_keys(account)) == batches


@pytest.mark.asyncio
async def test_async_store_runs_every_call_on_its_own_thread(tmp_path: Path) -> None:
    seen_threads: set[str] = set()

    class Spy(Store):
        def apply(self, batch: StoreBatch) -> BatchResult:
            seen_threads.add(threading.current_thread().name)
            return super().apply(batch)

    astore = AsyncStore(Spy(tmp_path / "nija.db"))
    batches = [
        StoreBatch(account_id="USER:alice", orders=[order(f"o{i}")], fills=[fill(f"o{i}", "t1")])
        for i in range(20)
    ]
    results = await asyncio.gather(*(astore.apply(b) for b in batches))
    assert sum(len(r.new_fill_keys) for r in results) == 20
    assert len(seen_threads) == 1
    assert seen_threads.pop().startswith("nija-store")

    await astore.put_intent("USER:alice", "nija-1", "{}", at(0))
    snap = await astore.load_account("USER:alice")
    assert (len(snap.orders), len(snap.pending_intents)) == (20, 1)
    assert await astore.accounts() == ["USER:alice"]

    await astore.aclose()
    await astore.aclose()
    with pytest.raises(StateError, match="closed"):
        await astore.orders("USER:alice")
    with pytest.raises(StateError, match="closed"):
        astore.store.orders("USER:alice")


@pytest.mark.asyncio
async def test_async_store_of_a_broker_runs_on_the_owner_thread_and_leaves_it_running(
    tmp_path: Path,
) -> None:
    owner = Owner(name="test-owner")
    seen: set[str] = set()

    class Spy(Store):
        def apply(self, batch: StoreBatch) -> BatchResult:
            seen.add(threading.current_thread().name)
            return super().apply(batch)

    astore = AsyncStore(Spy(tmp_path / "nija.db"), owner)
    await astore.apply(StoreBatch(account_id="USER:alice", orders=[order("o1")]))
    assert len(seen) == 1
    assert seen.pop().startswith("test-owner")
    await astore.aclose()
    assert await owner.acall(lambda: "still running") == "still running"
    await owner.aclose()


@pytest.mark.asyncio
async def test_async_store_flushes_queued_writes_on_aclose(tmp_path: Path) -> None:
    path = tmp_path / "nija.db"
    async with AsyncStore(Store(path)) as astore:
        writes = [asyncio.ensure_future(astore.save_orders([order(f"o{i}")])) for i in range(50)]
        await asyncio.sleep(0)
    await asyncio.gather(*writes)
    with Store(path) as reopened:
        assert len(reopened.orders("USER:alice")) == 50


# ----------------------------------------------------------------------- property


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 15), max_size=8), max_size=6))
def test_each_fill_key_is_new_exactly_once_over_any_replay(batches: list[list[int]]) -> None:
    with Store(":memory:") as mem:
        reported: list[str] = []
        for batch in batches:
            fills = [fill("o1", f"t{n}") for n in batch]
            reported += mem.record_fills("USER:alice", fills, [], [])
        expected = {fill("o1", f"t{n}").key for batch in batches for n in batch}
        assert sorted(reported) == sorted(expected)
        assert mem.fill_keys("USER:alice") == expected


def test_decision_figures_must_be_json(store: Store) -> None:
    bad = DecisionRecord(
        account_id="USER:alice", ts=at(0), allowed=True, figures={"when": object()}
    )
    with pytest.raises(TypeError):
        store.journal_decision(bad)
    assert store.decisions("USER:alice") == []
