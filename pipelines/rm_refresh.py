"""Iterated RLHF: the labeler judges the policy's own answers during RL, and the reward model learns them.

The reward stage's RM learnt from the SFT policy's answers; RL moves the policy to answers it saw
less of, and its agreement with the grader on them (`reward/rm_agreement`) falls as RL goes on.
With `rl.rm_refresh.every` > 0, the answers of every iteration's groups (`label_share` of them) go to
the labeler the reward stage asked (the gold grader plus `world.label_noise`), their pairs join a
pool, and every `every` iterations the RM takes `steps` more Bradley-Terry steps on batches drawn
`pool_share` from that pool and the rest from the reward stage's pairs (so it keeps what it knew),
and its weights reach every RewardScorer before the next sample. The pairs of one group share its
prompt (WORLDVIEW rule 4), as the reward stage's do.

The refreshed RM travels with the policy it trained (`reward_model` in RLHF's checkpoint, snapshots and
registered policies: what `trace` scores with); its optimizer, the pool and the counts in the checkpoint
only (`rm_refresh`), so a resumed run goes on as one never stopped. `rm/version` counts the refreshes,
`rm_refresh/labels` the comparisons asked of the labeler.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from conf.schema import Config, OptimConfig
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel
from models.rollout import Rollouts
from pipelines import preferences, train_loop
from pipelines.reward import (
    configured_evaluation,
    configured_loss,
    freeze_as_configured,
    normalisation,
    pair_batch,
    training_views,
)
from pipelines.run_config import MissingStage, trained_checkpoint
from world.actions import ActionSpace
from world.exam import Question
from world.grader import SimulatedLabeler
from world.preferences import PreferencePair, pairs_for_prompt


def labelled_groups(count: int, share: float) -> int:
    """How many of an iteration's `count` prompt groups go to the labeler: at least one."""
    return max(1, round(count * share))


def label_rollouts(
    rollouts: Rollouts, asked: Sequence[Question], space: ActionSpace, labeler: SimulatedLabeler, share: float = 1.0
) -> tuple[list[PreferencePair], Counter]:
    """The labeler's pairs among each of the first groups' answers (`label_share` of the groups), as the reward
    stage pairs the SFT policy's answers; `counts["candidates"]` is how many comparisons were asked."""
    counts: Counter = Counter()
    responses = rollouts.responses()
    by_group: dict[int, list[list[int]]] = {}
    for g, response in zip(rollouts.group.tolist(), responses, strict=True):
        by_group.setdefault(g, []).append(response)
    pairs: list[PreferencePair] = []
    for g in sorted(by_group)[: labelled_groups(len(by_group), share)]:
        question = asked[g]
        pairs += pairs_for_prompt(space, question.prefix, by_group[g], labeler, counts, n_terms=len(question.answer))
    return pairs, counts


def collected_pairs(run_dir: Path) -> Path:
    """The reward stage's preference pairs, which a refresh replays beside the policy's own."""
    folder = run_dir / "preferences"
    if not (folder / "stats.json").is_file():
        raise MissingStage(
            f"rl.rm_refresh replays the reward stage's preference pairs, and {folder} does not hold them: "
            f"run `tokenmdp preferences` with the same config and --out (they are collected once), or set "
            "rl.rm_refresh.every=0"
        )
    return folder


