"""Where the runtime's exchanges come from: the backend installed under the entry point
group ``nija_broker.exchanges`` (``adapters`` declares ``ccxt``). Nothing in the service
imports ``adapters``; the adapter and ccxt load only when an exchange is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from nija_broker.core.clock import Clock
from nija_broker.core.errors import ConfigError
from nija_broker.core.exchange import EXCHANGE_BACKENDS
from nija_broker.service.config import Config

if TYPE_CHECKING:
    from nija_broker.core.exchange import Exchange, ExchangeBackend, ExchangeSpec

__all__ = ["build_exchanges", "exchange_backend", "exchange_specs", "open_exchanges"]


def exchange_backend(name: str = "ccxt") -> ExchangeBackend:
    """The exchange package installed under ``name`` in the entry point group
    ``nija_broker.exchanges``: the runtime never imports ``adapters`` itself
    (dependencies point inward), and the adapter module loads only now."""
    from importlib.metadata import entry_points

    found = {ep.value: ep for ep in entry_points(group=EXCHANGE_BACKENDS, name=name)}
    if not found:
        raise ConfigError(
            f"no exchange backend {name!r} is installed (entry point group "
            f"{EXCHANGE_BACKENDS!r}); install nija-broker itself (pip install nija-broker, "
            f"or pip install -e . in a checkout), which declares it"
        )
    if len(found) > 1:  # two packages claim the name: picking one would be a guess
        raise ConfigError(
            f"exchange backend {name!r} is declared more than once: "
            f"{', '.join(sorted(found))}; uninstall all but one"
        )
    (entry,) = found.values()
    try:
        loaded: ExchangeBackend = entry.load()
    except ImportError as exc:
        raise ConfigError(
            f"the exchange backend {name!r} ({entry.value}) does not import: {exc}"
        ) from exc
    return loaded


def exchange_specs(config: Config, environ: Mapping[str, str] | None) -> dict[str, ExchangeSpec]:
    """Every configured account's exchange spec: its keys read (a missing one is a
    :class:`ConfigError` naming it), nothing built and nothing imported."""
    # One deadline per call, the configured one, for the guard's sends as for the polls.
    timeout_s = config.reconciler.settings(list(config.accounts)).call_timeout_s
    return {a.id: a.exchange_spec(environ, call_timeout_s=timeout_s) for a in config.accounts}


def build_exchanges(specs: Mapping[str, ExchangeSpec], clock: Clock) -> dict[str, Exchange]:
    """The exchanges of ``specs``, through the installed ccxt backend (ccxt loads here).

    Settings an exchange cannot take are a :class:`ConfigError` naming the account's
    key: the backend's own (``exchange``, ``sandbox``), else ``accounts.<id>.ccxt`` for
    whatever ccxt's constructor refused (``run`` finds them here, ``check-config`` by
    building each exchange without its keys)."""
    backend = exchange_backend("ccxt")
    return {account_id: _open(backend, spec, clock) for account_id, spec in specs.items()}


def _open(backend: ExchangeBackend, spec: ExchangeSpec, clock: Clock) -> Exchange:
    try:
        return backend.open_exchange(spec, clock)
    except ConfigError:
        raise
    except Exception as exc:  # ccxt refusing its constructor's table
        raise ConfigError(
            f"account {spec.account_id!r}: ccxt refused this account's settings: "
            f"{type(exc).__name__}: {exc}",
            key=f"accounts.{spec.account_id}.ccxt",
        ) from exc


def open_exchanges(
    config: Config, clock: Clock, environ: Mapping[str, str] | None
) -> dict[str, Exchange]:
    """Every configured account's exchange, through the installed ccxt backend."""
    return build_exchanges(exchange_specs(config, environ), clock)
