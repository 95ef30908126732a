"""How far a long loop has got: a live bar on a terminal, a plain line now and then in a log.

`make run > run.log`, `docker compose logs` and CI have no terminal, so a bar is off there;
without these lines a stage of twenty minutes would print nothing until it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.progress import Progress

LOG_EVERY_S = 60.0
Advance = Callable[[str], None]  # one step done; its argument describes where the loop stands


def duration(seconds: float) -> str:
    """12m05s, 1h02m07s: short enough for a log line, exact to the second."""
    s = round(seconds)
    hours, minutes, secs = s // 3600, s // 60 % 60, s % 60
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def progress_line(description: str, done: int, total: int, elapsed_s: float, done_here: int) -> str:
    """Where the loop stands, the time this process has spent on it, and what is left at that pace."""
    line = f"{description}: {done}/{total} ({100 * done // total}%), {duration(elapsed_s)} so far"
    if done_here > 0 and done < total:
        line += f", ~{duration(elapsed_s / done_here * (total - done))} left"
    return line


def start_line(name: str, total: int, completed: int) -> str:
    """What a log says as a loop begins: fresh, resumed from a checkpoint, or already finished."""
    if completed == 0:
        return f"{name}: {total} steps"
    if completed >= total:
        return f"{name}: all {total} steps done before"
    return f"{name}: resuming at {completed}/{total}"


class _LogLines:
    """The plain-line progress: a line at most every `every_s` seconds, and one at the end."""

    def __init__(self, total: int, completed: int, stream: TextIO, every_s: float, clock: Callable[[], float]):
        self.total, self.done, self.begun = total, completed, completed
        self.stream, self.every_s, self.clock = stream, every_s, clock
        self.started = self.last = clock()

    def advance(self, description: str) -> None:
        self.done += 1
        now = self.clock()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            line = progress_line(description, self.done, self.total, now - self.started, self.done - self.begun)
            print(line, file=self.stream, flush=True)


@contextmanager
def stage_progress(
    name: str,
    total: int,
    completed: int = 0,
    *,
    stream: TextIO | None = None,
    every_s: float = LOG_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Advance]:
    """Yields `advance(description)`, to call once per step of a loop of `total` steps, `completed`
    of them already done (a resumed run)."""
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        with Progress() as bar:
            task = bar.add_task(name, total=total, completed=completed)
            yield lambda description: bar.update(task, advance=1, description=description)
        return
    print(start_line(name, total, completed), file=stream, flush=True)
    yield _LogLines(total, completed, stream, every_s, clock).advance
