"""The guard's rules: pure functions ``(intent, state) -> Reason | None``.

Nothing here holds state, locks, reads a clock or does I/O: the
:class:`~nija_broker.guard.guard.Guard` takes a :class:`AccountState` snapshot under
the account's lock and asks the rules. Each rule looks at one thing and
returns a :class:`~nija_broker.core.intent.Reason` (stable rule id, a sentence with
the figures, the figures themselves) or ``None``. Entry rules run in
:data:`ENTRY_RULES` order and the first objection wins; exits are never
judged, only warned about (DESIGN invariant 6).

Positions are matched by base asset and valued in the account's quote, dust
and money left out: :mod:`nija_broker.guard.positions` says how (its
``holdings_of`` and ``positions_of`` are re-exported here).

Money. The tiers are in USD and USD-pegged quote currencies are taken at par;
an entry is paid from the free balance of its own market's quote (USDT for
BTC/USDT), whatever the account's quote currency is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nija_broker.core.breakers import BREAKERS, Breakers
from nija_broker.core.health import AccountHealth
from nija_broker.core.intent import OrderIntent, Reason
from nija_broker.core.models import Market, Side
from nija_broker.core.pause import Pause
from nija_broker.core.symbols import base_of, quote_of
from nija_broker.core.tiers import TierPolicy
from nija_broker.guard.positions import holdings_of, positions_of

__all__ = [
    "BREAKER_RULES",
    "ENTRY_RULES",
    "AccountState",
    "Rule",
    "base_of",
    "exit_warnings",
    "first_objection",
    "holdings_of",
    "positions_of",
    "quote_of",
]

# An order sized by float arithmetic may exceed the holding by rounding dust alone.
_OVERSELL_SLACK = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountState:
    """Everything the rules may look at for one account, taken at one instant.

    ``entry_symbols`` counts live entry orders per symbol: open and pending ones
    in the order book plus the guard's own reservations (allowed entries whose
    exchange answer has not been applied yet). ``positions`` maps each base
    asset held above dust to its value in ``quote_currency``; ``holdings`` has
    every base quantity held by asset, dust included; ``unpriced_holdings`` the
    assets held that nothing values. ``held_usd`` is what live orders and
    reservations tie up (fragmentation). ``free_by_currency`` is the exchange's
    free balance per currency; ``reserved_by_currency`` what reservations claim
    of each quote currency that the free balance does not show yet.
    """

    account_id: str
    policy: TierPolicy | None
    health: AccountHealth
    equity_usd: float | None
    quote_currency: str
    balances_known: bool
    free_by_currency: Mapping[str, float]
    reserved_by_currency: Mapping[str, float]
    held_usd: float
    entry_symbols: Mapping[str, int]
    positions: Mapping[str, float]
    holdings: Mapping[str, float]
    unpriced_holdings: tuple[str, ...] = ()
    markets: Mapping[str, Market] = field(default_factory=dict)
    last_prices: Mapping[str, float] = field(default_factory=dict)
    fee_rate: float = 0.004
    breakers: Breakers | None = None
    """The circuit breakers' verdicts (``None``: the tier arms none)."""
    pause: Pause | None = None
    """The trader's pause of the account's entries (``None``: not paused)."""


Rule = Callable[[OrderIntent, AccountState], Reason | None]


# --------------------------------------------------------------------------- helpers


def _money(value: float, quote: str) -> str:
    return f"{value:,.2f} {quote}"


def _tier(state: AccountState) -> str:
    return state.policy.name if state.policy is not None else "unknown"


def _entries_on(state: AccountState, asset: str) -> dict[str, int]:
    """Live entries (open and pending) per symbol on ``asset``, whichever quote they use."""
    return {s: n for s, n in sorted(state.entry_symbols.items()) if n > 0 and base_of(s) == asset}


def _occupied(state: AccountState) -> dict[str, str]:
    """Assets that take a position slot (positions, open entries, pending entries), each
    with its label: its first entry's symbol, else the asset held."""
    slots = {asset: asset for asset in state.positions}
    for symbol, count in sorted(state.entry_symbols.items(), reverse=True):
        if count > 0:
            slots[base_of(symbol)] = symbol
    return slots


def _notional(intent: OrderIntent, state: AccountState) -> float | None:
    return intent.notional(state.last_prices.get(intent.symbol))


