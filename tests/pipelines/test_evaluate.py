"""pass@k and majority vote against hand-computed values."""

import pytest

from pipelines.evaluate import majority, pass_at_k


def test_pass_at_k_is_one_minus_the_chance_that_k_draws_miss():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2) / C(4,2) of the pairs miss
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(4, 3, 2) == 1.0  # only one wrong answer: every pair holds a right one


def test_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError, match="correct <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)


def test_majority_counts_malformed_answers_and_breaks_ties_by_first_drawn():
    assert majority([[32], None, [31], [32]]) == [32]
    assert majority([None, None, [32]]) is None
    assert majority([[31], [32], [32], [31]]) == [31]
