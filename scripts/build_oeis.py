"""Rebuild `world/data/oeis.jsonl.gz`: real OEIS sequences computed offline.

The PyPI package `oeissequences` computes ~11,400 A-numbers, but many hang or blow
up memory, so each sequence runs in a forked child with a wall-clock timeout and an
address-space cap. The heavy package is only needed here (`pip install -e '.[oeis]'`);
the result is committed, so neither CI nor users need it.

    python scripts/build_oeis.py --out world/data/oeis.jsonl.gz --workers 2 --timeout 1.5
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import signal
import sys
import time
from collections.abc import Iterator
from itertools import islice

MAX_TERMS = 30
MAX_DIGITS = 12
MIN_TERMS = 8
DEDUP_PREFIX = 10


def sequence_ids(module: object) -> dict[str, str]:
    """A-number -> attribute name, preferring generators (their start is the true offset)."""
    names = dir(module)
    chosen: dict[str, str] = {}
    for name in names:
        if re.fullmatch(r"A\d{6}", name):
            chosen.setdefault(name, name)
    for name in names:
        if re.fullmatch(r"A\d{6}_gen", name):
            chosen[name[:7]] = name
    return dict(sorted(chosen.items()))


def first_terms(module: object, attr: str) -> list[int]:
    """The first MAX_TERMS terms; an n-th-term function starts at 0, or at 1 if 0 fails."""
    fn = getattr(module, attr)
    if attr.endswith("_gen"):
        return [int(x) for x in islice(fn(), MAX_TERMS)]
    try:
        start = 0
        first = int(fn(0))
    except Exception:
        start, first = 1, int(fn(1))
    return [first] + [int(fn(n)) for n in range(start + 1, start + MAX_TERMS)]


def clean(terms: list[int]) -> list[int] | None:
    """Cut at the first term over MAX_DIGITS digits; keep only informative sequences."""
    kept: list[int] = []
    for term in terms:
        if len(str(abs(term))) > MAX_DIGITS:
            break
        kept.append(term)
    if len(kept) < MIN_TERMS or len(set(kept)) < 2:
        return None
    return kept


def run_child(module: object, attr: str, mem_bytes: int) -> int:
    """Fork a child that computes one sequence and writes JSON to a pipe; returns the read fd."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        try:
            payload = json.dumps(first_terms(module, attr))
        except BaseException:
            payload = "null"
        with os.fdopen(write_fd, "w") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    return read_fd, pid


def extract_all(ids: dict[str, str], module: object, workers: int, timeout: float, mem_mb: int) -> Iterator[tuple]:
    """Yield (a_number, terms | None, status) with at most `workers` children alive."""
    pending = list(ids.items())
    running: dict[int, tuple[str, int, float]] = {}
    while pending or running:
        while pending and len(running) < workers:
            a_number, attr = pending.pop(0)
            fd, pid = run_child(module, attr, mem_mb * 2**20)
            running[pid] = (a_number, fd, time.monotonic())
        time.sleep(0.005)
        for pid, (a_number, fd, started) in list(running.items()):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0 and time.monotonic() - started < timeout:
                continue
            if done == 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(fd)
                yield a_number, None, "timeout"
            else:
                with os.fdopen(fd) as src:
                    raw = src.read()
                terms = json.loads(raw) if raw else None
                yield a_number, terms, "ok" if terms else "error"
            del running[pid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="world/data/oeis.jsonl.gz")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1.5)
    parser.add_argument("--mem-mb", type=int, default=1024)
    parser.add_argument("--limit", type=int, default=0, help="only the first N ids (for a quick check)")
    args = parser.parse_args()
    sys.set_int_max_str_digits(0)
    from oeis_sequences import OEISsequences as module  # heavy, optional

    ids = sequence_ids(module)
    if args.limit:
        ids = dict(islice(ids.items(), args.limit))
    seen: set[tuple[int, ...]] = set()
    counts = {"ok": 0, "timeout": 0, "error": 0, "filtered": 0, "duplicate": 0, "kept": 0}
    rows = []
    started = time.monotonic()
    for i, (a_number, terms, status) in enumerate(extract_all(ids, module, args.workers, args.timeout, args.mem_mb)):
        counts[status] += 1
        kept = clean(terms) if terms else None
        if terms and kept is None:
            counts["filtered"] += 1
        elif kept is not None:
            key = tuple(kept[:DEDUP_PREFIX])
            if key in seen:
                counts["duplicate"] += 1
            else:
                seen.add(key)
                rows.append({"id": a_number, "terms": kept})
                counts["kept"] += 1
        if i % 500 == 0:
            print(f"{i}/{len(ids)} {time.monotonic() - started:.0f}s {counts}", flush=True)
    rows.sort(key=lambda row: row["id"])
    with gzip.open(args.out, "wt", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
    print(json.dumps({"ids": len(ids), **counts, "seconds": round(time.monotonic() - started)}))


if __name__ == "__main__":
    main()
