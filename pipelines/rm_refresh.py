"""Iterated RLHF: the labeler judges the policy's own answers during RL, and the reward model learns them.

The reward stage's RM learnt from the SFT policy's answers; RL moves the policy to answers it saw
less of, and its agreement with the grader on them (`reward/rm_agreement`) falls as RL goes on.
With `rl.rm_refresh.every` > 0, the answers of every iteration's groups (`label_share` of them) go to
the labeler the reward stage asked (the gold grader plus `world.label_noise`), their pairs join a
pool, and every `every` iterations the RM takes `steps` more Bradley-Terry steps on batches drawn
`pool_share` from that pool and the rest from the reward stage's pairs (so it keeps what it knew),
and its weights reach every RewardScorer. The pairs of one group share its prompt (WORLDVIEW rule 4),
as the reward stage's do.

Three parts: the controller keeps the labelled pairs (`LabelPool`); a Ray actor with resources of its own
(`rl.actors.reward_trainer`) trains the RM (`RewardTrainer`); `IteratedRM` starts a refresh on it and lands
its weights on the scorers `rm_refresh.lag` iterations later (0: at once, the loop waiting for it; more:
RL samples and learns meanwhile, scored by the RM before it). A checkpoint with a refresh still training
waits for it and keeps it, unlanded, so where a refresh lands depends on the config alone and a resumed run
goes on as one never stopped.

The refreshed RM travels with the policy it trained (`reward_model` in RLHF's checkpoint, snapshots and
registered policies: what `trace` scores with); its optimizer, the pool and the counts in the checkpoint
only (`rm_refresh`). `rm/version` counts the refreshes, `rm_refresh/labels` the comparisons asked of the
labeler.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conf.schema import Config, OptimConfig
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel
from models.rollout import Rollouts
from pipelines import preferences, train_loop
from pipelines.preferences import Preferences
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


def trainer_inputs(run_dir: Path) -> tuple[bytes, Preferences]:
    """The reward stage's RM (its checkpoint's bytes) and pairs: what the RewardTrainer starts from."""
    rm = trained_checkpoint(run_dir, "reward", needed_by="rl.rm_refresh").read_bytes()
    return rm, preferences.load(collected_pairs(run_dir))


def constant_optimizer(
    rm: ScalarModel, cfg: Config
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW at `rm_refresh.lr` with the reward stage's weight decay, and a schedule that keeps it there: every
    refresh steps alike, and a resume needs only the optimizer's state."""
    optim = OptimConfig(
        steps=1, lr=cfg.rl.rm_refresh.lr, warmup_steps=0, min_lr_ratio=1.0, weight_decay=cfg.reward.weight_decay
    )
    return train_loop.make_optimizer(rm, optim)


class LabelPool:
    """The labeler's pairs on the policy's answers (the newest `pool_size`) and the comparisons asked: the
    controller's part of iterated RLHF, kept in RLHF's checkpoint."""

    def __init__(self, cfg: Config, space: ActionSpace, saved: dict | None = None) -> None:
        self.cfg, self.space = cfg, space
        self.pairs: list[PreferencePair] = [PreferencePair.from_dict(p) for p in saved["pool"]] if saved else []
        self.labels: int = saved["labels"] if saved else 0

    def label(self, rollouts: Rollouts, asked: Sequence[Question], iteration: int) -> dict[str, float]:
        """Ask the labeler about this iteration's answers (its own seed per iteration: a redone one asks alike)."""
        refresh = self.cfg.rl.rm_refresh
        labeler = SimulatedLabeler(
            self.cfg.world.label_noise, train_loop.step_seed("rm-labeler", self.cfg.rl_seed, iteration)
        )
        pairs, counts = label_rollouts(rollouts, asked, self.space, labeler, refresh.label_share)
        self.pairs = (self.pairs + pairs)[-refresh.pool_size :]
        self.labels += counts["candidates"]
        return {
            "rm_refresh/labelled_pairs": float(len(pairs)),
            "rm_refresh/labels": float(self.labels),
            "rm_refresh/pool_pairs": float(len(self.pairs)),
        }

    def state(self) -> dict:
        return {"pool": [p.to_dict() for p in self.pairs], "labels": self.labels}


