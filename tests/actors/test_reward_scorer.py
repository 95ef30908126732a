"""The RewardScorer on a real local Ray: one score per response, normalised within a prompt on request."""

import pytest
import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.rollout import sample_rollouts
from pipelines import reward
from world.actions import ActionSpace

pytestmark = pytest.mark.slow
SPACE = ActionSpace()


def test_scorer_actor_scores_every_response(sft_run, tmp_path, ray_local):
    from actors.cluster import actor_options
    from actors.reward_scorer import RewardScorer

    cfg = load_config("tiny", ["reward.steps=4", "reward.eval_every=4", "reward.checkpoint_every=4"])
    reward.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    policy, _, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    prompts = [SPACE.encode_prompt([1, 2, 4, 8, 16]), SPACE.encode_prompt([3, 5, 7, 9])]
    rollouts = sample_rollouts(policy, SPACE, prompts, group_size=3, max_new_tokens=8, policy_version=0)
    ckpt = str(sft_run / "reward" / "checkpoint.pt")
    scorer = RewardScorer.options(**actor_options(cfg.rl.actors.reward)).remote(ckpt)
    scores = ray_local.get(scorer.score.remote(rollouts))
    assert scores.shape == (6,) and torch.isfinite(scores).all()
    per_prompt = RewardScorer.remote(ckpt, per_prompt=True)
    normalised = ray_local.get(per_prompt.score.remote(rollouts))
    for g in range(2):
        assert abs(normalised[rollouts.group == g].mean().item()) < 1e-4
    assert torch.allclose(ray_local.get(scorer.score.remote(rollouts, per_prompt=True)), normalised)
    assert torch.allclose(ray_local.get(per_prompt.score.remote(rollouts, per_prompt=False)), scores)
    texts = ray_local.get(scorer.score_texts.remote([[1, 2, 4, 8, 16]], [SPACE.encode_response([32])]))
    assert len(texts) == 1


def test_scorer_reads_the_rm_through_the_views_it_was_trained_with(sft_run, tmp_path, ray_local):
    from actors.reward_scorer import RewardScorer
    from models.heads import score_sequences

    overrides = ["reward.steps=4", "reward.eval_every=4", "reward.checkpoint_every=4", "reward.views=2"]
    cfg = load_config("tiny", overrides)
    reward.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ckpt = sft_run / "reward" / "checkpoint.pt"
    rm, _, state = load_checkpoint(ckpt)
    assert state["reward_views"] == {"views": 2, "min_terms": 3}
    policy, _, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    prompts = [SPACE.encode_prompt([1, 2, 4, 8, 16]), SPACE.encode_prompt([3, 5, 7])]
    rollouts = sample_rollouts(policy, SPACE, prompts, group_size=2, max_new_tokens=8, policy_version=0)
    scores = ray_local.get(RewardScorer.remote(str(ckpt)).score.remote(rollouts))
    sequences = [p + r for p, r in zip([prompts[0]] * 2 + [prompts[1]] * 2, rollouts.responses(), strict=True)]
    norm = state["reward_norm"]
    expected = (score_sequences(rm, SPACE, sequences, views=2) - norm["mean"]) / norm["std"]
    assert torch.allclose(scores, expected, atol=1e-4)
    one_view = (score_sequences(rm, SPACE, sequences, views=1) - norm["mean"]) / norm["std"]
    assert not torch.allclose(scores[:2], one_view[:2], atol=1e-4)  # the five-term prompt was read twice
