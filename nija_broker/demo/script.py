"""The demo's story: a scripted bot trading through the guard, and a market that moves.

Beats are scheduled as fractions of the run, so a 15 s run shows everything a
40 s one does, only faster. The story runs on its own clock, the market's
steps: before each beat it waits, the market standing still, until every
account's book shows what the exchange did so far (its open orders and its
holdings), so a slow machine makes the run longer, never a beat miss what the
one before it did. The bot places orders the way a guarded bot does,
through :meth:`Broker.guarded_exchange`; one order goes straight onto the
emulator instead, the way the live NIJA bot places orders without asking, so
the reconciler has something to adopt. Prices follow the engine's seeded walk
(``--seed``), stepped on one fixed schedule with the beats; scripted moves make
sure the resting orders the story needs fill, and that the one meant to go
stale does not.

The accounts: PLATFORM ($10,000, STANDARD), USER:alice ($100, MICRO_CAP),
USER:bob ($750, SMALL_CAP).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nija_broker.core.clock import Clock
from nija_broker.core.errors import EntryBlocked, NijaBrokerError
from nija_broker.core.exchange import OrderRequest
from nija_broker.core.intent import new_client_order_id
from nija_broker.core.models import Order, OrderRole, OrderStatus, OrderType, Side
from nija_broker.demo.view import AccountTally, line, order_text
from nija_broker.demo.world import DemoWorld
from nija_broker.service.runtime import Broker

__all__ = [
    "ALICE",
    "BEATS",
    "BOB",
    "CATCH_UP_LIMIT_S",
    "PLATFORM",
    "STEP_INTERVAL_S",
    "Beat",
    "DemoBot",
]

PLATFORM, ALICE, BOB = "PLATFORM", "USER:alice", "USER:bob"

STEP_INTERVAL_S = 0.2
"""How often the market moves one step."""
CATCH_UP_LIMIT_S = 20.0
"""The longest a beat waits for the books to catch up before the story goes on regardless:
a loopback poll takes milliseconds, so only a hang gets near it."""
_CATCH_UP_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Beat:
    at: float
    """Fraction of the run's duration."""
    name: str


# The story, in order. Alice's resting ETH entry is placed at "resting" and goes stale
# about 0.375 x duration later (demo.toml's 15 s, scaled with the run): after
# "blocked", which needs it open, and well before the end. The adopted order rests
# about 0.1 x duration (at least a second) before the dip fills it: two polls or more.
BEATS: tuple[Beat, ...] = (
    Beat(0.04, "open"),
    Beat(0.10, "resting"),
    Beat(0.20, "blocked"),
    Beat(0.30, "adopt"),
    Beat(0.40, "dip"),
    Beat(0.60, "rally"),
    Beat(0.75, "exits"),
)

Log = Callable[[str], None]


def _path(start: float, moves_pct: Sequence[float]) -> list[float]:
    return [start * (1.0 + pct / 100.0) for pct in moves_pct]


def _resting(order: Order) -> tuple[str, str, str, str, str]:
    """What an open order is, for comparing the exchange's with the book's."""
    price = "market" if order.price is None else f"{order.price:.10g}"
    return (order.symbol, order.side.value, price, f"{order.amount:.10g}", f"{order.filled:.10g}")


