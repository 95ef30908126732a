"""The exam bank: 行测-style number-series questions, each verified by the gold grader.

RL prompts come from here, not from OEIS prefixes: OEIS continuations are often not the
exam's (1 2 4 8 16 continues as 31 in A000127), and that gap is the essay's point. A
question whose generated answer the grader does not confirm with status `ok` is dropped,
so the bank and the grader agree by construction.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import islice

from world.disk_cache import cached
from world.grader import analyze
from world.rules import primes

Terms = list[int]


@dataclass(frozen=True)
class Question:
    """A prefix shown to the policy and the exam's answer (the next term)."""

    prefix: tuple[int, ...]
    answer: tuple[int, ...]
    template: str
    difficulty: int  # 1 easy .. 3 hard

    def is_answered_by(self, terms: Sequence[int] | None) -> bool:
        """The response's terms (None = malformed) are exactly the exam's answer: the gold reward."""
        return terms is not None and tuple(terms) == self.answer

    def is_formatted_by(self, terms: Sequence[int] | None) -> bool:
        """A well-formed answer with as many terms as the exam asks for (right or wrong)."""
        return terms is not None and len(terms) == len(self.answer)

    @property
    def split(self) -> str:
        """'eval' for a fixed 10% of prefixes: eval questions never appear in train."""
        return "eval" if self._digest()[0] % 10 == 0 else "train"

    def in_feedback_pool(self, share: float) -> bool:
        """A fixed `share` of the train split, kept for preference collection and RL, never shown in SFT.

        Pairs sampled on questions SFT memorised would teach the reward model to recognise
        memorised answers instead of checking them.
        """
        return self.split == "train" and self._digest()[1] < round(256 * share)

    def _digest(self) -> bytes:
        return hashlib.sha256(",".join(map(str, self.prefix)).encode()).digest()


def _cumulative(start: int, steps: Terms) -> Terms:
    out = [start]
    for step in steps:
        out.append(out[-1] + step)
    return out


def _arithmetic(start: int, step: int, n: int) -> Terms:
    return [start + i * step for i in range(n)]


def _geometric(start: int, ratio: int, n: int) -> Terms:
    return [start * ratio**i for i in range(n)]


