"""Dependencies point inward (issue 13, DESIGN: Layout): the rule as data, checked on the source.

The layers, innermost first: ``core`` (pure values and rules, the Exchange
protocol) <- ``state`` (store, books) <- ``sync`` (reconciler) and ``guard``
<- ``service`` (runtime, API, CLI) <- ``demo`` (a composition root that
also builds the built-in emulator). ``compat`` (the seed's API, loaded by the
live bot) sits on ``core`` and ``state`` only. ``adapters/`` implements the
core's Exchange protocol and imports nothing else of ``nija_broker``; the
runtime finds it through an entry point, never by importing it.

The scan reads every import statement, at module level, under
``TYPE_CHECKING`` or inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import adapters
import nija_broker
from nija_broker.core.clock import FakeClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.exchange import Exchange, ExchangeSpec
from nija_broker.service.config import AccountConfig

PACKAGE = Path(nija_broker.__file__).resolve().parent
ADAPTERS = Path(adapters.__file__).resolve().parent

ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "state": frozenset({"core", "state"}),
    "sync": frozenset({"core", "state", "sync"}),
    "guard": frozenset({"core", "state", "guard"}),
    "compat": frozenset({"core", "state", "compat"}),
    "service": frozenset({"core", "state", "sync", "guard", "compat", "service", "package"}),
    "demo": frozenset({"core", "state", "sync", "guard", "service", "demo", "adapters"}),
    # nija_broker/__init__.py (lazy re-exports), client.py, __main__.py
    "package": frozenset({"core", "state", "sync", "guard", "compat", "service", "package"}),
}
"""Which layers a module of each layer may import from (``adapters`` counts as a layer)."""

OUTWARD: dict[tuple[str, str], str] = {
    (
        "nija_broker.service.cli",
        "demo",
    ): "the CLI is the front door of every command, `demo` and `emulator` included; "
    "it imports the demo inside those commands only",
}
"""The imports that point outward, each with its reason; each must be a lazy import."""


@dataclass(frozen=True)
class Import:
    module: str
    """The importing module, dotted."""
    target: str
    """The imported module, dotted and absolute."""
    lazy: bool
    """Inside a function (run on call), not at module level or under TYPE_CHECKING."""


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(root: Path) -> Iterator[Import]:
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy_nodes = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            lazy = id(node) in lazy_nodes
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, lazy)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against the importing package
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                yield Import(module, target, lazy)


def _layer(dotted: str) -> str | None:
    """The layer of a module of this project; None for the standard library and others."""
    parts = dotted.split(".")
    if parts[0] == "adapters":
        return "adapters"
    if parts[0] != "nija_broker":
        return None
    if len(parts) == 1 or parts[1] in {"client", "__main__"}:
        return "package"
    return parts[1]


def _project_imports(root: Path) -> list[Import]:
    return [i for i in _imports(root) if _layer(i.target) is not None]


def test_no_module_of_the_product_but_the_demo_imports_adapters() -> None:
    offenders = sorted(
        f"{i.module} imports {i.target}"
        for i in _project_imports(PACKAGE)
        if _layer(i.target) == "adapters" and _layer(i.module) != "demo"
    )
    assert offenders == []


def test_adapters_import_only_the_core_of_nija_broker() -> None:
    offenders = sorted(
        f"{i.module} imports {i.target}"
        for i in _project_imports(ADAPTERS)
        if _layer(i.target) not in {"adapters", "core"}
    )
    assert offenders == []


def test_the_core_imports_nothing_outside_itself() -> None:
    offenders = sorted(
        f"{i.module} imports {i.target}"
        for i in _project_imports(PACKAGE)
        if _layer(i.module) == "core" and _layer(i.target) != "core"
    )
    assert offenders == []


def test_every_import_follows_the_layer_order() -> None:
    offenders = []
    for i in _project_imports(PACKAGE):
        source, target = _layer(i.module), _layer(i.target)
        assert source is not None
        assert target is not None
        if target in ALLOWED[source]:
            continue
        reason = OUTWARD.get((i.module, target))
        if reason is None or not i.lazy:
            offenders.append(f"{i.module} ({source}) imports {i.target} ({target})")
    assert sorted(offenders) == []


def test_no_inner_layer_imports_the_service() -> None:
    inner = {"core", "state", "sync", "guard", "compat"}
    assert all("service" not in ALLOWED[layer] for layer in inner)
    offenders = sorted(
        f"{i.module} imports {i.target}"
        for i in _project_imports(PACKAGE)
        if _layer(i.module) in inner and _layer(i.target) == "service"
    )
    assert offenders == []


def test_every_layer_of_the_tree_has_a_rule() -> None:
    """A new subpackage must be placed in the order before it can be imported at all."""
    layers = {_layer(_module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED)
    assert {_layer(module) for module, _ in OUTWARD} | {t for _, t in OUTWARD} <= set(ALLOWED)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _of(modules: set[str], *packages: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


def test_importing_adapters_base_loads_no_aiohttp_ccxt_or_service() -> None:
    loaded = _modules_after("import adapters.base")
    assert _of(loaded, "aiohttp", "ccxt", "nija_broker.service") == []


def test_importing_the_core_errors_loads_no_service_and_no_aiohttp() -> None:
    loaded = _modules_after("from nija_broker.core import errors")
    assert _of(loaded, "aiohttp", "ccxt", "adapters", "nija_broker.service") == []


def test_the_runtime_loads_no_adapter_until_it_builds_an_exchange(tmp_path: Path) -> None:
    store = json.dumps(str(tmp_path / "broker.sqlite3"))
    before = _modules_after("import nija_broker.service.runtime")
    assert _of(before, "adapters", "ccxt") == []
    after = _modules_after(
        "import asyncio\n"
        "from nija_broker.core.clock import FakeClock\n"
        "from nija_broker.service import exchanges, runtime\n"
        "from nija_broker.service.config import parse_config\n"
        f"config = parse_config({{'store': {{'path': {store}}},"
        " 'accounts': [{'id': 'A', 'exchange': 'binance'}]})\n"
        "built = exchanges.open_exchanges(config, FakeClock(), {})\n"
        "assert list(built) == ['A'], built\n"
        "asyncio.run(built['A'].aclose())\n"
    )
    assert {"adapters.ccxt_backend", "adapters.ccxt_adapter"} <= after


def test_the_installed_ccxt_backend_builds_an_exchange_from_a_spec() -> None:
    from nija_broker.service import exchanges  # here: the scans above need no service

    backend = exchanges.exchange_backend("ccxt")
    assert "binance" in backend.exchange_ids()
    spec = ExchangeSpec(
        account_id="USER:alice",
        exchange_id="binance",
        api_key="alice-api-key-123",
        secret="alice-secret-456",
    )
    exchange = backend.open_exchange(spec, FakeClock())
    try:
        assert isinstance(exchange, Exchange)
        assert (exchange.account_id, exchange.exchange_id) == ("USER:alice", "binance")
    finally:
        asyncio.run(exchange.aclose())


def test_the_configured_call_timeout_is_the_deadline_of_every_exchange_call(
    tmp_path: Path,
) -> None:
    """``[reconciler] call_timeout_s`` bounds the reconciler's calls and, through the spec,
    the calls nobody else bounds (the guard's sends): one deadline, whoever calls."""
    from nija_broker.service import exchanges
    from nija_broker.service.config import parse_config

    config = parse_config(
        {
            "store": {"path": str(tmp_path / "broker.sqlite3")},
            "reconciler": {"call_timeout_s": 7.5},
            "accounts": [{"id": "PLATFORM", "exchange": "binance"}],
        }
    )
    built = exchanges.open_exchanges(config, FakeClock(), {})
    try:
        assert built["PLATFORM"].call_timeout_s == 7.5  # type: ignore[attr-defined]
    finally:
        asyncio.run(built["PLATFORM"].aclose())


def test_runtime_without_an_installed_exchange_backend_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nija_broker.service import exchanges

    def nothing_installed(**_: object) -> importlib.metadata.EntryPoints:
        return importlib.metadata.EntryPoints(())

    monkeypatch.setattr(importlib.metadata, "entry_points", nothing_installed)
    with pytest.raises(ConfigError, match=r"no exchange backend 'ccxt'.*nija_broker\.exchanges"):
        exchanges.exchange_backend("ccxt")


def test_an_account_config_gives_the_adapter_a_spec_whose_repr_hides_the_keys() -> None:
    account = AccountConfig(
        id="USER:alice",
        exchange="kraken",
        sandbox=True,
        api_key_env="ALICE_KEY",
        secret_env="ALICE_SECRET",
        ccxt={"options": {"recvWindow": 7000}},
    )
    spec = account.exchange_spec(
        {"ALICE_KEY": "alice-api-key-123", "ALICE_SECRET": "alice-secret-456"}
    )
    assert (spec.account_id, spec.exchange_id, spec.sandbox) == ("USER:alice", "kraken", True)
    assert (spec.api_key, spec.secret, spec.password) == (
        "alice-api-key-123",
        "alice-secret-456",
        None,
    )
    assert dict(spec.options) == {"options": {"recvWindow": 7000}}
    assert "alice-api-key-123" not in repr(spec)
    assert "alice-secret-456" not in repr(spec)


def test_a_missing_key_variable_stops_the_spec_naming_only_the_variable() -> None:
    account = AccountConfig(id="USER:alice", exchange="kraken", api_key_env="ALICE_KEY")
    with pytest.raises(ConfigError, match="ALICE_KEY"):
        account.exchange_spec({})


def test_two_packages_declaring_the_same_exchange_backend_are_refused_not_guessed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nija_broker.service import exchanges

    def two_installed(**_: object) -> importlib.metadata.EntryPoints:
        return importlib.metadata.EntryPoints(
            importlib.metadata.EntryPoint("ccxt", value, "nija_broker.exchanges")
            for value in ("adapters.ccxt_backend:backend", "other_pkg:backend")
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", two_installed)
    with pytest.raises(ConfigError, match=r"declared more than once.*other_pkg:backend"):
        exchanges.exchange_backend("ccxt")
