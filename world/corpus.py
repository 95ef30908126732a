"""The pretraining corpus: real OEIS sequences plus generated families, as token documents.

Every document ends with `<eor>`, and a share of them are written in the question form
`<bos>prefix?rest<eor>`, so every action a later stage needs (`?` and `<eor>` included)
is taken in pretraining. OEIS continuations that differ from the exam's (1 2 4 8 16 → 31
in A000127) are kept on purpose: they are the exotic answers RLHF must learn to avoid.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from world.actions import ActionSpace

Split = Literal["train", "val", "test"]
FAMILIES = ("arithmetic", "geometric", "polynomial", "linear_recurrence", "fibonacci_like", "power_plus", "interleaved")
MAX_DIGITS = 12


@dataclass(frozen=True)
class Series:
    """One integer sequence and where it came from (an A-number or a family with parameters)."""

    source: str
    terms: tuple[int, ...]


def split_of(key: str) -> Split:
    """Deterministic 80/10/10 split by A-number or by family parameters."""
    bucket = hashlib.sha256(key.encode()).digest()[0] % 10
    return "val" if bucket == 0 else "test" if bucket == 1 else "train"


@cache
def load_oeis() -> tuple[Series, ...]:
    """The committed OEIS extract (see scripts/build_oeis.py); empty if it is absent."""
    path = resources.files("world") / "data" / "oeis.jsonl.gz"
    if not path.is_file():
        return ()
    with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as rows:
        return tuple(Series(row["id"], tuple(row["terms"])) for row in map(json.loads, rows))


def oeis_series(split: Split) -> list[Series]:
    return [s for s in load_oeis() if split_of(s.source) == split]


# --- generated families ----------------------------------------------------------------


def _recurrence(initial: list[int], coeffs: list[int], n: int, c: int = 0) -> list[int]:
    out = list(initial)
    while len(out) < n:
        out.append(sum(k * x for k, x in zip(coeffs, reversed(out[-len(coeffs) :]), strict=False)) + c)
    return out[:n]


def draw_family(family: str, rng: random.Random, n: int) -> tuple[str, list[int]]:
    """One member of a family: (parameter key for the split, its first n terms)."""
    r = rng.randint
    match family:
        case "arithmetic":
            a, d = r(-100, 100), r(-30, 30)
            return f"{family}:{a}:{d}", [a + i * d for i in range(n)]
        case "geometric":
            a, q = r(-9, 9) or 1, rng.choice([-3, -2, 2, 3, 4, 5, 10])
            return f"{family}:{a}:{q}", [a * q**i for i in range(n)]
        case "polynomial":
            coeffs = [r(-5, 5) for _ in range(r(2, 5))]
            return f"{family}:{coeffs}", [sum(c * i**k for k, c in enumerate(coeffs)) for i in range(n)]
        case "linear_recurrence":
            order = r(1, 3)
            coeffs, initial, c = [r(-2, 3) for _ in range(order)], [r(-5, 9) for _ in range(order)], r(-3, 3)
            return f"{family}:{coeffs}:{initial}:{c}", _recurrence(initial, coeffs, n, c)
        case "fibonacci_like":
            order, initial = r(2, 3), [r(0, 9) for _ in range(3)]
            return f"{family}:{order}:{initial}", _recurrence(initial[:order], [1] * order, n)
        case "power_plus":
            k, s, c = r(2, 5), r(0, 10), r(-20, 20)
            base_first = rng.random() < 0.5
            terms = [(k ** (i + s) if base_first else (i + s) ** k) + c for i in range(n)]
            return f"{family}:{k}:{s}:{c}:{base_first}", terms
        case "interleaved":
            (ka, a), (kb, b) = draw_family("arithmetic", rng, n), draw_family(rng.choice(FAMILIES[:3]), rng, n)
            return f"{family}:{ka}:{kb}", [a[i // 2] if i % 2 == 0 else b[i // 2] for i in range(n)]
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def clip_digits(terms: list[int]) -> list[int]:
    """Cut a series at its first term over MAX_DIGITS digits, as the OEIS extract is cut."""
    for i, x in enumerate(terms):
        if len(str(abs(x))) > MAX_DIGITS:
            return terms[:i]
    return terms


def generated_series(family: str, split: Split, rng: random.Random, n_terms: int = 16) -> Series:
    """Draw members of `family` until one falls in `split` and keeps at least 6 terms."""
    while True:
        key, terms = draw_family(family, rng, n_terms)
        terms = clip_digits(terms)
        if len(terms) >= 6 and split_of(key) == split:
            return Series(key, tuple(terms))


def sample_series(
    split: Split, seed: int, oeis_weight: float, family_weights: dict[str, float],
    extra: Sequence[Series] = (), extra_weight: float = 0.0,
) -> Iterator[Series]:  # fmt: skip
    """An endless, seeded stream mixing OEIS sequences, generated families and `extra` (your own) by weight.

    Without `extra` the stream is the one it always was: a source is added only when there is one.
    """
    rng = random.Random(seed)
    oeis = oeis_series(split)
    names = ["oeis", *family_weights]
    weights = [oeis_weight if oeis else 0.0, *family_weights.values()]
    if extra:
        names.append("extra")
        weights.append(extra_weight)
    while True:
        source = rng.choices(names, weights)[0]
        if source == "oeis":
            yield rng.choice(oeis)
        elif source == "extra":
            yield rng.choice(extra)
        else:
            yield generated_series(source, split, rng)


def render(series: Series, space: ActionSpace, rng: random.Random, query_rate: float, max_tokens: int) -> list[int]:
    """A pretraining document: a window of the series, sometimes in the question form."""
    terms = list(series.terms)
    start = rng.randint(0, max(0, len(terms) - 6)) if rng.random() < 0.3 else 0
    terms = terms[start:]
    while len(terms) > 2 and len(space.encode_sequence(terms)) > max_tokens:
        terms.pop()
    if rng.random() < query_rate and len(terms) >= 4:
        cut = rng.randint(3, len(terms) - 1)
        return [*space.encode_prompt(terms[:cut]), *space.encode_response(terms[cut:])]
    return space.encode_sequence(terms)
