"""Circuit breakers: the seed's monitoring advice, enforced on each account's entries.

The seed tells a trader what to do when an account goes wrong and leaves it to
a person to notice; these five breakers notice, per account, and block its
entries (never its exits, DESIGN invariant 6) until the figures recover or the
trader resumes:

- ``drawdown_limit``: the drawdown from the equity peak is above
  ``max_drawdown_pct``; resumes once it is back under ``resume_drawdown_pct``.
- ``negative_expectancy``: the mean net P&L of the last ``expectancy_window``
  trades is below 0 (judged only once that many trades exist); resumes once
  that mean is 0 or above.
- ``daily_loss_limit``: the net loss since 00:00 UTC is above
  ``max_daily_loss_pct`` of the day's opening equity, or above
  ``max_daily_loss_usd`` (the lower limit wins); resumes the next UTC day.
- ``loss_streak``: ``max_loss_streak`` losing trades in a row; resumes
  ``loss_streak_cooldown_s`` after the last of them.
- ``stoploss_cooldown``: a stop-loss exit on a symbol blocks entries on that
  symbol only; resumes ``stoploss_cooldown_s`` after that exit.

A losing trade is one whose net P&L (after fees) is not above zero, as in the
metrics (``is_win`` is ``net > 0``). A stop-loss exit is a round trip closed
by a stop order (``TradeRecord.exit_role == stop``).

A manual resume (:class:`ResumeMark`) holds while the figures stay where they
were when the trader resumed: a breaker trips again only when they get worse
than at that moment — a drawdown deeper by more than
``RESUME_DRAWDOWN_MARGIN_PCT`` (1 point), another losing trade, a further loss
that day, a new stop-loss exit.

Everything here is pure: :func:`judge` takes one account's own trades, equity
points, marks and the time, and nothing else, so a breaker can never read
another account's figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

BreakerName = Literal[
    "drawdown_limit",
    "negative_expectancy",
    "daily_loss_limit",
    "loss_streak",
    "stoploss_cooldown",
]
RESUME_DRAWDOWN_MARGIN_PCT = 1.0
"""After a manual resume, ``drawdown_limit`` trips again once the drawdown is this many
points deeper than at the resume: a tick of price noise (or the fee of the exit the trader
resumed to make) is not a deeper drawdown."""

BREAKERS: tuple[BreakerName, ...] = (
    "drawdown_limit",
    "negative_expectancy",
    "daily_loss_limit",
    "loss_streak",
    "stoploss_cooldown",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """One tier's breaker settings (the fields of :class:`~nija_broker.core.tiers.TierPolicy`)."""

    armed: frozenset[str]
    max_drawdown_pct: float = 10.0
    resume_drawdown_pct: float = 7.0
    expectancy_window: int = 10
    max_daily_loss_pct: float | None = 5.0
    max_daily_loss_usd: float | None = None
    max_loss_streak: int = 4
    loss_streak_cooldown_s: float = 3600.0
    stoploss_cooldown_s: float = 1800.0


class ClosedTrade(NamedTuple):
    """What the breakers read of a round trip. ``ordinal``: 1 for the account's first trade.

    A tuple: an account's whole history is rebuilt from its trades when a trade is added.
    """

    ordinal: int
    trade_id: str
    symbol: str
    net: float
    exit_time: datetime
    stop_loss: bool = False

    @property
    def losing(self) -> bool:
        return not self.net > 0


