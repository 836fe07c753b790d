"""An unchanged listing against an unchanged book is not diffed again, and nothing is missed.

The ccxt adapter's listing memo hands back the very order objects of the last
listing while the venue's rows are unchanged; the listing step then skips the
diff, which is a pure function of those orders, the book's order version, the
scope and the markets. Any change on either side is diffed as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import nija_broker.sync.listing as listing_module
from adapters.base import OpenOrdersPage
from nija_broker.core.events import OrderAdopted, OrderPartiallyFilled
from nija_broker.core.models import Order
from nija_broker.core.reconcile import diff

from ._reconciler_rig import Rig, make_rig

ALICE = "USER:alice"


def memoize_listing(rig: Rig) -> None:
    """The sim's listing handing back the last order object for an unchanged order, as
    the ccxt adapter's memo does for an unchanged row."""
    exchange = rig.exchanges[ALICE]
    plain = exchange.fetch_open_orders
    last: dict[str, Order] = {}

    async def fetch_open_orders(symbols: Sequence[str] | None = None) -> OpenOrdersPage:
        page = await plain(symbols)
        orders = [last[o.id] if last.get(o.id) == o else o for o in page.orders]
        last.clear()
        last.update((o.id, o) for o in orders)
        return OpenOrdersPage(orders, page.calls, page.complete, page.problems, page.symbols)

    exchange.fetch_open_orders = fetch_open_orders  # type: ignore[method-assign]


def count_diffs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    diffs: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        diffs.append(1)
        return diff(*args, **kwargs)

    monkeypatch.setattr(listing_module, "diff", counted)
    return diffs


async def settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Rig, list[int], Order]:
    """A rig whose one resting order was adopted, then listed once more unchanged (diffed,
    and found nothing), with the listing memoized and the diffs counted."""
    rig = make_rig(tmp_path)
    memoize_listing(rig)
    diffs = count_diffs(monkeypatch)
    resting = rig.place(price=90.0, amount=2.0)
    events = await rig.sync(ALICE)
    assert [e.order.id for e in events if isinstance(e, OrderAdopted)] == [resting.id]
    assert await rig.sync(ALICE) == []
    return rig, diffs, resting


@pytest.mark.asyncio
async def test_an_unchanged_listing_is_not_diffed_again_and_a_fill_after_it_is_booked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, diffs, resting = await settled(tmp_path, monkeypatch)
    before = len(diffs)
    for _ in range(3):
        assert await rig.sync(ALICE) == []
    assert len(diffs) == before  # the same answer against the same book: no diff

    rig.engine.fill_partially(ALICE, resting.id, 0.5)
    events = await rig.sync(ALICE)

    assert len(diffs) == before + 1
    assert [e.order.id for e in events if isinstance(e, OrderPartiallyFilled)] == [resting.id]
    assert rig.book(ALICE).orders.get(resting.id).filled == pytest.approx(0.5)
    assert sum(f.amount for f in rig.booked_fills(ALICE)) == pytest.approx(0.5)
    await rig.rec.aclose()


@pytest.mark.asyncio
async def test_a_book_changed_by_the_guard_between_cycles_is_diffed_against_the_same_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig, diffs, resting = await settled(tmp_path, monkeypatch)
    before = len(diffs)
    # The guard books its own view of the order (the version grows); the venue's
    # listing is unchanged, so only the book tells that the cycle must look again.
    book = rig.book(ALICE)
    version = book.orders.version
    book.apply_order(book.orders.get(resting.id).model_copy(update={"client_order_id": "nija-1"}))
    assert book.orders.version > version

    await rig.sync(ALICE)

    assert len(diffs) == before + 1
    assert book.orders.get(resting.id).client_order_id == "nija-1"  # what only we know stays
    await rig.rec.aclose()
