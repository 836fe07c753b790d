"""The ``nija-broker`` command.

::

    nija-broker demo [--duration S] [--seed N] [--exchange binance|kraken] [--out DIR]
    nija-broker run --config PATH
    nija-broker status [--account ID] [--json] [--config PATH | --url URL]
    nija-broker check-config PATH
    nija-broker emulator --port N [--seed N] [--dialect binance|kraken]
    nija-broker report --account ID --out DIR [--config PATH]
    nija-broker resume --account ID [--config PATH | --url URL]
    nija-broker import-seed-state DIR [--store PATH] [--dry-run]

Exit codes: 0 success, 1 runtime failure, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nija_broker import __version__
from nija_broker.core.errors import ConfigError, NijaBrokerError
from nija_broker.service.config import Config, config_problems, load_checked_config, load_config

DEFAULT_CONFIG = "config/live.toml"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""``run --log-level``: the standard library's level names, in any case."""


def _load(path: str, *, to_run: bool = False) -> Config | None:
    """The configuration, or ``None`` once its problems are printed. ``to_run``: every check
    ``check-config`` makes (environment, exchanges, binding, store), not only its shape."""
    try:
        return load_checked_config(path) if to_run else load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


# ---------------------------------------------------------------------------- check-config


def _check_config(args: argparse.Namespace) -> int:
    """Every problem ``run`` would refuse, in one pass (stderr, exit 2); else a summary, with
    each account's listing plan and request weight (warnings, which do not refuse, on
    stderr)."""
    problems = config_problems(args.path)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        print(
            f"{args.path}: {count}; nija-broker run would refuse this configuration",
            file=sys.stderr,
        )
        return 2
    from nija_broker.service.plan_report import account_capabilities, plan_lines
    from nija_broker.service.plan_report import rate_budget_warning as budget_warning

    config = load_config(args.path)
    table = config.tier_table()
    settings = config.reconciler.settings(config.accounts)
    print(f"{args.path}: OK, nija-broker run would start with it")
    print(f"  store: {config.store.path}")
    print(f"  api:   {config.api.host}:{config.api.port}")
    print("  tiers: " + ", ".join(f"{t.name} (from ${t.min_equity_usd:,.0f})" for t in table.tiers))
    for account in config.accounts:
        named = [
            name
            for name in (account.api_key_env, account.secret_env, account.password_env)
            if name is not None
        ]
        keys = f"keys: set ({', '.join(named)})" if named else "keys: none named"
        sandbox = " sandbox" if account.sandbox else ""
        print(
            f"  account {account.id}: {account.exchange}{sandbox}, tier {account.tier}, "
            f"poll every {account.poll_interval_s:g}s, {keys}"
        )
        capabilities = account_capabilities(account)
        if capabilities is not None:
            for line in plan_lines(account, settings, capabilities):
                print(f"    {line}")
        warning = budget_warning(account)
        if warning is not None:
            print(f"{args.path}: {warning}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- run


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1 s, got {text}")
    return value


async def _serve(config: Config) -> None:
    from nija_broker.service.runtime import Broker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Broker(config) as broker:
        api = broker.api.url if broker.api is not None else "off"
        print(
            f"nija-broker running: {len(config.accounts)} accounts, API {api}; "
            "Ctrl-C or SIGTERM to stop",
            flush=True,
        )
        await stop.wait()
        print("nija-broker stopping ...", flush=True)
    print("nija-broker stopped", flush=True)


def _run(args: argparse.Namespace) -> int:
    import sqlite3

    from nija_broker.service.logs import configure_logging

    config = _load(args.config, to_run=True)  # what check-config checks
    if config is None:
        return 2
    configure_logging(args.log_level)
    # The sidecar's own process only (never a bot embedding the broker): while the
    # reconciler's thread parses, the API thread waits for the GIL, which CPython hands
    # over every switch interval (5 ms by default). Measured with bench/api_load.py
    # (300 accounts x 20 orders, 2 cores), 1 ms and 0.5 ms did not lower the loaded guard
    # p99 beyond the run-to-run noise, so the interpreter's own stays unless asked.
    switch_interval_s = sys.getswitchinterval()
    if args.switch_interval_s is not None:
        sys.setswitchinterval(args.switch_interval_s)
    try:
        asyncio.run(_serve(config))
    except ConfigError as exc:
        # A store refused at start (in use by another process, read-only, damaged,
        # not ours) is a ConfigError too: one line, exit 2, nothing created.
        print(str(exc), file=sys.stderr)
        return 2
    except NijaBrokerError as exc:
        print(f"nija-broker: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        # The store failed while running (disk full, I/O error): one line, not a traceback.
        print(f"nija-broker: the store {config.store.path} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        sys.setswitchinterval(switch_interval_s)  # a caller's own process (tests) as it was
    return 0


# ---------------------------------------------------------------------------- status


def _api_target(args: argparse.Namespace) -> tuple[str, str | None, Config | None] | None:
    """The sidecar's API: ``--url``, else the configuration's binding and token (``None``
    once the configuration's problems are printed)."""
    if args.url is not None:
        return args.url, None, None
    config = _load(args.config)
    if config is None:
        return None
    token = os.environ.get(config.api.token_env) if config.api.token_env else None
    return f"http://{config.api.host}:{config.api.port}", token, config


def _call_api(
    url: str, path: str, token: str | None, *, post: bool = False, timeout_s: float = 3.0
) -> dict[str, Any]:
    """The sidecar's JSON answer to ``GET`` (or an empty-bodied ``POST``) of ``path``."""
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=b"{}" if post else None,
        method="POST" if post else "GET",
        headers={"Content-Type": "application/json"} if post else {},
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        document: dict[str, Any] = json.loads(response.read())
        return document


def _status_from_store(config: Config) -> dict[str, Any]:
    """No sidecar running: read the store (sync state then shows as offline)."""
    from nija_broker.service.status import status_document, status_rows
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store

    path = Path(config.store.path)
    if not path.exists():
        raise ConfigError(f"no sidecar answered and the store {path} does not exist yet")
    now = datetime.now(UTC)
    with Store(path) as store:
        rows = status_rows(Books(store), {}, now)
        return status_document(rows, now)


def _status(args: argparse.Namespace) -> int:
    from nija_broker.service.status import AccountStatus, render_table

    target = _api_target(args)
    if target is None:
        return 2
    url, token, config = target
    try:
        document = _call_api(url, "/v1/accounts", token)
        source = url
    except (urllib.error.URLError, OSError) as exc:
        if config is None:
            print(f"nija-broker status: {url} did not answer: {exc}", file=sys.stderr)
            return 1
        try:
            document = _status_from_store(config)
        except ConfigError as err:
            print(f"nija-broker status: {err}", file=sys.stderr)
            return 1
        source = f"{config.store.path} (sidecar not running)"
    if args.account is not None:
        document["accounts"] = [a for a in document["accounts"] if a["account_id"] == args.account]
        if not document["accounts"]:
            print(f"nija-broker status: unknown account {args.account!r}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    rows = [AccountStatus.model_validate(a) for a in document["accounts"]]
    print(f"source: {source}")
    print(render_table(rows))
    return 0


# ---------------------------------------------------------------------------- resume


def _resume(args: argparse.Namespace) -> int:
    """POST /v1/accounts/{id}/resume on the running sidecar: the breakers live there."""
    target = _api_target(args)
    if target is None:
        return 2
    url, token, _ = target
    account = urllib.parse.quote(args.account, safe="")
    try:
        answer = _call_api(url, f"/v1/accounts/{account}/resume", token, post=True, timeout_s=5.0)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        print(f"nija-broker resume: {url} answered {exc.code}: {detail}", file=sys.stderr)
        return 2 if exc.code == 404 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"nija-broker resume: {url} did not answer ({exc}); the breakers live in the "
            "running sidecar (nija-broker run)",
            file=sys.stderr,
        )
        return 1
    resumed = answer.get("resumed") or []
    if resumed:
        print(f"{args.account}: resumed {', '.join(resumed)} at {answer.get('at')}")
    else:
        print(f"{args.account}: no breaker was tripped; nothing to resume")
    for rule, view in sorted((answer.get("breakers") or {}).items()):
        state = "TRIPPED" if view.get("tripped") else "ok"
        print(f"  {rule}: {state} ({view.get('reason')})")
    return 0


# ---------------------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    from nija_broker.service.report import write_report
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store

    config = _load(args.config)
    if config is None:
        return 2
    path = Path(config.store.path)
    if not path.exists():
        print(f"nija-broker report: the store {path} does not exist yet", file=sys.stderr)
        return 1
    with Store(path) as store:
        if args.account not in store.accounts():
            known = ", ".join(store.accounts()) or "none"
            print(
                f"nija-broker report: unknown account {args.account!r} (known: {known})",
                file=sys.stderr,
            )
            return 2
        book = Books(store).get(args.account)
        out = write_report(book, Path(args.out), store=store, now=datetime.now(UTC))
    print(f"report for {args.account}: {out}")
    return 0


# ---------------------------------------------------------------------------- import-seed-state


def _import_seed_state(args: argparse.Namespace) -> int:
    """The seed's JSON state in DIR, into the store once; every bad record named (exit 2)."""
    import sqlite3

    from nija_broker.compat.seed_state import SeedStateError, import_seed_state

    source = Path(args.dir)
    store = Path(args.store) if args.store else None
    try:
        report = import_seed_state(source, store, dry_run=args.dry_run)
    except SeedStateError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"nija-broker import-seed-state: nothing imported from {source} "
            f"({len(exc.problems)} problem{'s' if len(exc.problems) > 1 else ''})",
            file=sys.stderr,
        )
        return 2
    except ConfigError as exc:  # the store: locked by a running sidecar, damaged, not ours
        print(str(exc), file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"nija-broker import-seed-state: the store failed: {exc}", file=sys.stderr)
        return 1
    verb = "would take" if args.dry_run else "took"
    print(f"import-seed-state {source} -> {report.store}: {verb} {report.taken} records")
    for account in report.accounts.values():
        print(f"  {account.line()}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


# ---------------------------------------------------------------------------- emulator, demo


def _emulator(args: argparse.Namespace) -> int:
    from nija_broker.demo.demo import run_emulator as emulator_main

    argv = ["--host", args.host, "--port", str(args.port), "--seed", str(args.seed)]
    if args.dialect != "binance":
        argv += ["--dialect", args.dialect]
    return emulator_main(argv)


def _demo(args: argparse.Namespace) -> int:
    from nija_broker.demo.demo import run_demo

    return run_demo(
        duration_s=args.duration,
        seed=args.seed,
        exchange=args.exchange,
        out_dir=Path(args.out) if args.out else None,
    )


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nija-broker",
        description="Order-state and risk layer for the NIJA trading bot.",
    )
    parser.add_argument("--version", action="version", version=f"nija-broker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run everything offline against the built-in exchange emulator (no keys, no network)",
    )
    demo.add_argument("--duration", type=float, default=40.0, help="seconds (default 40)")
    demo.add_argument("--seed", type=int, default=7, help="price path seed (default 7)")
    demo.add_argument(
        "--exchange",
        choices=("binance", "kraken"),
        default="binance",
        help="which exchange dialect the emulator speaks (default binance)",
    )
    demo.add_argument("--out", help="where to write the reports (default: a new temp dir)")
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="the sidecar: reconciler for every account + HTTP API")
    run.add_argument("--config", required=True, help="path to the TOML configuration")
    run.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="the lowest level logged (default INFO)",
    )
    run.add_argument(
        "--switch-interval-s",
        type=_positive_seconds,
        default=None,
        help="how often CPython may hand the GIL to another thread (default: "
        "Python's own, 0.005): a bound on how long a guard call waits while "
        "the reconciler parses (bench/api_load.py measures it)",
    )
    run.set_defaults(handler=_run)

    status = commands.add_parser(
        "status",
        help="per-account rows: tier, equity, held capital, "
        "open and stale orders, drawdown, sync health",
    )
    status.add_argument("--account", help="only this account")
    status.add_argument("--json", action="store_true", help="the stable JSON document")
    status.add_argument(
        "--config",
        default=os.environ.get("NIJA_BROKER_CONFIG", DEFAULT_CONFIG),
        help=f"configuration (default $NIJA_BROKER_CONFIG or {DEFAULT_CONFIG})",
    )
    status.add_argument("--url", help="ask this API instead of the configured one")
    status.set_defaults(handler=_status)

    check = commands.add_parser(
        "check-config", help="validate a configuration file and explain every problem"
    )
    check.add_argument("path", help="path to the TOML configuration")
    check.set_defaults(handler=_check_config)

    emulator = commands.add_parser("emulator", help="the exchange emulator on its own")
    emulator.add_argument("--port", type=int, default=8900)
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--seed", type=int, default=0)
    emulator.add_argument("--dialect", choices=("binance", "kraken"), default="binance")
    emulator.set_defaults(handler=_emulator)

    report = commands.add_parser("report", help="an HTML report of one account")
    report.add_argument("--account", required=True)
    report.add_argument("--out", required=True, help="directory to write the report to")
    report.add_argument("--config", default=os.environ.get("NIJA_BROKER_CONFIG", DEFAULT_CONFIG))
    report.set_defaults(handler=_report)

    resume = commands.add_parser(
        "resume",
        help="clear an account's tripped circuit breakers on the running sidecar "
        "(they trip again only if their figures get worse)",
    )
    resume.add_argument("--account", required=True)
    resume.add_argument(
        "--config",
        default=os.environ.get("NIJA_BROKER_CONFIG", DEFAULT_CONFIG),
        help=f"configuration (default $NIJA_BROKER_CONFIG or {DEFAULT_CONFIG})",
    )
    resume.add_argument("--url", help="the sidecar's API instead of the configured one")
    resume.set_defaults(handler=_resume)

    seed = commands.add_parser(
        "import-seed-state",
        help="take the seed trackers' JSON state files into the store, "
        "once (running it again takes nothing twice)",
    )
    seed.add_argument(
        "dir",
        metavar="DIR",
        help="the seed's data_dir (account_orders_state.json, performance_*.json)",
    )
    seed.add_argument(
        "--store",
        help="the store to import into (default: DIR/"
        "nija_broker.sqlite3, where nija_broker.compat keeps "
        "the state of that data_dir)",
    )
    seed.add_argument(
        "--dry-run", action="store_true", help="report what would be taken, write nothing"
    )
    seed.set_defaults(handler=_import_seed_state)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
    except BrokenPipeError:
        # The reader went away (`nija-broker status | head -1`) and has what it wanted.
        # Python's docs (signal, "Note on SIGPIPE"): point stdout at devnull, so the flush
        # at exit finds nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    raise SystemExit(main())
