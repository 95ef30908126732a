import math

import pytest

from algos.stats import clustered_stderr, fixed_and_broken, paired_difference, seed_difference, seed_spread


def test_one_sample_per_group_is_the_plain_standard_error():
    # hits 1,1,0,0: mean 1/2, residuals +-1/2, sqrt(4 * 1/4) / 4 = 1/4
    assert clustered_stderr([True, True, False, False], ["a", "b", "c", "d"]) == pytest.approx(0.25)


def test_correlated_groups_widen_the_error():
    # groups a = (1, 1), b = (0, 0): residual sums +1 and -1, sqrt(2) / 4
    assert clustered_stderr([True, True, False, False], ["a", "a", "b", "b"]) == pytest.approx(math.sqrt(2) / 4)


def test_mixed_groups_cancel_within_a_prompt():
    # groups a = (1, 0), b = (1, 0): residual sums 0 and 0
    assert clustered_stderr([True, False, True, False], ["a", "a", "b", "b"]) == 0.0


def test_lengths_must_match_and_empty_is_nan():
    with pytest.raises(ValueError, match="3 hits but 2 groups"):
        clustered_stderr([True, False, True], ["a", "b"])
    assert math.isnan(clustered_stderr([], []))


def test_a_paired_gain_counts_only_the_questions_that_changed():
    # diffs 0, -1, +1, +1: mean 0.25; residuals -0.25, -1.25, 0.75, 0.75 -> sqrt(2.75) / 4
    gain, stderr = paired_difference([True, True, False, False], [True, False, True, True])
    assert gain == 0.25 and abs(stderr - math.sqrt(2.75) / 4) < 1e-12
    same, none = paired_difference([True, False] * 50, [True, False] * 50)
    assert same == 0.0 and none == 0.0  # the same verdicts: no gain and no doubt, whatever the rate


def test_paired_verdicts_must_match_in_number():
    with pytest.raises(ValueError, match="3 verdicts before but 2 after"):
        paired_difference([True] * 3, [True] * 2)
    assert all(math.isnan(x) for x in paired_difference([], []))


def test_fixed_and_broken_count_the_questions_each_side_alone_passes():
    assert fixed_and_broken([True, True, False, False], [True, False, True, True]) == (2, 1)
    assert fixed_and_broken([True, False], [True, False]) == (0, 0)
    with pytest.raises(ValueError, match="1 verdicts before but 2 after"):
        fixed_and_broken([True], [True, False])


def test_seed_spread_is_the_mean_and_the_sample_standard_deviation():
    # 0.70, 0.74, 0.78: mean 0.74, deviations -0.04, 0, 0.04: sqrt(0.0032 / 2) = 0.04
    mean, sd = seed_spread([0.70, 0.74, 0.78])
    assert mean == pytest.approx(0.74) and sd == pytest.approx(0.04)
    mean, sd = seed_spread([0.5])
    assert mean == 0.5 and math.isnan(sd)  # one seed says nothing of the spread
    assert all(math.isnan(v) for v in seed_spread([]))


def test_seed_difference_pairs_the_arms_by_seed():
    # differences 0.02, 0, 0.05: mean 0.07 / 3; deviations -1/300, -7/300, 8/300:
    # sd = sqrt((1 + 49 + 64) / 90000 / 2) = sqrt(114 / 180000); stderr = sd / sqrt(3)
    mean, stderr = seed_difference([0.70, 0.74, 0.78], [0.72, 0.74, 0.83])
    assert mean == pytest.approx(0.07 / 3)
    assert stderr == pytest.approx(math.sqrt(114 / 180000) / math.sqrt(3))
    # a constant shift has no error, however far apart the seeds are
    assert seed_difference([0.1, 0.5, 0.9], [0.2, 0.6, 1.0]) == (pytest.approx(0.1), pytest.approx(0.0))
    with pytest.raises(ValueError, match="2 seeds in the first arm but 1"):
        seed_difference([0.1, 0.2], [0.3])
