"""One status row per account: what a trader checks first, as a value, a JSON document and a table.

Every row is computed from ONE account's book and live view; a view of many
accounts is a list of rows, never a total (DESIGN invariant 1). The JSON
document is what ``nija-broker status --json`` prints: its keys are a contract
with scripts and dashboards, so they change only with ``SCHEMA_VERSION``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from nija_broker.core.breakers import Breakers
from nija_broker.core.clock import utc
from nija_broker.core.health import AccountLive
from nija_broker.core.order_figures import fragmentation
from nija_broker.guard.guard import GuardFacts
from nija_broker.guard.pauses import Pauses
from nija_broker.service.positions_view import account_positions
from nija_broker.service.status_table import render_table  # the table: part of this interface
from nija_broker.state.book import AccountBook
from nija_broker.state.books import Books
from nija_broker.state.store import Store

__all__ = [
    "DEFAULT_DUST",
    "DEFAULT_FRAGMENTATION_THRESHOLD",
    "DEFAULT_STALE_MAX_AGE_S",
    "SCHEMA_VERSION",
    "AccountStatus",
    "account_equity_usd",
    "account_status",
    "render_table",
    "status_document",
    "status_rows",
    "stored_guard_facts",
]

SCHEMA_VERSION = 5
"""2: ``unvalued_holdings`` added; ``sync`` is ``degraded`` while equity cannot be established.
3: ``breakers_armed`` and ``breakers_tripped`` added.
4: ``weight_planned_per_min``, ``weight_spent_last_min`` and ``weight_unit`` added.
5: ``exchange``, ``quote_currency``, ``positions``, ``paused``, ``paused_by``, ``paused_at``,
``pause_reason``, ``last_block`` and ``stale_cancels`` added."""

# Used while an account's tier is unknown; the same defaults as DESIGN and TierPolicy.
DEFAULT_STALE_MAX_AGE_S = 3600.0
DEFAULT_FRAGMENTATION_THRESHOLD = 0.30
DEFAULT_DUST = 1.0
"""What a holding must be worth (in the account's quote) to count as a position: the
guard's default ``dust_usd``."""


class AccountStatus(BaseModel):
    """One account at one moment. ``None`` means "not known", never zero.

    ``equity_usd`` is the reconciler's latest figure (in the account's quote
    currency), else the last point of the account's own equity curve; ``None``
    while the reconciler cannot establish it. ``held_share_pct`` and
    ``fragmented`` are ``None`` while equity is unknown. ``sync`` is ``None``
    when no reconciler is running for the account (e.g. ``status`` read straight
    from the store), and ``degraded`` while the account holds something no price
    values and nothing that one does. ``unvalued_holdings`` are the currencies
    held that the last balance refresh could not value (left out of equity).
    ``breakers_armed`` are the circuit breakers the account's tier arms and
    ``breakers_tripped`` those blocking its entries now (both empty when no
    guard runs for the account). ``weight_planned_per_min`` is what the account's polling
    costs a minute against its venue's rate limit, in the venue's units (``weight_unit``:
    Binance's request weight, Kraken's API counter), from its listing plan at its
    intervals; ``weight_spent_last_min`` what its requests measurably cost in the last
    minute. Both ``None`` while no reconciler runs the account (or has not cycled yet).
    ``exchange`` and ``quote_currency`` are the account's (``None`` without a live view);
    ``positions`` counts the assets it holds worth at least ``dust`` of its quote (or
    that no price values), by ledger or balance (:mod:`~nija_broker.service.positions_view`).
    ``paused`` says the trader paused its entries (``paused_by``, ``paused_at``,
    ``pause_reason``); ``last_block`` is its latest blocked entry (``at``, ``rule``,
    ``reason``, ``symbol``), ``None`` if none; ``stale_cancels`` the stale orders cancelled
    since the sidecar started, each confirmed by the exchange (``None`` with no live
    view: the running sidecar counts them).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    tier: str | None
    equity_usd: float | None
    held_capital_usd: float
    held_share_pct: float | None
    open_orders: int
    stale_orders: int
    double_reservations: int
    fragmented: bool | None
    drawdown_pct: float
    max_drawdown_pct: float
    expectancy_usd: float
    trades: int
    sync: str | None
    last_sync: str | None
    consecutive_failures: int
    unvalued_holdings: tuple[str, ...] = ()
    breakers_armed: tuple[str, ...] = ()
    breakers_tripped: tuple[str, ...] = ()
    weight_planned_per_min: float | None = None
    weight_spent_last_min: float | None = None
    weight_unit: str | None = None
    exchange: str | None = None
    quote_currency: str | None = None
    positions: int | None = None
    paused: bool = False
    paused_by: str | None = None
    paused_at: str | None = None
    pause_reason: str | None = None
    last_block: dict[str, str | None] | None = None
    stale_cancels: int | None = None


BreakersOf = Callable[[str], Breakers | None]
"""An account's circuit breakers now (:meth:`nija_broker.guard.guard.Guard.breaker_report`)."""
GuardOf = Callable[[str], GuardFacts]
"""What the guard knows of an account now (:meth:`nija_broker.guard.guard.Guard.facts`)."""


def account_equity_usd(book: AccountBook, live: AccountLive | None) -> float | None:
    """The account's equity: the live figure, else its last recorded equity point; ``None``
    while the live view says it cannot be established (an old point would hide that)."""
    if live is not None and live.valuation_problem is not None:
        return None
    if live is not None and live.equity_usd is not None:
        return live.equity_usd
    last = book.performance.equity_points(limit=1)
    return last[0].equity if last else None


def account_status(
    book: AccountBook,
    live: AccountLive | None,
    now: datetime,
    breakers: Breakers | None = None,
    guard: GuardFacts | None = None,
    dust: float = DEFAULT_DUST,
) -> AccountStatus:
    """The status row of ``book``'s account at ``now``; ``live``, ``breakers`` and ``guard``
    must be the same account's (``guard.breakers`` is used when ``breakers`` is not given)."""
    if live is not None and live.account_id != book.account_id:
        raise ValueError(
            f"live view of account {live.account_id!r} given for account {book.account_id!r}"
        )
    now = utc(now)
    policy = live.policy() if live is not None else None
    stale_max_age_s = policy.stale_max_age_s if policy else DEFAULT_STALE_MAX_AGE_S
    threshold = policy.fragmentation_threshold if policy else DEFAULT_FRAGMENTATION_THRESHOLD
    include_exits = policy.stale_includes_exits if policy else False

    stats = book.orders.stats(now, stale_max_age_s)
    held_usd = stats.held_capital
    stale = book.orders.stale_orders(now, stale_max_age_s, include_exits=include_exits)
    positions = {p.symbol: p.quantity for p in book.ledger.positions()}
    doubles = book.orders.double_reservations(positions)
    metrics = book.metrics()

    equity_usd = account_equity_usd(book, live)
    held_share_pct: float | None = None
    fragmented: bool | None = None
    if equity_usd is not None:
        fragmented = fragmentation(held_usd, equity_usd, threshold).fragmented
        if equity_usd > 0:
            held_share_pct = held_usd / equity_usd * 100.0

    health = live.reported_health(book.degraded_reason) if live is not None else None
    last_success = health.last_success if health is not None else None
    weight = live.request_weight if live is not None else None
    if breakers is None and guard is not None:
        breakers = guard.breakers
    pause = guard.pause if guard is not None else None
    block = guard.last_block if guard is not None else None
    held = account_positions(book, live)
    return AccountStatus(
        account_id=book.account_id,
        tier=policy.name if policy else None,
        equity_usd=equity_usd,
        held_capital_usd=held_usd,
        held_share_pct=held_share_pct,
        open_orders=stats.open_count,
        stale_orders=len(stale),
        double_reservations=len(doubles),
        fragmented=fragmented,
        drawdown_pct=metrics.current_drawdown_pct,
        max_drawdown_pct=metrics.max_drawdown_pct,
        expectancy_usd=metrics.expectancy,
        trades=metrics.total_trades,
        sync=health.state.value if health is not None else None,
        last_sync=utc(last_success).isoformat() if last_success is not None else None,
        consecutive_failures=health.consecutive_failures if health is not None else 0,
        unvalued_holdings=live.unvalued_holdings if live is not None else (),
        breakers_armed=tuple(breakers.verdicts) if breakers is not None else (),
        breakers_tripped=tuple(breakers.tripped) if breakers is not None else (),
        weight_planned_per_min=weight.planned_per_min if weight is not None else None,
        weight_spent_last_min=weight.spent_last_min if weight is not None else None,
        weight_unit=weight.unit if weight is not None else None,
        exchange=live.exchange if live is not None else None,
        quote_currency=live.quote_currency if live is not None else None,
        positions=sum(1 for p in held if p.value is None or p.value >= dust),
        paused=pause is not None,
        paused_by=pause.by if pause is not None else None,
        paused_at=utc(pause.at).isoformat() if pause is not None else None,
        pause_reason=pause.reason if pause is not None else None,
        last_block=(
            {
                "at": utc(block.ts).isoformat(),
                "rule": block.rule,
                "reason": block.reason,
                "symbol": block.symbol,
            }
            if block is not None
            else None
        ),
        stale_cancels=live.stale_cancels if live is not None else None,
    )


def status_rows(
    books: Books,
    lives: Mapping[str, AccountLive],
    now: datetime,
    account_id: str | None = None,
    breakers: BreakersOf | None = None,
    guard: GuardOf | None = None,
) -> list[AccountStatus]:
    """One row per account (known to the books or to the reconciler), sorted by account id.

    With ``account_id``, only that account; ``KeyError`` if neither side knows it.
    ``breakers`` gives each account's circuit breakers (from the guard), if one runs;
    ``guard`` all the guard's facts of the account (breakers, pause, last block).
    """
    known = sorted(set(books.accounts()) | set(lives))
    if account_id is not None:
        if account_id not in known:
            raise KeyError(account_id)
        known = [account_id]
    return [
        account_status(
            books.get(a),
            lives.get(a),
            now,
            breakers(a) if breakers is not None else None,
            guard(a) if guard is not None else None,
        )
        for a in known
    ]


def stored_guard_facts(store: Store) -> GuardOf:
    """Each account's pause and latest block as the store journaled them: the guard's
    facts when no sidecar runs (no breakers then: they are judged by a running guard)."""
    pauses = Pauses(store)

    def facts(account_id: str) -> GuardFacts:
        blocks = store.decisions(account_id, limit=1, blocked_only=True)
        return GuardFacts(pause=pauses.of(account_id), last_block=blocks[0] if blocks else None)

    return facts


def status_document(rows: Sequence[AccountStatus], generated_at: datetime) -> dict[str, Any]:
    """The ``status --json`` document: ``schema_version``, ``generated_at`` and the rows."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": utc(generated_at).isoformat(),
        "accounts": [row.model_dump(mode="json") for row in rows],
    }
