"""Speed ratios that hold on a noisy machine: two runs timed back to back, round after round.

On a shared 2-core machine a call's time moves by 15-20% from one minute to the next (the median
of 30 calls sat that far above their best), and a single best-of-5 comparison of two kernels once
put one 11% ahead where 30 interleaved rounds put them level. A ratio taken within each round, where
both runs met the same spell of the machine, and summarised by its median and quartiles over the
rounds, says how far a comparison holds; the best of each run (`max` of its rounds) stays the headline.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def paired_ratio(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float | int]:
    """ours[i] / theirs[i] for each round i: median, first and third quartile (inclusive method), rounds."""
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    if not ratios:
        raise ValueError("no rounds to compare")
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    return {"median": round(median, 2), "q1": round(q1, 2), "q3": round(q3, 2), "rounds": len(ratios)}


@dataclass(frozen=True)
class Rates:
    """Each run's rate (new tokens/s) round by round, the runs taken in turn within a round."""

    rounds: dict[str, list[float]]

    def __getitem__(self, name: str) -> float:
        """The run's best round: the headline figure, as the machine allowed at its fastest."""
        return max(self.rounds[name])

    def get(self, name: str) -> float | None:
        return self[name] if name in self.rounds else None

    def paired(self, name: str, against: str) -> dict[str, float | int] | None:
        """`name`'s rate over `against`'s, round by round (`paired_ratio`); None if either did not run."""
        if name not in self.rounds or against not in self.rounds:
            return None
        return paired_ratio(self.rounds[name], self.rounds[against])

    def renamed(self, name: str, as_: str) -> Rates:
        """The same rounds with `name`'s also under `as_` (the machine's default kernel as "ours")."""
        return Rates({**self.rounds, as_: self.rounds[name]})