# --------------------------------------------------------------------------- entry rules


def paused(intent: OrderIntent, state: AccountState) -> Reason | None:
    """The trader paused the account's entries: none passes, whatever the tier."""
    pause = state.pause
    if pause is None:
        return None
    why = f" ({pause.reason})" if pause.reason else ""
    return Reason(
        "paused",
        (
            f"{state.account_id}'s entries are paused by {pause.by} since "
            f"{pause.at.isoformat(timespec='seconds')}{why}; exits still pass. "
            f"Resume with: nija-broker resume --account {state.account_id}"
        ),
        {"paused_by": pause.by, "paused_at": pause.at.isoformat(), "pause_reason": pause.reason},
    )


def sync_unknown(intent: OrderIntent, state: AccountState) -> Reason | None:
    """Fail closed: no entry while the tier is unknown, or (per tier) while sync is not ok."""
    health = state.health
    policy = state.policy
    if policy is not None and (health.known or not policy.fail_closed):
        return None
    figures: dict[str, Any] = {
        "sync_state": health.state.value,
        "consecutive_failures": health.consecutive_failures,
        "last_success": health.last_success.isoformat() if health.last_success else None,
        "last_error": health.last_error,
        "equity_usd": state.equity_usd,
    }
    if policy is None:
        error = f" Last error: {health.last_error}." if health.last_error else ""
        return Reason(
            "sync_unknown",
            (
                f"{state.account_id} has no known tier yet (equity never established, sync is "
                f"{health.state.value}); no entry until the account's state is known.{error}"
            ),
            figures,
        )
    error = f" Last error: {health.last_error}." if health.last_error else ""
    return Reason(
        "sync_unknown",
        (
            f"{state.account_id} sync is {health.state.value} after "
            f"{health.consecutive_failures} failed cycle(s), so its open orders and balance "
            f"are unknown; {policy.name} accounts get no entry until sync recovers.{error}"
        ),
        {**figures, "tier": policy.name},
    )


def below_min_tier(intent: OrderIntent, state: AccountState) -> Reason | None:
    policy = state.policy
    if policy is None or policy.entries_allowed:
        return None
    equity = (
        "unknown" if state.equity_usd is None else _money(state.equity_usd, state.quote_currency)
    )
    return Reason(
        "below_min_tier",
        (
            f"{state.account_id} equity is {equity}, in tier {policy.name}, which allows no "
            "entries: the account is too small to trade after fees."
        ),
        {"tier": policy.name, "equity_usd": state.equity_usd},
    )


def dca(intent: OrderIntent, state: AccountState) -> Reason | None:
    """No averaging: no entry on an asset already held (unless the tier allows DCA)."""
    policy = state.policy
    asset = base_of(intent.symbol)
    if policy is None or policy.allow_dca or asset not in state.positions:
        return None
    value = state.positions[asset]
    return Reason(
        "dca",
        (
            f"{state.account_id} already holds a {asset} position worth "
            f"{_money(value, state.quote_currency)}; {policy.name} does not add to an open "
            f"position (no DCA), on {intent.symbol} or any other {asset} market."
        ),
        {
            "tier": policy.name,
            "symbol": intent.symbol,
            "asset": asset,
            "position_usd": value,
            "quantity": state.holdings.get(asset),
        },
    )


def duplicate_symbol_entry(intent: OrderIntent, state: AccountState) -> Reason | None:
    """One entry per symbol, counting open orders and entries still on their way; entries on
    the same asset against another quote (BTC/USD for BTC/USDT) count too."""
    policy = state.policy
    asset = base_of(intent.symbol)
    entries = _entries_on(state, asset)
    live = sum(entries.values())
    if policy is None or policy.allow_multiple_entries_same_symbol or live == 0:
        return None
    return Reason(
        "duplicate_symbol_entry",
        (
            f"{state.account_id} already has {live} entry order(s) on {asset} "
            f"({', '.join(entries)}) open or on their way to the exchange; {policy.name} allows "
            "one entry per symbol."
        ),
        {
            "tier": policy.name,
            "symbol": intent.symbol,
            "live_entries": live,
            "entry_symbols": list(entries),
        },
    )