class RewardTrainer:
    """The RM that RL refreshes, with its optimizer and the reward stage's pairs: a Ray actor (`rl_actors`).

    Takes the RM's checkpoint as bytes and the pairs as an object, so it may run on a node without the run's
    disk."""

    def __init__(self, cfg: Config, rm_checkpoint: bytes | str, prefs: Preferences, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.cfg, self.prefs = cfg, prefs
        self.space = ActionSpace(digit_order=cfg.world.digit_order)
        rm, _, state = load_checkpoint(rm_checkpoint, self.space)
        self.rm = freeze_as_configured(rm, cfg)
        self.optimizer, self.schedule = constant_optimizer(self.rm, cfg)
        self.norm: dict[str, float] = state.get("reward_norm") or {}
        self.version = 0

    def set_state(self, weights: dict, optimizer: dict) -> None:
        """The refreshed RM and its optimizer as a checkpoint left them."""
        self.rm.load_state_dict(weights["model"])
        self.version, self.norm = weights["version"], weights["norm"]
        self.optimizer.load_state_dict(optimizer)

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def refresh(self, pool: list[PreferencePair], iteration: int, judge: bool) -> tuple[dict, dict[str, float]]:
        """`steps` Bradley-Terry steps on `pool` mixed with the reward stage's pairs: the new `weights()` and the
        refresh's metrics; with `judge`, the RM judged after on the reward stage's held-out pairs
        (`rm/gold_accuracy`: on the demo 18 s, the steps 14 s)."""
        began = time.perf_counter()
        # dropout alike after a resume
        torch.manual_seed(train_loop.step_seed("rm-refresh", self.cfg.rl_seed, iteration))
        refresh, batch_size = self.cfg.rl.rm_refresh, self.cfg.reward.batch_size
        from_pool = round(refresh.pool_share * batch_size)
        loss = configured_loss(self.cfg)
        losses = []
        for step in range(refresh.steps):
            rng = random.Random(train_loop.step_seed("rm-refresh", self.cfg.rl_seed, iteration, step))
            drawn = rng.choices(pool, k=from_pool) + rng.choices(self.prefs.train, k=batch_size - from_pool)
            batch = pair_batch(self.space, drawn, rng, *training_views(self.cfg))
            metrics = train_loop.train_step(
                self.rm, self.optimizer, self.schedule, batch, self.cfg.reward.grad_clip, loss
            )
            losses.append(metrics["loss/bt"])
        self.rm.eval()
        self.norm = normalisation(self.rm, self.space, self.prefs, self.cfg)
        self.version += 1
        judged = configured_evaluation(self.rm, self.space, self.prefs, self.cfg) if judge else {}
        return self.weights(), judged | {
            "rm/version": float(self.version),
            "rm_refresh/loss": sum(losses) / len(losses),
            "rm_refresh/train_seconds": time.perf_counter() - began,
        }

    def weights(self) -> dict:
        """What a RewardScorer needs to score with this RM: its weights and the normalisation of its scores."""
        return {"model": self.rm.state_dict(), "norm": self.norm, "version": self.version}


@dataclass
class Pending:
    """A refresh on the trainer, landing on the scorers at iteration `lands`."""

    reply: Any  # ray.ObjectRef of (weights, metrics)
    lands: int


class IteratedRM:
    """The controller's side of iterated RLHF: labels each iteration, starts refreshes, lands them on the scorers."""

    def __init__(self, cfg: Config, space: ActionSpace, trainer: Any, land: Callable[[dict], float],
                 weights: dict | None = None, saved: dict | None = None) -> None:  # fmt: skip
        """`trainer` is the RewardTrainer actor, `land(weights) -> seconds` puts an RM on every scorer; `weights` and
        `saved` are a checkpoint's `reward_model` and `rm_refresh` (the trainer and the scorers restored here)."""
        import ray

        self.cfg, self.trainer, self.land = cfg, trainer, land
        self.pool = LabelPool(cfg, space, saved)
        self.landed: dict | None = weights  # the RM the scorers score with, once refreshed
        self.pending: Pending | None = None
        waiting = (saved or {}).get("pending")
        trained = waiting["weights"] if waiting else weights  # the trainer is ahead of the scorers by what waits
        if saved and trained:
            ray.get(trainer.set_state.remote(trained, saved["optimizer"]))
        if waiting:
            reply = ray.put((waiting["weights"], waiting["metrics"]))
            self.pending = Pending(reply, waiting["lands"])
        if weights:
            land(weights)

    @property
    def version(self) -> int:
        return self.landed["version"] if self.landed else 0

    def observe(self, rollouts: Rollouts, asked: Sequence[Question], iteration: int, judge: bool) -> dict[str, float]:
        """Label this iteration's answers, land a refresh whose iteration has come, start one when due (`judge`: the
        new RM judged on held-out pairs too)."""
        metrics = self.pool.label(rollouts, asked, iteration)
        metrics |= self.land_pending(iteration)
        refresh = self.cfg.rl.rm_refresh
        if iteration % refresh.every == 0 and self.pool.pairs:
            reply = self.trainer.refresh.remote(list(self.pool.pairs), iteration, judge)
            self.pending = Pending(reply, iteration + refresh.lag)
            metrics |= self.land_pending(iteration)  # lag 0: now
        return metrics

    def land_pending(self, iteration: int) -> dict[str, float]:
        """The refresh in flight onto the scorers if it lands at `iteration`: its metrics, and in `time/rm_refresh`
        how long RL waited for it (its training took `rm_refresh/train_seconds`)."""
        import ray

        if self.pending is None or iteration < self.pending.lands:
            return {}
        began = time.perf_counter()
        self.landed, metrics = ray.get(self.pending.reply)
        self.pending = None
        self.land(self.landed)
        return metrics | {"time/rm_refresh": time.perf_counter() - began}

    def weights(self) -> dict | None:
        """The RM the scorers score with (None: the reward stage's, not refreshed yet)."""
        return self.landed

    def state(self) -> dict:
        """What a resume needs besides the scorers' weights: the pool, the trainer's optimizer and a refresh still to
        land (waited for here, not landed: it lands where a run never stopped would land it)."""
        import ray

        waiting = None
        if self.pending is not None:
            weights, metrics = ray.get(self.pending.reply)
            waiting = {"weights": weights, "metrics": metrics, "lands": self.pending.lands}
        optimizer = ray.get(self.trainer.optimizer_state.remote())
        return self.pool.state() | {"optimizer": optimizer, "pending": waiting}
