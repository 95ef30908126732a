"""Rule templates for number series, fitted exactly (Fractions) to a prefix.

Each template fits its free parameters from the first terms, checks every other term,
and returns a `Fit` that can generate the whole sequence. The cost of a fit is its
description length in bits: a base cost for the template plus the bits of each
parameter, so `x2 each term` beats a degree-4 polynomial for `1 2 4 8 16`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache

Seq = tuple[Fraction, ...]

# Base cost (bits) of naming a template; simpler rules are what the exam wants.
BASE_COST = {
    "constant": 1.0,
    "arithmetic": 2.0,
    "geometric": 3.0,
    "power": 4.0,
    "primes": 5.0,
    "fibonacci": 4.0,
    "exponential": 5.0,
    "product": 6.0,
    "square_plus": 6.0,
    "fibonacci_plus": 6.0,
    "tribonacci": 6.0,
    "affine": 6.0,
    "linear2": 8.0,
    "differences": 3.0,
    "ratios": 4.0,
    "interleaved": 4.0,
}
POWERS = (2, 3, 4, 5)
POWER_SHIFTS = range(-5, 41)
EXP_BASES = range(2, 11)
EXP_SHIFTS = range(0, 16)
PRIME_SHIFTS = range(0, 60)


def param_bits(value: Fraction) -> float:
    """Bits to write a parameter: magnitude of numerator and denominator, plus sign."""
    bits = 1.0 + math.log2(1 + abs(value.numerator))
    if value.denominator != 1:
        bits += 1.0 + math.log2(value.denominator)
    return bits + (1.0 if value < 0 else 0.0)


@dataclass(frozen=True)
class Fit:
    """A rule consistent with a prefix. `generate(n)` yields its first n terms."""

    template: str
    words: str
    n_params: int
    cost: float
    generate: Callable[[int], Seq] = field(compare=False, repr=False)

    def next_terms(self, prefix_len: int, k: int) -> Seq:
        return self.generate(prefix_len + k)[prefix_len:]


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def _matches(seq: Seq, term: Callable[[int], Fraction], start: int = 0) -> bool:
    return all(term(n) == seq[n] for n in range(start, len(seq)))


def _fit(template: str, words: str, n_params: int, params: list[Fraction], generate: Callable[[int], Seq]) -> Fit:
    cost = BASE_COST[template] + sum(param_bits(p) for p in params)
    return Fit(template, words, n_params, cost, generate)


@cache
def primes(count: int = 256) -> tuple[int, ...]:
    found: list[int] = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return tuple(found)


class _Recurrence:
    """Generator for a_n = step(previous terms), seeded with `initial`."""

    def __init__(self, initial: Seq, step: Callable[[Seq], Fraction]) -> None:
        self.initial, self.step = initial, step

    def __call__(self, n: int) -> Seq:
        terms = list(self.initial[:n])
        while len(terms) < n:
            terms.append(self.step(tuple(terms)))
        return tuple(terms)

    def matches(self, seq: Seq) -> bool:
        """Whether it generates `seq`, stopping at the first term that differs: a recurrence that squares or
        multiplies its terms doubles their digits each step, so generating a long prefix whole before
        comparing took minutes (26 terms of 1, 2, 3, ..: 15 s in `a^2 + c` alone)."""
        terms = list(self.initial[: len(seq)])
        if tuple(terms) != seq[: len(terms)]:
            return False
        while len(terms) < len(seq):
            terms.append(self.step(tuple(terms)))
            if terms[-1] != seq[len(terms) - 1]:
                return False
        return True


# --- closed-form templates ---------------------------------------------------------


def fit_constant(seq: Seq) -> Iterator[Fit]:
    if len(set(seq)) == 1:
        c = seq[0]
        yield _fit("constant", f"every term is {_fmt(c)}", 1, [c], lambda n: (c,) * n)


def fit_arithmetic(seq: Seq) -> Iterator[Fit]:
    a, d = seq[0], seq[1] - seq[0]
    if d != 0 and _matches(seq, lambda n: a + n * d):
        words = f"add {_fmt(d)} each time" if d > 0 else f"subtract {_fmt(-d)} each time"
        yield _fit("arithmetic", words, 2, [a, d], lambda n: tuple(a + i * d for i in range(n)))


def fit_geometric(seq: Seq) -> Iterator[Fit]:
    a = seq[0]
    if a == 0:
        return
    r = seq[1] / a
    if r not in (0, 1) and _matches(seq, lambda n: a * r**n):
        yield _fit(
            "geometric", f"multiply by {_fmt(r)} each time", 2, [a, r], lambda n: tuple(a * r**i for i in range(n))
        )


@cache
def _power_steps() -> dict[int, list[tuple[int, int]]]:
    """First difference (s+1)^k - s^k -> the (k, s) that give it, so fitting is a lookup."""
    table: dict[int, list[tuple[int, int]]] = {}
    for k in POWERS:
        for s in POWER_SHIFTS:
            table.setdefault((s + 1) ** k - s**k, []).append((k, s))
    return table


def fit_power(seq: Seq) -> Iterator[Fit]:
    """a_n = sign * (n + s)^k + c: squares, cubes and higher powers, shifted."""
    step = seq[1] - seq[0]
    if step == 0 or step.denominator != 1:
        return
    sign = 1 if step > 0 else -1
    for k, s in _power_steps().get(abs(int(step)), []):
        c = seq[0] - sign * s**k
        term = lambda n, s=s, k=k, c=c: sign * Fraction(n + s) ** k + c  # noqa: E731
        if _matches(seq, term, start=2):
            words = (
                f"{'-' if sign < 0 else ''}(n+{s})^{k}"
                + (f" {'+' if c > 0 else '-'} {_fmt(abs(c))}" if c else "")
                + ", n from 0"
            )
            params = [Fraction(s), c, Fraction(k - 1)]
            yield _fit("power", words, 2, params, lambda n, term=term: tuple(term(i) for i in range(n)))


def fit_exponential(seq: Seq) -> Iterator[Fit]:
    """a_n = b^(n+s) + c with a small integer base b."""
    step = seq[1] - seq[0]
    for b in EXP_BASES:
        for s in EXP_SHIFTS:
            if step != b ** (s + 1) - b**s:
                continue
            c = seq[0] - b**s
            term = lambda n, b=b, s=s, c=c: Fraction(b) ** (n + s) + c  # noqa: E731
            if c != 0 and _matches(seq, term, start=2):
                words = f"{b}^(n+{s}) {'+' if c >= 0 else '-'} {_fmt(abs(c))}, n from 0"
                params = [Fraction(b), Fraction(s), c]
                yield _fit("exponential", words, 2, params, lambda n, term=term: tuple(term(i) for i in range(n)))


def fit_primes(seq: Seq) -> Iterator[Fit]:
    """a_n = p_(n+s) + c over the primes 2, 3, 5, 7, ..."""
    table = primes()
    step = seq[1] - seq[0]
    for s in PRIME_SHIFTS:
        if table[s + 1] - table[s] != step:
            continue
        c = seq[0] - table[s]
        if all(table[s + n] + c == seq[n] for n in range(1, len(seq))):
            words = f"the primes from {table[s]}" + (f", {'+' if c > 0 else '-'} {_fmt(abs(c))}" if c else "")
            n_params = 1 if c == 0 else 2
            params = [Fraction(s)] + ([c] if c else [])
            yield _fit("primes", words, n_params, params, lambda n, s=s, c=c: tuple(table[s + i] + c for i in range(n)))


# --- recurrences -------------------------------------------------------------------


def fit_fibonacci(seq: Seq) -> Iterator[Fit]:
    gen = _Recurrence(seq[:2], lambda t: t[-1] + t[-2])
    if seq[:2] != (0, 0) and gen.matches(seq):
        yield _fit("fibonacci", "each term is the sum of the two before it", 2, list(seq[:2]), gen)


def fit_fibonacci_plus(seq: Seq) -> Iterator[Fit]:
    if len(seq) < 3:
        return
    c = seq[2] - seq[1] - seq[0]
    gen = _Recurrence(seq[:2], lambda t: t[-1] + t[-2] + c)
    if c != 0 and gen.matches(seq):
        words = f"each term is the sum of the two before it {'+' if c > 0 else '-'} {_fmt(abs(c))}"
        yield _fit("fibonacci_plus", words, 3, [*seq[:2], c], gen)


def fit_tribonacci(seq: Seq) -> Iterator[Fit]:
    gen = _Recurrence(seq[:3], lambda t: t[-1] + t[-2] + t[-3])
    if len(seq) >= 3 and any(seq[:3]) and gen.matches(seq):
        yield _fit("tribonacci", "each term is the sum of the three before it", 3, list(seq[:3]), gen)


def fit_product(seq: Seq) -> Iterator[Fit]:
    gen = _Recurrence(seq[:2], lambda t: t[-1] * t[-2])
    if len(set(seq)) > 1 and gen.matches(seq):
        yield _fit("product", "each term is the product of the two before it", 2, list(seq[:2]), gen)


def fit_square_plus(seq: Seq) -> Iterator[Fit]:
    """a_n = a_(n-1)^2 + c."""
    c = seq[1] - seq[0] ** 2
    gen = _Recurrence(seq[:1], lambda t: t[-1] ** 2 + c)
    if len(set(seq)) > 1 and gen.matches(seq):
        words = f"square the previous term and {'add' if c >= 0 else 'subtract'} {_fmt(abs(c))}"
        yield _fit("square_plus", words, 2, [seq[0], c], gen)


def fit_affine(seq: Seq) -> Iterator[Fit]:
    """a_n = p * a_(n-1) + q with q != 0 and p != 1 (else arithmetic or geometric)."""
    if len(seq) < 3 or seq[1] == seq[0]:
        return
    p = (seq[2] - seq[1]) / (seq[1] - seq[0])
    q = seq[1] - p * seq[0]
    gen = _Recurrence(seq[:1], lambda t: p * t[-1] + q)
    if p not in (0, 1) and q != 0 and gen.matches(seq):
        words = f"multiply the previous term by {_fmt(p)} and {'add' if q > 0 else 'subtract'} {_fmt(abs(q))}"
        yield _fit("affine", words, 3, [seq[0], p, q], gen)


def fit_linear2(seq: Seq) -> Iterator[Fit]:
    """a_n = p * a_(n-1) + q * a_(n-2), coefficients solved from the first four terms."""
    if len(seq) < 4:
        return
    det = seq[1] * seq[1] - seq[0] * seq[2]
    if det == 0:
        return
    p = (seq[2] * seq[1] - seq[0] * seq[3]) / det
    q = (seq[1] * seq[3] - seq[2] * seq[2]) / det
    gen = _Recurrence(seq[:2], lambda t: p * t[-1] + q * t[-2])
    if (p, q) != (1, 1) and q != 0 and gen.matches(seq):
        words = f"each term is {_fmt(p)}x the previous plus {_fmt(q)}x the one before"
        yield _fit("linear2", words, 4, [*seq[:2], p, q], gen)


SIMPLE_TEMPLATES = (
    fit_constant,
    fit_arithmetic,
    fit_geometric,
    fit_power,
    fit_exponential,
    fit_primes,
    fit_fibonacci,
    fit_fibonacci_plus,
    fit_tribonacci,
    fit_product,
    fit_square_plus,
    fit_affine,
    fit_linear2,
)


# --- rules built from rules ----------------------------------------------------------


def differences_of(first: Fraction, inner: Fit) -> Fit:
    def generate(n: int) -> Seq:
        terms = [first]
        for d in inner.generate(max(n - 1, 0)):
            terms.append(terms[-1] + d)
        return tuple(terms[:n])

    cost = BASE_COST["differences"] + param_bits(first) + inner.cost
    return Fit("differences", f"differences: {inner.words}", inner.n_params + 1, cost, generate)


def ratios_of(first: Fraction, inner: Fit) -> Fit:
    def generate(n: int) -> Seq:
        terms = [first]
        for r in inner.generate(max(n - 1, 0)):
            terms.append(terms[-1] * r)
        return tuple(terms[:n])

    cost = BASE_COST["ratios"] + param_bits(first) + inner.cost
    return Fit("ratios", f"ratios: {inner.words}", inner.n_params + 1, cost, generate)


def interleaving_of(odd: Fit, even: Fit) -> Fit:
    """Positions 1, 3, 5, ... follow `odd`; positions 2, 4, ... follow `even`."""

    def generate(n: int) -> Seq:
        a, b = odd.generate((n + 1) // 2), even.generate(n // 2)
        return tuple(a[i // 2] if i % 2 == 0 else b[i // 2] for i in range(n))

    cost = BASE_COST["interleaved"] + odd.cost + even.cost
    words = f"two interleaved series: odd positions {odd.words}; even positions {even.words}"
    return Fit("interleaved", words, odd.n_params + even.n_params, cost, generate)