def max_positions(intent: OrderIntent, state: AccountState) -> Reason | None:
    """Held assets and assets with open or pending entries share the slots, one per asset."""
    policy = state.policy
    if policy is None:
        return None
    slots = _occupied(state)
    if base_of(intent.symbol) in slots or len(slots) < policy.max_positions:
        return None
    occupied = sorted(slots.values())
    return Reason(
        "max_positions",
        (
            f"{state.account_id} already uses {len(occupied)} of its {policy.max_positions} "
            f"position slots ({', '.join(occupied)}); a new entry on {intent.symbol} would make "
            f"{len(occupied) + 1}."
        ),
        {
            "tier": policy.name,
            "symbol": intent.symbol,
            "max_positions": policy.max_positions,
            "occupied": occupied,
            "positions": sorted(state.positions),
            "unpriced_holdings": list(state.unpriced_holdings),
        },
    )


def fragmentation(intent: OrderIntent, state: AccountState) -> Reason | None:
    """Capital already tied up in orders above the tier's share of equity blocks new entries."""
    policy = state.policy
    if policy is None or not policy.fragmentation_blocks_entries or state.held_usd <= 0:
        return None
    equity = state.equity_usd or 0.0
    ratio = state.held_usd / equity if equity > 0 else float("inf")
    if ratio <= policy.fragmentation_threshold:
        return None
    quote = state.quote_currency
    share = "all" if equity <= 0 else f"{ratio:.0%}"
    return Reason(
        "fragmentation",
        (
            f"{state.account_id} has {_money(state.held_usd, quote)} tied up in open and pending "
            f"orders, {share} of its {_money(equity, quote)} equity; {policy.name} blocks new "
            f"entries above {policy.fragmentation_threshold:.0%}."
        ),
        {
            "tier": policy.name,
            "held_usd": state.held_usd,
            "equity_usd": state.equity_usd,
            "ratio": ratio,
            "threshold": policy.fragmentation_threshold,
        },
    )


def price_unknown(intent: OrderIntent, state: AccountState) -> Reason | None:
    """An order nobody can value cannot be checked against size or balance: refuse (fail closed)."""
    policy = state.policy
    if policy is None or not policy.fail_closed or _notional(intent, state) is not None:
        return None
    return Reason(
        "price_unknown",
        (
            f"no price is known for {intent.symbol}, so the size of this "
            f"{intent.type.value} entry cannot be checked; give a price or size_usd."
        ),
        {"tier": policy.name, "symbol": intent.symbol, "amount": intent.amount},
    )


def unknown_market(intent: OrderIntent, state: AccountState) -> Reason | None:
    if not state.markets or intent.symbol in state.markets:
        return None
    return Reason(
        "unknown_market",
        (f"{intent.symbol} is not a market on {state.account_id}'s exchange."),
        {"symbol": intent.symbol, "markets": len(state.markets)},
    )


def min_trade_size(intent: OrderIntent, state: AccountState) -> Reason | None:
    policy = state.policy
    notional = _notional(intent, state)
    if policy is None or notional is None or notional >= policy.min_trade_usd:
        return None
    quote = state.quote_currency
    return Reason(
        "min_trade_size",
        (
            f"this entry is worth {_money(notional, quote)}, below the "
            f"{_money(policy.min_trade_usd, quote)} minimum trade of {policy.name}: fees would "
            "eat it."
        ),
        {"tier": policy.name, "notional_usd": notional, "min_trade_usd": policy.min_trade_usd},
    )


def min_notional(intent: OrderIntent, state: AccountState) -> Reason | None:
    """The exchange's own minimum order value (it would refuse the order anyway)."""
    market = state.markets.get(intent.symbol)
    notional = _notional(intent, state)
    if market is None or market.min_notional is None or notional is None:
        return None
    if notional >= market.min_notional:
        return None
    quote = state.quote_currency
    return Reason(
        "min_notional",
        (
            f"this {intent.symbol} entry is worth {_money(notional, quote)}; the exchange's "
            f"minimum order value is {_money(market.min_notional, quote)}."
        ),
        {"symbol": intent.symbol, "notional_usd": notional, "min_notional": market.min_notional},
    )


