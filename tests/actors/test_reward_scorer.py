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
    texts = ray_local.get(scorer.score_texts.remote([[1, 2, 4, 8, 16]], [SPACE.encode_response([32])]))
    assert len(texts) == 1
