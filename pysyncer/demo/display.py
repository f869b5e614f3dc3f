"""What the demo prints: plain lines, and tables redrawn in place on a terminal.

Owns the output stream and its formatting helpers (milliseconds, percentiles). A table
is redrawn in place on a TTY and printed as snapshots otherwise (a pipe, CI). It must
not know what the tables hold (callers render the lines) and must not start processes
or talk to the registries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from pysyncer.demo.plan import REFRESH

__all__ = ["Display", "ms", "percentile"]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


class Display:
    """A table redrawn in place on a terminal, printed as snapshots otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0

    def say(self, text: str = "") -> None:
        self._drawn = 0
        print(text, file=self.out, flush=True)

    def draw(self, lines: Sequence[str], final: bool) -> None:
        """Redraw over the previous table on a TTY; print only ``final`` ones otherwise."""
        if self.tty:
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self.out.write(up + "\n".join(lines) + "\n")
            self.out.flush()
            self._drawn = 0 if final else len(lines)
        elif final:
            self.say("\n".join(lines))

    @contextlib.contextmanager
    def live(self, render: Callable[[], list[str]]) -> Iterator[None]:
        """Keep redrawing ``render()`` until the block ends, then draw it one last time."""

        async def loop() -> None:
            while True:
                self.draw(render(), final=False)
                await asyncio.sleep(REFRESH)

        task = asyncio.get_running_loop().create_task(loop()) if self.tty else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            self.draw(render(), final=True)
