"""The ``nija-broker`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .config import load_config
from .errors import ConfigError


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    table = config.tier_table()
    print(f"{args.path}: OK")
    print(f"  store: {config.store.path}")
    print(f"  api:   {config.api.host}:{config.api.port}")
    print("  tiers: " + ", ".join(f"{t.name} (from ${t.min_equity_usd:,.0f})" for t in table.tiers))
    for account in config.accounts:
        missing = []
        for field in ("api_key_env", "secret_env", "password_env"):
            name = getattr(account, field)
            if name is not None and not _env_is_set(name):
                missing.append(name)
        keys = "keys: set" if not missing else "keys: MISSING " + ", ".join(missing)
        sandbox = " sandbox" if account.sandbox else ""
        print(f"  account {account.id}: {account.exchange}{sandbox}, tier {account.tier}, "
              f"poll every {account.poll_interval_s:g}s, {keys}")
    return 0


def _env_is_set(name: str) -> bool:
    import os

    return bool(os.environ.get(name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nija-broker",
        description="Order-state and risk layer for the NIJA trading bot.",
    )
    parser.add_argument("--version", action="version", version=f"nija-broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a configuration file and explain every problem"
    )
    check.add_argument("path", help="path to the TOML configuration")
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
