"""One writer per run directory: a second command writing into it is refused, not interleaved.

Two `tokenmdp run demo` at once (a second terminal, a re-submitted job) would otherwise
train the same stages into the same checkpoints and MLflow runs, each overwriting the
other's. The lock is the kernel's (`flock`): it goes with its holder, so a killed run
leaves nothing behind and resumes as before.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_FILE = ".tokenmdp.lock"


class RunDirBusy(RuntimeError):
    """Another process is writing into the run directory."""


@contextmanager
def sole_writer(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for the block, or raise RunDirBusy naming who holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as lock:
        if not _try_lock(lock, fcntl.LOCK_EX, attempts=3):  # `writer` peeks with a shared lock for an instant
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise RunDirBusy(
                f"{run_dir} is being written by {holder}: wait for it to end, or write elsewhere with --out"
            )
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        yield


def writer(run_dir: Path) -> str | None:
    """Who is writing `run_dir` now ("pid N on HOST since T"), or None."""
    path = run_dir / LOCK_FILE
    if not path.is_file():
        return None
    with open(path) as lock:
        if _try_lock(lock, fcntl.LOCK_SH, attempts=1):
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None
        return lock.read().strip() or "another process"


def _try_lock(lock: IO[str], kind: int, attempts: int) -> bool:
    for attempt in range(attempts):
        try:
            fcntl.flock(lock, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.1)
    return False
