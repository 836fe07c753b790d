from __future__ import annotations

import pytest

from nija_broker.core.tiers import (
    BELOW_MIN,
    MICRO_CAP,
    SMALL_CAP,
    STANDARD,
    TierPolicy,
    TierTable,
    TierTracker,
)


@pytest.mark.parametrize(
    ("equity_usd", "tier"),
    [
        (0, BELOW_MIN),
        (14.99, BELOW_MIN),
        (15, MICRO_CAP),
        (100, MICRO_CAP),
        (499.99, MICRO_CAP),
        (500, SMALL_CAP),
        (999, SMALL_CAP),
        (1000, STANDARD),
        (10_000, STANDARD),
    ],
)
def test_default_bands(equity_usd: float, tier: str) -> None:
    assert TierTable().band(equity_usd).name == tier


def test_micro_cap_defaults_match_the_seed_settings() -> None:
    micro = TierTable().get(MICRO_CAP)
    assert micro.max_positions == 4
    assert micro.allow_dca is False
    assert micro.allow_multiple_entries_same_symbol is False
    assert micro.fragmentation_threshold == pytest.approx(0.30)
    assert micro.fragmentation_blocks_entries is True
    assert micro.stale_max_age_s == 3600


def test_large_accounts_allow_dca_and_six_positions() -> None:
    standard = TierTable().get(STANDARD)
    assert (standard.max_positions, standard.allow_dca) == (6, True)
    assert standard.allow_multiple_entries_same_symbol is True


def test_below_minimum_allows_no_entries() -> None:
    assert TierTable().get(BELOW_MIN).entries_allowed is False


def test_account_on_a_boundary_does_not_flap() -> None:
    tracker = TierTracker(TierTable(hysteresis_pct=2.0))
    seen = [tracker.update(e).name for e in (499, 501, 499, 505, 498, 501)]
    assert seen == [MICRO_CAP] * 6


def test_account_moves_up_once_clear_of_the_margin_and_down_once_below_it() -> None:
    tracker = TierTracker(TierTable(hysteresis_pct=2.0))
    assert tracker.update(400).name == MICRO_CAP
    assert tracker.update(511).name == SMALL_CAP
    assert tracker.update(495).name == SMALL_CAP
    assert tracker.update(489).name == MICRO_CAP


def test_big_jump_goes_straight_to_the_right_band() -> None:
    tracker = TierTracker(TierTable())
    assert tracker.update(50).name == MICRO_CAP
    assert tracker.update(20_000).name == STANDARD
    assert tracker.update(100).name == MICRO_CAP


def test_pin_overrides_equity() -> None:
    tracker = TierTracker(TierTable(), pinned=MICRO_CAP)
    assert tracker.update(50_000).name == MICRO_CAP


def test_pin_to_unknown_tier_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown tier"):
        TierTracker(TierTable(), pinned="MEGA")


def test_tier_table_must_start_at_zero() -> None:
    tier = TierPolicy(
        name="X",
        min_equity_usd=10,
        max_positions=1,
        allow_dca=False,
        allow_multiple_entries_same_symbol=False,
    )
    with pytest.raises(ValueError, match="must start at 0"):
        TierTable((tier,))
