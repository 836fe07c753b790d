"""Positions agree with balances: the ledger is checked against the exchange at every refresh.

A position the ledger keeps but the exchange does not hold (a lost sell, a
fill booked from a broken report) raises one attention event naming both
figures once it is seen on two refreshes in a row; from then on the guard
judges "is there a position" from the exchange's balance, so the phantom does
not block every later entry as DCA.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters.base import Capabilities
from nija_broker.core.events import AttentionRequired
from nija_broker.core.intent import OrderIntent
from nija_broker.core.models import Balance, Fill, Position, Side
from nija_broker.guard.guard import Guard
from nija_broker.sync.balances import position_mismatches
from nija_broker.sync.reconciler import ReconcilerSettings

from ._reconciler_rig import make_rig

ALICE = "USER:alice"
TRADES = Capabilities(
    open_orders_without_symbol=True,
    fetch_order_by_client_id=True,
    watch_orders=False,
    order_trades=True,
)


def _position(symbol: str, quantity: float) -> Position:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Position(
        account_id=ALICE,
        symbol=symbol,
        quantity=quantity,
        avg_price=10.0,
        opened_at=at,
        updated_at=at,
    )


@pytest.mark.parametrize(
    ("positions", "balances", "expected"),
    [
        ([_position("ETH/USD", 0.5)], {}, {"ETH": (0.5, 0.0)}),
        ([_position("ETH/USD", 0.5)], {"ETH": 0.5}, {}),
        # Dust below the market's amount step is what a sell rounded to the step leaves.
        ([_position("ETH/USD", 0.5004)], {"ETH": 0.5}, {}),
        # One asset bought with two quotes is one holding.
        ([_position("ETH/USD", 0.2), _position("ETH/USDT", 0.3)], {"ETH": 0.5}, {}),
        ([_position("ETH/USD", 0.2)], {"ETH": 0.5}, {"ETH": (0.2, 0.5)}),
    ],
    ids=["phantom", "agree", "dust", "two-quotes", "ledger-short"],
)
def test_position_mismatches_compare_in_the_markets_own_step(
    positions: list[Position], balances: dict[str, float], expected: dict[str, tuple[float, float]]
) -> None:
    steps = {"ETH/USD": 0.001, "ETH/USDT": 0.001}
    held = {c: Balance(currency=c, free=q, total=q) for c, q in balances.items()}
    assert position_mismatches(positions, held, steps) == expected


@pytest.mark.asyncio
async def test_a_phantom_position_raises_attention_once_and_stops_blocking_entries(
    tmp_path: Path,
) -> None:
    rig = make_rig(
        tmp_path,
        accounts=(),
        capabilities=TRADES,
        settings=ReconcilerSettings(balance_interval_s=1.0),
    )
    rig.engine.open_account(ALICE, {"USD": 300.0})
    rig.start()
    await rig.rec.startup(ALICE)
    book = rig.book(ALICE)
    # A fill the exchange never made: the ledger now believes in 0.5 ETH.
    book.book_fills(
        [
            Fill(
                account_id=ALICE,
                order_id="ghost",
                trade_id="g1",
                symbol="ETH/USD",
                side=Side.BUY,
                amount=0.5,
                price=10.0,
                timestamp=rig.clock.now() - timedelta(minutes=5),
            )
        ]
    )
    guard = Guard(rig.books, rig.live, clock=rig.clock)  # type: ignore[arg-type]
    entry = OrderIntent(
        account_id=ALICE, symbol="ETH/USD", side=Side.BUY, size_usd=20.0, price=10.0
    )
    assert guard.check(entry).rule == "dca"  # type: ignore[union-attr]

    first = await rig.sync(ALICE, after_s=2.0)
    assert not [e for e in first if isinstance(e, AttentionRequired)]
    second = await rig.sync(ALICE, after_s=2.0)
    third = await rig.sync(ALICE, after_s=2.0)
    alerts = [e for e in [*second, *third] if isinstance(e, AttentionRequired)]
    assert len(alerts) == 1
    assert "0.5 ETH" in alerts[0].reason
    assert "balance 0 ETH" in alerts[0].reason
    # The exchange holds no ETH, and says so twice: the entry is not a DCA.
    assert guard.check(entry).allowed
    assert [p.symbol for p in book.positions()] == ["ETH/USD"]  # reported, never rewritten