class DemoBot:
    """Places the story's orders; reports each answer (or block) through ``log``."""

    def __init__(
        self,
        broker: Broker,
        world: DemoWorld,
        tallies: dict[str, AccountTally],
        log: Log,
        clock: Clock,
    ) -> None:
        self.broker = broker
        self.world = world
        self.tallies = tallies
        self.log = log
        self.clock = clock
        self.holdings: dict[tuple[str, str], float] = {}
        self.resting_entry: dict[str, Order] = {}
        self.client_order_ids: set[str] = set()
        """Every client order id the bot sent (known before the order leaves)."""

    # ----------------------------------------------------------------- running

    async def run(self, duration_s: float) -> None:
        """Move the market a step every ``STEP_INTERVAL_S`` and play each beat on its step.

        One loop drives both, so a seed gives the same prices at every beat however
        late the event loop wakes: a late step is caught up, never skipped. Before a
        beat (and at the end) the loop waits for the books to catch up with the
        exchange; the steps' schedule moves on by the time that took.
        """
        steps = int(duration_s / STEP_INTERVAL_S)
        on_step = {max(1, round(beat.at * steps)): beat for beat in BEATS}
        origin = self.clock.monotonic()
        for step in range(steps):
            beat = on_step.get(step)
            if beat is not None:
                origin += await self.catch_up()
            wait_s = origin + step * STEP_INTERVAL_S - self.clock.monotonic()
            if wait_s > 0:
                await self.clock.sleep(wait_s)
            if beat is not None:
                await getattr(self, f"_{beat.name}")()
            self.world.engine.step()
        await self.catch_up()

    async def catch_up(self) -> float:
        """Wait until every account's book shows what the exchange did; the seconds waited.

        Gives up after :data:`CATCH_UP_LIMIT_S`, saying so, and lets the story go on.
        """
        started = self.clock.monotonic()
        while not self._books_show_the_exchange():
            waited_s = self.clock.monotonic() - started
            if waited_s >= CATCH_UP_LIMIT_S:
                self.log(
                    line(
                        "NOTE",
                        "",
                        f"the books have not caught up with the exchange "
                        f"after {waited_s:.0f}s; the story goes on",
                    )
                )
                break
            await self.clock.sleep(_CATCH_UP_POLL_S)
        return self.clock.monotonic() - started

    def _books_show_the_exchange(self) -> bool:
        """Each account's open orders, and its holdings of every coin, as the exchange has them.

        Orders are compared by what they are, not by id: through Kraken's dialect the
        emulator's ids are not the ones ccxt reports.
        """
        books, engine = self.broker.books, self.world.engine
        if books is None:
            return True
        for account_id in self.tallies:
            book = books.get(account_id)
            if sorted(map(_resting, engine.open_orders(account_id))) != sorted(
                map(_resting, book.orders.open_orders())
            ):
                return False
            held = {p.symbol: p.quantity for p in book.positions()}
            balances = engine.balances(account_id)
            for market in engine.markets.values():
                balance = balances.get(market.base)
                exchange_holds = balance.total if balance is not None else 0.0
                # Equal within the market's amount step (STYLE 14; every demo market has one).
                if not math.isclose(
                    exchange_holds,
                    held.get(market.symbol, 0.0),
                    abs_tol=(market.amount_step or 0.0) / 2,
                ):
                    return False
        return True

    def _price(self, base: str) -> float:
        return self.world.engine.price(self.world.symbol(base))

    async def _place(
        self,
        account_id: str,
        base: str,
        side: Side,
        amount: float,
        price: float,
        *,
        post_only: bool = False,
    ) -> Order | None:
        """Through the guard, as a guarded bot does. ``None`` when blocked or refused."""
        # Known before the order leaves: a poll may list it before the guard's answer is in.
        client_order_id = new_client_order_id()
        self.client_order_ids.add(client_order_id)
        request = OrderRequest(
            symbol=self.world.symbol(base),
            side=side,
            type=OrderType.LIMIT,
            amount=amount,
            price=round(price, 2),
            post_only=post_only,
            role=OrderRole.ENTRY if side is Side.BUY else OrderRole.EXIT,
            client_order_id=client_order_id,
        )
        what = (
            f"{side.value} {amount:g} {request.symbol} @ {request.price:,.2f}"
            f"{' post-only' if post_only else ''}"
        )
        try:
            order: Order = await self.broker.guarded_exchange(account_id).create_order(request)
        except EntryBlocked as blocked:
            self.tallies[account_id].blocked[blocked.rule] += 1
            # The rule first: on a narrow screen the line is cut at its end.
            self.log(line("BLOCKED", account_id, f"rule {blocked.rule}: {what}: {blocked.reason}"))
            return None
        except NijaBrokerError as exc:
            self.log(line("REFUSED", account_id, f"{what}: {type(exc).__name__}: {exc}"))
            return None
        state = (
            "filled at once"
            if order.status is OrderStatus.FILLED
            else f"{order.status.value}, resting on the book"
        )
        self.log(
            line(
                "BOT",
                account_id,
                f"{order_text(order)} passed the guard: {state} (order {order.id})",
            )
        )
        if side is Side.BUY:
            key = (account_id, base)
            self.holdings[key] = self.holdings.get(key, 0.0) + amount
        return order

    def _holds(self, account_id: str, base: str) -> bool:
        """Does the account's book hold a position in ``base`` (caught up before each beat)?"""
        books = self.broker.books
        symbol = self.world.symbol(base)
        return books is not None and any(
            p.symbol == symbol and p.quantity > 0 for p in books.get(account_id).positions()
        )

    # ----------------------------------------------------------------- beats

    async def _open(self) -> None:
        """Marketable limit buys: they cross at once and carry the price the guard values."""
        await self._place(PLATFORM, "BTC", Side.BUY, 0.02, self._price("BTC") * 1.002)
        await self._place(BOB, "ETH", Side.BUY, 0.05, self._price("ETH") * 1.002)
        await self._place(ALICE, "BTC", Side.BUY, 0.0005, self._price("BTC") * 1.002)

    async def _resting(self) -> None:
        """Post-only entries below the market, as the live bot places them."""
        alice = await self._place(
            ALICE, "ETH", Side.BUY, 0.007, self._price("ETH") * 0.95, post_only=True
        )
        if alice is not None:
            self.resting_entry[ALICE] = alice
        await self._place(BOB, "SOL", Side.BUY, 0.7, self._price("SOL") * 0.98, post_only=True)
        await self._place(
            PLATFORM, "ETH", Side.BUY, 0.5, self._price("ETH") * 0.985, post_only=True
        )

    async def _blocked(self) -> None:
        """Alice is MICRO_CAP: no averaging into BTC, no second ETH entry."""
        if not self._holds(ALICE, "BTC"):
            self.log(line("NOTE", ALICE, "the BTC position is not visible yet"))
        self.log(line("BOT", ALICE, "tries to add to her BTC position (DCA)..."))
        await self._place(ALICE, "BTC", Side.BUY, 0.0003, self._price("BTC") * 0.99, post_only=True)
        self.log(line("BOT", ALICE, "tries a second ETH entry next to the resting one..."))
        await self._place(ALICE, "ETH", Side.BUY, 0.005, self._price("ETH") * 0.97, post_only=True)

    async def _adopt(self) -> None:
        """The live bot places an order on the exchange without asking nija_broker."""
        price = round(self._price("SOL") * 0.99, 2)
        order = self.world.engine.place_order(
            PLATFORM,
            OrderRequest(
                symbol=self.world.symbol("SOL"),
                side=Side.BUY,
                type=OrderType.LIMIT,
                amount=5.0,
                price=price,
            ),
        )
        self.holdings[(PLATFORM, "SOL")] = self.holdings.get((PLATFORM, "SOL"), 0.0) + 5.0
        self.log(
            line(
                "LIVE BOT",
                PLATFORM,
                f"{order_text(order)} placed straight on the "
                "exchange, nija_broker not asked; the reconciler should adopt it",
            )
        )

    async def _dip(self) -> None:
        """SOL and ETH dip and recover: the resting SOL and PLATFORM ETH entries fill."""
        sol, eth = self._price("SOL"), self._price("ETH")
        self.world.engine.scripted_path(
            self.world.symbol("SOL"), _path(sol, (-0.5, -1.5, -2.5, -3.5, -3.0, -1.5, -0.5))
        )
        self.world.engine.scripted_path(
            self.world.symbol("ETH"), _path(eth, (-1.0, -2.0, -2.5, -1.5, -0.5, 0.5))
        )
        self.log(
            line(
                "MARKET",
                "",
                f"SOL dips from {sol:,.2f} towards {sol * 0.965:,.2f}, "
                f"ETH from {eth:,.2f} towards {eth * 0.975:,.2f}",
            )
        )

    async def _rally(self) -> None:
        btc = self._price("BTC")
        self.world.engine.scripted_path(
            self.world.symbol("BTC"), _path(btc, (0.5, 1.0, 1.5, 2.0, 2.5))
        )
        self.log(line("MARKET", "", f"BTC rallies from {btc:,.2f} towards {btc * 1.025:,.2f}"))

    async def _exits(self) -> None:
        """Marketable sells of what each account bought. Exits always pass the guard."""
        self.log(
            line(
                "BOT",
                "",
                "takes profit everywhere: sells are exits, and the guard never "
                "blocks an exit, not even on MICRO_CAP",
            )
        )
        for (account_id, base), amount in sorted(self.holdings.items()):
            if account_id == PLATFORM and base == "SOL":
                continue  # the adopted order's position stays: the live bot owns that trade
            if not self._holds(account_id, base):
                continue  # that entry never filled: nothing to sell
            await self._place(account_id, base, Side.SELL, amount, self._price(base) * 0.998)
