"""The guard's pure rules: each one allows and blocks, with the seed's MICRO_CAP settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from nija_broker.core.breakers import BREAKERS
from nija_broker.core.clock import FakeClock
from nija_broker.core.health import AccountHealth, AccountLive, SyncState
from nija_broker.core.intent import Blocked, OrderIntent
from nija_broker.core.models import Balance, Market, OrderRole, Position
from nija_broker.core.pause import Pause
from nija_broker.core.tiers import DEFAULT_TIERS, TierTable
from nija_broker.core.valuation import value_balances
from nija_broker.guard.guard import Guard
from nija_broker.guard.rules import (
    ENTRY_RULES,
    AccountState,
    exit_warnings,
    first_objection,
    holdings_of,
    positions_of,
)
from nija_broker.service.config import AccountConfig
from nija_broker.state.books import Books

TABLE = TierTable(DEFAULT_TIERS)
BELOW_MIN, MICRO, SMALL, STANDARD = (
    TABLE.get(n) for n in ("BELOW_MIN", "MICRO_CAP", "SMALL_CAP", "STANDARD")
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
OK = AccountHealth(state=SyncState.OK, last_success=T0)
MARKETS = {
    s: Market(symbol=s, base=s.split("/")[0], quote="USD", min_amount=0.0001, min_notional=1.0)
    for s in ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD", "AVAX/USD")
}
PRICES = {
    "BTC/USD": 50_000.0,
    "ETH/USD": 3_000.0,
    "SOL/USD": 150.0,
    "XRP/USD": 0.5,
    "ADA/USD": 0.4,
    "DOGE/USD": 0.1,
    "AVAX/USD": 30.0,
}


def usd(amount: float) -> dict[str, float]:
    return {"USD": amount}


def state(**changes: Any) -> AccountState:
    """A healthy $100 MICRO_CAP account with nothing open and $100 free."""
    fields: dict[str, Any] = dict(
        account_id="USER:alice",
        policy=MICRO,
        health=OK,
        equity_usd=100.0,
        quote_currency="USD",
        balances_known=True,
        free_by_currency=usd(100.0),
        reserved_by_currency={},
        held_usd=0.0,
        entry_symbols={},
        positions={},
        holdings={},
        markets=MARKETS,
        last_prices=PRICES,
        fee_rate=0.004,
    )
    fields.update(changes)
    return AccountState(**fields)


def buy(symbol: str = "BTC/USD", size_usd: float | None = 10.0, **changes: Any) -> OrderIntent:
    return OrderIntent(
        account_id="USER:alice", symbol=symbol, side="buy", size_usd=size_usd, **changes
    )


def sell(symbol: str = "BTC/USD", amount: float = 0.001, **changes: Any) -> OrderIntent:
    return OrderIntent(
        account_id="USER:alice", symbol=symbol, side="sell", amount=amount, **changes
    )


def rule_of(intent: OrderIntent, s: AccountState) -> str | None:
    reason = first_objection(intent, s)
    return None if reason is None else reason.rule


# --------------------------------------------------------------------------- allowed baseline


def test_a_sized_entry_on_a_healthy_micro_account_is_allowed() -> None:
    assert rule_of(buy(), state()) is None


# --------------------------------------------------------------------------- rule table

PAUSE = Pause(by="dana", at=T0, reason="news at 14:00")
HELD_BTC = {"BTC": 0.001}
SIX_BUT_SOL = {s.split("/")[0]: 9.0 for s in MARKETS if s != "SOL/USD"}
MIN_10 = {"BTC/USD": MARKETS["BTC/USD"].replace(min_notional=10.0)}
MIN_AMOUNT = {"BTC/USD": MARKETS["BTC/USD"].replace(min_amount=0.001)}


@pytest.mark.parametrize(
    ("intent", "account", "expected"),
    [
        # paused: the trader's pause blocks every entry, on any tier, before any other rule.
        (buy(), state(pause=PAUSE), "paused"),
        (buy(), state(pause=PAUSE, policy=STANDARD), "paused"),
        (buy(), state(pause=PAUSE, health=AccountHealth()), "paused"),
        (sell(), state(pause=PAUSE, holdings=HELD_BTC), None),
        # sync_unknown: fail closed for MICRO_CAP; STANDARD is configured fail-open.
        (
            buy(),
            state(
                health=AccountHealth(
                    state=SyncState.FAILED, consecutive_failures=5, last_error="timeout"
                )
            ),
            "sync_unknown",
        ),
        (buy(), state(health=AccountHealth()), "sync_unknown"),
        (buy(), state(policy=None), "sync_unknown"),
        (buy(), state(health=AccountHealth(state=SyncState.DEGRADED)), None),
        (buy(), state(policy=STANDARD, health=AccountHealth(state=SyncState.FAILED)), None),
        # below_min_tier
        (buy(), state(policy=BELOW_MIN, equity_usd=12.0), "below_min_tier"),
        (buy(), state(policy=MICRO, equity_usd=15.0), None),
        # dca: no entry where a position is open (MICRO_CAP), allowed for STANDARD
        (buy(), state(positions={"BTC": 50.0}, holdings=HELD_BTC), "dca"),
        (buy("BTC/USDT"), state(positions={"BTC": 50.0}, holdings=HELD_BTC, markets={}), "dca"),
        (buy("ETH/USD"), state(positions={"BTC": 50.0}, holdings=HELD_BTC), None),
        (buy(), state(policy=STANDARD, positions={"BTC": 50.0}, holdings=HELD_BTC), None),
        # duplicate_symbol_entry: one entry per symbol, open or pending
        (buy(), state(entry_symbols={"BTC/USD": 1}), "duplicate_symbol_entry"),
        (buy(), state(entry_symbols={"BTC/USD": 0}), None),
        (buy(), state(policy=STANDARD, entry_symbols={"BTC/USD": 2}), None),
        (
            buy("BTC/USDT"),
            state(entry_symbols={"BTC/USD": 1}, markets={}),
            "duplicate_symbol_entry",
        ),
        # max_positions: positions + open entries + pending entries share MICRO_CAP's 4 slots
        (
            buy("SOL/USD"),
            state(positions={"BTC": 9.0, "ETH": 9.0}, entry_symbols={"XRP/USD": 1, "ADA/USD": 1}),
            "max_positions",
        ),
        (
            buy("SOL/USD"),
            state(positions={"BTC": 9.0, "ETH": 9.0}, entry_symbols={"XRP/USD": 1}),
            None,
        ),
        # a held asset and an entry on it take one slot, whichever quote the entry uses
        (
            buy("SOL/USD"),
            state(positions={"BTC": 9.0, "ETH": 9.0, "XRP": 9.0}, entry_symbols={"XRP/USDT": 1}),
            None,
        ),
        (
            buy("SOL/USD"),
            state(
                policy=STANDARD,
                equity_usd=2_000.0,
                free_by_currency=usd(2_000.0),
                positions={"BTC": 9.0, "ETH": 9.0},
                entry_symbols={"XRP/USD": 1, "ADA/USD": 1},
            ),
            None,
        ),
        (buy("SOL/USD"), state(policy=STANDARD, positions=SIX_BUT_SOL), "max_positions"),
        # STANDARD allows DCA into a held symbol even with every slot taken
        (buy("ETH/USD"), state(policy=STANDARD, positions=SIX_BUT_SOL), None),
        # fragmentation: above 30% of equity held in orders blocks MICRO_CAP entries
        (buy(), state(held_usd=31.0), "fragmentation"),
        (buy(), state(held_usd=30.0), None),
        (buy(), state(held_usd=5.0, equity_usd=0.0, policy=SMALL), "fragmentation"),
        (buy(), state(policy=STANDARD, held_usd=60.0), None),
        # price_unknown: an unpriced market order by amount cannot be sized
        (buy("SOL/USD", size_usd=None, amount=0.1), state(last_prices={}), "price_unknown"),
        (buy("SOL/USD", size_usd=None, amount=0.1), state(), None),
        (
            buy("SOL/USD", size_usd=None, amount=0.1, type="limit", price=150.0),
            state(last_prices={}),
            None,
        ),
        # unknown_market
        (buy("LTC/USD"), state(), "unknown_market"),
        (buy("LTC/USD"), state(markets={}), None),
        # min_trade_size: MICRO_CAP's $5 minimum
        (buy(size_usd=4.99), state(), "min_trade_size"),
        (buy(size_usd=5.0), state(), None),
        # min_notional: the exchange's minimum order value
        (buy(size_usd=8.0), state(markets=MIN_10), "min_notional"),
        (buy(size_usd=10.0), state(markets=MIN_10), None),
        # min_amount
        (buy(size_usd=None, amount=0.0001), state(markets=MIN_AMOUNT), "min_amount"),
        (buy(size_usd=None, amount=0.001), state(markets=MIN_AMOUNT), None),
        # insufficient_free_balance: free balance less reservations must pay order + fee
        (
            buy(size_usd=25.0),
            state(free_by_currency=usd(30.0), reserved_by_currency=usd(10.0)),
            "insufficient_free_balance",
        ),
        (
            buy(size_usd=25.0),
            state(free_by_currency=usd(30.0), reserved_by_currency=usd(4.0)),
            None,
        ),
        (buy(), state(balances_known=False, free_by_currency={}), "insufficient_free_balance"),
        (buy(), state(policy=STANDARD, balances_known=False, free_by_currency={}), None),
        # ... of the order's own quote: USDT pays for BTC/USDT, USD does not
        (buy("BTC/USDT"), state(free_by_currency={"USD": 0.0, "USDT": 100.0}, markets={}), None),
        (
            buy("BTC/USDT"),
            state(free_by_currency={"USD": 100.0}, markets={}),
            "insufficient_free_balance",
        ),
        (
            buy("BTC/USDT"),
            state(free_by_currency={"USDT": 30.0}, markets={}, reserved_by_currency={"USD": 25.0}),
            None,
        ),
    ],
)
def test_entry_rule_table(intent: OrderIntent, account: AccountState, expected: str | None) -> None:
    assert rule_of(intent, account) == expected


def test_every_entry_rule_appears_in_the_table() -> None:
    blocked_rules = {
        "paused",
        "sync_unknown",
        "below_min_tier",
        "dca",
        "duplicate_symbol_entry",
        "max_positions",
        "fragmentation",
        "price_unknown",
        "unknown_market",
        "min_trade_size",
        "min_notional",
        "min_amount",
        "insufficient_free_balance",
    }
    # The circuit breakers come last; their tables are in test_breakers.
    names = [rule.__name__ for rule in ENTRY_RULES]
    assert set(names) == blocked_rules | set(BREAKERS)
    assert names[-len(BREAKERS) :] == list(BREAKERS)


# --------------------------------------------------------------------------- messages


def test_max_positions_reason_names_the_slots_and_the_limit() -> None:
    account = state(positions={"BTC": 9.0, "ETH": 9.0}, entry_symbols={"XRP/USD": 1, "ADA/USD": 1})
    reason = first_objection(buy("SOL/USD"), account)
    assert reason is not None
    assert "4 of its 4 position slots" in reason.message
    assert "ADA/USD, BTC, ETH, XRP/USD" in reason.message
    assert reason.figures["max_positions"] == 4
    assert reason.figures["occupied"] == ["ADA/USD", "BTC", "ETH", "XRP/USD"]
    assert reason.figures["positions"] == ["BTC", "ETH"]


def test_fragmentation_reason_gives_held_equity_and_threshold() -> None:
    reason = first_objection(buy(), state(held_usd=45.0))
    assert reason is not None
    assert "45.00 USD" in reason.message
    assert "45%" in reason.message
    assert "30%" in reason.message
    assert reason.figures["ratio"] == pytest.approx(0.45)


def test_free_balance_reason_shows_what_reservations_took() -> None:
    reason = first_objection(
        buy(size_usd=25.0), state(free_by_currency=usd(30.0), reserved_by_currency=usd(10.0))
    )
    assert reason is not None
    assert reason.figures["currency"] == "USD"
    assert reason.figures["available_usd"] == pytest.approx(20.0)
    assert reason.figures["cost_usd"] == pytest.approx(25.1)
    assert "10.00 USD is already reserved" in reason.message


def test_sync_unknown_reason_carries_the_last_error() -> None:
    health = AccountHealth(
        state=SyncState.FAILED,
        consecutive_failures=7,
        last_error="AuthenticationFailed: key revoked",
    )
    reason = first_objection(buy(), state(health=health))
    assert reason is not None
    assert "failed" in reason.message
    assert "key revoked" in reason.message
    assert reason.figures["consecutive_failures"] == 7


# --------------------------------------------------------------------------- exits


BLOCK_EVERYTHING = state(
    policy=BELOW_MIN,
    health=AccountHealth(state=SyncState.FAILED),
    balances_known=False,
    held_usd=1_000.0,
    positions={s.split("/")[0]: 9.0 for s in MARKETS},
    holdings={"BTC": 0.01},
    entry_symbols={s: 1 for s in MARKETS},
    last_prices={},
    markets={},
)


@pytest.mark.parametrize(
    "intent",
    [
        sell(),
        sell(type="limit", price=60_000.0, role=OrderRole.TARGET),
        sell(type="stop", stop_price=40_000.0, role=OrderRole.STOP),
        buy(reduce_only=True),
        buy(role=OrderRole.EXIT),
    ],
)
def test_exits_pass_while_every_entry_rule_would_block(intent: OrderIntent) -> None:
    assert first_objection(buy(), BLOCK_EVERYTHING) is not None
    assert first_objection(intent, BLOCK_EVERYTHING) is None


def test_a_sell_larger_than_the_holding_passes_with_an_oversell_warning() -> None:
    warnings = exit_warnings(sell(amount=0.02), state(holdings={"BTC": 0.01}))
    assert [w.rule for w in warnings] == ["oversell"]
    assert warnings[0].figures == {"symbol": "BTC/USD", "amount": 0.02, "held": 0.01}
    assert "0.02 BTC" in warnings[0].message


def test_selling_exactly_the_holding_is_no_oversell() -> None:
    assert exit_warnings(sell(amount=0.01), state(holdings={"BTC": 0.01})) == ()
    # the holding is the asset's, whichever market the exit sells on
    assert exit_warnings(sell("BTC/USDT", amount=0.01), state(holdings={"BTC": 0.01})) == ()
    assert exit_warnings(buy(), state()) == ()


# --------------------------------------------------------------------------- positions


def test_holdings_take_the_larger_of_balance_and_ledger() -> None:
    ledger = [
        Position(
            account_id="A",
            symbol="BTC/USD",
            quantity=0.002,
            avg_price=50_000,
            opened_at=T0,
            updated_at=T0,
        ),
        Position(
            account_id="A",
            symbol="ETH/USD",
            quantity=0.5,
            avg_price=3_000,
            opened_at=T0,
            updated_at=T0,
        ),
    ]
    balances = {
        "USD": Balance(currency="USD", free=50, total=50),
        "BTC": Balance(currency="BTC", free=0.001, used=0.002, total=0.003),
        "ETH": Balance(currency="ETH", free=0.1, total=0.1),
    }
    assert holdings_of(balances, ledger, "USD") == {"BTC": 0.003, "ETH": 0.5}


def test_holdings_are_by_asset_and_money_at_par_is_no_holding() -> None:
    ledger = [
        Position(
            account_id="A",
            symbol="BTC/USDT",
            quantity=0.001,
            avg_price=50_000,
            opened_at=T0,
            updated_at=T0,
        ),
        Position(
            account_id="A",
            symbol="BTC/USD",
            quantity=0.001,
            avg_price=50_000,
            opened_at=T0,
            updated_at=T0,
        ),
    ]
    balances = {
        "USDT": Balance(currency="USDT", free=10_000, total=10_000),
        "USDC": Balance(currency="USDC", free=5, total=5),
        "BTC": Balance(currency="BTC", free=0.0015, total=0.0015),
    }
    # USDT and USDC are money for a USD account; the ledger's two BTC positions are one asset.
    assert holdings_of(balances, ledger, "USD") == {"BTC": pytest.approx(0.002)}
    assert holdings_of(balances, [], "EUR") == {"USDT": 10_000, "USDC": 5, "BTC": 0.0015}


def test_dust_and_unpriced_holdings_take_no_position_slot() -> None:
    holdings = {"BTC": 0.00001, "ETH": 0.01, "SHIB": 1_000.0, "SOL": 1.0}
    positions, unpriced = positions_of(
        holdings,
        {"BTC/USD": 50_000.0, "ETH/USD": 3_000.0},
        {"SOL/USD": 150.0},
        quote_currency="USD",
        dust_usd=1.0,
    )
    assert positions == {"ETH": pytest.approx(30.0), "SOL": pytest.approx(150.0)}
    assert unpriced == ("SHIB",)


@pytest.mark.parametrize(
    ("quote", "last_prices", "avg_prices", "value"),
    [
        ("USD", {"BTC/USDT": 50_000.0}, {}, 50.0),  # through USDT at par with USD
        ("USD", {"BTC/USDC": 40_000.0, "USDC/USD": 0.5}, {}, 20.0),  # the venue's USDC/USD price
        ("EUR", {"BTC/USD": 50_000.0, "EUR/USD": 1.25}, {}, 40.0),  # a USD leg to EUR
        ("USD", {}, {"BTC/USDT": 30_000.0}, 30.0),  # the ledger's cost, USDT at par
        ("USD", {"BTC/EUR": 40_000.0}, {}, None),  # no route from EUR to USD
    ],
)
def test_positions_are_valued_in_the_account_quote(
    quote: str,
    last_prices: dict[str, float],
    avg_prices: dict[str, float],
    value: float | None,
) -> None:
    positions, unpriced = positions_of(
        {"BTC": 0.001}, last_prices, avg_prices, quote_currency=quote, dust_usd=1.0
    )
    if value is None:
        assert (positions, unpriced) == ({}, ("BTC",))
    else:
        assert positions == {"BTC": pytest.approx(value)}
        assert unpriced == ()


# --------------------------------------------------------------------------- a USDT venue


def _usdt_guard(**totals: float) -> tuple[Guard, AccountLive]:
    """A Binance-like account (USDT markets only) in the default configuration: quote USD."""
    quote = AccountConfig(id="USER:alice", exchange="binance").quote_currency
    assert quote == "USD"
    balances = {c: Balance(currency=c, free=t, total=t) for c, t in totals.items()}
    prices = {"BTC/USDT": 50_000.0, "ETH/USDT": 3_000.0}
    equity = value_balances(balances, prices, quote).equity
    live = AccountLive.create("USER:alice", TABLE, quote_currency=quote)
    live.tier.update(equity)
    live.health = OK
    live.equity_usd = equity
    live.balances = balances
    live.markets = {
        s: Market(symbol=s, base=s.split("/")[0], quote="USDT", min_amount=1e-5, min_notional=5.0)
        for s in prices
    }
    guard = Guard(Books(), {"USER:alice": live}, clock=FakeClock(T0))
    for symbol, price in prices.items():
        guard.books.get("USER:alice").orders.set_last_price(symbol, price)
    return guard, live


def test_usdt_account_btc_holding_blocks_a_btc_usdt_dca_entry_for_micro_cap() -> None:
    guard, live = _usdt_guard(USDT=100.0, BTC=0.001)
    assert live.equity_usd == pytest.approx(150.0)  # USDT at par, BTC through BTC/USDT
    assert live.policy() is MICRO
    account = guard.state("USER:alice")
    assert account.holdings == {"BTC": 0.001}  # USDT is money, not a position
    assert account.positions == {"BTC": pytest.approx(50.0)}
    decision = guard.check(buy("BTC/USDT"))
    assert isinstance(decision, Blocked)
    assert decision.rule == "dca"
    assert decision.figures["asset"] == "BTC"


def test_usdt_account_free_usdt_pays_for_a_usdt_entry() -> None:
    guard, _ = _usdt_guard(USDT=100.0)
    assert guard.check(buy("BTC/USDT", size_usd=60.0)).allowed
    too_big = guard.check(buy("BTC/USDT", size_usd=99.9))  # 100.30 with fees
    assert isinstance(too_big, Blocked)
    assert too_big.rule == "insufficient_free_balance"
    assert too_big.figures["currency"] == "USDT"
    assert too_big.figures["free_quote"] == 100.0
    assert "100.00 USDT free" in too_big.reason


def test_reservations_claim_the_free_balance_of_their_own_quote() -> None:
    guard, live = _usdt_guard(USDT=100.0, USD=100.0)
    live.markets = {**live.markets, "ETH/USD": MARKETS["ETH/USD"]}
    guard.books.get("USER:alice").orders.set_last_price("ETH/USD", 3_000.0)
    guard.reserve(buy("BTC/USDT", size_usd=60.0))
    account = guard.state("USER:alice")
    assert account.reserved_by_currency == {"USDT": pytest.approx(60.24)}
    assert guard.check(buy("ETH/USD", size_usd=60.0)).allowed  # USD is not claimed
    blocked = guard.check(buy("ETH/USDT", size_usd=60.0))
    assert isinstance(blocked, Blocked)
    assert blocked.rule == "insufficient_free_balance"


# --------------------------------------------------------------------------- intent values


def test_intent_generates_an_exchange_safe_client_order_id() -> None:
    first, second = buy(), buy()
    assert first.client_order_id != second.client_order_id
    assert first.client_order_id.startswith("nb-")
    assert len(first.client_order_id) <= 36


def test_intent_accepts_the_bots_dash_symbol() -> None:
    assert buy("eth-usd").symbol == "ETH/USD"


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        (dict(symbol="BTCUSD"), "symbol"),
        (dict(amount=-1.0, size_usd=None), "amount"),
        (dict(size_usd=float("nan")), "size_usd"),
        (dict(side="long"), "side"),
        (dict(client_order_id="x" * 37), "client_order_id"),
        (dict(client_order_id="has space"), "client_order_id"),
        (dict(type="limit"), "price is required"),
        (dict(size_usd=None), "amount (base) or size_usd"),
    ],
)
def test_bad_intent_input_names_the_field(fields: dict[str, Any], field_name: str) -> None:
    base: dict[str, Any] = dict(account_id="A", symbol="BTC/USD", side="buy", size_usd=10.0)
    with pytest.raises(ValidationError) as info:
        OrderIntent(**{**base, **fields})
    assert field_name in str(info.value)


def test_market_order_is_valued_at_the_last_price_limit_at_its_own() -> None:
    market = buy(size_usd=None, amount=0.001, price=40_000.0)
    limit = buy(size_usd=None, amount=0.001, type="limit", price=40_000.0)
    assert market.notional(50_000.0) == pytest.approx(50.0)
    assert limit.notional(50_000.0) == pytest.approx(40.0)
    assert buy(size_usd=20.0).base_amount(50_000.0) == pytest.approx(0.0004)


# --------------------------------------------------------------------------- property

_states = st.builds(
    lambda policy, sync, held, free, reserved, n_pos, n_entries, known: state(
        policy=policy,
        health=AccountHealth(state=sync),
        held_usd=held,
        free_by_currency=usd(free),
        reserved_by_currency=usd(reserved),
        balances_known=known,
        positions={s.split("/")[0]: 10.0 for s in list(MARKETS)[:n_pos]},
        entry_symbols={s: 1 for s in list(MARKETS)[-n_entries:]} if n_entries else {},
    ),
    st.sampled_from([None, BELOW_MIN, MICRO, SMALL, STANDARD]),
    st.sampled_from(list(SyncState)),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
    st.floats(0, 10_000),
    st.integers(0, 7),
    st.integers(0, 7),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    account=_states,
    amount=st.floats(1e-6, 100.0),
    symbol=st.sampled_from(list(MARKETS)),
    role=st.sampled_from([OrderRole.EXIT, OrderRole.STOP, OrderRole.TARGET]),
)
def test_exits_are_never_blocked_whatever_the_state(
    account: AccountState, amount: float, symbol: str, role: OrderRole
) -> None:
    assert first_objection(sell(symbol, amount=amount, role=role), account) is None
    assert first_objection(sell(symbol, amount=amount), account) is None
    reduce = buy(symbol, size_usd=None, amount=amount, reduce_only=True)
    assert first_objection(reduce, account) is None


@settings(max_examples=150, deadline=None)
@given(account=_states)
def test_a_freed_slot_never_turns_an_allowed_entry_into_a_block(account: AccountState) -> None:
    """Removing open entries and reservations can only unblock: the rules are monotone."""
    intent = buy("SOL/USD")
    freed = dataclasses.replace(account, entry_symbols={}, reserved_by_currency={})
    if first_objection(intent, account) is None:
        assert first_objection(intent, freed) is None


def test_a_paused_account_s_block_names_who_paused_it_when_and_how_to_resume() -> None:
    reason = first_objection(buy(), state(pause=PAUSE))
    assert reason is not None
    assert "paused by dana since 2026-03-01T00:00:00+00:00 (news at 14:00)" in reason.message
    assert "exits still pass" in reason.message
    assert "nija-broker resume --account USER:alice" in reason.message
    assert reason.figures["paused_by"] == "dana"
