"""The ``nija-broker`` command.

::

    nija-broker demo [--duration S] [--seed N] [--exchange binance|kraken] [--out DIR]
                     [--color auto|always|never]
    nija-broker run --config PATH
    nija-broker status [--account ID] [--json | --watch [S]] [--color auto|always|never] [--wide]
                       [--config PATH | --url URL]
    nija-broker check-config PATH
    nija-broker emulator --port N [--seed N] [--dialect binance|kraken]
                         [--write-config PATH [--force] [--api-port N]]
    nija-broker report --account ID --out DIR [--config PATH] [--url URL]
    nija-broker pause|resume --account ID [--by NAME] [--reason TEXT] [--config PATH | --url URL]
    nija-broker cancel --account ID ORDER_ID [--config PATH | --url URL]
    nija-broker orders|trades|positions --account ID [--json] [--config PATH | --url URL]
    nija-broker export --account ID --what trades|fills|orders|equity [--format csv|json] --out FILE
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
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nija_broker import __version__
from nija_broker.core.errors import ConfigError, NijaBrokerError
from nija_broker.service.config import Config, config_problems, load_checked_config, load_config

if TYPE_CHECKING:
    from nija_broker.service.positions_view import PositionView
    from nija_broker.service.status import AccountStatus

DEFAULT_CONFIG = "config/live.toml"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""``run --log-level``: the standard library's level names, in any case."""


def _load(path: str, *, to_run: bool = False) -> Config | None:
    """The configuration, or ``None`` once its problems are printed. ``to_run``: every check
    ``check-config`` makes (environment, exchanges, binding, store), not only its shape."""
    try:
        # run's own build of the exchanges lets ccxt judge their settings, after its API
        # listens and before any account syncs: ccxt's import takes seconds.
        return load_checked_config(path, build=False) if to_run else load_config(path)
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
    url: str,
    path: str,
    token: str | None,
    *,
    post: bool = False,
    timeout_s: float = 3.0,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar's JSON answer to ``GET`` (or a ``POST`` of ``body``, else ``{}``) of
    ``path``."""
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body or {}).encode() if post else None,
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
    from nija_broker.service.status import status_document, status_rows, stored_guard_facts
    from nija_broker.service.stored_status import with_config
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store

    path = Path(config.store.path)
    if not path.exists():
        raise ConfigError(f"no sidecar answered and the store {path} does not exist yet")
    now = datetime.now(UTC)
    with Store(path) as store:
        rows = status_rows(Books(store), {}, now, guard=stored_guard_facts(store))
        return status_document([with_config(row, config) for row in rows], now)


class _StatusProblem(Exception):
    """Why no status document could be had: the message and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _status_document(
    args: argparse.Namespace, target: tuple[str, str | None, Config | None]
) -> tuple[dict[str, Any], str]:
    """The status document and where it came from: the sidecar, else its store."""
    url, token, config = target
    try:
        document = _call_api(url, "/v1/accounts", token)
        source = url
    except (urllib.error.URLError, OSError) as exc:
        if config is None:
            raise _StatusProblem(f"{url} did not answer: {exc}", 1) from exc
        try:
            document = _status_from_store(config)
        except ConfigError as err:
            raise _StatusProblem(str(err), 1) from err
        source = f"{config.store.path} (sidecar not running)"
    if args.account is not None:
        document["accounts"] = [a for a in document["accounts"] if a["account_id"] == args.account]
        if not document["accounts"]:
            raise _StatusProblem(f"unknown account {args.account!r}", 2)
    return document, source


def _status_frame(document: dict[str, Any], source: str, *, width: int | None, color: bool) -> str:
    """The ``source:`` line (never cut: it may be a path to copy) and the table, fitted to
    ``width`` (every column when ``None``)."""
    from nija_broker.service.status import AccountStatus, render_table

    rows = [AccountStatus.model_validate(a) for a in document["accounts"]]
    now = datetime.fromisoformat(document["generated_at"]).astimezone(UTC)
    table = render_table(rows, width=width, color=color, now=now)
    return f"source: {source}  at {now:%Y-%m-%d %H:%M:%S} UTC\n{table}"


def _status(args: argparse.Namespace) -> int:
    from nija_broker.service import terminal

    if args.watch is not None and args.json:
        print(
            "nija-broker status: --watch redraws the table; for JSON, run --json "
            "(or GET /v1/accounts) at your own interval",
            file=sys.stderr,
        )
        return 2
    target = _api_target(args)
    if target is None:
        return 2
    try:
        document, source = _status_document(args, target)
    except _StatusProblem as problem:
        print(f"nija-broker status: {problem}", file=sys.stderr)
        return problem.code
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    stdout = sys.stdout
    color = terminal.color_wanted(args.color, stdout)
    size = terminal.terminal_size(stdout)
    width = None if args.wide else (size[0] if size is not None else terminal.DEFAULT_WIDTH)
    if args.watch is None:
        print(_status_frame(document, source, width=width, color=color))
        return 0
    fetched = [(document, source)]

    def draw() -> str:
        # The first frame shows what was fetched above. A failure later is shown in place
        # of the table and the watch goes on: a sidecar restarting is what one watches for.
        try:
            frame = fetched.pop() if fetched else _status_document(args, target)
        except _StatusProblem as problem:
            return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: {problem}\n"
        return _status_frame(*frame, width=width, color=color)

    return terminal.watch(
        draw, stdout, interval_s=args.watch, interactive=size is not None, sleep=_watch_sleep
    )


