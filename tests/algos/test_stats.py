import math

import pytest

from algos.stats import clustered_stderr


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