def constant_optimizer(
    rm: ScalarModel, cfg: Config
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW at `rm_refresh.lr` with the reward stage's weight decay, and a schedule that keeps it there: every
    refresh steps alike, and a resume needs only the optimizer's state."""
    optim = OptimConfig(
        steps=1, lr=cfg.rl.rm_refresh.lr, warmup_steps=0, min_lr_ratio=1.0, weight_decay=cfg.reward.weight_decay
    )
    return train_loop.make_optimizer(rm, optim)


class RefreshedRM:
    """The controller's copy of the reward model that RL refreshes, with what it learns from."""

    def __init__(
        self, cfg: Config, run_dir: Path, space: ActionSpace, weights: dict | None = None, saved: dict | None = None
    ) -> None:
        """The reward stage's RM, or the refreshed one of a checkpoint: its `weights()` and its `state()`."""
        self.cfg, self.space = cfg, space
        rm, _, state = load_checkpoint(trained_checkpoint(run_dir, "reward", needed_by="rl.rm_refresh"), space)
        self.rm = freeze_as_configured(rm, cfg)
        self.optimizer, self.schedule = constant_optimizer(self.rm, cfg)
        self.prefs = preferences.load(collected_pairs(run_dir))
        self.norm: dict[str, float] = state.get("reward_norm") or {}
        self.pool: list[PreferencePair] = []
        self.version, self.labels = 0, 0
        if weights:
            self.rm.load_state_dict(weights["model"])
            self.version, self.norm = weights["version"], weights["norm"]
        if saved:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.pool = [PreferencePair.from_dict(p) for p in saved["pool"]]
            self.labels = saved["labels"]

    def label(self, rollouts: Rollouts, asked: Sequence[Question], iteration: int) -> dict[str, float]:
        """Ask the labeler about this iteration's answers (its own seed per iteration: a redone one asks alike)."""
        labeler = SimulatedLabeler(
            self.cfg.world.label_noise, train_loop.step_seed("rm-labeler", self.cfg.seed, iteration)
        )
        pairs, counts = label_rollouts(rollouts, asked, self.space, labeler, self.cfg.rl.rm_refresh.label_share)
        self.pool = (self.pool + pairs)[-self.cfg.rl.rm_refresh.pool_size :]
        self.labels += counts["candidates"]
        return {
            "rm_refresh/labelled_pairs": float(len(pairs)),
            "rm_refresh/labels": float(self.labels),
            "rm_refresh/pool_pairs": float(len(self.pool)),
        }

    def due(self, iteration: int) -> bool:
        every = self.cfg.rl.rm_refresh.every
        return bool(every) and iteration % every == 0 and bool(self.pool)

    def refresh(self, iteration: int, judge: bool = True) -> dict[str, float]:
        """`steps` Bradley-Terry steps on the pool mixed with the reward stage's pairs; with `judge`, the RM judged
        after on the reward stage's held-out pairs (`rm/gold_accuracy`: on the demo 18 s, the steps 14 s)."""
        began = time.perf_counter()
        refresh, batch_size = self.cfg.rl.rm_refresh, self.cfg.reward.batch_size
        from_pool = round(refresh.pool_share * batch_size)
        loss = configured_loss(self.cfg)
        losses = []
        for step in range(refresh.steps):
            rng = random.Random(train_loop.step_seed("rm-refresh", self.cfg.seed, iteration, step))
            drawn = rng.choices(self.pool, k=from_pool) + rng.choices(self.prefs.train, k=batch_size - from_pool)
            batch = pair_batch(self.space, drawn, rng, *training_views(self.cfg))
            metrics = train_loop.train_step(
                self.rm, self.optimizer, self.schedule, batch, self.cfg.reward.grad_clip, loss
            )
            losses.append(metrics["loss/bt"])
        self.rm.eval()
        self.norm = normalisation(self.rm, self.space, self.prefs, self.cfg)
        self.version += 1
        judged = configured_evaluation(self.rm, self.space, self.prefs, self.cfg) if judge else {}
        return judged | {
            "rm/version": float(self.version),
            "rm_refresh/loss": sum(losses) / len(losses),
            "time/rm_refresh": time.perf_counter() - began,
        }

    def weights(self) -> dict:
        """What a RewardScorer needs to score with this RM: its weights and the normalisation of its scores."""
        return {"model": self.rm.state_dict(), "norm": self.norm, "version": self.version}

    def state(self) -> dict:
        """What a resume needs besides the weights (in RLHF's checkpoint only)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "pool": [p.to_dict() for p in self.pool],
            "labels": self.labels,
        }
