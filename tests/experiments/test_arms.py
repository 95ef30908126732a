"""The experiments' pure parts against hand-computed values, and the arm guard."""

import pytest
import torch

from conf.load import ConfigError, load_config
from experiments.contrastive import median_labels
from experiments.rm_pairs import cross_prompt_pairs
from experiments.runner import Arm, Experiment, ExperimentRefused, arm_configs, seeded_arms
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


def test_seeded_arms_repeat_each_arm_at_the_next_rl_seeds_first_seed_first():
    exp = Experiment("x", "?", ("rl.kl_coef",), ("pretrain", "sft", "reward"),
                     (Arm("a"), Arm("b", ("rl.kl_coef=0.5",), variant="v")), None, None)  # fmt: skip
    cfg = load_config("tiny", ["rl.seed=7"])
    arms = seeded_arms(exp, cfg, 3)
    assert [a.name for a in arms] == ["a", "b", "a-seed8", "b-seed8", "a-seed9", "b-seed9"]
    assert arms[3] == Arm("b-seed8", ("rl.kl_coef=0.5", "rl.seed=8"), "v", repeats="b") and arms[3].family == "b"
    configs = arm_configs(exp, cfg, arms)  # the seed may differ between replicas, and nothing else
    assert [configs[a.name].rl_seed for a in arms] == [7, 7, 8, 8, 9, 9]
    assert configs["b-seed9"].rl.kl_coef == 0.5 and configs["b-seed9"].seed == cfg.seed
    assert seeded_arms(exp, cfg, 1) == exp.arms
    with pytest.raises(ValueError, match=r"rl\.seed"):  # without replicas an arm may not change the seed
        arm_configs(exp, cfg, (Arm("a"), Arm("c", ("rl.seed=3",))))
    seeded = Experiment("z", "?", ("rl.seed",), exp.shared, (Arm("a"), Arm("s", ("rl.seed=3",))), None, None)
    assert seeded_arms(seeded, cfg, 1) == seeded.arms  # arms of other seeds: a comparison of its own
    with pytest.raises(ExperimentRefused, match=r"arm s sets rl\.seed itself"):
        seeded_arms(seeded, cfg, 2)
    before_rl = Experiment("y", "?", (), ("pretrain",), (Arm("a"),), None, None)
    with pytest.raises(ExperimentRefused, match=r"train stages before RLHF \(sft, preferences, reward\)"):
        seeded_arms(before_rl, cfg, 2)


def test_the_rl_seed_is_the_runs_unless_set_and_changing_it_retrains_rlhf_alone():
    from pipelines.run_config import reusable_stages

    assert load_config("tiny", ["seed=4"]).rl_seed == 4
    assert load_config("tiny", ["seed=4", "rl.seed=9"]).rl_seed == 9
    trained = load_config("tiny").model_dump()
    assert reusable_stages(trained, load_config("tiny", ["rl.seed=1"]).model_dump()) == (
        "pretrain", "sft", "preferences", "reward",
    )  # fmt: skip
    assert reusable_stages(trained, load_config("tiny", ["seed=1"]).model_dump()) == ()
    with pytest.raises(ConfigError, match=r"rl\.seed"):
        load_config("tiny", ["rl.seed=-1"])


def test_lagging_samplers_need_a_buffer_that_accepts_their_samples():
    with pytest.raises(ConfigError, match="max_staleness"):
        load_config("tiny", ["rl.sync_every=3"])
    assert load_config("tiny", ["rl.sync_every=3", "rl.max_staleness=2"]).rl.sync_every == 3


def test_a_sweeps_arms_are_a_name_and_the_rlhf_settings_they_change():
    from experiments.sweep import parse_arm, sweep

    assert parse_arm("hot rl.temperature=1.2  rl.kl_coef=0.1") == Arm("hot", ("rl.temperature=1.2", "rl.kl_coef=0.1"))
    assert parse_arm("base") == Arm("base")
    exp = sweep(["base", "hot rl.temperature=1.2", "cold rl.temperature=0.8 rl.lr=1e-5"])
    assert exp.changes == ("rl.lr", "rl.temperature") and exp.shared == ("pretrain", "sft", "reward")
    configs = arm_configs(exp, load_config("tiny"))
    assert configs["cold"].rl.temperature == 0.8 and configs["hot"].rl.lr == configs["base"].rl.lr


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["base"], "two arms or more"),
        (["a", "a rl.lr=1e-5"], "arm names repeat: a"),
        (["base", "rl.lr=1e-5"], "give the arm a name first"),
        (["base", ""], "give the arm a name first"),
        (["base", "x rl.lr"], "'rl.lr' is not FIELD=VALUE"),
        (["base", "x sft.lr=1e-3"], r"RLHF's settings \(rl\.\*\) only.*sft\.lr is not one"),
    ],
)
def test_a_sweep_refuses_arms_it_cannot_compare(arms, message):
    from experiments.sweep import sweep

    with pytest.raises(ExperimentRefused, match=message):
        sweep(arms)
