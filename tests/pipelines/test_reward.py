"""Preference collection and the reward model on tiny, through a real local MLflow store."""

import mlflow
import pytest
import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel
from pipelines import preferences, reward
from world.exam import questions

pytestmark = pytest.mark.slow


def test_pairs_come_from_the_sft_policy_and_stay_within_one_prompt(sft_run):
    cfg = load_config("tiny")
    prefs = preferences.main(cfg, sft_run)
    feedback = questions(0, 1000, "feedback", 1, cfg.world.feedback_share)
    assert prefs.train and prefs.counts["train/prompts"] == len(feedback)  # the pool is smaller than 600
    kept = prefs.counts["train/kept_correctness"] + prefs.counts.get("train/kept_format", 0)
    dropped = prefs.counts["train/dropped_identical"] + prefs.counts["train/dropped_no_preference"]
    assert kept == len(prefs.train) and kept + dropped == prefs.counts["train/candidates"]
    assert all(p.chosen != p.rejected for p in prefs.train)
    again = preferences.main(cfg, sft_run)  # a complete collection is reused, not resampled
    assert again.train == prefs.train


@pytest.mark.parametrize("likelihood_feature", [True, False])
def test_reward_model_beats_chance_on_its_pairs_and_reports_gold_accuracy(sft_run, tmp_path, likelihood_feature):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [f"reward.likelihood_feature={likelihood_feature}"])
    final = reward.main(cfg, sft_run, tracking_uri=uri)
    for key in ("rm/gold_accuracy", "rm/label_accuracy", "rm/cross_prompt_accuracy"):
        assert 0.0 <= final[key] <= 1.0
    rm, _, state = load_checkpoint(sft_run / "reward" / "checkpoint.pt")
    assert isinstance(rm, ScalarModel) and state["reward_norm"]["std"] > 0
    assert (rm.query_id is not None) == likelihood_feature
    prefs = preferences.load(sft_run / "preferences")
    chosen = reward.score_sequences(rm, reward.ActionSpace(), [p.prompt + p.chosen for p in prefs.train])
    rejected = reward.score_sequences(rm, reward.ActionSpace(), [p.prompt + p.rejected for p in prefs.train])
    assert (chosen > rejected).float().mean().item() > 0.6
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(final["run_id"])
    assert run.data.metrics["data/train/candidates"] == 6 * run.data.metrics["data/train/prompts"]
    assert "rm/gold_accuracy_correctness" in run.data.metrics
    assert 0.0 <= run.data.metrics["rm/gold_accuracy_stderr"] < 0.5  # counted over prompts: algos.stats


@pytest.mark.parametrize("freeze_trunk", [False, True])
def test_reward_stage_resumes_to_the_same_weights(sft_run, tmp_path, freeze_trunk):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [f"reward.freeze_trunk={freeze_trunk}"])
    reward.main(cfg, sft_run, tracking_uri=uri, stop_at=30)
    resumed = reward.main(cfg, sft_run, tracking_uri=uri)
    straight_dir = sft_run.parent / "straight"
    import shutil

    for stage in ("pretrain", "sft", "preferences"):
        shutil.copytree(sft_run / stage, straight_dir / stage)
    straight = reward.main(cfg, straight_dir, tracking_uri=uri)
    a, _, _ = load_checkpoint(sft_run / "reward" / "checkpoint.pt")
    b, _, _ = load_checkpoint(straight_dir / "reward" / "checkpoint.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert resumed["rm/gold_accuracy"] == straight["rm/gold_accuracy"]
    sft, _, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    pairs = zip(sft.state_dict().values(), a.trunk.state_dict().values(), strict=True)
    trunk_unchanged = all(torch.equal(x, y) for x, y in pairs)
    assert trunk_unchanged == freeze_trunk  # frozen before and after the resume, or trained throughout


def test_learning_curve_trains_one_model_per_size(sft_run, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", ["reward.steps=5"])
    points = reward.learning_curve(cfg, sft_run, [20, 10_000], tracking_uri=uri)
    assert points[0]["pairs"] == 20 and points[1]["pairs"] == len(preferences.load(sft_run / "preferences").train)
    assert all(0 <= p["rm/gold_accuracy"] <= 1 for p in points)