def _interleave(a: Terms, b: Terms, n: int) -> Terms:
    return [a[i // 2] if i % 2 == 0 else b[i // 2] for i in range(n)]


def _nonzero(rng: random.Random, lo: int, hi: int) -> int:
    return rng.choice([v for v in range(lo, hi + 1) if v != 0])


# Each template draws one full series (shown terms + the answer) of n terms.
TemplateFn = Callable[[random.Random, int], Terms]


def _halving(r: random.Random, n: int) -> Terms:
    q, a = r.choice([2, 3]), r.randint(1, 7)
    return [a * q ** (n - 1 - i) for i in range(n)]


def _power_plus(k: int, max_shift: int) -> TemplateFn:
    def draw_series(r: random.Random, n: int) -> Terms:
        s, c = r.randint(0, max_shift), r.randint(-9, 9)
        return [(i + s) ** k + c for i in range(n)]

    return draw_series


def _base_power_plus(r: random.Random, n: int) -> Terms:
    b, s, c = r.choice([2, 3]), r.randint(0, 4), _nonzero(r, -5, 5)
    return [b ** (i + s) + c for i in range(n)]


def _primes_plus(r: random.Random, n: int) -> Terms:
    s, c = r.randint(0, 15), r.randint(-5, 5)
    return [primes()[i + s] + c for i in range(n)]


def _affine(r: random.Random, n: int) -> Terms:
    p, q = r.choice([2, 3]), _nonzero(r, -4, 4)
    return _iterate(r.randint(1, 9), n, lambda x: p * x + q)


def _square_previous_plus(r: random.Random, n: int) -> Terms:
    c = r.choice([-1, 1, 2])
    return _iterate(r.randint(2, 3), n, lambda x: x * x + c)


def _diff_squares(r: random.Random, n: int) -> Terms:
    s = r.randint(1, 6)
    return _cumulative(r.randint(-5, 20), [(i + s) ** 2 for i in range(n - 1)])


def _diff_primes(r: random.Random, n: int) -> Terms:
    s = r.randint(0, 5)
    return _cumulative(r.randint(0, 20), list(primes()[s : s + n - 1]))


def _third_order(r: random.Random, n: int) -> Terms:
    second = _arithmetic(r.randint(1, 4), r.randint(1, 3), n - 2)
    return _cumulative(r.randint(0, 10), _cumulative(r.randint(1, 5), second))


def _ratio_arithmetic(r: random.Random, n: int) -> Terms:
    k = r.randint(1, 3)
    return _iterate_indexed(r.randint(1, 5), n, lambda x, i: x * (k + i))


def _interleaved(r: random.Random, n: int, geometric_evens: bool) -> Terms:
    odd = _arithmetic(r.randint(0, 20), _nonzero(r, -6, 9), n)
    even = (
        _geometric(r.randint(1, 5), 2, n) if geometric_evens else _arithmetic(r.randint(0, 40), _nonzero(r, -6, 9), n)
    )
    return _interleave(odd, even, n)


TEMPLATES: dict[str, tuple[int, TemplateFn]] = {  # name -> (difficulty, draw)
    "arithmetic": (1, lambda r, n: _arithmetic(r.randint(-20, 60), _nonzero(r, -12, 15), n)),
    "geometric": (1, lambda r, n: _geometric(r.randint(1, 9), r.choice([2, 3, 4, 5]), n)),
    "geometric_negative": (2, lambda r, n: _geometric(_nonzero(r, -7, 7), r.choice([-2, -3]), n)),
    "geometric_halving": (2, _halving),
    "squares_plus": (1, _power_plus(2, 12)),
    "cubes_plus": (2, _power_plus(3, 6)),
    "power_of_base_plus": (2, _base_power_plus),
    "primes_plus": (2, _primes_plus),
    "fibonacci": (1, lambda r, n: _fibonacci([r.randint(1, 12), r.randint(1, 12)], n, 0)),
    "fibonacci_plus": (3, lambda r, n: _fibonacci([r.randint(1, 9), r.randint(1, 9)], n, _nonzero(r, -3, 3))),
    "tribonacci": (2, lambda r, n: _tribonacci([r.randint(0, 4), r.randint(1, 5), r.randint(1, 6)], n)),
    "affine": (2, _affine),
    "product": (3, lambda r, n: _product([r.randint(1, 3), r.randint(2, 3)], n)),
    "square_previous_plus": (3, _square_previous_plus),
    "diff_arithmetic": (
        2,
        lambda r, n: _cumulative(r.randint(-10, 30), _arithmetic(r.randint(-5, 8), _nonzero(r, -4, 5), n - 1)),
    ),
    "diff_geometric": (
        2,
        lambda r, n: _cumulative(r.randint(-5, 20), _geometric(r.randint(1, 5), r.choice([2, 3]), n - 1)),
    ),
    "diff_squares": (3, _diff_squares),
    "diff_primes": (3, _diff_primes),
    "third_order": (3, _third_order),
    "ratio_arithmetic": (3, _ratio_arithmetic),
    "interleaved_arithmetic": (2, lambda r, n: _interleaved(r, n, geometric_evens=False)),
    "interleaved_arith_geom": (3, lambda r, n: _interleaved(r, n, geometric_evens=True)),
}
SHOWN_TERMS = {"interleaved_arithmetic": (8, 10), "interleaved_arith_geom": (8, 10), "product": (5, 6)}
SHOWN_TERMS |= {"square_previous_plus": (4, 4), "tribonacci": (6, 7), "fibonacci_plus": (6, 7), "third_order": (6, 7)}
DEFAULT_SHOWN = (5, 7)


def _iterate(start: int, n: int, step: Callable[[int], int]) -> Terms:
    out = [start]
    while len(out) < n:
        out.append(step(out[-1]))
    return out


def _iterate_indexed(start: int, n: int, step: Callable[[int, int], int]) -> Terms:
    out = [start]
    while len(out) < n:
        out.append(step(out[-1], len(out) - 1))
    return out


def _fibonacci(seed: Terms, n: int, c: int) -> Terms:
    out = list(seed)
    while len(out) < n:
        out.append(out[-1] + out[-2] + c)
    return out[:n]


def _tribonacci(seed: Terms, n: int) -> Terms:
    out = list(seed)
    while len(out) < n:
        out.append(out[-1] + out[-2] + out[-3])
    return out[:n]


def _product(seed: Terms, n: int) -> Terms:
    out = list(seed)
    while len(out) < n:
        out.append(out[-1] * out[-2])
    return out[:n]


def draw(template: str, rng: random.Random) -> Question | None:
    """One candidate question, or None when the grader does not confirm its answer."""
    difficulty, make = TEMPLATES[template]
    lo, hi = SHOWN_TERMS.get(template, DEFAULT_SHOWN)
    series = make(rng, rng.randint(lo, hi) + 1)
    prefix, answer = tuple(series[:-1]), (series[-1],)
    if max(abs(x) for x in series) >= 10**12:
        return None
    verdict = analyze(prefix)
    if verdict.status != "ok" or verdict.answer is None or verdict.answer[0] != answer[0]:
        return None
    return Question(prefix, answer, template, difficulty)


def iter_bank(seed: int, max_difficulty: int = 3) -> Iterator[Question]:
    """Distinct verified questions, templates (up to `max_difficulty`) in turn, deterministic from `seed`."""
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    names = sorted(name for name, (difficulty, _) in TEMPLATES.items() if difficulty <= max_difficulty)
    misses = dict.fromkeys(names, 0)
    while names:
        for name in list(names):
            question = draw(name, rng)
            if question is None or question.prefix in seen:
                misses[name] += 1
                if misses[name] > 2000:  # the template's space is exhausted
                    names.remove(name)
                continue
            misses[name] = 0
            seen.add(question.prefix)
            yield question


@cache
def build_bank(seed: int, size: int, max_difficulty: int = 3) -> tuple[Question, ...]:
    """The first `size` questions of the bank for `seed` (built once per process, then read from the disk cache)."""
    return cached(
        "exam-bank",
        (seed, size, max_difficulty),
        lambda: tuple(islice(iter_bank(seed, max_difficulty), size)),
        dump=lambda bank: [[list(q.prefix), list(q.answer), q.template, q.difficulty] for q in bank],
        load=lambda rows: tuple(Question(tuple(p), tuple(a), t, d) for p, a, t, d in rows),
    )


def questions(seed: int, size: int, split: str, max_difficulty: int = 3, feedback_share: float = 0.0) -> list[Question]:
    """The bank's questions of one split: "eval", "train" (all), "sft" or "feedback" (the two parts of train)."""
    bank = build_bank(seed, size, max_difficulty)
    if split in ("eval", "train"):
        return [q for q in bank if q.split == split]
    if split == "feedback":
        return [q for q in bank if q.in_feedback_pool(feedback_share)]
    if split == "sft":
        return [q for q in bank if q.split == "train" and not q.in_feedback_pool(feedback_share)]
    raise ValueError(f"unknown split {split!r}")


def group_by_template(questions: list[Question]) -> dict[str, list[Question]]:
    """Questions per template, grouped once per stage, not once per batch."""
    grouped: dict[str, list[Question]] = {}
    for q in questions:
        grouped.setdefault(q.template, []).append(q)
    return grouped


def draw_questions(
    questions: list[Question], rng: random.Random, k: int, by_template: dict[str, list[Question]] | None
) -> list[Question]:
    """`k` questions drawn uniformly, or (given `by_template`) a uniform template then one of its questions.

    The bank holds far more questions of some templates than of others; the held-out
    exam's first questions cover the templates evenly.
    """
    if by_template is None:
        return rng.choices(questions, k=k)
    templates = sorted(by_template)
    return [rng.choice(by_template[rng.choice(templates)]) for _ in range(k)]
