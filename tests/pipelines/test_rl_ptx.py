"""PPO-ptx's rows: SFT's questions after the rollouts, padded to one width, the policy loss's counts untouched."""

import numpy as np
import torch

from actors.learner import MODULE_ID, PTX_WEIGHT
from conf.load import load_config
from pipelines.evaluate import eval_questions
from pipelines.rl_batch import learner_batch
from pipelines.rl_prompts import feedback_pool
from pipelines.rl_ptx import ptx_data, with_ptx
from pipelines.sft import train_questions
from tests.pipelines.test_minibatches import rollouts
from world.actions import ActionSpace

SPACE = ActionSpace()


def test_with_ptx_appends_sft_s_rows_padded_and_leaves_the_rollouts_and_their_counts_as_they_were():
    r = rollouts([1, 2, 3])  # 3 rows of 6 columns, 6 actions
    batch = learner_batch(r, torch.ones(3, 6), r.logprobs, torch.full((3, 6, 16), -1.0), max_len=4, kl_coef=0.05)
    sft_rows = {
        "tokens": np.array([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 0, 0, 0, 0]]),
        "mask": np.array([[1] * 8, [1, 1, 1, 1, 0, 0, 0, 0]]),
        PTX_WEIGHT: np.full((2, 8), 0.25, np.float32),
    }
    before = batch.policy_batches[MODULE_ID]
    after = with_ptx(batch, sft_rows, pad_id=SPACE.pad_id).policy_batches[MODULE_ID]
    assert after["tokens"].shape == (5, 8) and after["ref_dist"].shape == (5, 8, 16)
    for name in ("tokens", "mask", "action_mask", "old_logprobs", "advantages", "ref_dist"):
        assert np.array_equal(after[name][:3, :6], before[name])  # the rollouts as they were
    assert (after["tokens"][:3, 6:] == SPACE.pad_id).all() and (after["mask"][:3, 6:] == 0).all()
    for name in ("tokens", "mask"):
        assert np.array_equal(after[name][3:], sft_rows[name])
    for name in ("action_mask", "old_logprobs", "ref_logprobs", "advantages", "ref_dist"):
        assert (after[name][3:] == 0).all()  # no action of RL's in SFT's rows
    assert (after[PTX_WEIGHT][:3] == 0).all() and (after[PTX_WEIGHT][3:] == 0.25).all()
    for name in ("den_actions", "den_sequences", "den_max_len", "kl_coef"):  # still the rollouts' counts
        assert (after[name] == before[name][0]).all()
    assert after["den_actions"][0] == 6 and after["den_sequences"][0] == 3


def test_ptx_rows_are_sft_s_questions_only_drawn_again_alike_on_a_resume():
    cfg = load_config("tiny", ["rl.ptx_coef=1", "rl.ptx_batch=16"])
    assert ptx_data(load_config("tiny"), SPACE) is None  # off by default
    ptx = ptx_data(cfg, SPACE)
    first, again, next_step = ptx.columns(3, 0), ptx.columns(3, 0), ptx.columns(3, 1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["tokens"], next_step["tokens"])
    assert first["tokens"].shape[0] == 16
    assert np.allclose(first[PTX_WEIGHT].sum(), 1 + cfg.sft.state_loss_weight)  # two token means, SFT's weights

    def prompts(questions):
        return {tuple(SPACE.encode_prompt(q.prefix)) for q in questions}

    def prompt_of(row: np.ndarray) -> tuple:
        return tuple(row[: list(row).index(SPACE.query_id) + 1])

    asked = {prompt_of(row) for row in first["tokens"]}
    assert asked <= prompts(train_questions(cfg))
    assert not asked & (prompts(feedback_pool(cfg)) | prompts(eval_questions(cfg)))
