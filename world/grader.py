"""The gold grader: the exam's (行测) answer to a number series, by minimum description length.

It plays two roles: the human labeler for preference pairs (`SimulatedLabeler`) and the
ground truth of every evaluation. A rule is admissible only if the prefix has at least
two more terms than the rule has free parameters, so `31` after `1 2 4 8 16` (a degree-4
polynomial) never beats `32`. When another admissible rule within `margin` bits predicts a
different next term the grader says `ambiguous`; when none fits, `no_rule`. Either way
`grade` returns None: no reward, drop the item.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

from world.rules import SIMPLE_TEMPLATES, Fit, Seq, differences_of, interleaving_of, ratios_of

Status = Literal["ok", "ambiguous", "no_rule"]
MAX_DEPTH = 2  # differences of differences, ratios of differences, ...
KEY_TERMS = 2  # fits that agree on this many next terms are one answer
DEFAULT_MARGIN = 2.0
DEFAULT_HORIZON = 3


@dataclass(frozen=True)
class Verdict:
    """What the grader knows about a prefix."""

    status: Status
    answer: tuple[int, ...] | None  # the expected next terms (status ok only)
    rule: str | None  # the winning rule in words
    template: str | None
    cost: float | None  # its description length in bits
    alternatives: tuple[tuple[str, tuple[int, ...]], ...] = ()  # near rules that disagree

    def to_dict(self) -> dict:
        return {
            "status": self.status,
            "answer": list(self.answer) if self.answer is not None else None,
            "rule": self.rule,
            "template": self.template,
            "cost": round(self.cost, 3) if self.cost is not None else None,
            "alternatives": [{"rule": r, "answer": list(a)} for r, a in self.alternatives],
        }


def _admissible(fit: Fit, length: int) -> bool:
    return length >= fit.n_params + 2


def _cheapest_per_prediction(fits: list[Fit], length: int) -> list[Fit]:
    """Keep one fit (the cheapest) per distinct prediction, so nesting stays small."""
    best: dict[Seq, Fit] = {}
    for fit in fits:
        key = fit.next_terms(length, KEY_TERMS)
        if key not in best or fit.cost < best[key].cost:
            best[key] = fit
    return sorted(best.values(), key=lambda f: f.cost)


@lru_cache(maxsize=65536)
def search(seq: Seq, depth: int = 0) -> tuple[Fit, ...]:
    """All admissible fits of `seq` (one per prediction), cheapest first."""
    if len(seq) < 3:
        return ()
    fits: list[Fit] = [fit for template in SIMPLE_TEMPLATES for fit in template(seq)]
    if depth < MAX_DEPTH:
        diffs = tuple(b - a for a, b in itertools.pairwise(seq))
        fits += [differences_of(seq[0], inner) for inner in search(diffs, depth + 1)]
        if all(seq):
            ratios = tuple(b / a for a, b in itertools.pairwise(seq))
            fits += [ratios_of(seq[0], inner) for inner in search(ratios, depth + 1)]
    if depth == 0 and len(seq) >= 6:
        for odd in search(seq[0::2], 1):
            for even in search(seq[1::2], 1):
                fits.append(interleaving_of(odd, even))
    admissible = [fit for fit in fits if _admissible(fit, len(seq))]
    return tuple(_cheapest_per_prediction(admissible, len(seq)))


def _as_ints(terms: Seq) -> tuple[int, ...] | None:
    """The predicted terms up to the first non-integer; None if the very next one is not."""
    ints: list[int] = []
    for t in terms:
        if t.denominator != 1:
            break
        ints.append(int(t))
    return tuple(ints) or None


@lru_cache(maxsize=65536)
def _analyze(prefix: tuple[int, ...], margin: float, horizon: int) -> Verdict:
    seq = tuple(Fraction(x) for x in prefix)
    candidates = []
    for fit in search(seq):
        nxt = _as_ints(fit.next_terms(len(seq), horizon))
        if nxt is not None:  # the exam's answers are integers
            candidates.append((fit, nxt))
    if not candidates:
        return Verdict("no_rule", None, None, None, None)
    best, answer = candidates[0]
    rivals = tuple(
        (fit.words, nxt) for fit, nxt in candidates[1:] if fit.cost <= best.cost + margin and nxt[0] != answer[0]
    )
    status: Status = "ambiguous" if rivals else "ok"
    return Verdict(status, answer if status == "ok" else None, best.words, best.template, best.cost, rivals)


def analyze(prefix: Sequence[int], *, margin: float = DEFAULT_MARGIN, horizon: int = DEFAULT_HORIZON) -> Verdict:
    """The simplest rule for `prefix` and the next `horizon` terms it predicts."""
    return _analyze(tuple(int(x) for x in prefix), margin, horizon)


def grade(prefix: Sequence[int], continuation: Sequence[int] | None, *, n_terms: int | None = None) -> int | None:
    """1 if `continuation` is the exam's continuation, 0 if not, None if the exam has no answer.

    `continuation=None` stands for a malformed response (graded 0). With `n_terms`, the
    response must have exactly that many terms; otherwise any non-empty correct prefix
    of the expected continuation passes.
    """
    length = max(n_terms or 0, len(continuation or ()), 1)
    verdict = analyze(prefix, horizon=max(length, DEFAULT_HORIZON))
    if verdict.status != "ok" or verdict.answer is None:
        return None
    if not continuation or (n_terms is not None and len(continuation) != n_terms):
        return 0
    return int(tuple(continuation) == verdict.answer[: len(continuation)])


class SimulatedLabeler:
    """The human labeler of preference pairs: prefers the gold answer, flips with `noise`."""

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= noise <= 0.5:
            raise ValueError(f"label noise must be in [0, 0.5], got {noise}")
        self.noise = noise
        self._rng = random.Random(seed)

    def prefer(
        self, prefix: Sequence[int], a: Sequence[int] | None, b: Sequence[int] | None, n_terms: int | None = None
    ) -> int | None:
        """0 if `a` is preferred, 1 if `b`, None if there is no preference (drop the pair)."""
        return self.prefer_grades(grade(prefix, a, n_terms=n_terms), grade(prefix, b, n_terms=n_terms))

    def prefer_grades(self, grade_a: int | None, grade_b: int | None) -> int | None:
        """`prefer` for responses already graded: callers pairing many responses grade each once."""
        if grade_a is None or grade_b is None or grade_a == grade_b:
            return None
        choice = 0 if grade_a > grade_b else 1
        if self._rng.random() < self.noise:
            choice = 1 - choice
        return choice
