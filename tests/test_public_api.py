from __future__ import annotations

import ast
from pathlib import Path

import nija_broker

PACKAGE = Path(nija_broker.__file__).resolve().parent


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert nija_broker.__all__ == sorted(nija_broker.__all__)
    for name in nija_broker.__all__:
        assert getattr(nija_broker, name) is not None, name


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
    import subprocess
    import sys

    for first in ("adapters.base", "adapters.emulator", "adapters.sim"):
        result = subprocess.run([sys.executable, "-c", f"import {first}; import nija_broker"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
