"""The circuit breakers: each rule's edges, manual resumes, arming, and per-account isolation
through the real guard.

The tables judge hand-made :class:`History` values at injected times; the property
drives three MICRO_CAP accounts through :class:`Books` and :class:`Guard` on a fake
clock and checks each account's report against a history built here, in the test,
from that account's own operations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from nija_broker.core.breakers import (
    BREAKERS,
    Breakers,
    ClosedTrade,
    History,
    Limits,
    ResumeMark,
    Verdict,
    day_open_equity,
    judge,
    resume_marks,
)
from nija_broker.core.clock import FakeClock
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.models import Balance, OrderRole, TradeRecord
from nija_broker.core.tiers import DEFAULT_TIERS, MICRO_CAP, SMALL_CAP, STANDARD, TierTable
from nija_broker.guard.guard import Guard
from nija_broker.state.books import Books

ALICE = "USER:alice"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
"""Midnight UTC of the day most tables are judged on."""
T0 = DAY + timedelta(hours=9)
MINUTE = timedelta(minutes=1)
MICROSECOND = timedelta(microseconds=1)
TABLE = TierTable(DEFAULT_TIERS)
ALL = frozenset(BREAKERS)


# ----------------------------------------------------------------------- builders


def limits(*armed: str, **changes: Any) -> Limits:
    """The default limits with only ``armed`` armed (all five when none are named)."""
    return Limits(armed=frozenset(armed) if armed else ALL, **changes)


def closed(
    *nets: float, start: datetime = T0, symbol: str = "BTC/USD", stop: bool = False, first: int = 1
) -> list[ClosedTrade]:
    """Round trips closed one minute apart from ``start``, ordinals from ``first``."""
    return [
        ClosedTrade(
            ordinal=first + i,
            trade_id=f"t{first + i}",
            symbol=symbol,
            net=net,
            exit_time=start + i * MINUTE,
            stop_loss=stop,
        )
        for i, net in enumerate(nets)
    ]


def then(
    trades: Sequence[ClosedTrade],
    *nets: float,
    at: datetime,
    symbol: str = "BTC/USD",
    stop: bool = False,
) -> list[ClosedTrade]:
    """``trades`` followed by more, closed one minute apart from ``at``."""
    return [*trades, *closed(*nets, start=at, symbol=symbol, stop=stop, first=len(trades) + 1)]


def curve(*values: float, start: datetime = T0) -> list[tuple[datetime, float]]:
    """Equity points one minute apart from ``start``."""
    return [(start + i * MINUTE, value) for i, value in enumerate(values)]


def history(
    trades: Sequence[ClosedTrade] = (),
    equity: Sequence[tuple[datetime, float]] = (),
    account_id: str = ALICE,
) -> History:
    return History(
        account_id=account_id,
        trades=tuple(trades),
        trade_count=trades[-1].ordinal if trades else 0,
        equity=tuple(equity),
        peak=max(value for _, value in equity) if equity else None,
    )


def verdict(
    h: History, lim: Limits, now: datetime, rule: str, marks: dict[str, ResumeMark] | None = None
) -> Verdict:
    return judge(h, lim, now, marks).verdicts[rule]


# ----------------------------------------------------------------------- drawdown_limit


@pytest.mark.parametrize(
    ("values", "tripped"),
    [
        pytest.param([100.0, 90.0], False, id="exactly_10_pct_is_not_above_the_limit"),
        pytest.param([100.0, 89.99], True, id="just_above_10_pct_trips"),
        pytest.param([100.0, 89.0, 93.0], True, id="back_at_7_pct_after_a_trip_is_still_tripped"),
        pytest.param(
            [100.0, 89.0, 92.0, 91.0], True, id="inside_the_band_after_a_trip_stays_tripped"
        ),
        pytest.param([100.0, 89.0, 93.01], False, id="6_99_pct_after_a_trip_resumes"),
        pytest.param(
            [100.0, 89.0, 93.01, 91.0], False, id="inside_the_band_after_resuming_stays_resumed"
        ),
        pytest.param([100.0, 89.0, 101.0], False, id="a_new_peak_resets_the_trip"),
        pytest.param(
            [100.0, 89.0, 120.0, 110.0], False, id="inside_the_band_from_a_new_peak_is_not_a_trip"
        ),
        pytest.param([100.0, 95.0, 120.0, 107.9], True, id="a_fall_is_measured_from_the_new_peak"),
        pytest.param([100.0, 91.0, 92.0], False, id="never_above_the_limit_never_trips"),
        pytest.param([], False, id="no_equity_known"),
    ],
)
def test_drawdown_limit_trips_above_the_limit_and_resumes_under_the_resume_level(
    values: list[float], tripped: bool
) -> None:
    h = history(equity=curve(*values))
    result = verdict(h, limits("drawdown_limit"), T0 + timedelta(hours=1), "drawdown_limit")
    assert result.tripped is tripped
    assert result.figures["peak_equity"] == (max(values) if values else None)


def test_drawdown_figures_give_the_drawdown_from_the_peak_in_percent() -> None:
    result = verdict(
        history(equity=curve(100.0, 90.0)), limits("drawdown_limit"), T0 + MINUTE, "drawdown_limit"
    )
    assert result.figures["drawdown_pct"] == pytest.approx(10.0)
    assert result.figures["max_drawdown_pct"] == 10.0
    assert result.figures["resume_drawdown_pct"] == 7.0


# ----------------------------------------------------------------------- negative_expectancy


@pytest.mark.parametrize(
    ("nets", "tripped"),
    [
        pytest.param([-1.0] * 9, False, id="9_trades_of_a_10_window_are_not_judged"),
        pytest.param([-1.0] * 10, True, id="10_trades_with_a_negative_mean_trip"),
        pytest.param([2.0, -3.0] * 5, True, id="mean_below_0_with_wins_in_the_window_trips"),
        pytest.param([1.0, -1.0] * 5, False, id="mean_exactly_0_does_not_trip"),
        pytest.param([1.0] * 10, False, id="positive_mean_does_not_trip"),
        pytest.param(
            [-100.0] + [1.0, -1.0] * 5,
            False,
            id="only_the_last_10_trades_count_old_loss_left_the_window",
        ),
        pytest.param(
            [100.0] + [-1.0] * 10, True, id="only_the_last_10_trades_count_old_win_left_the_window"
        ),
    ],
)
def test_negative_expectancy_judges_the_mean_of_the_last_window_trades(
    nets: list[float], tripped: bool
) -> None:
    h = history(closed(*nets))
    result = verdict(
        h, limits("negative_expectancy"), T0 + timedelta(hours=1), "negative_expectancy"
    )
    assert result.tripped is tripped
    assert result.figures["trades"] == len(nets)
    if len(nets) < 10:
        assert "expectancy" not in result.figures
    else:
        assert result.figures["expectancy"] == pytest.approx(sum(nets[-10:]) / 10)


def test_negative_expectancy_is_not_judged_when_fewer_trades_are_kept_than_the_window() -> None:
    # 20 trades ever, but only the last 5 in memory: the window cannot be read.
    kept = closed(-1.0, -1.0, -1.0, -1.0, -1.0, first=16)
    h = History(account_id=ALICE, trades=tuple(kept), trade_count=20)
    assert not verdict(
        h, limits("negative_expectancy"), T0 + timedelta(hours=1), "negative_expectancy"
    ).tripped


# ----------------------------------------------------------------------- daily_loss_limit

OPENING = [(DAY - timedelta(hours=3), 100.0)]
"""Opening equity 100: the 5% limit is a loss of 5.00 today."""


@pytest.mark.parametrize(
    ("nets", "tripped"),
    [
        pytest.param([-5.0], False, id="exactly_5_pct_of_the_opening_equity_is_not_above"),
        pytest.param([-5.01], True, id="just_above_5_pct_trips"),
        pytest.param([-3.0, -2.5], True, id="losses_add_up_over_the_day"),
        pytest.param([-6.0, 2.0], False, id="wins_today_offset_losses_today"),
        pytest.param([4.0, -9.0], False, id="net_loss_of_exactly_5_after_a_win_is_not_above"),
    ],
)
def test_daily_loss_limit_trips_above_pct_of_the_opening_equity(
    nets: list[float], tripped: bool
) -> None:
    h = history(closed(*nets), OPENING)
    result = verdict(h, limits("daily_loss_limit"), T0 + timedelta(hours=1), "daily_loss_limit")
    assert result.tripped is tripped
    assert result.figures["day_open_equity"] == 100.0
    assert result.figures["limit"] == 5.0
    assert result.until == (DAY + timedelta(days=1) if tripped else None)


def test_daily_loss_limit_ignores_losses_of_earlier_days() -> None:
    h = history(closed(-50.0, start=DAY - timedelta(hours=2)), OPENING)
    result = verdict(h, limits("daily_loss_limit"), T0, "daily_loss_limit")
    assert not result.tripped
    assert result.figures["day_loss"] == 0.0


@pytest.mark.parametrize(
    ("now", "tripped"),
    [
        pytest.param(DAY + timedelta(days=1) - MICROSECOND, True, id="23_59_59_999999_tripped"),
        pytest.param(DAY + timedelta(days=1), False, id="00_00_00_next_day_not_tripped"),
    ],
)
def test_daily_loss_limit_ends_at_the_next_utc_midnight(now: datetime, tripped: bool) -> None:
    h = history(closed(-6.0, start=DAY + timedelta(hours=23)), OPENING)
    result = verdict(h, limits("daily_loss_limit"), now, "daily_loss_limit")
    assert result.tripped is tripped
    if tripped:
        assert result.until == DAY + timedelta(days=1)


def test_daily_loss_limit_reads_the_utc_day_of_a_non_utc_now() -> None:
    # 23:30 in New York on the 2nd is 04:30 UTC on the 3rd: a new UTC day, no loss yet.
    new_york = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 2, 23, 30, tzinfo=new_york)
    h = history(closed(-6.0, start=DAY + timedelta(hours=23)), OPENING)
    assert not verdict(h, limits("daily_loss_limit"), now, "daily_loss_limit").tripped


@pytest.mark.parametrize(
    ("equity", "opening"),
    [
        pytest.param(
            [
                (DAY - timedelta(hours=5), 1000.0),
                (DAY - MICROSECOND, 100.0),
                (DAY, 50.0),
                (DAY + timedelta(hours=8), 40.0),
            ],
            100.0,
            id="the_last_point_before_midnight",
        ),
        pytest.param(
            [(DAY, 200.0), (DAY + timedelta(hours=5), 100.0)],
            200.0,
            id="no_point_before_midnight_takes_the_first_of_today",
        ),
        pytest.param([], None, id="no_equity_known"),
    ],
)
def test_opening_equity_is_the_last_point_before_midnight(
    equity: list[tuple[datetime, float]], opening: float | None
) -> None:
    assert day_open_equity(history(equity=equity), T0) == opening


def test_daily_loss_limit_uses_the_last_point_before_midnight_as_the_opening() -> None:
    equity = [(DAY - timedelta(hours=5), 1000.0), (DAY - MICROSECOND, 100.0), (DAY, 50.0)]
    lim = limits("daily_loss_limit")
    assert not verdict(history(closed(-4.0), equity), lim, T0 + MINUTE, "daily_loss_limit").tripped
    assert verdict(history(closed(-5.01), equity), lim, T0 + MINUTE, "daily_loss_limit").tripped


@pytest.mark.parametrize(
    ("changes", "loss", "tripped", "limit"),
    [
        pytest.param({"max_daily_loss_usd": 3.0}, 4.0, True, 3.0, id="usd_lower_than_pct_wins"),
        pytest.param({"max_daily_loss_usd": 3.0}, 3.0, False, 3.0, id="exactly_the_usd_limit"),
        pytest.param({"max_daily_loss_usd": 50.0}, 6.0, True, 5.0, id="pct_lower_than_usd_wins"),
        pytest.param(
            {"max_daily_loss_usd": 3.0, "max_daily_loss_pct": None}, 4.0, True, 3.0, id="usd_alone"
        ),
        pytest.param({"max_daily_loss_pct": None}, 90.0, False, None, id="no_limit_set"),
    ],
)
def test_daily_loss_limit_takes_the_lower_of_the_pct_and_usd_limits(
    changes: dict[str, Any], loss: float, tripped: bool, limit: float | None
) -> None:
    h = history(closed(-loss), OPENING)
    result = verdict(h, limits("daily_loss_limit", **changes), T0 + MINUTE, "daily_loss_limit")
    assert result.tripped is tripped
    assert result.figures["limit"] == limit


# ----------------------------------------------------------------------- loss_streak


@pytest.mark.parametrize(
    ("nets", "tripped"),
    [
        pytest.param([-1.0] * 3, False, id="3_losses_in_a_row_do_not_trip"),
        pytest.param([-1.0] * 4, True, id="4_losses_in_a_row_trip"),
        pytest.param([-1.0, -1.0, -1.0, 0.0], True, id="a_break_even_trade_is_a_loss"),
        pytest.param([-1.0, -1.0, 0.01, -1.0, -1.0], False, id="a_win_breaks_the_streak"),
        pytest.param([-1.0] * 4 + [0.5], False, id="a_win_after_the_streak_ends_it"),
        pytest.param([5.0] + [-1.0] * 4, True, id="a_win_before_the_streak_does_not_matter"),
    ],
)
def test_loss_streak_counts_losing_trades_in_a_row(nets: list[float], tripped: bool) -> None:
    h = history(closed(*nets))
    assert (
        verdict(h, limits("loss_streak"), T0 + timedelta(minutes=30), "loss_streak").tripped
        is tripped
    )


@pytest.mark.parametrize(
    ("after_last_loss", "tripped"),
    [
        pytest.param(timedelta(seconds=3600) - MICROSECOND, True, id="1_us_before_the_end_tripped"),
        pytest.param(timedelta(seconds=3600), False, id="exactly_at_the_end_not_tripped"),
    ],
)
def test_loss_streak_cooldown_ends_3600_s_after_the_last_loss(
    after_last_loss: timedelta, tripped: bool
) -> None:
    trades = closed(-1.0, -1.0, -1.0, -1.0)
    last_exit = trades[-1].exit_time
    result = verdict(
        history(trades), limits("loss_streak"), last_exit + after_last_loss, "loss_streak"
    )
    assert result.tripped is tripped
    if tripped:
        assert result.until == last_exit + timedelta(seconds=3600)


# ----------------------------------------------------------------------- stoploss_cooldown


def test_stop_loss_exit_blocks_that_symbol_only() -> None:
    h = history(closed(-1.0, symbol="BTC/USD", stop=True))
    breakers = judge(h, limits("stoploss_cooldown"), T0 + MINUTE)
    blocking = breakers.blocking("stoploss_cooldown", "BTC/USD")
    assert blocking is not None
    assert blocking.symbols == ("BTC/USD",)
    assert blocking.until == T0 + timedelta(seconds=1800)
    assert breakers.blocking("stoploss_cooldown", "ETH/USD") is None


@pytest.mark.parametrize(
    ("after_exit", "blocked"),
    [
        pytest.param(timedelta(seconds=1800) - MICROSECOND, True, id="1_us_before_the_end_blocked"),
        pytest.param(timedelta(seconds=1800), False, id="exactly_at_the_end_not_blocked"),
    ],
)
def test_stop_loss_cooldown_ends_1800_s_after_the_exit(
    after_exit: timedelta, blocked: bool
) -> None:
    h = history(closed(-1.0, stop=True))
    breakers = judge(h, limits("stoploss_cooldown"), T0 + after_exit)
    assert (breakers.blocking("stoploss_cooldown", "BTC/USD") is not None) is blocked


@pytest.mark.parametrize("net", [-1.0, 0.0, 2.0])
def test_an_exit_that_is_not_a_stop_loss_does_not_count(net: float) -> None:
    h = history(closed(net, stop=False))
    assert not verdict(h, limits("stoploss_cooldown"), T0 + MINUTE, "stoploss_cooldown").tripped


def test_each_stopped_symbol_cools_down_from_its_own_latest_stop_exit() -> None:
    trades = [
        *closed(-1.0, stop=True, symbol="BTC/USD"),
        *closed(-1.0, start=T0 + 10 * MINUTE, stop=True, symbol="ETH/USD", first=2),
        *closed(-1.0, start=T0 + 20 * MINUTE, stop=True, symbol="BTC/USD", first=3),
    ]
    lim = limits("stoploss_cooldown")
    at_35 = judge(history(trades), lim, T0 + 35 * MINUTE)
    # BTC's first cooldown is over at 30 min, but its second stop exit runs to 50 min.
    assert at_35.verdicts["stoploss_cooldown"].symbols == ("BTC/USD", "ETH/USD")
    assert at_35.verdicts["stoploss_cooldown"].until == T0 + 40 * MINUTE
    at_45 = judge(history(trades), lim, T0 + 45 * MINUTE)
    assert at_45.verdicts["stoploss_cooldown"].symbols == ("BTC/USD",)
    assert at_45.blocking("stoploss_cooldown", "ETH/USD") is None


# ----------------------------------------------------------------------- resumes


@dataclass(frozen=True)
class ResumeCase:
    """A tripped history resumed at ``resumed_at``; what follows is judged at ``later``."""

    rule: str
    tripped: History
    resumed_at: datetime
    later: datetime
    worse: dict[str, History] = field(default_factory=dict)
    not_worse: dict[str, History] = field(default_factory=dict)


def _cases() -> list[ResumeCase]:
    # drawdown_limit: 15% below the peak at the resume.
    dd_points = curve(100.0, 85.0)
    dd_at = T0 + 2 * MINUTE
    drawdown = ResumeCase(
        "drawdown_limit",
        history(equity=dd_points),
        dd_at,
        dd_at + timedelta(hours=1),
        worse={
            # More than RESUME_DRAWDOWN_MARGIN_PCT (1 point) deeper than the 15% at the resume.
            "deeper_drawdown": history(equity=[*dd_points, *curve(83.9, start=dd_at + MINUTE)]),
            "recovered_under_7_then_fell_above_10_less_deep": history(
                equity=[*dd_points, *curve(95.0, 89.0, start=dd_at + MINUTE)]
            ),
            "new_peak_then_fell_above_10_less_deep": history(
                equity=[*dd_points, *curve(110.0, 97.0, start=dd_at + MINUTE)]
            ),
        },
        not_worse={
            "unchanged": history(equity=dd_points),
            "same_drawdown_again": history(equity=[*dd_points, *curve(85.0, start=dd_at + MINUTE)]),
            "shallower_still_above_10": history(
                equity=[*dd_points, *curve(88.0, start=dd_at + MINUTE)]
            ),
            "inside_the_band_then_back_to_the_resumed_depth": history(
                equity=[*dd_points, *curve(92.0, 85.0, start=dd_at + MINUTE)]
            ),
        },
    )
    # negative_expectancy: 10 losses of 1, a mean of -1.
    ex_trades = closed(*[-1.0] * 10)
    ex_at = T0 + 10 * MINUTE
    expectancy = ResumeCase(
        "negative_expectancy",
        history(ex_trades),
        ex_at,
        ex_at + timedelta(hours=1),
        worse={
            "one_more_losing_trade": history(then(ex_trades, -1.0, at=ex_at + MINUTE)),
            "one_more_break_even_trade": history(then(ex_trades, 0.0, at=ex_at + MINUTE)),
            "wins_then_a_loss": history(then(ex_trades, 1.0, 1.0, -0.5, at=ex_at + MINUTE)),
        },
        not_worse={
            "unchanged": history(ex_trades),
            "a_win_with_the_mean_still_below_0": history(then(ex_trades, 2.0, at=ex_at + MINUTE)),
        },
    )
    # daily_loss_limit: a loss of 6 today against a limit of 5.
    dl_trades = closed(-6.0)
    dl_at = T0 + 5 * MINUTE
    daily = ResumeCase(
        "daily_loss_limit",
        history(dl_trades, OPENING),
        dl_at,
        dl_at + timedelta(hours=1),
        worse={
            "a_further_loss_that_day": history(then(dl_trades, -0.5, at=dl_at + MINUTE), OPENING),
        },
        not_worse={
            "unchanged": history(dl_trades, OPENING),
            "a_win_leaving_the_loss_above_the_limit": history(
                then(dl_trades, 0.5, at=dl_at + MINUTE), OPENING
            ),
        },
    )
    # loss_streak: 4 losses in a row, judged inside the cooldown.
    ls_trades = closed(-1.0, -1.0, -1.0, -1.0)
    ls_at = T0 + 4 * MINUTE
    streak = ResumeCase(
        "loss_streak",
        history(ls_trades),
        ls_at,
        ls_at + timedelta(minutes=20),
        worse={
            "one_more_losing_trade": history(then(ls_trades, -1.0, at=ls_at + MINUTE)),
            "a_win_then_4_new_losses": history(
                then(ls_trades, 1.0, -1.0, -1.0, -1.0, -1.0, at=ls_at + MINUTE)
            ),
        },
        not_worse={
            "unchanged": history(ls_trades),
            "a_win": history(then(ls_trades, 1.0, at=ls_at + MINUTE)),
        },
    )
    # stoploss_cooldown: a stop-loss exit on BTC/USD.
    sl_trades = closed(-1.0, symbol="BTC/USD", stop=True)
    sl_at = T0 + MINUTE
    stoploss = ResumeCase(
        "stoploss_cooldown",
        history(sl_trades),
        sl_at,
        sl_at + timedelta(minutes=5),
        worse={
            "a_new_stop_loss_exit_on_another_symbol": history(
                then(sl_trades, -1.0, at=sl_at + MINUTE, symbol="ETH/USD", stop=True)
            ),
            "a_new_stop_loss_exit_on_the_same_symbol": history(
                then(sl_trades, -1.0, at=sl_at + MINUTE, symbol="BTC/USD", stop=True)
            ),
        },
        not_worse={
            "unchanged": history(sl_trades),
            "an_exit_that_is_not_a_stop_loss": history(
                then(sl_trades, -1.0, at=sl_at + MINUTE, symbol="ETH/USD")
            ),
        },
    )
    return [drawdown, expectancy, daily, streak, stoploss]


CASES = {case.rule: case for case in _cases()}


def _resumed(case: ResumeCase) -> dict[str, ResumeMark]:
    before = judge(case.tripped, limits(case.rule), case.resumed_at)
    assert sorted(before.tripped) == [case.rule]
    marks = resume_marks(before)
    assert sorted(marks) == [case.rule]
    return marks


@pytest.mark.parametrize("rule", BREAKERS)
def test_resume_holds_with_the_same_history(rule: str) -> None:
    case = CASES[rule]
    marks = _resumed(case)
    assert not judge(case.tripped, limits(rule), case.resumed_at, marks).tripped


@pytest.mark.parametrize(
    ("rule", "change"), [(case.rule, name) for case in CASES.values() for name in case.worse]
)
def test_resume_trips_again_when_the_figures_get_worse(rule: str, change: str) -> None:
    case = CASES[rule]
    marks = _resumed(case)
    worse = judge(case.worse[change], limits(rule), case.later, marks)
    assert rule in worse.tripped


@pytest.mark.parametrize(
    ("rule", "change"), [(case.rule, name) for case in CASES.values() for name in case.not_worse]
)
def test_resume_holds_when_the_figures_improve_or_stay(rule: str, change: str) -> None:
    case = CASES[rule]
    marks = _resumed(case)
    after = judge(case.not_worse[change], limits(rule), case.later, marks)
    assert rule in after.verdicts
    assert not after.tripped


@pytest.mark.parametrize(("symbol", "blocked"), [("ETH/USD", True), ("BTC/USD", False)])
def test_resumed_stop_loss_cooldown_blocks_only_the_symbol_of_the_new_stop_exit(
    symbol: str, blocked: bool
) -> None:
    case = CASES["stoploss_cooldown"]
    marks = _resumed(case)
    after = judge(
        case.worse["a_new_stop_loss_exit_on_another_symbol"],
        limits("stoploss_cooldown"),
        case.later,
        marks,
    )
    assert (after.blocking("stoploss_cooldown", symbol) is not None) is blocked


@pytest.mark.parametrize(
    "exit_time",
    [
        pytest.param(CASES["stoploss_cooldown"].resumed_at, id="stamped_at_the_resume_instant"),
        pytest.param(
            CASES["stoploss_cooldown"].resumed_at - timedelta(seconds=30),
            id="stamped_before_the_resume_booked_after_it",
        ),
    ],
)
def test_stop_loss_exit_booked_after_a_resume_trips_again(exit_time: datetime) -> None:
    # The resume's figures held one trade (the BTC stop); an ETH stop exit booked after
    # the resume is a new stop-loss exit, whatever the exchange stamped on its fill.
    case = CASES["stoploss_cooldown"]
    marks = _resumed(case)
    late = ClosedTrade(
        ordinal=2, trade_id="t2", symbol="ETH/USD", net=-1.0, exit_time=exit_time, stop_loss=True
    )
    after = judge(
        history([*case.tripped.trades, late]),
        limits("stoploss_cooldown"),
        case.resumed_at + MINUTE,
        marks,
    )
    assert after.blocking("stoploss_cooldown", "ETH/USD") is not None


def test_resume_marks_record_the_figures_at_the_resume() -> None:
    h = history(closed(-6.0, -1.0, -1.0, -1.0), [*OPENING, *curve(100.0, 85.0)])
    now = T0 + timedelta(minutes=10)
    breakers = judge(h, limits(), now)
    assert sorted(breakers.tripped) == ["daily_loss_limit", "drawdown_limit", "loss_streak"]
    marks = resume_marks(breakers)
    assert sorted(marks) == sorted(breakers.tripped)
    for rule, mark in marks.items():
        assert mark.rule == rule
        assert mark.at == now
        assert mark.drawdown_pct == pytest.approx(15.0)
        assert mark.trade_count == 4
        assert mark.day_loss == 9.0
    assert not judge(h, limits(), now, marks).tripped


@pytest.mark.parametrize("mark_from", ["dict", "object"])
def test_daily_loss_resume_does_not_carry_into_the_next_day(mark_from: str) -> None:
    case = CASES["daily_loss_limit"]
    marks = _resumed(case)
    if mark_from == "dict":
        marks = {r: ResumeMark.from_dict(m.to_dict()) for r, m in marks.items()}
    tomorrow = DAY + timedelta(days=1, hours=9)
    # Tomorrow's loss (5.5) is less than the loss resumed at (6), but above the limit.
    h = history(then(case.tripped.trades, -5.5, at=tomorrow), OPENING)
    after = judge(h, limits("daily_loss_limit"), tomorrow + MINUTE, marks)
    assert "daily_loss_limit" in after.tripped
    assert after.verdicts["daily_loss_limit"].until == DAY + timedelta(days=2)


def test_loss_streak_resume_holds_after_its_cooldown_would_have_ended() -> None:
    case = CASES["loss_streak"]
    marks = _resumed(case)
    after = judge(case.tripped, limits("loss_streak"), T0 + timedelta(hours=2), marks)
    assert not after.tripped


# ----------------------------------------------------------------------- arming


def _tripping_everything() -> History:
    trades = [
        *closed(*[-1.0] * 9, start=T0),
        *closed(-6.0, start=T0 + 9 * MINUTE, stop=True, first=10),
    ]
    return history(trades, [*OPENING, *curve(100.0, 85.0)])


@pytest.mark.parametrize(
    "armed",
    [
        pytest.param(frozenset(), id="none"),
        pytest.param(frozenset({"loss_streak"}), id="loss_streak"),
        pytest.param(frozenset({"drawdown_limit", "stoploss_cooldown"}), id="two"),
        pytest.param(ALL - {"negative_expectancy"}, id="all_but_expectancy"),
        pytest.param(ALL, id="all"),
    ],
)
def test_only_armed_breakers_have_verdicts(armed: frozenset[str]) -> None:
    breakers = judge(_tripping_everything(), Limits(armed=armed), T0 + 15 * MINUTE)
    assert set(breakers.verdicts) == armed
    assert set(breakers.tripped) == armed
    for rule in set(BREAKERS) - armed:
        assert breakers.blocking(rule, "BTC/USD") is None


@pytest.mark.parametrize(
    ("tier", "armed"), [(MICRO_CAP, ALL), (SMALL_CAP, ALL), (STANDARD, frozenset())]
)
def test_tier_limits_arm_the_tiers_breakers(tier: str, armed: frozenset[str]) -> None:
    lim = TABLE.get(tier).limits()
    assert lim.armed == armed
    assert (
        lim.max_drawdown_pct,
        lim.resume_drawdown_pct,
        lim.expectancy_window,
        lim.max_daily_loss_pct,
        lim.max_daily_loss_usd,
        lim.max_loss_streak,
        lim.loss_streak_cooldown_s,
        lim.stoploss_cooldown_s,
    ) == (10.0, 7.0, 10, 5.0, None, 4, 3600.0, 1800.0)


# ----------------------------------------------------------------------- isolation (property)

ACCOUNTS = ("USER:a", "USER:b", "USER:c")
PROPERTY_SYMBOLS = ("BTC/USD", "ETH/USD", "SOL/USD")
PROPERTY_START = datetime(2026, 3, 1, 9, tzinfo=UTC)


@dataclass(frozen=True)
class RecordTrade:
    account_id: str
    pnl: float
    fees: float
    symbol: str
    exit_role: OrderRole | None


@dataclass(frozen=True)
class AddEquity:
    account_id: str
    equity: float


@dataclass(frozen=True)
class Advance:
    seconds: int


@dataclass(frozen=True)
class Look:
    account_id: str


_cents = st.integers(-3000, 1000).map(lambda c: c / 100)
_trades = st.builds(
    RecordTrade,
    st.sampled_from(ACCOUNTS),
    _cents,
    st.integers(0, 100).map(lambda c: c / 100),
    st.sampled_from(PROPERTY_SYMBOLS),
    st.sampled_from([None, OrderRole.EXIT, OrderRole.STOP]),
)
# Trades weigh three times the rest and most clock steps are short, so an account often
# has an expectancy window's worth of trades and a loss streak still cooling down.
_operations = st.lists(
    st.one_of(
        _trades,
        _trades,
        _trades,
        st.builds(
            AddEquity, st.sampled_from(ACCOUNTS), st.integers(1500, 20_000).map(lambda c: c / 100)
        ),
        st.builds(Advance, st.sampled_from([0, 1, 60, 600, 1799, 1800, 3599, 3600])),
        st.builds(Advance, st.sampled_from([6 * 3600, 15 * 3600]) | st.integers(0, 86_400)),
        st.builds(Look, st.sampled_from(ACCOUNTS)),
    ),
    min_size=10,
    max_size=90,
)


def _micro_live(account_id: str) -> AccountLive:
    """A synced $100 account pinned to MICRO_CAP (all five breakers armed)."""
    live = AccountLive.create(account_id, TABLE, pinned=MICRO_CAP)
    live.health = AccountHealth(state=SyncState.OK, last_success=PROPERTY_START)
    live.equity_usd = 100.0
    live.balances = {"USD": Balance(currency="USD", free=100.0, total=100.0)}
    return live


@dataclass
class _Expected:
    """One account's own operations, as the test saw them."""

    account_id: str
    trades: list[ClosedTrade] = field(default_factory=list)
    equity: list[tuple[datetime, float]] = field(default_factory=list)

    def history(self) -> History:
        return History(
            account_id=self.account_id,
            trades=tuple(self.trades),
            trade_count=len(self.trades),
            equity=tuple(self.equity),
            peak=max(e for _, e in self.equity) if self.equity else None,
        )


