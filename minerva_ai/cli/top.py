"""``features top``: every feature's live metrics, full screen, sorted by a key press.

Built on rich's Live display (the alternate screen, the cursor hidden); the only module of
the CLI that imports rich. Fed by ``follow_metrics`` (WebSocket, else SSE, else polling).
Keys are read from the terminal in cbreak mode; the terminal is restored however the view
ends (``q``, Ctrl-C, an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from minerva_ai.cli.metricsview import SORT_KEYS, TOP_COLUMNS, TREND_ARROWS, sort_features
from minerva_ai.cli.output import format_time
from minerva_ai.client.http import AsyncClient
from minerva_ai.client.metrics_follow import follow_metrics
from minerva_ai.client.realtime import Notice

JSON = dict[str, Any]
# A key press -> the sort it picks; pressing the key of the current sort reverses it.
SORT_BY_KEY = {key[0]: key for key in SORT_KEYS}
KEYS_HELP = "s status  n name  r req/min  e errors  p p95  c cost (again: reverse)  q quit"
_RICH_STYLES = {"green": "green", "yellow": "yellow", "red": "bold red", "dim": "dim"}


@dataclass
class TopView:
    """What the screen shows: the latest snapshot, its order, the follower's last word."""

    window: str
    sort: str
    reverse: bool = False
    snapshot: JSON | None = None
    notice: str = "connecting…"
    utc: bool = False

    def press(self, key: str) -> bool:
        """Apply a key press; ``False`` when it asks to quit."""
        if key in ("q", "Q"):
            return False
        chosen = SORT_BY_KEY.get(key)
        if chosen is not None:
            self.reverse = not self.reverse if chosen == self.sort else False
            self.sort = chosen
        return True

    def render(self) -> RenderableType:
        features = list((self.snapshot or {}).get("features") or [])
        as_of = (self.snapshot or {}).get("as_of")
        when = format_time(as_of, local=not self.utc) if as_of else "-"
        order = f"{self.sort}{' (reversed)' if self.reverse else ''}"
        title = Text.assemble(
            ("minerva-ai features top", "bold"),
            f"   {len(features)} features   window {self.window}   as of {when}   sort {order}",
        )
        table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
        for column in TOP_COLUMNS:
            numeric = column.render is not None
            table.add_column(column.header, justify="right" if numeric else "left", no_wrap=True)
        for metrics in sort_features(features, self.sort, self.reverse):
            table.add_row(*(_cell(column, metrics) for column in TOP_COLUMNS))
        if not features:
            table.add_row("(no features yet)", *([""] * (len(TOP_COLUMNS) - 1)))
        footer = Text(f"keys: {KEYS_HELP}", style="dim")
        return Group(title, Text(""), table, Text(""), footer, Text(self.notice, style="dim"))


def _cell(column: Any, metrics: Mapping[str, Any]) -> Text:
    value = metrics.get(column.key)
    if value is None:
        return Text("-")
    text = column.render(value) if column.render else str(value)
    if column.key == "trend":
        text = TREND_ARROWS.get(text, text)
    return Text(text, style=_RICH_STYLES.get(column.styles.get(text, ""), ""))


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Key presses without Enter and without echo; the terminal's modes restored after."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _stdin_terminal() -> int | None:
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return fd if os.isatty(fd) else None


async def _follow(
    client: AsyncClient,
    view: TopView,
    redraw: Callable[[], None],
    *,
    transport: str,
    poll_interval: float,
) -> None:
    def notice(event: Notice) -> None:
        view.notice = event.message
        redraw()

    updates = follow_metrics(
        client,
        None,
        window=view.window,
        transport=transport,
        on_notice=notice,
        poll_interval=poll_interval,
    )
    async with contextlib.aclosing(updates):
        async for snapshot in updates:
            view.snapshot = snapshot
            redraw()


async def _watch(
    client: AsyncClient,
    view: TopView,
    redraw: Callable[[], None],
    fd: int | None,
    *,
    transport: str,
    poll_interval: float,
) -> None:
    """Follow until ``q`` (or the follower fails: its error is raised)."""
    loop = asyncio.get_running_loop()
    quit_pressed = asyncio.Event()

    def on_keys() -> None:
        assert fd is not None
        for key in os.read(fd, 64).decode(errors="replace"):
            if not view.press(key):
                quit_pressed.set()
                return
        redraw()

    follower = asyncio.ensure_future(
        _follow(client, view, redraw, transport=transport, poll_interval=poll_interval)
    )
    quitting = asyncio.ensure_future(quit_pressed.wait())
    if fd is not None:
        loop.add_reader(fd, on_keys)
    try:
        await asyncio.wait({follower, quitting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if fd is not None:
            loop.remove_reader(fd)
        for task in (follower, quitting):
            task.cancel()
        await asyncio.gather(follower, quitting, return_exceptions=True)
    if follower.done() and not follower.cancelled():
        error = follower.exception()
        if error is not None:
            raise error


def run_top(
    url: str,
    token: str | None,
    *,
    window: str,
    sort: str,
    transport: str,
    poll_interval: float,
    color: bool,
    utc: bool,
    log: Callable[[str], None] | None = None,
) -> None:
    """The live view on this terminal, until ``q`` or Ctrl-C."""
    console = Console(color_system="auto" if color else None, no_color=not color, highlight=False)
    view = TopView(window=window, sort=sort, utc=utc)
    fd = _stdin_terminal()

    async def main(live: Live) -> None:
        def redraw() -> None:
            live.update(view.render(), refresh=True)

        async with AsyncClient(url, token, log=log) as client:
            await _watch(client, view, redraw, fd, transport=transport, poll_interval=poll_interval)

    with (
        _cbreak(fd),
        Live(
            view.render(),
            console=console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live,
    ):
        asyncio.run(main(live))
