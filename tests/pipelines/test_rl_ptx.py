"""PPO-ptx's rows: SFT's questions after the rollouts, padded to one width, the policy loss's counts untouched."""

import shutil

import numpy as np
import pytest
import torch

from actors.learner import MODULE_ID, PTX_WEIGHT
from conf.load import load_config
from pipelines import rlhf, sft
from pipelines.data_files import check_files_first
from pipelines.evaluate import eval_questions
from pipelines.rl_batch import learner_batch
from pipelines.rl_prompts import feedback_pool
from pipelines.rl_ptx import ptx_data, with_ptx
from pipelines.sft import train_questions
from tests.pipelines.test_minibatches import rollouts
from world.actions import ActionSpace
from world.user_data import DataFileError

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


def test_ptx_rows_are_sft_s_questions_only_drawn_again_alike_on_a_resume(tiny_sft_run):
    cfg = load_config("tiny", ["rl.ptx_coef=1", "rl.ptx_batch=16"])
    assert ptx_data(load_config("tiny"), SPACE, tiny_sft_run) is None  # off by default
    ptx = ptx_data(cfg, SPACE, tiny_sft_run)
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


def test_ptx_rows_hold_your_own_sft_questions_at_sft_s_share_and_only_the_version_sft_read(
    tiny_sft_run, sft_run, tmp_path
):
    mine = tmp_path / "mine.txt"
    mine.write_text("2 5 11 17 29 -> 37   # A007491\n")
    own = [f"sft.extra_questions={mine}", "sft.extra_share=0.25", "sft.steps=2", "sft.eval_every=2"]
    cfg = load_config("tiny", [*own, "rl.ptx_coef=1", "rl.ptx_batch=16"])
    (sft_run / "sft" / "checkpoint.pt").unlink()  # SFT again, reading the file (two steps do)
    sft.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    ptx = ptx_data(cfg, SPACE, sft_run)
    yours = tuple(SPACE.encode_prompt((2, 5, 11, 17, 29)))
    for step in range(3):
        rows = ptx.columns(0, step)["tokens"]
        assert sum(tuple(row[: len(yours)]) == yours for row in rows) == 4  # a quarter of 16, as SFT drew
    check_files_first(cfg, sft_run)  # the version SFT read: `tokenmdp run` goes on
    with pytest.raises(DataFileError, match=r"set sft\.extra_questions to the file as SFT read it"):
        ptx_data(load_config("tiny", ["rl.ptx_coef=1"]), SPACE, sft_run)  # the setting dropped
    mine.write_text("2 5 11 17 29 -> 38\n")  # edited since SFT read it
    with pytest.raises(DataFileError, match="SFT read a file of sha256"):
        ptx_data(cfg, SPACE, sft_run)
    with pytest.raises(DataFileError, match="SFT read a file of sha256"):
        check_files_first(cfg, sft_run)  # `tokenmdp run` refuses it before its first stage, not at RLHF's
    check_files_first(load_config("tiny", own), sft_run)  # without PPO-ptx no stage still to train reads it
    with pytest.raises(DataFileError, match="SFT read none"):
        ptx_data(cfg, SPACE, tiny_sft_run)  # a file named that SFT never read
    rl_dir = tmp_path / "rl"
    for stage in ("pretrain", "sft"):
        shutil.copytree(tiny_sft_run / stage, rl_dir / stage)
    with pytest.raises(DataFileError, match="SFT read none"):  # RLHF refuses it before it starts any actor
        rlhf.main(load_config("tiny", [*own, "rl.ptx_coef=1", "rl.reward_source=gold"]), rl_dir)
    assert not (rl_dir / "rlhf").exists()
    mine.unlink()  # gone after SFT: `tokenmdp run` says so before its first stage, as PPO-ptx still reads it
    check_files_first(load_config("tiny", own), sft_run)  # SFT finished; without PPO-ptx nothing reads it
    with pytest.raises(DataFileError, match="cannot read it"):
        check_files_first(cfg, sft_run)
