"""The trader's controls and views of one account, as ``nija-broker`` commands.

::

    nija-broker pause  --account ID [--by NAME] [--reason TEXT] [--config PATH | --url URL]
    nija-broker resume --account ID [--by NAME] [--config PATH | --url URL]
    nija-broker cancel --account ID ORDER_ID [--config PATH | --url URL]
    nija-broker orders|trades|positions --account ID [--json] [--config PATH | --url URL]
    nija-broker export --account ID --what trades|fills|orders|equity
                       [--format csv|json] --out FILE [--config PATH]

Pause, resume, cancel and the three views ask the running sidecar's API (the guard,
the books and the exchanges live there); ``export`` reads the store, so it works
with the sidecar stopped too. Exit codes: 0 done, 1 the sidecar did not answer or
the exchange did not confirm, 2 bad arguments or an unknown account or order.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nija_broker.service.export import FORMATS, WHAT

__all__ = ["add_commands"]

Handler = Callable[[argparse.Namespace], int]


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli"


def _ask(
    args: argparse.Namespace, path: str, *, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any] | None]:
    """The sidecar's answer to ``path`` (``POST`` when ``body`` is given): ``(0, answer)``,
    or the exit code with the problem printed."""
    from nija_broker.service.cli import _api_target, _call_api

    target = _api_target(args)
    if target is None:
        return 2, None
    url, token, _ = target
    try:
        return 0, _call_api(url, path, token, post=body is not None, body=body, timeout_s=15.0)
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode("utf-8", "replace").strip()
        try:
            answer: dict[str, Any] = json.loads(raw)
        except ValueError:
            answer = {"error": raw}
        if "message" in answer and "error" not in answer:
            return (1 if exc.code >= 409 else 2), answer  # the cancel's own answer
        print(
            f"nija-broker {args.command}: {answer.get('error', raw)} (HTTP {exc.code})",
            file=sys.stderr,
        )
        return (2 if exc.code in (404, 422) else 1), None
    except (urllib.error.URLError, OSError) as exc:
        print(
            f"nija-broker {args.command}: {url} did not answer ({exc}); is the sidecar "
            "running (nija-broker run)?",
            file=sys.stderr,
        )
        return 1, None


def _view(args: argparse.Namespace, tail: str) -> tuple[int, dict[str, Any] | None]:
    """A view's answer to draw as a table, or ``(code, None)``: printed as the API's JSON
    with ``--json`` (code 0), or the problem printed."""
    code, answer = _ask(args, _account_path(args, tail))
    if answer is not None and args.json:
        print(json.dumps(answer, indent=2))
        return 0, None
    return code, answer


def _account_path(args: argparse.Namespace, tail: str = "") -> str:
    return f"/v1/accounts/{urllib.parse.quote(args.account, safe='')}{tail}"


def _money(value: float | None, quote: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}{' ' + quote if quote else ''}"


def _amount(value: float | None) -> str:
    return "-" if value is None else f"{value:.8g}"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


# ---------------------------------------------------------------------------- controls


def _pause(args: argparse.Namespace) -> int:
    code, answer = _ask(
        args, _account_path(args, "/pause"), body={"by": args.by, "reason": args.reason}
    )
    if answer is None:
        return code
    why = f" ({answer['reason']})" if answer.get("reason") else ""
    print(
        f"{args.account}: entries paused by {answer['by']} since {answer['at']}{why}; "
        "exits still pass"
    )
    return 0


def _resume(args: argparse.Namespace) -> int:
    code, answer = _ask(args, _account_path(args, "/resume"), body={"by": args.by})
    if answer is None:
        return code
    resumed = answer.get("resumed") or []
    if answer.get("unpaused"):
        print(f"{args.account}: pause lifted at {answer.get('at')}; entries are judged again")
    if resumed:
        print(f"{args.account}: resumed {', '.join(resumed)} at {answer.get('at')}")
    if not resumed and not answer.get("unpaused"):
        print(f"{args.account}: not paused and no breaker was tripped; nothing to resume")
    for rule, view in sorted((answer.get("breakers") or {}).items()):
        state = "TRIPPED" if view.get("tripped") else "ok"
        print(f"  {rule}: {state} ({view.get('reason')})")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    order = urllib.parse.quote(args.order_id, safe="")
    code, answer = _ask(args, _account_path(args, f"/orders/{order}/cancel"), body={})
    if answer is None:
        return code
    print(f"{args.account}: {answer['message']}")
    return 0 if answer.get("confirmed") else 1


# ---------------------------------------------------------------------------- views


def _orders(args: argparse.Namespace) -> int:
    which = "all" if args.all else "open"
    code, answer = _view(args, f"/orders?status={which}")
    if answer is None:
        return code
    orders = answer["orders"]
    if not orders:
        print(f"{args.account}: no {which} orders")
        return 0
    _table(
        ["id", "symbol", "side", "role", "type", "price", "amount", "filled", "status", "created"],
        [
            [
                o["id"],
                o["symbol"],
                o["side"],
                o["role"],
                o["type"],
                _amount(o.get("price")),
                _amount(o["amount"]),
                _amount(o["filled"]),
                o["status"],
                o["created_at"][:19],
            ]
            for o in orders
        ],
    )
    return 0


def _trades(args: argparse.Namespace) -> int:
    code, answer = _view(args, f"/trades?limit={args.limit}")
    if answer is None:
        return code
    trades = answer["trades"]
    if not trades:
        print(f"{args.account}: no trades yet")
        return 0
    _table(
        ["exit time", "symbol", "qty", "entry", "exit", "fees", "net P&L"],
        [
            [
                t["exit_time"][:19],
                t["symbol"],
                _amount(t["quantity"]),
                _amount(t["entry_price"]),
                _amount(t["exit_price"]),
                _money(t["fees"]),
                _money(t["net_pnl"] if t.get("net_pnl") is not None else t["pnl"]),
            ]
            for t in trades
        ],
    )
    return 0


def _positions(args: argparse.Namespace) -> int:
    code, answer = _view(args, "/positions")
    if answer is None:
        return code
    quote = answer["quote_currency"]
    positions = answer["positions"]
    if not positions:
        print(f"{args.account}: no positions")
        return 0
    _table(
        ["symbol", "amount", "avg cost", f"value {quote}", f"unrealised {quote}", "source"],
        [
            [
                p["symbol"],
                _amount(p["amount"]),
                _amount(p.get("average_cost")),
                _money(p.get("value")),
                _money(p.get("unrealized_pnl")),
                p["source"],
            ]
            for p in positions
        ],
    )
    return 0


# ---------------------------------------------------------------------------- export


def _export(args: argparse.Namespace) -> int:
    from nija_broker.service.cli import _load
    from nija_broker.service.export import export_rows, render
    from nija_broker.state.books import Books
    from nija_broker.state.store import Store

    config = _load(args.config)
    if config is None:
        return 2
    path = Path(config.store.path)
    if not path.exists():
        print(f"nija-broker export: the store {path} does not exist yet", file=sys.stderr)
        return 1
    out = Path(args.out)
    if not out.parent.is_dir():
        print(f"nija-broker export: --out: no directory {out.parent}", file=sys.stderr)
        return 2
    with Store(path) as store:
        known = store.accounts()
        if args.account not in known:
            print(
                f"nija-broker export: unknown account {args.account!r} "
                f"(known: {', '.join(known) or 'none'})",
                file=sys.stderr,
            )
            return 2
        rows = export_rows(Books(store), args.account, args.what)
    text = render(args.what, rows, args.format)
    partial = out.with_name(out.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(partial, out)  # a reader never sees half a file
    print(f"{args.account}: {len(rows)} {args.what} written to {out} ({args.format})")
    return 0


# ---------------------------------------------------------------------------- parsers


def _target_options(parser: argparse.ArgumentParser, default_config: str) -> None:
    parser.add_argument("--account", required=True, help="the account id, e.g. USER:alice")
    parser.add_argument(
        "--config",
        default=os.environ.get("NIJA_BROKER_CONFIG", default_config),
        help=f"configuration (default $NIJA_BROKER_CONFIG or {default_config})",
    )
    parser.add_argument("--url", help="the sidecar's API instead of the configured one")


def add_commands(commands: Any, default_config: str) -> None:
    """Register the commands of this module on the ``nija-broker`` parser's subparsers."""
    pause = commands.add_parser(
        "pause",
        help="pause an account's entries on the running sidecar (rule paused; exits pass; "
        "kept across restarts)",
    )
    _target_options(pause, default_config)
    pause.add_argument("--by", default=_who(), help="who pauses it (default cli:<user>)")
    pause.add_argument("--reason", default="", help="why, shown on the page and in alerts")
    pause.set_defaults(handler=_pause)

    resume = commands.add_parser(
        "resume",
        help="lift an account's pause and clear its tripped circuit breakers on the running "
        "sidecar (they trip again only if their figures get worse)",
    )
    _target_options(resume, default_config)
    resume.add_argument("--by", default=_who(), help="who resumes it (default cli:<user>)")
    resume.set_defaults(handler=_resume)

    cancel = commands.add_parser(
        "cancel",
        help="cancel an order through the exchange; booked cancelled when the exchange confirms",
    )
    _target_options(cancel, default_config)
    cancel.add_argument("order_id", metavar="ORDER_ID", help="the exchange's order id")
    cancel.set_defaults(handler=_cancel)

    orders = commands.add_parser("orders", help="an account's open orders (--all: every order)")
    _target_options(orders, default_config)
    orders.add_argument("--all", action="store_true", help="every order the books hold")
    orders.add_argument("--json", action="store_true", help="the API's JSON answer")
    orders.set_defaults(handler=_orders)

    trades = commands.add_parser("trades", help="an account's latest round trips")
    _target_options(trades, default_config)
    trades.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    trades.add_argument("--json", action="store_true", help="the API's JSON answer")
    trades.set_defaults(handler=_trades)

    positions = commands.add_parser(
        "positions", help="what an account holds: amount, cost, value, source"
    )
    _target_options(positions, default_config)
    positions.add_argument("--json", action="store_true", help="the API's JSON answer")
    positions.set_defaults(handler=_positions)

    export = commands.add_parser(
        "export", help="an account's trades, fills, orders or equity as CSV or JSON, from the store"
    )
    export.add_argument("--account", required=True, help="the account id, e.g. USER:alice")
    export.add_argument("--what", required=True, choices=WHAT)
    export.add_argument("--format", default="csv", choices=FORMATS, help="default csv")
    export.add_argument("--out", required=True, help="the file to write (replaced whole)")
    export.add_argument(
        "--config",
        default=os.environ.get("NIJA_BROKER_CONFIG", default_config),
        help=f"configuration (default $NIJA_BROKER_CONFIG or {default_config})",
    )
    export.set_defaults(handler=_export)
