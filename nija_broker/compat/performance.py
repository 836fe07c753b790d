"""The seed's performance tracker (``bot/account_performance_tracker.py``) over the real
per-account trackers and the store; see :mod:`nija_broker.compat`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nija_broker.compat.records import AccountPerformanceMetrics, TradeRecord, now
from nija_broker.compat.views import AccountView
from nija_broker.compat.workspace import workspace
from nija_broker.state.book import AccountBook
from nija_broker.state.owner import Owner, owned

__all__ = ["AccountPerformanceTracker"]

logger = logging.getLogger("nija_broker.compat")


class AccountPerformanceTracker:
    """The seed's performance tracker over the real per-account trackers and the store."""

    def __init__(self, data_dir: str = "./data") -> None:
        self.data_dir = Path(data_dir)
        self._workspace = workspace(data_dir)
        self.max_trade_history_per_account = self._workspace.books.settings.history_size
        self.trade_history_by_account: AccountView[list[TradeRecord]] = AccountView(
            self._trade_accounts, self.get_trade_history, list, "trade_history_by_account"
        )
        self.metrics_by_account: AccountView[AccountPerformanceMetrics] = AccountView(
            self._metric_accounts, self.get_metrics, None, "metrics_by_account"
        )
        self.balance_history_by_account: AccountView[list[tuple[datetime, float]]] = AccountView(
            self._balance_accounts, self._balance_history, list, "balance_history_by_account"
        )

    @property
    def owner(self) -> Owner:
        """Every public method runs on this thread (the data directory's one owner)."""
        return self._workspace.owner

    def _book(self, account_id: str) -> AccountBook:
        return self._workspace.book(account_id)

    @owned
    def use_markets(self, account_id: str, markets: Mapping[str, Any]) -> None:
        """As :meth:`AccountOrderTracker.use_markets` (both trackers of a directory share it)."""
        self._workspace.set_markets(account_id, markets)

    # -- views

    def _trade_accounts(self) -> list[str]:
        return [a for a in self.get_all_accounts() if self._book(a).performance.trade_count]

    def _balance_accounts(self) -> list[str]:
        return [a for a in self.get_all_accounts() if self._book(a).performance.equity_points(1)]

    def _metric_accounts(self) -> list[str]:
        return sorted(set(self._trade_accounts()) | set(self._balance_accounts()))

    def _balance_history(self, account_id: str) -> list[tuple[datetime, float]]:
        return [(p.timestamp, p.equity) for p in self._book(account_id).performance.equity_points()]

    # -- the seed's methods

    @owned
    def record_trade(self, trade: TradeRecord) -> None:
        model = trade.to_model(self._workspace.markets.get(trade.account_id))
        if not self._book(model.account_id).record_trade(model):
            logger.info("trade %s of %s already recorded", trade.trade_id, trade.account_id)

    @owned
    def update_balance(self, account_id: str, balance: float) -> None:
        try:
            self._book(account_id).update_equity(balance, now())
        except ValidationError:
            raise ValueError(f"invalid balance for {account_id!r}: {balance!r}") from None

    @owned
    def get_metrics(self, account_id: str) -> AccountPerformanceMetrics:
        return AccountPerformanceMetrics.from_metrics(self._book(account_id).metrics())

    @owned
    def get_trade_history(self, account_id: str, limit: int | None = None) -> list[TradeRecord]:
        """The most recent trades, oldest first (``limit``: the last ``limit``; 0 or None: all)."""
        trades = self._book(account_id).performance.trade_history(limit or None)
        return [TradeRecord.from_model(t) for t in trades]

    @owned
    def get_all_accounts(self) -> list[str]:
        return self._workspace.books.accounts()

    @owned
    def get_all_metrics(self) -> dict[str, AccountPerformanceMetrics]:
        """One entry per account. Never add these up: each is its own account's."""
        return {a: self.get_metrics(a) for a in self.get_all_accounts()}

    get_all_accounts_summary = get_all_metrics

    @owned
    def verify_no_aggregation(self) -> dict[str, str]:
        """Check every account's stored and in-memory trades belong to it alone."""
        results = {}
        for account in self.get_all_accounts():
            trades = self._workspace.store.trades(account)
            foreign = [t for t in trades if t.account_id != account]
            mem = self._book(account).metrics()
            if foreign or mem.account_id != account:
                results[account] = f"CONTAMINATION: {len(foreign)} trades belong to other accounts"
            else:
                results[account] = f"Clean: all {len(trades)} trades belong to {account}"
        return results

    @owned
    def print_account_summary(self, account_id: str) -> None:
        m = self.get_metrics(account_id)
        risk = (
            "n/a (no trade recorded its risk)"
            if m.expectancy_per_dollar_risked is None
            else f"{m.expectancy_per_dollar_risked:.3f}"
        )
        pf = "inf (no losses)" if m.profit_factor == float("inf") else f"{m.profit_factor:.2f}"
        streak = f"{abs(m.current_streak)} {'wins' if m.current_streak > 0 else 'losses'}"
        lines = [
            "=" * 70,
            f"PERFORMANCE SUMMARY: {account_id}",
            "=" * 70,
            f"  Total Trades:      {m.total_trades}",
            f"  Winning / Losing:  {m.winning_trades} / {m.losing_trades}",
            f"  Win Rate:          {m.win_rate:.1f}%",
            f"  Gross P&L:         ${m.total_pnl:.2f}",
            f"  Fees:              ${m.total_fees:.2f}",
            f"  Net P&L:           ${m.net_pnl:.2f}",
            f"  Average Win/Loss:  ${m.average_win:.2f} / ${m.average_loss:.2f}",
            f"  Largest Win/Loss:  ${m.largest_win:.2f} / ${m.largest_loss:.2f}",
            f"  Expectancy:        ${m.expectancy:.2f} per trade; per dollar risked: {risk}",
            f"  Profit Factor:     {pf}",
            f"  Sharpe (per trade): {m.sharpe_ratio:.2f}",
            f"  Peak / Current:    ${m.peak_balance:.2f} / ${m.current_balance:.2f}",
            f"  Current Drawdown:  ${m.current_drawdown:.2f} ({m.current_drawdown_pct:.1f}%)",
            f"  Max Drawdown:      ${m.max_drawdown:.2f} ({m.max_drawdown_pct:.1f}%)",
            f"  Current Streak:    {streak}",
            f"  Max Win / Loss Streak: {m.max_win_streak} / {m.max_loss_streak}",
            "=" * 70,
        ]
        print("\n".join(lines))