@dataclass(frozen=True, slots=True)
class ResumeMark:
    """A manual resume of one breaker: when, and the figures at that moment.

    ``drawdown_pct`` (drawdown_limit), ``trade_count`` (negative_expectancy,
    loss_streak, stoploss_cooldown: trades ever recorded then), ``day_loss``
    (daily_loss_limit, on the UTC day of ``at``).
    """

    rule: str
    at: datetime
    drawdown_pct: float | None = None
    trade_count: int = 0
    day_loss: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "at": self.at.isoformat(),
            "drawdown_pct": self.drawdown_pct,
            "trade_count": self.trade_count,
            "day_loss": self.day_loss,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResumeMark:
        return cls(
            rule=str(data["rule"]),
            at=datetime.fromisoformat(str(data["at"])),
            drawdown_pct=data.get("drawdown_pct"),
            trade_count=int(data.get("trade_count", 0)),
            day_loss=float(data.get("day_loss", 0.0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """One account's own figures, as the breakers read them.

    ``trades``: the most recent round trips, oldest first, with their ordinals
    (``trade_count`` is the ordinal of the last); ``equity``: the most recent
    equity points ``(time, equity)``, oldest first; ``peak``: the equity peak
    over the account's whole history (``None``: no equity known).
    """

    account_id: str
    trades: Sequence[ClosedTrade] = ()
    trade_count: int = 0
    equity: Sequence[tuple[datetime, float]] = ()
    equity_count: int = 0
    """Equity points ever added (the last of ``equity`` is the ``equity_count``-th)."""
    peak: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One breaker's state: ``tripped`` with the sentence and figures that say why."""

    rule: str
    tripped: bool
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    symbols: tuple[str, ...] = ()
    """stoploss_cooldown: the symbols it blocks (each until its own cooldown ends)."""
    until: datetime | None = None
    """When a time-bound trip ends by itself (cooldowns, the next UTC day)."""


@dataclass(frozen=True, slots=True)
class Breakers:
    """Every armed breaker's verdict for one account at one instant."""

    account_id: str
    at: datetime
    verdicts: dict[str, Verdict]
    figures: dict[str, Any]
    """What a trader resuming now would be resuming from (:func:`resume_marks`)."""

    @property
    def tripped(self) -> dict[str, Verdict]:
        return {rule: v for rule, v in self.verdicts.items() if v.tripped}

    def blocking(self, rule: str, symbol: str) -> Verdict | None:
        verdict = self.verdicts.get(rule)
        if verdict is None or not verdict.tripped:
            return None
        if rule == "stoploss_cooldown" and symbol not in verdict.symbols:
            return None
        return verdict


# ---------------------------------------------------------------------------- figures


def _midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _pct(drop: float, peak: float) -> float:
    # Rounded so that a drawdown of exactly a limit compares as that limit (57.0, not
    # 56.99999999999999).
    return round(drop / peak * 100.0, 9) if peak > 0 else 0.0


def drawdown_pct(history: History) -> float | None:
    """The current drawdown from the peak, in percent (``None``: no equity known)."""
    if not history.equity or history.peak is None:
        return None
    return _pct(history.peak - history.equity[-1][1], history.peak)


def drawdown_latched(history: History, limits: Limits) -> bool:
    """Whether the drawdown went above ``max_drawdown_pct`` and has not been back under
    ``resume_drawdown_pct`` since.

    Read newest first: the first point outside the band between the two limits
    decides. Every point after the peak is measured from the peak, and the peak's
    own point (drawdown 0) always ends the walk, so the walk is exact whenever the
    peak is among the points kept or older than all of them. If every point kept
    is inside the band, nothing shows a trip and none is assumed.
    """
    if history.peak is None:
        return False
    for _, equity in reversed(history.equity):
        pct = _pct(history.peak - equity, history.peak)
        if pct > limits.max_drawdown_pct:
            return True
        if pct < limits.resume_drawdown_pct:
            return False
    return False


def recovered_since(history: History, limits: Limits, since: datetime) -> bool:
    """Whether the drawdown was under ``resume_drawdown_pct`` at any point after ``since``."""
    if history.peak is None:
        return False
    return any(
        _pct(history.peak - equity, history.peak) < limits.resume_drawdown_pct
        for timestamp, equity in history.equity
        if timestamp > since
    )


def day_open_equity(history: History, now: datetime) -> float | None:
    """Equity at 00:00 UTC today: the last point before it, else today's first point."""
    midnight = _midnight(now)
    before = [e for t, e in history.equity if t < midnight]
    if before:
        return before[-1]
    today = [e for t, e in history.equity if t >= midnight]
    return today[0] if today else None


def day_loss(history: History, now: datetime) -> float:
    """Realised net loss since 00:00 UTC today (0 when the day is even or up)."""
    midnight = _midnight(now)
    loss = -math.fsum(t.net for t in history.trades if t.exit_time >= midnight)
    return loss if loss > 0 else 0.0


def loss_streak(history: History) -> list[ClosedTrade]:
    """The losing trades at the end of the history, oldest first."""
    streak: list[ClosedTrade] = []
    for trade in reversed(history.trades):
        if not trade.losing:
            break
        streak.append(trade)
    return streak[::-1]


def _losses_after(history: History, ordinal: int) -> bool:
    return any(t.losing for t in history.trades if t.ordinal > ordinal)


# ---------------------------------------------------------------------------- the breakers


def _drawdown(history: History, limits: Limits, now: datetime, mark: ResumeMark | None) -> Verdict:
    current = drawdown_pct(history)
    figures = {
        "drawdown_pct": current,
        "peak_equity": history.peak,
        "max_drawdown_pct": limits.max_drawdown_pct,
        "resume_drawdown_pct": limits.resume_drawdown_pct,
    }
    if current is None or not drawdown_latched(history, limits):
        return Verdict("drawdown_limit", False, "drawdown within the limit", figures)
    # Resumed: holds while the drawdown is no deeper than then (price noise aside) and it
    # never recovered since.
    if (
        mark is not None
        and mark.drawdown_pct is not None
        and current <= mark.drawdown_pct + RESUME_DRAWDOWN_MARGIN_PCT
        and not recovered_since(history, limits, mark.at)
    ):
        return Verdict(
            "drawdown_limit", False, f"resumed at {mark.drawdown_pct:.1f}% drawdown", figures
        )
    return Verdict(
        "drawdown_limit",
        True,
        (
            f"{history.account_id} is {current:.1f}% below its equity peak "
            f"({history.peak:,.2f}); entries stop above {limits.max_drawdown_pct:g}% and resume "
            f"under {limits.resume_drawdown_pct:g}% (or on resume)."
        ),
        figures,
    )


def _expectancy(
    history: History, limits: Limits, now: datetime, mark: ResumeMark | None
) -> Verdict:
    window = limits.expectancy_window
    recent = list(history.trades)[-window:]
    figures: dict[str, Any] = {"expectancy_window": window, "trades": history.trade_count}
    if history.trade_count < window or len(recent) < window:
        return Verdict(
            "negative_expectancy",
            False,
            f"{history.trade_count} of {window} trades for the window",
            figures,
        )
    expectancy = math.fsum(t.net for t in recent) / window
    figures["expectancy"] = expectancy
    if expectancy >= 0:
        return Verdict("negative_expectancy", False, "expectancy >= 0", figures)
    if mark is not None and not _losses_after(history, mark.trade_count):
        return Verdict(
            "negative_expectancy", False, f"resumed after trade {mark.trade_count}", figures
        )
    return Verdict(
        "negative_expectancy",
        True,
        (
            f"{history.account_id} loses {-expectancy:,.2f} per trade net of fees over its last "
            f"{window} trades (a losing system); entries stop until that mean is back at 0 or "
            "above (or on resume)."
        ),
        figures,
    )


def _daily_loss(
    history: History, limits: Limits, now: datetime, mark: ResumeMark | None
) -> Verdict:
    loss = day_loss(history, now)
    opening = day_open_equity(history, now)
    caps: list[float] = []
    if limits.max_daily_loss_pct is not None and opening is not None and opening > 0:
        caps.append(opening * limits.max_daily_loss_pct / 100.0)
    if limits.max_daily_loss_usd is not None:
        caps.append(limits.max_daily_loss_usd)
    cap = min(caps) if caps else None
    next_day = _midnight(now) + timedelta(days=1)
    figures = {
        "day_loss": loss,
        "day_open_equity": opening,
        "limit": cap,
        "max_daily_loss_pct": limits.max_daily_loss_pct,
        "max_daily_loss_usd": limits.max_daily_loss_usd,
    }
    if cap is None or not loss > cap:
        return Verdict("daily_loss_limit", False, "daily loss within the limit", figures)
    if mark is not None and _midnight(mark.at) == _midnight(now) and loss <= mark.day_loss:
        return Verdict(
            "daily_loss_limit", False, f"resumed at a day loss of {mark.day_loss:,.2f}", figures
        )
    return Verdict(
        "daily_loss_limit",
        True,
        (
            f"{history.account_id} lost {loss:,.2f} net since 00:00 UTC, over its daily limit of "
            f"{cap:,.2f}; entries stop until {next_day:%Y-%m-%d} 00:00 UTC (or on resume)."
        ),
        figures,
        until=next_day,
    )


def _streak(history: History, limits: Limits, now: datetime, mark: ResumeMark | None) -> Verdict:
    streak = loss_streak(history)
    figures: dict[str, Any] = {
        "loss_streak": len(streak),
        "max_loss_streak": limits.max_loss_streak,
    }
    if len(streak) < limits.max_loss_streak:
        return Verdict("loss_streak", False, f"{len(streak)} losses in a row", figures)
    until = streak[-1].exit_time + timedelta(seconds=limits.loss_streak_cooldown_s)
    figures["until"] = until.isoformat()
    if now >= until:
        return Verdict("loss_streak", False, "cooldown over", figures)
    if mark is not None and not _losses_after(history, mark.trade_count):
        return Verdict("loss_streak", False, f"resumed after trade {mark.trade_count}", figures)
    return Verdict(
        "loss_streak",
        True,
        (
            f"{history.account_id} lost {len(streak)} trades in a row; entries stop until "
            f"{until:%Y-%m-%d %H:%M:%S} UTC, {limits.loss_streak_cooldown_s:g}s after the last "
            "loss (or on resume)."
        ),
        figures,
        until=until,
    )


def _stoploss(history: History, limits: Limits, now: datetime, mark: ResumeMark | None) -> Verdict:
    cooldown = timedelta(seconds=limits.stoploss_cooldown_s)
    cooling: dict[str, datetime] = {}
    for trade in history.trades:
        # After a resume only trades booked since count (a stop that filled just before the
        # resume but was booked after it is new to the trader).
        if not trade.stop_loss or (mark is not None and trade.ordinal <= mark.trade_count):
            continue
        until = trade.exit_time + cooldown
        if now < until:
            cooling[trade.symbol] = max(until, cooling.get(trade.symbol, until))
    figures: dict[str, Any] = {
        "stoploss_cooldown_s": limits.stoploss_cooldown_s,
        "cooling": {s: u.isoformat() for s, u in sorted(cooling.items())},
    }
    if not cooling:
        return Verdict("stoploss_cooldown", False, "no stop-loss exit in the cooldown", figures)
    listed = ", ".join(f"{s} until {u:%H:%M:%S}" for s, u in sorted(cooling.items()))
    return Verdict(
        "stoploss_cooldown",
        True,
        (
            f"{history.account_id} was stopped out: no new entry on {listed} UTC "
            f"({limits.stoploss_cooldown_s:g}s after each stop-loss exit, or on resume)."
        ),
        figures,
        symbols=tuple(sorted(cooling)),
        until=min(cooling.values()),
    )


_JUDGES = {
    "drawdown_limit": _drawdown,
    "negative_expectancy": _expectancy,
    "daily_loss_limit": _daily_loss,
    "loss_streak": _streak,
    "stoploss_cooldown": _stoploss,
}


def judge(
    history: History, limits: Limits, now: datetime, marks: Mapping[str, ResumeMark] | None = None
) -> Breakers:
    """Every armed breaker's verdict for one account, from its own history alone."""
    marks = marks or {}
    verdicts: dict[str, Verdict] = {
        rule: _JUDGES[rule](history, limits, now, marks.get(rule))
        for rule in BREAKERS
        if rule in limits.armed
    }
    figures = {
        "drawdown_pct": drawdown_pct(history),
        "trade_count": history.trade_count,
        "day_loss": day_loss(history, now),
    }
    return Breakers(account_id=history.account_id, at=now, verdicts=verdicts, figures=figures)


def resume_marks(breakers: Breakers) -> dict[str, ResumeMark]:
    """Marks that resume every tripped breaker of ``breakers`` at its current figures."""
    figures = breakers.figures
    return {
        rule: ResumeMark(
            rule=rule,
            at=breakers.at,
            drawdown_pct=figures["drawdown_pct"],
            trade_count=figures["trade_count"],
            day_loss=figures["day_loss"],
        )
        for rule in breakers.tripped
    }
