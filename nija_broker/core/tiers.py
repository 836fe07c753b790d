"""Tiers: ordered equity bands, each with a trading policy.

Defaults (all configurable under ``[tiers.NAME]``):

=============  ===============  =========  ===  ==============  ============  ========
tier           equity (USD)     positions  DCA  entries/symbol  fragmentation breakers
=============  ===============  =========  ===  ==============  ============  ========
BELOW_MIN      below 15         0          no   -               -             -
MICRO_CAP      15 to 500        4          no   1               30%, blocks   all five
SMALL_CAP      500 to 1,000     5          no   1               40%, blocks   all five
STANDARD       1,000 and up     6          yes  many            50%, alerts   none
=============  ===============  =========  ===  ==============  ============  ========

The breakers (:mod:`nija_broker.core.breakers`) share one set of default limits:
drawdown 10% (resume under 7%), expectancy over 10 trades, a daily loss of 5%
of the day's opening equity, 4 losses in a row (1 h cooldown), 30 minutes after
a stop-loss exit on a symbol.

SMALL_CAP is the band DESIGN leaves open. An account there has outgrown the
$500 micro rules by a little, not by enough for fees and idle capital to stop
mattering, so it keeps one entry per symbol and no DCA, gets one more slot and
a looser fragmentation limit.

Hysteresis: an account moves up only once equity clears the next band's floor
by ``hysteresis_pct``, and down only once it falls that far below its own
floor, so an account sitting on $500 does not flap between tiers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nija_broker.core.breakers import BREAKERS, BreakerName, Limits


class StaleAction(StrEnum):
    CANCEL = "cancel"
    ALERT = "alert"


class TierPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    min_equity_usd: float = Field(ge=0)
    entries_allowed: bool = True
    max_positions: int = Field(ge=0)
    allow_dca: bool
    allow_multiple_entries_same_symbol: bool
    fragmentation_threshold: float = Field(default=0.30, gt=0)
    fragmentation_blocks_entries: bool = True
    stale_max_age_s: float = Field(default=3600.0, gt=0)
    stale_action: StaleAction = StaleAction.CANCEL
    stale_includes_exits: bool = False
    min_trade_usd: float = Field(default=5.0, ge=0)
    fail_closed: bool = True
    # Circuit breakers (nija_broker.core.breakers): which are armed, and their limits.
    breakers: tuple[BreakerName, ...] = ()
    max_drawdown_pct: float = Field(default=10.0, gt=0, le=100)
    resume_drawdown_pct: float = Field(default=7.0, ge=0, le=100)
    expectancy_window: int = Field(default=10, ge=1)
    max_daily_loss_pct: float | None = Field(default=5.0, gt=0, le=100)
    max_daily_loss_usd: float | None = Field(default=None, gt=0)
    max_loss_streak: int = Field(default=4, ge=1)
    loss_streak_cooldown_s: float = Field(default=3600.0, gt=0)
    stoploss_cooldown_s: float = Field(default=1800.0, gt=0)

    @model_validator(mode="after")
    def _check_breakers(self) -> Self:
        if self.resume_drawdown_pct >= self.max_drawdown_pct:
            raise ValueError(
                f"resume_drawdown_pct ({self.resume_drawdown_pct:g}) must be below "
                f"max_drawdown_pct ({self.max_drawdown_pct:g}) in tier {self.name}"
            )
        if len(set(self.breakers)) != len(self.breakers):
            raise ValueError(
                f"breakers of tier {self.name} name one breaker twice: {list(self.breakers)}"
            )
        return self

    def limits(self) -> Limits:
        """This tier's breaker settings, as :func:`nija_broker.core.breakers.judge` takes them."""
        return Limits(
            armed=frozenset(self.breakers),
            max_drawdown_pct=self.max_drawdown_pct,
            resume_drawdown_pct=self.resume_drawdown_pct,
            expectancy_window=self.expectancy_window,
            max_daily_loss_pct=self.max_daily_loss_pct,
            max_daily_loss_usd=self.max_daily_loss_usd,
            max_loss_streak=self.max_loss_streak,
            loss_streak_cooldown_s=self.loss_streak_cooldown_s,
            stoploss_cooldown_s=self.stoploss_cooldown_s,
        )


