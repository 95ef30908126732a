"""bench/paired.py: ratios taken within rounds, checked against hand-computed quartiles."""

import pytest

from bench.paired import Rates, paired_ratio


def test_the_paired_ratio_is_the_median_and_quartiles_of_the_ratios_within_rounds():
    # ratios 1, 2, 3, 4 (in another order): inclusive quartiles 1.75, 2.5, 3.25
    assert paired_ratio([30, 10, 40, 20], [10, 10, 10, 10]) == {"median": 2.5, "q1": 1.75, "q3": 3.25, "rounds": 4}


def test_a_round_where_both_ran_slow_leaves_the_best_of_each_and_the_paired_ratio_as_they_were():
    # ours is twice theirs in every round; in round 2 the machine ran at under a third of its speed for both
    rates = Rates({"ours": [200.0, 60.0, 180.0], "hf": [100.0, 30.0, 90.0]})
    assert rates["ours"] == 200.0 and rates["hf"] == 100.0  # the best round of each
    assert rates.paired("ours", "hf") == {"median": 2.0, "q1": 2.0, "q3": 2.0, "rounds": 3}


def test_the_best_of_each_run_can_disagree_with_the_rounds():
    # the best of each says ours is 1.25x theirs; round by round ours was behind in two rounds of three
    rates = Rates({"ours": [125.0, 80.0, 90.0], "hf": [100.0, 100.0, 100.0]})
    assert rates["ours"] / rates["hf"] == 1.25
    assert rates.paired("ours", "hf")["median"] == 0.9


def test_one_round_is_its_own_median_and_a_missing_run_has_no_ratio():
    rates = Rates({"ours": [150.0], "hf": [100.0]})
    assert rates.paired("ours", "hf") == {"median": 1.5, "q1": 1.5, "q3": 1.5, "rounds": 1}
    assert rates.paired("ours", "eager") is None and rates.get("eager") is None
    assert rates.renamed("ours", "onednn")["onednn"] == 150.0


def test_no_rounds_and_unequal_rounds_are_refused():
    with pytest.raises(ValueError, match="no rounds"):
        paired_ratio([], [])
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])
