"""PPO minibatches: disjoint, covering the batch, each normalised over its own rows."""

import numpy as np
import pytest
import torch

from actors.learner import MODULE_ID
from models.rollout import Rollouts
from pipelines.rl_batch import learner_batch, minibatches


def rollouts(lengths: list[int]) -> Rollouts:
    B, T = len(lengths), 6
    action_mask = torch.zeros(B, T, dtype=torch.bool)
    for row, n in enumerate(lengths):
        action_mask[row, 2 : 2 + n] = True
    return Rollouts(
        tokens=torch.arange(B * T).view(B, T), mask=torch.ones(B, T, dtype=torch.long), action_mask=action_mask,
        logprobs=-torch.rand(B, T) * action_mask, group=torch.arange(B) // 2, finished=torch.ones(B, dtype=torch.bool),
        policy_version=0, prompt_width=2,
    )  # fmt: skip


def test_minibatches_split_the_rows_and_recount_their_denominators():
    r = rollouts([1, 2, 3, 4, 1, 2])
    batch = learner_batch(r, torch.ones(6, 6), r.logprobs, torch.zeros(6, 6, 16), max_len=4, kl_coef=0.05)
    parts = minibatches(batch, 2, np.random.default_rng(0))
    rows = [p.policy_batches[MODULE_ID] for p in parts]
    firsts = sorted(int(t[0]) // 6 for part in rows for t in part["tokens"])
    assert firsts == [0, 1, 2, 3, 4, 5]  # every row once
    for part in rows:
        assert len(part) == 3
        assert part["den_sequences"].tolist() == [3.0] * 3
        assert part["den_actions"][0] == part["action_mask"].sum()  # its own actions, not the batch's 13
        assert part["den_max_len"][0] == 4.0
        assert part["kl_coef"].tolist() == pytest.approx([0.05] * 3)  # the iteration's KL coefficient goes along
    assert sum(part["den_actions"][0] for part in rows) == 13.0


def test_one_minibatch_is_the_batch_itself():
    r = rollouts([1, 2])
    batch = learner_batch(r, torch.ones(2, 6), r.logprobs, torch.zeros(2, 6, 16), max_len=4, kl_coef=0.05)
    assert minibatches(batch, 1, np.random.default_rng(0)) == [batch]
