"""A disk cache for slow, pure functions of the world's code: the grader-verified exam bank.

Every stage and every `tokenmdp` command used to rebuild the 20,000-question bank (48 s
of Fraction arithmetic on 2 cores). An entry is keyed by the call's arguments and by the
source of every module in `world/`, so changed code never reads stale data; an
unreadable entry is rebuilt. `TOKENMDP_CACHE_DIR` moves the cache (default
`~/.cache/tokenmdp`); `TOKENMDP_CACHE_DIR=off` disables it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
WORLD_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path | None:
    """Where entries live, or None when caching is off."""
    configured = os.environ.get("TOKENMDP_CACHE_DIR", "")
    if configured.lower() == "off":
        return None
    return Path(configured) if configured else Path.home() / ".cache" / "tokenmdp"


@cache
def world_source_digest() -> str:
    """Hash of the world package's code: any change to it is a new cache key."""
    digest = hashlib.sha256()
    for path in sorted(WORLD_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def entry_path(kind: str, args: tuple[Any, ...]) -> Path | None:
    root = cache_dir()
    if root is None:
        return None
    key = hashlib.sha256(json.dumps([kind, list(args), world_source_digest()]).encode()).hexdigest()[:24]
    return root / f"{kind}-{key}.json.gz"


def cached(
    kind: str, args: tuple[Any, ...], compute: Callable[[], T], dump: Callable[[T], Any], load: Callable[[Any], T]
) -> T:
    """`compute()`, or its stored result for (kind, args, world code); `dump`/`load` convert to and from JSON."""
    path = entry_path(kind, args)
    if path is not None and path.is_file():
        try:
            with gzip.open(path, "rt") as f:
                return load(json.load(f))
        except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
            warnings.warn(f"rebuilding unreadable cache entry {path}: {err}", stacklevel=2)
    value = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with gzip.open(tmp, "wt") as f:
                json.dump(dump(value), f)
            os.replace(tmp, path)
        except OSError as err:  # a read-only home must not stop a run
            warnings.warn(f"could not write cache entry {path}: {err}", stacklevel=2)
    return value
