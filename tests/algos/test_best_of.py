"""Best-of-k against subsets counted by hand."""

import itertools
import math
import random

import pytest

from algos.best_of import best_of_k, best_of_k_kl_bound


def test_the_rm_s_favourite_of_two_among_three_draws_by_hand():
    # subsets {a, b}: b (0.5) wins, wrong; {a, c}: c (0.3) wins, right; {b, c}: b wins, wrong
    assert best_of_k([0.1, 0.5, 0.3], [1, 0, 1], 2) == pytest.approx(1 / 3)
    assert best_of_k([0.1, 0.5, 0.3], [1, 0, 1], 1) == pytest.approx(2 / 3)  # one draw: the mean verdict
    assert best_of_k([0.1, 0.5, 0.3], [1, 0, 1], 3) == 0.0  # all three: the RM's favourite, wrong


def test_tied_scores_are_a_coin_toss_between_their_verdicts():
    # {a, b}: a tie between a right and a wrong answer, 0.5; {a, c}: a wins, right; {b, c}: b wins, wrong
    assert best_of_k([1.0, 1.0, 0.0], [1, 0, 1], 2) == pytest.approx(0.5)
    assert best_of_k([2.0, 2.0], [1, 1], 2) == 1.0  # the same right answer drawn twice


def test_it_is_the_mean_over_every_subset():
    rng = random.Random(0)
    scores = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(7)]  # ties on purpose
    verdicts = [rng.random() < 0.5 for _ in range(7)]

    def favourite(subset: tuple[int, ...]) -> float:
        best = max(scores[i] for i in subset)
        tied = [verdicts[i] for i in subset if scores[i] == best]
        return sum(tied) / len(tied)

    for k in range(1, 8):
        subsets = list(itertools.combinations(range(7), k))
        assert best_of_k(scores, verdicts, k) == pytest.approx(sum(map(favourite, subsets)) / len(subsets))


def test_k_out_of_range_or_unmatched_lengths_are_refused():
    with pytest.raises(ValueError, match="k must be from 1 to n"):
        best_of_k([0.1, 0.2], [1, 0], 3)
    with pytest.raises(ValueError, match="2 scores but 1 verdicts"):
        best_of_k([0.1, 0.2], [1], 1)


def test_the_kl_bound_of_best_of_k():
    assert best_of_k_kl_bound(1) == 0.0
    assert best_of_k_kl_bound(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_k_kl_bound(16) == pytest.approx(math.log(16) - 15 / 16)  # 1.8351