def _assert_same_breakers(actual: Breakers | None, expected: Breakers) -> None:
    assert actual is not None
    assert actual.account_id == expected.account_id
    assert sorted(actual.tripped) == sorted(expected.tripped)
    assert set(actual.verdicts) == set(expected.verdicts)
    for rule, want in expected.verdicts.items():
        got = actual.verdicts[rule]
        assert (rule, got.tripped) == (rule, want.tripped)
        assert (rule, got.symbols) == (rule, want.symbols)
        assert (rule, got.figures) == (rule, want.figures)
        assert (rule, got.until) == (rule, want.until)
    assert actual.figures == expected.figures


_EVERY_BREAKER_ON_A = [
    AddEquity("USER:a", 100.0),
    AddEquity("USER:b", 50.0),
    Advance(60),
    *[RecordTrade("USER:a", -1.0, 0.1, "BTC/USD", None) for _ in range(9)],
    RecordTrade("USER:b", 3.0, 0.1, "BTC/USD", None),
    Look("USER:b"),
    RecordTrade("USER:a", -1.0, 0.1, "ETH/USD", OrderRole.STOP),
    Look("USER:a"),
    AddEquity("USER:a", 85.0),
    Advance(60),
    Look("USER:a"),
    Look("USER:c"),
]
"""USER:a trips all five breakers; USER:b and USER:c, trading alongside, trip none."""