BELOW_MIN = "BELOW_MIN"
MICRO_CAP = "MICRO_CAP"
SMALL_CAP = "SMALL_CAP"
STANDARD = "STANDARD"

DEFAULT_TIERS: tuple[TierPolicy, ...] = (
    TierPolicy(
        name=BELOW_MIN,
        min_equity_usd=0.0,
        entries_allowed=False,
        max_positions=0,
        allow_dca=False,
        allow_multiple_entries_same_symbol=False,
    ),
    TierPolicy(
        name=MICRO_CAP,
        min_equity_usd=15.0,
        max_positions=4,
        allow_dca=False,
        allow_multiple_entries_same_symbol=False,
        fragmentation_threshold=0.30,
        fragmentation_blocks_entries=True,
        min_trade_usd=5.0,
        breakers=BREAKERS,
    ),
    TierPolicy(
        name=SMALL_CAP,
        min_equity_usd=500.0,
        max_positions=5,
        allow_dca=False,
        allow_multiple_entries_same_symbol=False,
        fragmentation_threshold=0.40,
        fragmentation_blocks_entries=True,
        min_trade_usd=10.0,
        breakers=BREAKERS,
    ),
    TierPolicy(
        name=STANDARD,
        min_equity_usd=1000.0,
        max_positions=6,
        allow_dca=True,
        allow_multiple_entries_same_symbol=True,
        fragmentation_threshold=0.50,
        fragmentation_blocks_entries=False,
        min_trade_usd=10.0,
        fail_closed=False,
    ),
)


class TierTable:
    """Ordered tiers and the hysteresis that moves accounts between them."""

    def __init__(
        self, tiers: tuple[TierPolicy, ...] = DEFAULT_TIERS, hysteresis_pct: float = 2.0
    ) -> None:
        if not tiers:
            raise ValueError("at least one tier is required")
        ordered = tuple(sorted(tiers, key=lambda t: t.min_equity_usd))
        names = [t.name for t in ordered]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if ordered[0].min_equity_usd != 0:
            raise ValueError(
                f"the lowest tier must start at 0, got {ordered[0].name} at "
                f"{ordered[0].min_equity_usd}"
            )
        if not 0 <= hysteresis_pct < 50:
            raise ValueError(f"hysteresis_pct must be in [0, 50), got {hysteresis_pct}")
        self.tiers = ordered
        self.hysteresis = hysteresis_pct / 100.0
        self._by_name = {t.name: t for t in ordered}

    def get(self, name: str) -> TierPolicy:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"unknown tier {name!r}; known tiers: {sorted(self._by_name)}") from None

    def band(self, equity_usd: float) -> TierPolicy:
        """The tier whose band contains ``equity_usd``, without hysteresis."""
        chosen = self.tiers[0]
        for tier in self.tiers:
            if equity_usd >= tier.min_equity_usd:
                chosen = tier
        return chosen

    def resolve(self, equity_usd: float, current: str | None = None) -> TierPolicy:
        """The tier for ``equity_usd`` given the account's ``current`` tier (hysteresis)."""
        target = self.band(equity_usd)
        if current is None or current not in self._by_name:
            return target
        now = self._by_name[current]
        if target.name == now.name:
            return now
        rank = {t.name: i for i, t in enumerate(self.tiers)}
        if rank[target.name] > rank[now.name]:
            # Moving up: the highest band whose floor equity clears by the margin.
            candidate = self.band(equity_usd / (1 + self.hysteresis))
        else:
            # Moving down: only once equity is below our own floor by the margin.
            candidate = self.band(equity_usd / (1 - self.hysteresis))
        return candidate if rank[candidate.name] != rank[now.name] else now


class TierTracker:
    """Remembers each account's tier so hysteresis can apply; a pin overrides."""

    def __init__(self, table: TierTable, pinned: str | None = None) -> None:
        if pinned is not None:
            table.get(pinned)
        self.table = table
        self.pinned = pinned
        self._current: str | None = pinned

    @property
    def current(self) -> TierPolicy | None:
        return None if self._current is None else self.table.get(self._current)

    def update(self, equity_usd: float) -> TierPolicy:
        if self.pinned is not None:
            return self.table.get(self.pinned)
        tier = self.table.resolve(equity_usd, self._current)
        self._current = tier.name
        return tier