def min_amount(intent: OrderIntent, state: AccountState) -> Reason | None:
    market = state.markets.get(intent.symbol)
    if market is None or market.min_amount is None:
        return None
    amount = intent.base_amount(state.last_prices.get(intent.symbol))
    if amount is None or amount >= market.min_amount:
        return None
    return Reason(
        "min_amount",
        (
            f"this entry buys {amount:.8g} {market.base}; the exchange's minimum order on "
            f"{intent.symbol} is {market.min_amount:.8g} {market.base}."
        ),
        {"symbol": intent.symbol, "amount": amount, "min_amount": market.min_amount},
    )


def insufficient_free_balance(intent: OrderIntent, state: AccountState) -> Reason | None:
    """The free balance of the order's own quote currency (USDT for BTC/USDT, whatever the
    account's quote), less what reservations already claim of it, must pay order and fee."""
    policy = state.policy
    if not state.balances_known:
        if policy is None or not policy.fail_closed:
            return None
        return Reason(
            "insufficient_free_balance",
            (
                f"{state.account_id}'s balance has not been fetched yet, so nothing shows that "
                f"this entry can be paid for."
            ),
            {"tier": policy.name, "balances_known": False},
        )
    notional = _notional(intent, state)
    if notional is None:
        return None
    quote = quote_of(intent.symbol)
    free = state.free_by_currency.get(quote, 0.0)
    reserved = state.reserved_by_currency.get(quote, 0.0)
    cost = notional * (1.0 + state.fee_rate)
    available = free - reserved
    if cost <= available:
        return None
    return Reason(
        "insufficient_free_balance",
        (
            f"this entry needs {_money(cost, quote)} with fees; {state.account_id} has "
            f"{_money(free, quote)} free, of which {_money(reserved, quote)} "
            f"is already reserved by entries on their way, leaving {_money(available, quote)}."
        ),
        {
            "cost_usd": cost,
            "currency": quote,
            "free_quote": free,
            "reserved_usd": reserved,
            "available_usd": available,
            "fee_rate": state.fee_rate,
        },
    )


def _breaker_rule(rule: str) -> Rule:
    """The entry rule of one circuit breaker: its verdict in the snapshot, as a reason."""

    def breaker(intent: OrderIntent, state: AccountState) -> Reason | None:
        verdict = state.breakers.blocking(rule, intent.symbol) if state.breakers else None
        if verdict is None:
            return None
        return Reason(
            rule,
            verdict.message,
            {"tier": _tier(state), "symbol": intent.symbol, **verdict.figures},
        )

    breaker.__name__ = breaker.__qualname__ = rule
    return breaker


BREAKER_RULES: tuple[Rule, ...] = tuple(_breaker_rule(rule) for rule in BREAKERS)
"""Judged after every other entry rule: a breaker blocks what the account could otherwise do."""

ENTRY_RULES: tuple[Rule, ...] = (
    paused,
    sync_unknown,
    below_min_tier,
    dca,
    duplicate_symbol_entry,
    max_positions,
    fragmentation,
    price_unknown,
    unknown_market,
    min_trade_size,
    min_notional,
    min_amount,
    insufficient_free_balance,
    *BREAKER_RULES,
)
"""Entry rules, in the order they are asked; the first objection blocks the entry."""


def first_objection(
    intent: OrderIntent, state: AccountState, rules: Iterable[Rule] = ENTRY_RULES
) -> Reason | None:
    """The first rule that objects to an entry, or ``None``. Exits are never objected to."""
    if not intent.is_entry:
        return None
    for rule in rules:
        reason = rule(intent, state)
        if reason is not None:
            return reason
    return None


# --------------------------------------------------------------------------- exit warnings


def exit_warnings(intent: OrderIntent, state: AccountState) -> tuple[Reason, ...]:
    """What to tell the trader about an exit that still goes through (an oversell)."""
    if intent.is_entry or intent.side is not Side.SELL:
        return ()
    amount = intent.base_amount(state.last_prices.get(intent.symbol))
    base = base_of(intent.symbol)
    held = state.holdings.get(base, 0.0)
    if amount is None or amount <= held * (1.0 + _OVERSELL_SLACK):
        return ()
    return (
        Reason(
            "oversell",
            (
                f"this exit sells {amount:.8g} {base} but {state.account_id} holds "
                f"{held:.8g} {base} "
                f"by its balance and ledger; it goes through (exits are never blocked) and the "
                f"exchange may refuse it or sell less."
            ),
            {"symbol": intent.symbol, "amount": amount, "held": held},
        ),
    )