Operation = RecordTrade | AddEquity | Advance | Look


def _replay(operations: Sequence[Operation]) -> tuple[Guard, dict[str, Breakers]]:
    """Run ``operations`` through real books and a real guard on one fake clock; at every
    ``Look`` and at the end, each account's report must be what :func:`judge` makes of the
    history built here from that account's own operations. Returns the guard and those
    final expected breakers."""
    clock = FakeClock(PROPERTY_START)
    books = Books(clock=clock)
    guard = Guard(books, {a: _micro_live(a) for a in ACCOUNTS}, clock=clock)
    expected = {a: _Expected(a) for a in ACCOUNTS}
    lim = TABLE.get(MICRO_CAP).limits()

    for n, op in enumerate(operations):
        now = clock.now()
        if isinstance(op, RecordTrade):
            record = TradeRecord(
                trade_id=f"{op.account_id}-{n}",
                account_id=op.account_id,
                symbol=op.symbol,
                side="buy",
                entry_price=100.0,
                exit_price=100.0,
                quantity=1.0,
                pnl=op.pnl,
                fees=op.fees,
                entry_time=now - MINUTE,
                exit_time=now,
                exit_role=op.exit_role,
            )
            assert books.get(op.account_id).record_trade(record)
            mine = expected[op.account_id].trades
            mine.append(
                ClosedTrade(
                    ordinal=len(mine) + 1,
                    trade_id=record.trade_id,
                    symbol=op.symbol,
                    net=op.pnl - op.fees,
                    exit_time=now,
                    stop_loss=op.exit_role is OrderRole.STOP,
                )
            )
        elif isinstance(op, AddEquity):
            books.get(op.account_id).update_equity(op.equity, now)
            expected[op.account_id].equity.append((now, op.equity))
        elif isinstance(op, Advance):
            clock.advance(op.seconds)
        else:
            _assert_same_breakers(
                guard.breaker_report(op.account_id),
                judge(expected[op.account_id].history(), lim, now),
            )

    finals = {a: judge(mine.history(), lim, clock.now()) for a, mine in expected.items()}
    for account_id, want in finals.items():
        _assert_same_breakers(guard.breaker_report(account_id), want)
    return guard, finals


