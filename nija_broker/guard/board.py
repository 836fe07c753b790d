"""The guard's circuit breakers: each account's own history read for
:mod:`nija_broker.core.breakers`, the trader's resumes, and every trip and resume as an
event and a journal row.

Private to :mod:`nija_broker.guard`. Runs on the owner's thread, like every guard call
(so nothing here locks): :meth:`BreakerBoard.evaluate` reads the book and writes
nothing; the events it finds wait in :meth:`BreakerBoard.take_events` until the
guard's journal writes them to the store and hands them to the bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from nija_broker.core.breakers import (
    Breakers,
    ClosedTrade,
    History,
    ResumeMark,
    Verdict,
    judge,
    resume_marks,
)
from nija_broker.core.events import BreakerResumed, BreakerTripped
from nija_broker.core.models import OrderRole, TradeRecord
from nija_broker.core.tiers import TierPolicy
from nija_broker.state.book import AccountBook
from nija_broker.state.store import BreakerRecord, Store

BreakerEvent = BreakerTripped | BreakerResumed


def _closed(trade: TradeRecord, ordinal: int) -> ClosedTrade:
    return ClosedTrade(
        ordinal,
        trade.trade_id,
        trade.symbol,
        trade.net,
        trade.exit_time,
        trade.exit_role is OrderRole.STOP,
    )


def history_of(book: AccountBook, previous: History | None = None) -> History:
    """What the breakers read of one account: its own trades and equity, nothing else.

    With ``previous`` (this account's history as last read), only what was added since
    is converted, when the trades kept then are still the oldest of those added since.
    """
    performance = book.performance
    trades = performance.trade_history()
    count = performance.trade_count
    first = count - len(trades)
    points = performance.equity_points()
    closed: tuple[ClosedTrade, ...] | None = None
    if previous is not None and previous.trades and count > previous.trade_count:
        new = count - previous.trade_count
        last = previous.trades[-1]
        if new < len(trades) and trades[-new - 1].trade_id == last.trade_id:
            added = tuple(
                _closed(t, previous.trade_count + i + 1) for i, t in enumerate(trades[-new:])
            )
            closed = (*previous.trades, *added)[-len(trades) :]
    elif previous is not None and count == previous.trade_count:
        closed = tuple(previous.trades)
    if closed is None:
        closed = tuple(_closed(t, first + i + 1) for i, t in enumerate(trades))
    equity: tuple[tuple[datetime, float], ...] | None = None
    added_points = performance.equity_count - (previous.equity_count if previous else 0)
    if previous is not None and previous.equity and 0 <= added_points < len(points):
        before = points[-added_points - 1]
        if (before.timestamp, before.equity) == previous.equity[-1]:
            tail = tuple((p.timestamp, p.equity) for p in points[len(points) - added_points :])
            equity = (*previous.equity, *tail)[-len(points) :]
    if equity is None:
        equity = tuple((p.timestamp, p.equity) for p in points)
    return History(
        account_id=book.account_id,
        trades=closed,
        trade_count=count,
        equity=equity,
        equity_count=performance.equity_count,
        peak=performance.metrics().peak_balance if points else None,
    )


def _next_midnight(now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


@dataclass
class _Account:
    marks: dict[str, ResumeMark] = field(default_factory=dict)
    marks_version: int = 0
    key: tuple[object, ...] | None = None
    valid_until: datetime | None = None
    cached: Breakers | None = None
    shown: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Breakers last known tripped (rule -> the symbols it blocked), as journaled."""
    events: list[tuple[BreakerEvent, BreakerRecord]] = field(default_factory=list)
    history: History | None = None
    performance: object = None
    """The tracker ``history`` was read from: a book reloaded from the store has a new one,
    whose trades may differ at the same count."""


class BreakerBoard:
    """Per-account breaker memory: resumes, the last verdicts, events not yet sent."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._accounts: dict[str, _Account] = {}

    def _account(self, account_id: str) -> _Account:
        found = self._accounts.get(account_id)
        if found is None:
            found = self._accounts[account_id] = self._load(account_id)
        return found

    def _load(self, account_id: str) -> _Account:
        """Resumes and the last journaled state survive a restart."""
        account = _Account()
        if self.store is None:
            return account
        for record in reversed(self.store.breaker_events(account_id, limit=1000)):
            if record.kind == "manual_resume":
                account.marks[record.rule] = ResumeMark.from_dict(record.figures)
                account.shown.pop(record.rule, None)
            elif record.kind == "tripped":
                symbols = record.figures.get("symbols") or ()
                account.shown[record.rule] = tuple(str(s) for s in symbols)
            else:
                account.shown.pop(record.rule, None)
        return account

    def evaluate(
        self, book: AccountBook, policy: TierPolicy | None, now: datetime
    ) -> Breakers | None:
        """The account's breakers at ``now`` (``None``: its tier arms none). Recomputed only
        when its trades, equity, resumes or tier changed, or a time limit was reached."""
        if policy is None or not policy.breakers:
            return None
        account = self._account(book.account_id)
        performance = book.performance
        # The tracker itself too: a book reloaded from the store has a new one.
        key = (
            performance,
            performance.trade_count,
            performance.equity_count,
            account.marks_version,
            policy,
        )
        fresh = (
            account.cached is not None
            and account.key == key
            and account.valid_until is not None
            and now < account.valid_until
        )
        if not fresh:
            previous = account.history if account.performance is performance else None
            history = history_of(book, previous)
            account.history, account.performance = history, performance
            breakers = judge(history, policy.limits(), now, account.marks)
            ends = [v.until for v in breakers.tripped.values() if v.until is not None]
            account.key, account.cached = key, breakers
            account.valid_until = min([_next_midnight(now), *ends])
            self._note_changes(account, breakers)
        assert account.cached is not None
        return account.cached

    def resume(
        self, book: AccountBook, policy: TierPolicy | None, now: datetime
    ) -> tuple[Breakers | None, list[str]]:
        """Resume every tripped breaker of the account at its current figures."""
        breakers = self.evaluate(book, policy, now)
        if breakers is None or not breakers.tripped:
            return breakers, []
        account = self._account(book.account_id)
        marks = resume_marks(breakers)
        for rule, mark in marks.items():
            account.marks[rule] = mark
            verdict = breakers.verdicts[rule]
            account.shown.pop(rule, None)
            reason = f"resumed by the trader at {now.isoformat()}: {verdict.message}"
            self._queue(
                account,
                BreakerResumed(
                    account_id=book.account_id,
                    at=now,
                    rule=rule,
                    reason=reason,
                    figures=dict(verdict.figures),
                    manual=True,
                ),
                mark.to_dict(),
                "manual_resume",
            )
        account.marks_version += 1
        after = self.evaluate(book, policy, now)
        return after, sorted(marks)

    def take_events(self, account_id: str) -> list[tuple[BreakerEvent, BreakerRecord]]:
        """Events found since the last call, oldest first (the guard journals and sends them)."""
        account = self._account(account_id)
        events, account.events = account.events, []
        return events

    # -- changes

    def _note_changes(self, account: _Account, breakers: Breakers) -> None:
        tripped = breakers.tripped
        for rule, verdict in tripped.items():
            before = account.shown.get(rule)
            if before is None or not set(verdict.symbols) <= set(before):
                account.shown[rule] = verdict.symbols
                self._queue(
                    account,
                    BreakerTripped(
                        account_id=breakers.account_id,
                        at=breakers.at,
                        rule=rule,
                        reason=verdict.message,
                        figures=dict(verdict.figures),
                    ),
                    {**verdict.figures, "symbols": list(verdict.symbols)},
                    "tripped",
                )
        for rule in [r for r in account.shown if r not in tripped]:
            del account.shown[rule]
            now_is = breakers.verdicts.get(rule)
            figures = dict(now_is.figures) if now_is is not None else {}
            reason = now_is.message if now_is is not None else "breaker no longer armed"
            self._queue(
                account,
                BreakerResumed(
                    account_id=breakers.account_id,
                    at=breakers.at,
                    rule=rule,
                    reason=reason,
                    figures=figures,
                ),
                figures,
                "resumed",
            )

    def _queue(
        self, account: _Account, event: BreakerEvent, figures: dict[str, object], kind: str
    ) -> None:
        record = BreakerRecord(
            account_id=event.account_id,
            ts=event.at,
            rule=event.rule,
            kind=kind,
            reason=event.reason,
            figures=figures,
        )
        account.events.append((event, record))


def verdict_view(verdict: Verdict) -> dict[str, object]:
    """One breaker as the API and ``status`` show it."""
    return {
        "tripped": verdict.tripped,
        "reason": verdict.message,
        "until": verdict.until.isoformat() if verdict.until else None,
        "symbols": list(verdict.symbols),
        "figures": verdict.figures,
    }
