"""Uncertainty of an accuracy measured on grouped samples. Pure Python.

Held-out preference pairs come in groups: every pair of one prompt shares that prompt's
difficulty, so a prompt with 16 pairs counts less than 16 independent ones. The
cluster-robust standard error says how far the accuracy could move with other prompts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence


def clustered_stderr(hits: Sequence[bool], groups: Sequence[Hashable]) -> float:
    """Standard error of mean(hits) with the samples of one group correlated (CR0 sandwich).

    sqrt(sum over groups g of (sum_{i in g} (hit_i - mean))^2) / n; with one sample per
    group it is the usual sqrt(sum (hit_i - mean)^2) / n.
    """
    if len(hits) != len(groups):
        raise ValueError(f"{len(hits)} hits but {len(groups)} groups")
    if not hits:
        return float("nan")
    mean = sum(hits) / len(hits)
    residuals: dict[Hashable, float] = defaultdict(float)
    for hit, group in zip(hits, groups, strict=True):
        residuals[group] += float(hit) - mean
    return math.sqrt(sum(r * r for r in residuals.values())) / len(hits)


def paired_difference(before: Sequence[bool], after: Sequence[bool]) -> tuple[float, float]:
    """Mean of after_i - before_i over the same questions, and its standard error.

    Two policies judged on the same questions mostly agree (a question passes or fails for
    both), and that part cancels within each pair: the error of the gain counts only the
    questions whose verdict changed, and is far smaller than either pass rate's own.
    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} verdicts before but {len(after)} after")
    if not before:
        return float("nan"), float("nan")
    diffs = [float(a) - float(b) for b, a in zip(before, after, strict=True)]
    mean = sum(diffs) / len(diffs)
    return mean, math.sqrt(sum((d - mean) ** 2 for d in diffs)) / len(diffs)


def fixed_and_broken(before: Sequence[bool], after: Sequence[bool]) -> tuple[int, int]:
    """How many questions pass only after (fixed) and only before (broken): the paired gain's two sides."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} verdicts before but {len(after)} after")
    fixed = sum(a and not b for b, a in zip(before, after, strict=True))
    broken = sum(b and not a for b, a in zip(before, after, strict=True))
    return fixed, broken


def seed_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean of one result over RL seeds and its sample standard deviation (n - 1): the spread a single run's
    figure carries from its seed alone (nan with one seed)."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, float("nan")
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_difference(first: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """Mean of other_s - first_s over the same seeds and its standard error (sample sd / sqrt(n)).

    Two arms at one seed ask the same prompts and start from the same draws, so the part of the seed's
    noise they share cancels within each pair.
    """
    if len(first) != len(other):
        raise ValueError(f"{len(first)} seeds in the first arm but {len(other)} in the other")
    mean, sd = seed_spread([o - f for f, o in zip(first, other, strict=True)])
    return mean, sd / math.sqrt(len(first)) if first else float("nan")
