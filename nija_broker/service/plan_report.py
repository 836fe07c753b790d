"""What ``check-config`` says of each account's polling: its listing plan and what it costs.

Venues limit by weight, not by calls (Binance: 6,000 request weight a minute per
IP, shared by every account this machine runs there). For each account this
prints the open-orders listing the reconciler will choose
(:func:`~nija_broker.sync.weights.describe_listing`), its request weight a
minute at the account's intervals (:func:`~nija_broker.sync.weights.plan_weight`,
with orders on :data:`ASSUMED_SYMBOLS` symbols, the issue's example, since the
orders are not known before the run), and how many such accounts the venue's
documented limit carries. The weights come from the exchange itself, built
without keys as ``run`` builds it (nothing is sent).

It also warns where ``rate_budget = "off"`` points at an exchange that is not
on this machine: nothing then keeps the account under the venue's limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from nija_broker.core.clock import SystemClock
from nija_broker.core.exchange import Capabilities
from nija_broker.core.settings import ReconcilerSettings
from nija_broker.service.config import AccountConfig
from nija_broker.service.config_problems import ENV_FIELDS
from nija_broker.sync.weights import plan_weight

__all__ = [
    "ASSUMED_SYMBOLS",
    "account_capabilities",
    "plan_lines",
    "rate_budget_warning",
]

ASSUMED_SYMBOLS = 2
"""Symbols with open orders the printed figures assume (the sweep covers those and the
account's ``watch_symbols``; one ticker request values what is held)."""


def account_capabilities(account: AccountConfig) -> Capabilities | None:
    """The capabilities (and request weights) of the account's exchange, built without its
    keys and without a budget; ``None`` where it cannot be built (listed as a problem)."""
    from nija_broker.service.exchanges import exchange_backend

    try:
        spec = account.model_copy(
            update={**dict.fromkeys(ENV_FIELDS), "rate_budget": "off"}
        ).exchange_spec(environ={})
        return exchange_backend("ccxt").open_exchange(spec, SystemClock()).capabilities
    except Exception:  # config_problems names why; the plan is only left out
        return None


def plan_lines(
    account: AccountConfig, settings: ReconcilerSettings, capabilities: Capabilities
) -> list[str]:
    """The account's listing plan, its weight a minute and what the venue's limit carries."""
    full_s = settings.full_listing_interval_for(account.id)
    weights = capabilities.weights
    sweep_symbols = ASSUMED_SYMBOLS + len(set(account.watch_symbols))
    sweep = sweep_symbols if "fetch_closed_orders" in weights.per_symbol else 1

    def plan(holdings: bool) -> Any:
        return plan_weight(
            capabilities,
            poll_interval_s=account.poll_interval_s,
            balance_interval_s=account.balance_interval_s,
            full_listing_interval_s=full_s,
            symbols=ASSUMED_SYMBOLS,
            ticker_symbols=ASSUMED_SYMBOLS,
            sweep_requests=sweep,
            holdings_every_cycle=holdings,
        )

    usual, no_dca = plan(False), plan(True)
    unit = weights.unit
    lines = [
        f"open orders: {usual.listing}",
        f"{unit} with orders on {ASSUMED_SYMBOLS} symbols: {usual.total:,.0f}/min (listings "
        f"{usual.listings:,.0f}, balance {usual.balances:,.0f}, sweep {usual.sweep:,.0f})",
        f"  {no_dca.total:,.0f}/min on a tier without DCA (it reads the balance every cycle)",
    ]
    limit = weights.limit_per_min
    if limit is None:
        lines.append(f"limit: none published in weights; {unit} counted 1 a request")
    elif weights.per_key:
        usual_pct, no_dca_pct = usual.total / limit * 100, no_dca.total / limit * 100
        lines += [
            f"limit: {limit:,.4g} {unit}/min per API key (each account its own)",
            f"  {usual_pct:.0f}% of it, {no_dca_pct:.0f}% on a tier without DCA"
            + (" (past 100%, the budget spaces the cycles)" if no_dca_pct > 100 else ""),
        ]
    else:
        lines += [
            f"limit: {limit:,.0f} {unit}/min per IP, shared by every {account.exchange} "
            "account on this machine",
            f"  {usual.accounts_per_limit(limit)} such accounts per IP, "
            f"{no_dca.accounts_per_limit(limit)} on a tier without DCA",
        ]
    if account.rate_budget == "off":
        lines.append("rate budget: off (requests wait for no limit: for a local exchange)")
    return lines


def _urls(table: Any) -> Iterator[str]:
    if isinstance(table, str):
        yield table
    elif isinstance(table, Mapping):
        for value in table.values():
            yield from _urls(value)
    elif isinstance(table, list | tuple):
        for value in table:
            yield from _urls(value)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def rate_budget_warning(account: AccountConfig) -> str | None:
    """A warning where ``rate_budget = "off"`` is set on an exchange off loopback."""
    if account.rate_budget != "off":
        return None
    urls = [u for u in _urls(account.ccxt.get("urls", {})) if "://" in u]
    away = [u for u in urls if not _loopback(u)]
    if urls and not away:
        return None
    where = f"{away[0]} is not a loopback address" if away else "it uses the venue's own URLs"
    return (
        f"warning: accounts.{account.id}.rate_budget is 'off' but {where}: nothing keeps "
        f"this account under {account.exchange}'s rate limits, and going past them earns "
        "429s, then IP bans (418). Set rate_budget = 'venue' unless the exchange is local."
    )
