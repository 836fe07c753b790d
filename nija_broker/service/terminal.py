"""Text for a terminal: display widths, truncation, colour when wanted, a redraw loop.

Widths are counted in display cells, not code points: a CJK character or a wide
emoji takes two cells, a combining accent none (Unicode's East Asian Width,
UAX #11). Colour is ANSI SGR, and follows https://no-color.org: in ``auto`` mode
none when the output is not a terminal, when ``NO_COLOR`` holds any non-empty
value, or when ``TERM`` is ``dumb``; ``always`` (an explicit per-run choice)
wins over ``NO_COLOR``, as that page asks.
"""

from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import Literal, TextIO

__all__ = [
    "BOLD",
    "COLOR_MODES",
    "CYAN",
    "DEFAULT_WIDTH",
    "DIM",
    "GREEN",
    "HOME_CLEAR",
    "MAGENTA",
    "RED",
    "YELLOW",
    "ColorMode",
    "clean",
    "color_wanted",
    "display_width",
    "pad",
    "paint",
    "terminal_size",
    "truncate",
    "watch",
]

ColorMode = Literal["auto", "always", "never"]
COLOR_MODES: tuple[ColorMode, ...] = ("auto", "always", "never")

DEFAULT_WIDTH = 100
"""What a table is fitted to when the output is not a terminal (a log, a pipe)."""

HOME_CLEAR = "\x1b[H\x1b[2J"
"""Cursor home, then clear the screen: the start of a redraw. Only ever sent to a TTY."""

# SGR parameters (ECMA-48 8.3.117); "1;31" is bold red.
BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
MAGENTA = "35"
CYAN = "36"

_ELLIPSIS = "…"


def clean(text: str) -> str:
    """``text`` with every control character shown as ``?``.

    Account ids, symbols and reasons are free strings from configuration or an
    exchange: an escape sequence in one must not redraw the trader's terminal.
    """
    return "".join("?" if unicodedata.category(ch).startswith("C") else ch for ch in text)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """How many terminal cells ``text`` takes (no escape sequences in it)."""
    return sum(_char_width(ch) for ch in text)


def truncate(text: str, width: int, *, middle: bool = False) -> str:
    """``text`` cut to at most ``width`` cells, the cut marked with ``…``.

    ``middle`` keeps both ends (``USER:ale…great``): ids that share a prefix
    stay told apart by their tails.
    """
    if display_width(text) <= width:
        return text
    if width <= 0:
        return ""
    room = width - 1  # the ellipsis takes one cell
    if not middle:
        return _head(text, room).rstrip() + _ELLIPSIS
    tail_room = room // 2
    head = _head(text, room - tail_room)
    tail = _head(text[::-1], tail_room)[::-1]
    return head + _ELLIPSIS + tail


def _head(text: str, width: int) -> str:
    out, used = [], 0
    for ch in text:
        cells = _char_width(ch)
        if used + cells > width:
            break
        out.append(ch)
        used += cells
    return "".join(out)


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` cells, on the left when ``right``-aligned."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def paint(text: str, style: str, color: bool) -> str:
    """``text`` in ``style`` (SGR parameters) when ``color``; as it is otherwise."""
    if not color or not style or not text:
        return text
    return f"\x1b[{style}m{text}\x1b[0m"


def color_wanted(mode: ColorMode, stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether to colour what goes to ``stream`` under ``--color mode``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR", "") != "" or env.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def terminal_size(
    stream: TextIO, environ: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """``(columns, lines)`` of the terminal behind ``stream``; ``None`` when it is none.

    ``COLUMNS`` and ``LINES`` win when set, as with :func:`shutil.get_terminal_size`.
    """
    if not _isatty(stream):
        return None
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        columns, lines = DEFAULT_WIDTH, 24
    env = os.environ if environ is None else environ
    return _positive(env.get("COLUMNS"), columns), _positive(env.get("LINES"), lines)


def _positive(text: str | None, default: int) -> int:
    try:
        value = int(text) if text else 0
    except ValueError:
        value = 0
    return value if value > 0 else (default if default > 0 else DEFAULT_WIDTH)


def watch(
    draw: Callable[[], str],
    stream: TextIO,
    *,
    interval_s: float,
    interactive: bool,
    sleep: Callable[[float], None] = time.sleep,
    iterations: int | None = None,
) -> int:
    """Write ``draw()`` every ``interval_s`` until Ctrl-C (or ``iterations`` frames); 0.

    On a terminal each frame replaces the last (home, clear); elsewhere frames are
    appended, a blank line apart, so a log keeps every one.
    """
    drawn = 0
    try:
        while True:
            frame = draw()
            if not frame.endswith("\n"):
                frame += "\n"
            stream.write(HOME_CLEAR + frame if interactive else ("\n" if drawn else "") + frame)
            stream.flush()
            drawn += 1
            if iterations is not None and drawn >= iterations:
                return 0
            sleep(interval_s)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends: a normal exit, on a fresh line.
        stream.write("\n")
        stream.flush()
        return 0
