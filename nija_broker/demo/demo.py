"""``nija-broker demo``: the whole broker, offline, in under a minute.

No keys, no network: the exchange emulator runs in this process on
127.0.0.1 (Binance's REST dialect, or Kraken's with ``--exchange kraken``), and
the broker talks to it through real ccxt exactly as it would to the exchange.
Three accounts in three tiers — PLATFORM ($10,000, STANDARD), USER:alice
($100, MICRO_CAP), USER:bob ($750, SMALL_CAP) — and a scripted bot show, in
order: fills, a post-only entry resting on the book, a DCA attempt and a
second entry on one symbol blocked for the micro account (with the rule and
the reason), an order placed straight on the exchange being adopted, price
moves filling resting orders, closing trades, and the micro account's
resting entry cancelled as stale. A per-account table refreshes throughout;
the run ends with a summary per account and an HTML report per account.

``config/demo.toml`` is the broker's configuration; what only a running
emulator knows (URLs, keys, store path) is filled in at run time, as that
file's header explains. ``--seed`` fixes the price path.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from nija_broker.core.clock import Clock, SystemClock
from nija_broker.core.errors import ConfigError
from nija_broker.core.events import Event, OrderAdopted, Subscription
from nija_broker.demo.script import ALICE, DemoBot
from nija_broker.demo.view import AccountTally, DemoView, describe, summary_lines, trade_line
from nija_broker.demo.world import (
    DEFAULT_CONFIG_PATH,
    DEMO_DURATION_S,
    EXCHANGES,
    DemoWorld,
    demo_config,
    local_exchanges,
    read_demo_toml,
    start_world,
)
from nija_broker.service.config import Config
from nija_broker.service.positions_view import account_positions
from nija_broker.service.report import write_report
from nija_broker.service.runtime import Broker
from nija_broker.service.terminal import COLOR_MODES, ColorMode, color_wanted
from nija_broker.state.store import StoreLock

__all__ = ["MIN_DURATION_S", "build_parser", "main", "run_demo"]

MIN_DURATION_S = 10.0
"""Below this the beats crowd the reconciler's polls and the stale limit's floor."""
MAX_DURATION_S = 600.0
_REDRAW_S = 0.5
_STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def run_demo(
    *,
    duration_s: float = DEMO_DURATION_S,
    seed: int = 7,
    exchange: str = "binance",
    out_dir: Path | None = None,
    stream: TextIO = sys.stdout,
    interactive: bool | None = None,
    config_path: Path | None = None,
    color: ColorMode = "auto",
) -> int:
    """Run the demo and return the process exit code (0 on success).

    ``out_dir`` receives the reports and the demo's store (a previous demo's
    store there is replaced); a new temporary directory, kept afterwards, when
    ``None``. ``color``: ``auto`` paints the screen on a terminal unless ``NO_COLOR`` is
    set (https://no-color.org). ``interactive`` redraws the table in place (default: when
    ``stream`` is a terminal). Ctrl-C stops the run and shuts everything down.
    """
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        stream.write(
            f"nija-broker demo: --duration must be between {MIN_DURATION_S:g} and "
            f"{MAX_DURATION_S:g} seconds, got {duration_s:g}\n"
        )
        return 2
    if exchange not in EXCHANGES:
        stream.write(
            f"nija-broker demo: --exchange must be one of "
            f"{', '.join(sorted(EXCHANGES))}, got {exchange!r}\n"
        )
        return 2
    if interactive is None:
        interactive = stream.isatty()
    target = out_dir if out_dir is not None else Path(tempfile.mkdtemp(prefix="nija-broker-demo-"))
    try:
        raw = read_demo_toml(config_path or DEFAULT_CONFIG_PATH)
        target.mkdir(parents=True, exist_ok=True)
        demo = _Demo(
            duration_s=duration_s,
            seed=seed,
            exchange=exchange,
            out_dir=target,
            stream=stream,
            interactive=interactive,
            color=color_wanted(color, stream),
        )
        return asyncio.run(demo.run(raw))
    except ConfigError as exc:
        stream.write(f"nija-broker demo: {exc}\n")
        return 2
    except KeyboardInterrupt:
        # asyncio.run cancelled the run on Ctrl-C; its finally blocks closed everything.
        stream.write("\ninterrupted: the broker and the emulator were shut down\n")
        return 130


class _Demo:
    def __init__(
        self,
        *,
        duration_s: float,
        seed: int,
        exchange: str,
        out_dir: Path,
        stream: TextIO,
        interactive: bool,
        color: bool,
    ) -> None:
        self.duration_s = duration_s
        self.seed = seed
        self.exchange = exchange
        self.out_dir = out_dir
        self.clock: Clock = SystemClock()
        self.started_at = self.clock.monotonic()
        self.view = DemoView(
            stream,
            interactive=interactive,
            table_every_s=max(2.0, min(5.0, duration_s / 6)),
            color=color,
        )
        self.tallies: dict[str, AccountTally] = {}
        self.tiers: dict[str, str] = {}
        self.trades_seen: dict[str, int] = {}
        self.bots_client_ids: set[str] = set()

    def elapsed_s(self) -> float:
        return self.clock.monotonic() - self.started_at

    def log(self, text: str) -> None:
        self.view.log(self.elapsed_s(), text)

    async def run(self, raw: dict[str, object]) -> int:
        world = await start_world(self.exchange, self.seed, raw)
        try:
            config = demo_config(
                raw,
                exchange=self.exchange,
                server_url=world.server.url,
                out_dir=self.out_dir,
                duration_s=self.duration_s,
            )
            # The emulator starts empty: so does the store. Cleared under the store's lock,
            # so never under a demo still running on it (that one makes this one exit 2).
            with StoreLock.acquire(config.store.path):
                _remove_store(config.store.path)
            self._intro(world, config)
            # config/demo.toml's [reconciler] table; the seed also fixes the poll jitter.
            settings = dataclasses.replace(
                config.reconciler.settings(config.accounts), seed=self.seed
            )
            async with Broker(
                config,
                clock=self.clock,
                environ=world.environ,
                exchanges=local_exchanges(world, config, self.clock),
                reconciler_settings=settings,
            ) as broker:
                self.tallies = {a.id: AccountTally() for a in config.accounts}
                if broker.api is not None:
                    self.view.intro(
                        f"local API while it runs: {broker.api.url}/v1/accounts and /metrics",
                        keep=True,
                    )
                await self._story(broker, world)
                self._finish(broker, world)
        finally:
            await world.server.aclose()
        return 0

    def _intro(self, world: DemoWorld, config: Config) -> None:
        write = self.view.intro
        write(
            f"nija-broker demo ({self.exchange} emulator, seed {self.seed}, {self.duration_s:g}s)",
            keep=True,
        )
        write(f"emulator: {world.server.url} (loopback only, demo keys made up for this run)")
        table = config.tier_table()
        for account in config.accounts:
            balance = world.engine.balances(account.id)[world.quote].total
            write(
                f"  {account.id:<11} starts with {balance:>9,.2f} {world.quote}: tier "
                f"{table.band(balance).name}"
            )
        micro = table.get("MICRO_CAP")
        write(
            f"a resting MICRO_CAP entry is stale after {micro.stale_max_age_s:g}s; "
            f"reports go to {self.out_dir}"
        )

    async def _story(self, broker: Broker, world: DemoWorld) -> None:
        assert broker.reconciler is not None
        stop = asyncio.Event()
        bot = DemoBot(broker, world, self.tallies, self.log, self.clock)
        self.bots_client_ids = bot.client_order_ids
        with broker.reconciler.subscribe() as events:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._events(events), name="demo:events")
                tasks.create_task(self._refresh(broker, stop), name="demo:table")
                # The story's own clock starts now that every account is up; it ends once
                # the books show everything the exchange did.
                await bot.run(self.duration_s)
                stop.set()
                events.close()

    async def _events(self, events: Subscription) -> None:
        async for event in events:
            self._on_event(event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, OrderAdopted) and (
            event.order.client_order_id in self.bots_client_ids
        ):
            # The bot's own order, listed by a poll before the guard's answer reached the
            # book: it went through the guard, so it was not placed outside nija_broker.
            return
        tally = self.tallies.get(event.account_id)
        if tally is not None:
            tally.count(event)
        text = describe(event, self.tiers)
        if text is not None:
            self.log(text)

    def _new_trades(self, broker: Broker) -> None:
        """Log round trips closed since the last look, whoever booked them.

        A marketable exit fills at once and the guard books it with its answer, so
        not every trade passes the reconciler's event bus; the books see them all.
        """
        assert broker.books is not None
        for account_id in self.tallies:
            performance = broker.books.get(account_id).performance
            fresh = performance.trade_count - self.trades_seen.get(account_id, 0)
            if fresh > 0:
                self.trades_seen[account_id] = performance.trade_count
                for trade in performance.trade_history(fresh):
                    self.log(trade_line(trade))

    async def _refresh(self, broker: Broker, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._new_trades(broker)
            self.view.table(broker.status(), self.elapsed_s(), now=self.clock.now())
            try:
                async with asyncio.timeout(_REDRAW_S):
                    await stop.wait()
            except TimeoutError:
                pass

    def _finish(self, broker: Broker, world: DemoWorld) -> None:
        assert broker.books is not None
        write = self.view.write
        self._new_trades(broker)
        rows = broker.status()
        self.view.table(rows, self.elapsed_s(), force=True, now=self.clock.now())
        self.view.replay()
        write(
            f"summary after {self.elapsed_s():.1f}s, per account (never added up across accounts):"
        )
        for row in rows:
            book = broker.books.get(row.account_id)
            fills = len(broker.store.fills(row.account_id)) if broker.store else 0
            for text in summary_lines(
                row, book.metrics(), self.tallies[row.account_id], world.quote, fills
            ):
                write(text)
        write("\nreports:")
        now = self.clock.now()
        for row in rows:
            book = broker.books.get(row.account_id)
            # What the running sidecar holds: booked fills checked against the balances.
            held = broker.books.owner.call(account_positions, book, broker.live.get(row.account_id))
            path = write_report(
                book, self.out_dir, store=broker.store, now=now, status=row, positions=held
            )
            write(f"  {row.account_id:<11} {path}")
        alice = self.tallies.get(ALICE)
        if alice is not None and not alice.stale_cancelled:
            write("\nnote: the stale micro entry was not cancelled within this run")
        write("\ndone: every account shut down cleanly. Open a report in a browser.")


def _remove_store(path: str) -> None:
    """Delete a previous demo run's store (and SQLite's side files) at ``path``."""
    for suffix in _STORE_SUFFIXES:
        Path(path + suffix).unlink(missing_ok=True)


def run_emulator(
    argv: Sequence[str],
    *,
    write_config: Path | None = None,
    force: bool = False,
    api_port: int | None = None,
    stream: TextIO = sys.stdout,
) -> int:
    """``nija-broker emulator``: the built-in exchange emulator alone. Here, not in the CLI,
    because the demo is the one composition root that imports ``adapters`` (DESIGN: Layout).

    ``write_config``: once it listens, write a configuration for the accounts it serves
    and the environment file with their keys (:mod:`nija_broker.demo.rehearsal`), print
    their paths and the next commands, and keep serving. A file already there is refused
    (exit 2) unless ``force``. ``api_port`` goes in the configuration (default 8765, the
    sidecar's usual; 0: a port free now).
    """
    from adapters.emulator.__main__ import Serving
    from adapters.emulator.__main__ import main as emulator_main

    if write_config is None:
        return emulator_main(list(argv))
    from nija_broker.demo import rehearsal

    if api_port is None:
        api_port = rehearsal.DEFAULT_API_PORT
    if not 0 <= api_port <= 65535:
        print(
            f"nija-broker emulator: --api-port must be 0 to 65535, got {api_port}", file=sys.stderr
        )
        return 2
    try:
        files = rehearsal.RehearsalFiles.beside(write_config)
        rehearsal.claim(files, force=force)
    except (ConfigError, OSError) as exc:
        print(f"nija-broker emulator: {exc}", file=sys.stderr)
        return 2
    port = rehearsal.pick_api_port() if api_port == 0 else api_port

    def ready(serving: Serving) -> None:
        rehearsal.write_rehearsal(serving, files, api_port=port, force=force)
        rehearsal.announce(serving, files, port, stream)

    try:
        return emulator_main(list(argv), on_ready=ready)
    except ConfigError as exc:  # from ready(): the emulator was shut down
        print(f"nija-broker emulator: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nija-broker demo",
        description="Run nija_broker offline against the built-in exchange emulator.",
    )
    add_demo_arguments(parser)
    return parser


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, for a stand-alone parser or a CLI subcommand."""
    parser.add_argument(
        "--duration",
        type=float,
        default=DEMO_DURATION_S,
        metavar="S",
        help=f"run length in seconds (default {DEMO_DURATION_S:g}, at least {MIN_DURATION_S:g})",
    )
    parser.add_argument("--seed", type=int, default=7, help="price path seed (default 7)")
    parser.add_argument(
        "--exchange",
        choices=sorted(EXCHANGES),
        default="binance",
        help="emulated exchange dialect (default binance)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="where reports (and the demo's store) go; default a new temporary directory",
    )
    parser.add_argument(
        "--color",
        choices=COLOR_MODES,
        default="auto",
        help="ANSI colour (default auto: on a terminal, unless NO_COLOR is set)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_demo(
        duration_s=args.duration,
        seed=args.seed,
        exchange=args.exchange,
        out_dir=args.out,
        color=args.color,
    )


if __name__ == "__main__":
    raise SystemExit(main())
