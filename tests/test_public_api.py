from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import nija_broker

PACKAGE = Path(nija_broker.__file__).resolve().parent


def _run_fresh(code: str) -> list[str]:
    """The lines ``code`` prints in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _modules_after(code: str) -> set[str]:
    return set(_run_fresh(f"{code}\nimport sys\nprint(*sys.modules, sep='\\n')"))


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert nija_broker.__all__ == sorted(nija_broker.__all__)
    for name in nija_broker.__all__:
        assert getattr(nija_broker, name) is not None, name


def test_every_public_name_is_the_object_its_submodule_defines() -> None:
    assert sorted(nija_broker._EXPORTS) == nija_broker.__all__
    for name, submodule in nija_broker._EXPORTS.items():
        module = importlib.import_module(f"nija_broker.{submodule}")
        assert getattr(nija_broker, name) is getattr(module, name), name


def test_from_import_of_every_public_name_works() -> None:
    namespace: dict[str, object] = {}
    exec(f"from nija_broker import {', '.join(nija_broker.__all__)}", namespace)
    assert all(namespace[name] is getattr(nija_broker, name) for name in nija_broker.__all__)


def test_dir_lists_every_public_name_before_any_is_used() -> None:
    listed = set(_run_fresh("import nija_broker\nprint(*dir(nija_broker), sep='\\n')"))
    assert set(nija_broker.__all__) <= listed
    assert "__version__" in listed


def test_unknown_name_raises_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = nija_broker.no_such_name  # type: ignore[attr-defined]


def test_guarded_stays_the_decorator_once_its_submodule_is_imported() -> None:
    """``nija_broker.guarded`` is the public decorator, whichever of its modules the
    runtime imported first."""
    lines = _run_fresh(
        "import nija_broker.service.runtime\n"
        "import nija_broker, nija_broker.guard.guarded as by_import\n"
        "from nija_broker import guarded\n"
        "import sys\n"
        "print(guarded is by_import.guarded"
        " is sys.modules['nija_broker.guard.guarded'].guarded)"
    )
    assert lines == ["True"]


def test_importing_the_package_or_its_errors_loads_no_runtime() -> None:
    for code in (
        "import nija_broker",
        "import nija_broker.core.errors",
        "from nija_broker.core import errors",
        "from nija_broker import ConfigError",
    ):
        loaded = _modules_after(code)
        heavy = {m for m in loaded if m.split(".")[0] in {"aiohttp", "ccxt", "adapters"}}
        assert heavy == set(), code
        runtime = {
            "nija_broker.service.runtime",
            "nija_broker.guard.guard",
            "nija_broker.state.store",
        }
        assert loaded & runtime == set(), code


def test_nija_broker_never_imports_ccxt() -> None:
    """Only adapters/ talks to exchanges (DESIGN: layout)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "ccxt" or n.startswith("ccxt.") for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_adapters_can_be_imported_before_nija_broker() -> None:
    """Bench scripts and `python -m adapters.emulator` import adapters first."""
    for first in ("adapters.base", "adapters.emulator", "adapters.sim"):
        result = subprocess.run(
            [sys.executable, "-c", f"import {first}; import nija_broker"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
