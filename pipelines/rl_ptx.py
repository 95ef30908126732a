"""PPO-ptx's rows: SFT's questions with their answers, added to every optimizer step of RL (`rl.ptx_coef`).

InstructGPT mixes a supervised loss into PPO so that RL does not undo what came before it. Here the data is
SFT's own: its split of the train questions, which passed the action-space audit when SFT read them, never
the feedback pool RL practises on nor the held-out exam, and your own questions at SFT's share where SFT
mixed them in (`sft.extra_questions`, held to the version SFT read). The rows ride in the RL minibatch with no action of
RL's (action mask, advantages and log-probs 0) and a weight per token (`algos.lm.sft_token_weights`), so the
learners' one forward pass serves both losses and RLlib splits them across learners like any rows. Each
step's draw is a pure function of (RL seed, iteration, step): a resumed run draws the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algos.lm import sft_token_weights
from conf.schema import Config
from pipelines.data_files import as_sft_read
from pipelines.sft import batch_at, own_questions, train_questions
from pipelines.train_loop import step_seed
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.exam import Question, group_by_template


@dataclass(frozen=True)
class PtxData:
    """Where each step's SFT rows come from, and how SFT weighed their tokens."""

    space: ActionSpace
    questions: list[Question]
    by_template: dict[str, list[Question]] | None
    rows: int
    state_weight: float
    seed: int
    extra: tuple[Question, ...] = ()  # your own SFT questions (`sft.extra_questions`)
    extra_share: float = 0.0  # and their share of each draw, as in SFT's batches

    def columns(self, iteration: int, step: int) -> dict[str, np.ndarray]:
        """One step's SFT rows, right-padded: tokens, mask and each token's weight in SFT's loss."""
        seed = step_seed("ptx", self.seed, iteration)
        batch = batch_at(
            self.space, self.questions, seed, step, self.rows, self.by_template, extra=self.extra,
            extra_share=self.extra_share,
        )  # fmt: skip
        weight = sft_token_weights(batch.mask, batch.action_mask, self.state_weight)
        return {"tokens": batch.tokens.numpy(), "mask": batch.mask.numpy(), "ptx_weight": weight.numpy()}


def ptx_data(cfg: Config, space: ActionSpace, run_dir: Path) -> PtxData | None:
    """The run's PPO-ptx data, drawn as SFT drew it (templates evenly when SFT did, your own questions at SFT's
    share); None when `rl.ptx_coef` is 0."""
    if cfg.rl.ptx_coef == 0:
        return None
    questions = train_questions(cfg)
    by_template = group_by_template(questions) if cfg.sft.balance_templates else None
    extra = tuple(sft_own_questions(cfg, space, run_dir))
    return PtxData(
        space, questions, by_template, cfg.rl.ptx_batch, cfg.sft.state_loss_weight, cfg.rl_seed, extra,
        cfg.sft.extra_share,
    )  # fmt: skip


def sft_own_questions(cfg: Config, space: ActionSpace, run_dir: Path) -> list[Question]:
    """The questions of your own that SFT mixed into its batches (`sft.extra_questions`), read again, held to
    the version SFT read (`as_sft_read`) and checked as SFT checked them."""
    saved, text = as_sft_read(cfg, run_dir)
    if text is None:
        return []
    stats = CorpusStats.from_dict(saved["corpus_stats"])
    return own_questions(cfg, space, stats, cfg.model.max_len, text, cfg.sft.extra_questions)


def with_ptx(part, ptx: dict[str, np.ndarray], pad_id: int):
    """The minibatch `part` with the SFT rows after its rollouts.

    Every column is right-padded to the wider of the two (the pad token, elsewhere 0: no real token, no
    action); the SFT rows' RL columns are 0 and the rollouts' weights 0. Per-row scalars (the KL coefficient,
    the loss denominators) are copied, so the policy loss stays normalised over the rollouts alone.
    """
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from actors.learner import MODULE_ID, PTX_WEIGHT

    rows = part.policy_batches[MODULE_ID]
    width = max(rows["tokens"].shape[1], ptx["tokens"].shape[1])
    n_rl, n_ptx = len(rows["tokens"]), len(ptx["tokens"])

    def widened(value: np.ndarray, fill: int) -> np.ndarray:
        pad = [(0, 0), (0, width - value.shape[1])] + [(0, 0)] * (value.ndim - 2)
        return np.pad(value, pad, constant_values=fill)

    columns = {}
    for name in rows:
        value = np.asarray(rows[name])
        if value.ndim == 1:
            columns[name] = np.concatenate([value, np.full(n_ptx, value[0], value.dtype)])
            continue
        fill = pad_id if name == "tokens" else 0
        theirs = ptx.get(name)
        theirs = np.zeros((n_ptx, *value.shape[1:]), value.dtype) if theirs is None else theirs.astype(value.dtype)
        columns[name] = np.concatenate([widened(value, fill), widened(theirs, fill)])
    weight = ptx[PTX_WEIGHT].astype(np.float32)
    columns[PTX_WEIGHT] = np.concatenate([np.zeros((n_rl, width), np.float32), widened(weight, 0)])
    return MultiAgentBatch({MODULE_ID: SampleBatch(columns)}, env_steps=n_rl + n_ptx)
