"""Accumulators behind the performance figures: O(1) per trade, O(1) per equity point.

:class:`TradeStats` folds trades, :class:`EquityCurve` folds balance updates,
and :func:`build_metrics` turns the two into an :class:`AccountMetrics`. The
incremental tracker and the batch :func:`compute_metrics` both use exactly
these, so the two can never disagree.

Every P&L figure is net of fees (``TradeRecord.net_pnl``): a trade that made
$1 gross and paid $1.20 in fees is a loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from nija_broker.core.clock import utc
from nija_broker.core.models import AccountMetrics, TradeRecord

__all__ = ["DAYS_PER_YEAR", "EquityCurve", "Totals", "TradeStats", "Welford", "build_metrics"]

# Crypto trades every day of the year.
DAYS_PER_YEAR = 365

NO_RISK_NOTE = "no trade recorded its risk"


@dataclass(slots=True)
class Welford:
    """Running mean and sum of squared deviations (Welford), numerically stable."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Welford:
        return cls(int(data["count"]), float(data["mean"]), float(data["m2"]))

    def with_value(self, value: float) -> Welford:
        """A copy with ``value`` added; ``self`` is unchanged."""
        copy = Welford(self.count, self.mean, self.m2)
        copy.add(value)
        return copy

    def sharpe(self) -> float | None:
        """mean / sample stdev; ``None`` with fewer than 2 values or no dispersion."""
        if self.count < 2 or self.m2 <= 0.0:
            return None
        stdev = math.sqrt(self.m2 / (self.count - 1))
        if stdev == 0.0:
            return None
        ratio = self.mean / stdev
        # Returns near float limits (equity of 1e-300 doubling) overflow to inf or
        # nan; such a ratio means nothing, so there is none.
        return ratio if math.isfinite(ratio) else None


@dataclass(slots=True)
class TradeStats:
    """Everything the trade figures need, updated in O(1) per trade."""

    total_trades: int = 0
    winning_trades: int = 0
    losing_trades: int = 0
    breakeven_trades: int = 0
    gross_profit: float = 0.0  # sum of net P&L of winning trades
    gross_loss: float = 0.0  # magnitude of the sum of net P&L of losing trades
    total_fees: float = 0.0
    largest_win: float = 0.0
    largest_loss: float = 0.0  # magnitude
    current_win_streak: int = 0
    current_loss_streak: int = 0
    max_win_streak: int = 0
    max_loss_streak: int = 0
    trades_with_risk: int = 0
    sum_r_multiple: float = 0.0  # sum of net_pnl / risk_usd over trades with risk
    net_returns: Welford = field(default_factory=Welford)

    def add(self, trade: TradeRecord) -> None:
        net = trade.net
        self.total_trades += 1
        self.total_fees += trade.fees
        if net > 0:
            self.winning_trades += 1
            self.gross_profit += net
            self.largest_win = max(self.largest_win, net)
            self.current_win_streak += 1
            self.current_loss_streak = 0
            self.max_win_streak = max(self.max_win_streak, self.current_win_streak)
        elif net < 0:
            self.losing_trades += 1
            self.gross_loss -= net
            self.largest_loss = max(self.largest_loss, -net)
            self.current_loss_streak += 1
            self.current_win_streak = 0
            self.max_loss_streak = max(self.max_loss_streak, self.current_loss_streak)
        else:
            # Breakeven is neither a win nor a loss, and it ends both streaks.
            self.breakeven_trades += 1
            self.current_win_streak = 0
            self.current_loss_streak = 0
        risk = trade.risk_usd
        if risk is not None:
            self.trades_with_risk += 1
            self.sum_r_multiple += net / risk
        self.net_returns.add(trade.net_return)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["net_returns"] = self.net_returns.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TradeStats:
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "net_returns"}
        return cls(**values, net_returns=Welford.from_dict(data["net_returns"]))


