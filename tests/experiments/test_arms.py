"""The experiments' pure parts against hand-computed values, and the arm guard."""

import pytest
import torch

from conf.load import ConfigError, load_config
from experiments.contrastive import median_labels
from experiments.rm_pairs import cross_prompt_pairs
from experiments.runner import Arm, Experiment, arm_configs
from world.preferences import PreferencePair


def test_median_labels_split_each_group_at_its_median():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.3, 0.9, 0.1, 0.5])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mask = torch.ones(8, 2)
    mask[0, 1] = 0
    labels = median_labels(rewards, group, mask)
    # group 0: median 0 -> only the 1.0 is above it; group 1: torch's lower median 0.3 -> 0.9 and 0.5 above
    assert labels[:, 0].tolist() == [1, -1, -1, -1, -1, 1, -1, 1]
    assert labels[0, 1] == 0  # padding carries no label


def test_an_all_wrong_group_is_pushed_down_whole():
    labels = median_labels(torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.ones(4, 1))
    assert labels.squeeze(1).tolist() == [-1, -1, -1, -1]


def pair(prompt, good, bad, agrees=True):
    chosen, rejected = (good, bad) if agrees else (bad, good)
    return PreferencePair((prompt,), (chosen,), (rejected,), "correctness", agrees)


def test_cross_prompt_pairs_keep_the_size_and_never_share_a_prompt():
    pairs = [pair(p, 10 * p + 1, 10 * p + 2, agrees=p % 2 == 0) for p in range(20)]
    cross = cross_prompt_pairs(pairs, seed=0, noise=0.0)
    assert len(cross) == len(pairs)
    assert all(c.chosen_prompt != c.rejected_prompt for c in cross)
    # without noise the chosen side is always a gold-better response (ends in 1), the rejected a worse one
    assert all(c.chosen[0] % 10 == 1 and c.rejected[0] % 10 == 2 for c in cross)
    assert all(c.sequences() == (c.chosen_prompt + c.chosen, c.rejected_prompt + c.rejected) for c in cross)


def test_arms_may_differ_only_in_the_named_setting():
    exp = Experiment("x", "?", ("rl.kl_coef",), (), (Arm("a"), Arm("b", ("rl.lr=1e-3",))), None, None)
    with pytest.raises(ValueError, match=r"rl\.lr"):
        arm_configs(exp, load_config("tiny"))
    ok = Experiment("x", "?", ("rl.kl_coef",), (), (Arm("a"), Arm("b", ("rl.kl_coef=0.5",))), None, None)
    assert arm_configs(ok, load_config("tiny"))["b"].rl.kl_coef == 0.5


def test_lagging_samplers_need_a_buffer_that_accepts_their_samples():
    with pytest.raises(ConfigError, match="max_staleness"):
        load_config("tiny", ["rl.sync_every=3"])
    assert load_config("tiny", ["rl.sync_every=3", "rl.max_staleness=2"]).rl.sync_every == 3