def _watch_sleep(seconds: float) -> None:
    """How ``status --watch`` waits between frames (looked up at each call: a test's own)."""
    time.sleep(seconds)


def _watch_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 s, got {text}")
    return value


# ---------------------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    """The report from the store, its tier, exchange and quote from the configuration; with
    ``--url``, the account's row and positions from that running sidecar."""
    from nija_broker.service.report import write_report
    from nija_broker.service.stored_status import stored_status_rows
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store

    config = _load(args.config)
    if config is None:
        return 2
    path = Path(config.store.path)
    if not path.exists():
        print(f"nija-broker report: the store {path} does not exist yet", file=sys.stderr)
        return 1
    now = datetime.now(UTC)
    with Store(path) as store:
        if args.account not in store.accounts():
            known = ", ".join(store.accounts()) or "none"
            print(
                f"nija-broker report: unknown account {args.account!r} (known: {known})",
                file=sys.stderr,
            )
            return 2
        book = Books(store).get(args.account)
        live = _report_live(args.url, args.account, config) if args.url else None
        if live is not None:
            status, positions = live
        else:
            (status,) = stored_status_rows(store, config, now, args.account)
            positions = None
        out = write_report(
            book, Path(args.out), store=store, now=now, status=status, positions=positions
        )
    print(f"report for {args.account}: {out}")
    return 0


def _report_live(
    url: str, account_id: str, config: Config
) -> tuple[AccountStatus, list[PositionView]] | None:
    """The account's status row and positions as the sidecar at ``url`` has them; ``None``
    (said on stderr) while it does not answer or does not run the account."""
    from nija_broker.service.positions_view import PositionView
    from nija_broker.service.status import AccountStatus

    token = os.environ.get(config.api.token_env) if config.api.token_env else None
    quoted = urllib.parse.quote(account_id, safe="")
    try:
        rows = _call_api(url, "/v1/accounts", token)["accounts"]
        held = _call_api(url, f"/v1/accounts/{quoted}/positions", token)["positions"]
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        print(
            f"nija-broker report: {url} did not answer ({exc}); reporting from the store",
            file=sys.stderr,
        )
        return None
    row = next((r for r in rows if r.get("account_id") == account_id), None)
    if row is None:
        print(f"nija-broker report: {url} does not run {account_id!r}", file=sys.stderr)
        return None
    return AccountStatus.model_validate(row), [PositionView.model_validate(p) for p in held]


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
    if args.write_config is None:
        if args.force or args.api_port is not None:
            print(
                "nija-broker emulator: --force and --api-port need --write-config", file=sys.stderr
            )
            return 2
        return emulator_main(argv)
    return emulator_main(
        argv, write_config=Path(args.write_config), force=args.force, api_port=args.api_port
    )


def _demo(args: argparse.Namespace) -> int:
    from nija_broker.demo.demo import run_demo

    return run_demo(
        duration_s=args.duration,
        seed=args.seed,
        exchange=args.exchange,
        out_dir=Path(args.out) if args.out else None,
        color=args.color,
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
    demo.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="ANSI colour (default auto: on a terminal, unless NO_COLOR is set)",
    )
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
        help="per-account rows: tier, equity, held %%, open orders, positions, "
        "drawdown, sync health, pause and last block",
    )
    status.add_argument("--account", help="only this account")
    status.add_argument("--json", action="store_true", help="the stable JSON document")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_watch_seconds,
        const=2.0,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS (default 2) until Ctrl-C; piped, a new table each time",
    )
    status.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="ANSI colour (default auto: on a terminal, unless NO_COLOR is set)",
    )
    status.add_argument(
        "--wide",
        action="store_true",
        help="every column, however wide (default: what fits the terminal, or 100 "
        "columns when piped)",
    )
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

    emulator = commands.add_parser(
        "emulator",
        help="the exchange emulator on its own, serving the demo's accounts; "
        "--write-config PATH writes a ready configuration and its keys' environment file",
    )
    emulator.add_argument("--port", type=int, default=8900, help="default 8900; 0: any free port")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--seed", type=int, default=0, help="fixes the keys and the prices")
    emulator.add_argument("--dialect", choices=("binance", "kraken"), default="binance")
    emulator.add_argument(
        "--write-config",
        metavar="PATH",
        help="once listening, write a configuration for its accounts at PATH, their keys "
        "as export lines in PATH with .env (store: PATH with .sqlite3), and keep serving",
    )
    emulator.add_argument(
        "--force",
        action="store_true",
        help="with --write-config: replace those files and delete the earlier store",
    )
    emulator.add_argument(
        "--api-port",
        type=int,
        default=None,
        help="with --write-config: the sidecar API's port on 127.0.0.1 (default 8765; "
        "0: a port free now)",
    )
    emulator.set_defaults(handler=_emulator)

    report = commands.add_parser(
        "report",
        help="an HTML report of one account (tier, exchange, positions, guard blocks, "
        "trades, equity and drawdown), for a desktop or a phone",
    )
    report.add_argument("--account", required=True)
    report.add_argument("--out", required=True, help="directory to write the report to")
    report.add_argument("--config", default=os.environ.get("NIJA_BROKER_CONFIG", DEFAULT_CONFIG))
    report.add_argument(
        "--url",
        help="a running sidecar's API: its live row (sync, stale cancels) and positions "
        "(booked fills and balances); without it, the store and the configuration",
    )
    report.set_defaults(handler=_report)

    from nija_broker.service.cli_controls import add_commands

    add_commands(commands, DEFAULT_CONFIG)

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