@settings(max_examples=60, deadline=None)
@given(_operations)
@example(_EVERY_BREAKER_ON_A)
def test_each_accounts_breakers_read_only_its_own_operations(
    operations: list[Operation],
) -> None:
    _, finals = _replay(operations)
    for want in finals.values():
        for rule in want.tripped:
            event(f"tripped at the end: {rule}")  # --hypothesis-show-statistics


def test_one_account_tripping_every_breaker_leaves_the_others_untripped() -> None:
    guard, _ = _replay(_EVERY_BREAKER_ON_A)
    a = guard.breaker_report("USER:a")
    assert a is not None
    assert set(a.tripped) == ALL
    assert a.verdicts["stoploss_cooldown"].symbols == ("ETH/USD",)
    for other in ("USER:b", "USER:c"):
        report = guard.breaker_report(other)
        assert report is not None
        assert report.tripped == {}
        assert report.blocking("stoploss_cooldown", "ETH/USD") is None


def test_a_drawdown_resume_holds_through_a_dip_of_less_than_one_point() -> None:
    case = CASES["drawdown_limit"]
    marks = _resumed(case)
    dip = history(equity=[*case.tripped.equity, *curve(84.1, start=case.resumed_at + MINUTE)])
    assert "drawdown_limit" not in judge(dip, limits("drawdown_limit"), case.later, marks).tripped
