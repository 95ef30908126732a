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


def test_sharpening_headroom_counts_the_questions_greedy_misses_by_their_right_draws():
    from pipelines.evaluate import sharpening_headroom

    greedy = [True, False, False, False, True]
    right = [3, 0, 1, 4, 0]  # of 4 draws each
    assert sharpening_headroom(greedy, right, 4) == {
        "eval/greedy_missed_sampled_right_at_4": 2 / 5,  # questions 2 and 3
        "eval/greedy_missed_sampled_once_at_4": 1 / 5,  # question 2
        "eval/greedy_missed_never_at_4": 1 / 5,  # question 1
    }
    with pytest.raises(ValueError, match="one greedy verdict"):
        sharpening_headroom([True], [1, 2], 4)
