"""Best-of-k with a reward model: what a perfect optimiser of the RM would reach, and the KL it would cost.

From n draws of a policy on one question, each with the RM's score and the gold grader's verdict, the
expected verdict of the RM's favourite among k of them (k <= n, the k drawn without replacement) is exact
over all C(n, k) subsets: sorted by score, the i-th lowest is the favourite of C(i - 1, k - 1) of them
(Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", use this estimator). Best-of-k's policy
is at most log k - (k - 1) / k nats from the one it draws from (Stiennon et al. 2020; Beirami et al. 2024
show it is an upper bound). Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import groupby


def best_of_k(scores: Sequence[float], verdicts: Sequence[float], k: int) -> float:
    """E[verdict of the top-scored of k draws among the n given], over every k-subset of them.

    Draws with equal scores (the same answer drawn twice scores the same) share the chance of being the
    favourite, and a tie between them is a coin toss: their mean verdict counts.
    """
    n = len(scores)
    if len(verdicts) != n:
        raise ValueError(f"{n} scores but {len(verdicts)} verdicts")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} of {n} draws: k must be from 1 to n")
    subsets, below, expected = math.comb(n, k), 0, 0.0
    ranked = sorted(zip(scores, verdicts, strict=True), key=lambda draw: draw[0])
    for _, tied in groupby(ranked, key=lambda draw: draw[0]):
        tied_verdicts = [verdict for _, verdict in tied]
        up_to = below + len(tied_verdicts)
        # subsets whose best score is this one: all k within the first `up_to`, not all within the first `below`
        favourite = (math.comb(up_to, k) - math.comb(below, k)) / subsets
        expected += favourite * sum(tied_verdicts) / len(tied_verdicts)
        below = up_to
    return expected


def best_of_k_kl_bound(k: int) -> float:
    """KL(best-of-k || the policy drawn from) <= log k - (k - 1) / k nats, per response."""
    if k < 1:
        raise ValueError(f"k={k}: at least one draw")
    return math.log(k) - (k - 1) / k