@dataclass(slots=True)
class EquityCurve:
    """Peak, current value and drawdowns of one account's equity, plus daily closes.

    Points are taken in arrival order. A point stamped before the previous one
    (a wall clock stepped back) counts as on the previous point's day, so the
    curve stays a time series and a replay of the same points gives the same
    figures.
    """

    points: int = 0
    peak: float = 0.0
    current: float = 0.0
    max_drawdown: float = 0.0
    max_drawdown_pct: float = 0.0
    last_timestamp: datetime | None = None
    day: date | None = None
    day_close: float = 0.0
    previous_close: float | None = None
    daily_returns: Welford = field(default_factory=Welford)  # completed days only

    def add(self, timestamp: datetime, equity: float) -> None:
        equity = check_equity(equity)
        timestamp = utc(timestamp)
        if self.last_timestamp is not None and timestamp < self.last_timestamp:
            timestamp = self.last_timestamp
        self.last_timestamp = timestamp
        self.points += 1
        self.current = equity
        self.peak = max(self.peak, equity)
        drawdown = self.peak - equity
        self.max_drawdown = max(self.max_drawdown, drawdown)
        # The percentage maximum is tracked on its own: the deepest fall in
        # money (from a high peak) need not be the deepest in percent.
        if self.peak > 0:
            self.max_drawdown_pct = max(self.max_drawdown_pct, drawdown / self.peak * 100)

        today = timestamp.date()
        if self.day is not None and today != self.day:
            self._close_day()
        self.day = today
        self.day_close = equity

    def _close_day(self) -> None:
        daily_return = self._open_day_return()
        if daily_return is not None:
            self.daily_returns.add(daily_return)
        self.previous_close = self.day_close

    def _open_day_return(self) -> float | None:
        """The current day's return over the previous close; ``None`` when undefined.

        A return from zero equity is undefined, and one from dust equity (1e-311)
        overflows; the next day then starts afresh from the current close.
        """
        if self.day is None or self.previous_close is None or self.previous_close <= 0:
            return None
        daily_return = self.day_close / self.previous_close - 1.0
        return daily_return if math.isfinite(daily_return) else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["last_timestamp"] = (
            self.last_timestamp.isoformat() if self.last_timestamp is not None else None
        )
        data["day"] = self.day.isoformat() if self.day is not None else None
        data["daily_returns"] = self.daily_returns.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EquityCurve:
        special = {"last_timestamp", "day", "daily_returns"}
        values = {f.name: data[f.name] for f in fields(cls) if f.name not in special}
        stamp, day = data["last_timestamp"], data["day"]
        return cls(
            **values,
            last_timestamp=datetime.fromisoformat(stamp) if stamp is not None else None,
            day=date.fromisoformat(day) if day is not None else None,
            daily_returns=Welford.from_dict(data["daily_returns"]),
        )

    @property
    def current_drawdown(self) -> float:
        return self.peak - self.current

    @property
    def current_drawdown_pct(self) -> float:
        return self.current_drawdown / self.peak * 100 if self.peak > 0 else 0.0

    def sharpe_annualized(self) -> float | None:
        """Daily Sharpe of day-close returns times sqrt(365); today's close counts provisionally."""
        returns = self.daily_returns
        today = self._open_day_return()
        if today is not None:
            returns = returns.with_value(today)
        sharpe = returns.sharpe()
        return None if sharpe is None else sharpe * math.sqrt(DAYS_PER_YEAR)


@dataclass(slots=True)
class Totals:
    """Both accumulators of one account: what its lifetime figures need, and nothing else.

    The store keeps them next to the trades and equity points they fold, updated in
    the same transaction, so a restart reads these instead of replaying the whole
    history. Serialised as JSON: a float's ``repr`` round-trips exactly (``inf`` as
    ``Infinity``), so the figures read back are bit for bit those that were stored.
    """

    stats: TradeStats = field(default_factory=TradeStats)
    curve: EquityCurve = field(default_factory=EquityCurve)

    def to_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_dict(), "curve": self.curve.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Totals:
        return cls(TradeStats.from_dict(data["stats"]), EquityCurve.from_dict(data["curve"]))


def check_equity(equity: float) -> float:
    """``equity`` as a float, or ``ValueError`` naming it when NaN, infinite or negative."""
    value = float(equity)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"equity must be a finite number >= 0, got {equity!r}")
    return value


def build_metrics(account_id: str, stats: TradeStats, curve: EquityCurve) -> AccountMetrics:
    """The figures of one account from its two accumulators. O(1)."""
    n = stats.total_trades
    wins, losses = stats.winning_trades, stats.losing_trades
    average_win = stats.gross_profit / wins if wins else 0.0
    average_loss = stats.gross_loss / losses if losses else 0.0
    win_rate = wins / n if n else 0.0
    loss_rate = losses / n if n else 0.0
    if stats.gross_loss > 0:
        profit_factor = stats.gross_profit / stats.gross_loss
    elif wins:
        profit_factor = math.inf
    else:
        profit_factor = 0.0
    if stats.trades_with_risk:
        per_dollar: float | None = stats.sum_r_multiple / stats.trades_with_risk
        risk_note = f"{stats.trades_with_risk} of {n} trades recorded their risk"
    else:
        per_dollar, risk_note = None, NO_RISK_NOTE
    return AccountMetrics(
        account_id=account_id,
        total_trades=n,
        winning_trades=wins,
        losing_trades=losses,
        breakeven_trades=stats.breakeven_trades,
        win_rate=win_rate * 100,
        total_pnl=stats.gross_profit - stats.gross_loss,
        gross_profit=stats.gross_profit,
        gross_loss=stats.gross_loss,
        total_fees=stats.total_fees,
        average_win=average_win,
        average_loss=average_loss,
        largest_win=stats.largest_win,
        largest_loss=stats.largest_loss,
        expectancy=win_rate * average_win - loss_rate * average_loss,
        expectancy_per_dollar_risked=per_dollar,
        trades_with_risk=stats.trades_with_risk,
        risk_note=risk_note,
        profit_factor=profit_factor,
        peak_balance=curve.peak,
        current_balance=curve.current,
        current_drawdown=curve.current_drawdown,
        current_drawdown_pct=curve.current_drawdown_pct,
        max_drawdown=curve.max_drawdown,
        max_drawdown_pct=curve.max_drawdown_pct,
        current_win_streak=stats.current_win_streak,
        current_loss_streak=stats.current_loss_streak,
        max_win_streak=stats.max_win_streak,
        max_loss_streak=stats.max_loss_streak,
        sharpe_ratio=stats.net_returns.sharpe(),
        sharpe_annualized=curve.sharpe_annualized(),
    )
