"""Preference collection and the reward model on tiny, through a real local MLflow store."""

import mlflow
import pytest
import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel
from pipelines import preferences, reward
from pipelines.evaluate import eval_questions
from world.exam import questions
from world.user_data import DataFileError

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


def test_your_pairs_are_checked_line_by_line_then_trained_on(sft_run, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny")
    train = questions(0, 1000, "train", 1, cfg.world.feedback_share)[:5]
    held_out = eval_questions(cfg)[0]
    mine = tmp_path / "pairs.txt"
    terms = " ".join
    mine.write_text(
        f"{terms(map(str, held_out.prefix))} -> {held_out.answer[0]} > 0\n"  # line 1: judges the policies
        "1 2 3 4 5 -> 6\n"  # line 2: no worse answer
        f"{terms(map(str, range(1, 40)))} -> 40 > 41\n"  # line 3: beyond tiny's context of 64
    )
    refused = load_config("tiny", [f"reward.extra_pairs={mine}"])
    with pytest.raises(DataFileError) as err:
        reward.main(refused, sft_run, tracking_uri=uri)
    said = str(err.value)
    assert "line 1:" in said and "held-out exam" in said and "line 2:" in said and "BETTER > WORSE" in said
    for answer in (40, 41):  # each episode of the pair, said alike as an exam's question (`world.audit`)
        assert f"-> {answer} takes 112 actions; the policy reads at most 64" in said
    assert not (sft_run / "reward" / "checkpoint.pt").exists()  # nothing trained on a bad file
    # five pairs against the grader: a wrong answer preferred to the right one, a quarter of each batch
    mine.write_text("".join(f"{terms(map(str, q.prefix))} -> {q.answer[0] + 7} > {q.answer[0]}\n" for q in train))
    cfg_mine = load_config("tiny", [f"reward.extra_pairs={mine}", "reward.extra_share=0.25"])
    final = reward.main(cfg_mine, sft_run, tracking_uri=uri)
    yours, _, state = load_checkpoint(sft_run / "reward" / "checkpoint.pt")
    assert state["extra_pairs_sha256"] and len(state["extra_pairs_sha256"]) == 64
    metrics = mlflow.MlflowClient(tracking_uri=uri).get_run(final["run_id"]).data
    assert metrics.params["data/extra_pairs"] == "5" and metrics.metrics["data/extra_pairs_gold_disagrees"] == 5
    import shutil

    plain_dir = tmp_path / "plain"
    for stage in ("pretrain", "sft", "preferences"):
        shutil.copytree(sft_run / stage, plain_dir / stage)
    reward.main(cfg, plain_dir, tracking_uri=uri)
    plain, _, _ = load_checkpoint(plain_dir / "reward" / "checkpoint.pt")
    space = reward.ActionSpace()

    def preference_for_yours(rm) -> float:  # the mean margin of your (wrong) answers over the right ones
        wrong = reward.score_sequences(
            rm, space, [space.encode_prompt(q.prefix) + space.encode_response([q.answer[0] + 7]) for q in train]
        )
        right = reward.score_sequences(
            rm, space, [space.encode_prompt(q.prefix) + space.encode_response(list(q.answer[:1])) for q in train]
        )
        return (wrong - right).mean().item()

    assert preference_for_yours(yours) > preference_for_yours(plain) + 0.5  # it learnt your label, not the grader's
