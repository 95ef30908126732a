"""The learners' reports as one: a loss is each learner's share times the world size, so the mean is the batch's."""

import math

import pytest

from actors.learner import MODULE_ID
from pipelines.rl_batch import learner_metrics


def test_several_learners_reports_are_averaged_their_largest_kept_as_largest():
    results = [
        {MODULE_ID: {"loss/ptx": 0.0, "rl/ratio_max": 1.5, "num_trainable_parameters": 100}},
        {MODULE_ID: {"loss/ptx": 3.0, "rl/ratio_max": 1.1, "num_trainable_parameters": 100}},
    ]
    assert learner_metrics(results) == {"loss/ptx": 1.5, "rl/ratio_max": 1.5, "learner/num_trainable_parameters": 100}
    one = {"loss/ptx": 3.0, "rl/ratio_max": 1.1, "learner/num_trainable_parameters": 100}
    assert learner_metrics(results[1]) == one  # a local learner's, as it reported them


def test_a_number_rllib_logged_once_is_left_out_where_the_losses_nan_stays():
    got = learner_metrics({MODULE_ID: {"num_trainable_parameters": math.nan, "loss/policy": math.nan, "total_loss": 2}})
    assert set(got) == {"loss/policy", "learner/total_loss"} and math.isnan(got["loss/policy"])
    assert got["learner/total_loss"] == pytest.approx(2.0)
