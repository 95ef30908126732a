"""Over-optimisation on a learnt reward: where the gold reward turns down while the proxy still rises.

A policy trained on a reward model's score finds the model's errors: the proxy reward keeps rising after
the gold reward (the grader on the same samples) has peaked (Goodhart; Gao et al. 2022). Both are noisy
per iteration, so the turn is read on trailing means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (the first points average what there is)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


@dataclass(frozen=True)
class Turn:
    """Where the averaged gold reward peaked (an index into the series) and what both did after it."""

    peak: int
    gold_at_peak: float
    gold_now: float
    proxy_rise: float  # the averaged proxy reward now minus at the gold peak

    @property
    def gold_fall(self) -> float:
        return self.gold_at_peak - self.gold_now


def turning_point(gold: Sequence[float], proxy: Sequence[float], window: int) -> Turn:
    """The averaged gold reward's peak (the first, on ties) and the change of both rewards since.

    The peak is sought among full windows once there are any: a mean of the first one or two iterations is
    as noisy as they are, and a lucky first batch would stand as the peak of the run."""
    if not gold or len(gold) != len(proxy):
        raise ValueError(f"need as many proxy as gold rewards, at least one: {len(gold)} gold, {len(proxy)} proxy")
    g, p = moving_average(gold, window), moving_average(proxy, window)
    full = range(window - 1, len(g)) if len(g) >= window else range(len(g))
    peak = max(full, key=g.__getitem__)
    return Turn(peak=peak, gold_at_peak=g[peak], gold_now=g[-1], proxy_rise=p[-1] - p[peak])


def overoptimised(gold: Sequence[float], proxy: Sequence[float], window: int, drop: float) -> Turn | None:
    """The turn, once the averaged gold reward has fallen at least `drop` below its peak while the averaged
    proxy reward has risen since; None before (and while the proxy falls too: that is not the RM misleading),
    and before a full window."""
    if len(gold) < window:
        return None
    turn = turning_point(gold, proxy, window)
    return turn if turn.gold_fall >= drop - 1e-12 and turn.proxy_rise > 0 else None  # 1e-12: 0.3 - 0.2 < 0.1
