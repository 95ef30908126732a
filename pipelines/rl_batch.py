"""What the RLlib learners are sent and what they report: the learner batch with its global-batch
loss denominators, PPO's minibatches of it, and the learner's metrics.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from models.rollout import Rollouts, taken_logprobs

GAP_MAX, GAP_MEAN = "rl/sampler_gap_max", "rl/sampler_gap_mean"


def learner_batch(
    rollouts: Rollouts, advantages: torch.Tensor, ref_logprobs: torch.Tensor, ref_dist: torch.Tensor, max_len: int,
    kl_coef: float,
):  # fmt: skip
    """The RLlib batch: the rollout layout plus advantages, the reference's log-probs of the actions and of every
    action in their states (`ref_dist`, from which the learner reports the exact KL), the KL coefficient of the
    iteration that made it and the global-batch loss denominators."""
    mask = rollouts.action_mask.float()
    columns = {
        "tokens": rollouts.tokens.numpy(),
        "mask": rollouts.mask.numpy(),
        "action_mask": mask.numpy(),
        "old_logprobs": rollouts.logprobs.float().numpy(),
        "ref_logprobs": ref_logprobs.float().numpy(),
        "ref_dist": ref_dist.float().numpy(),
        "advantages": advantages.float().numpy(),
        "kl_coef": np.full(len(mask), kl_coef, np.float32),
    }
    return _with_denominators(columns, max_len)


def _with_denominators(columns: dict[str, np.ndarray], max_len: int):
    """A MultiAgentBatch of `columns` whose loss denominators count exactly its rows: one optimizer step's batch."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from actors.learner import MODULE_ID

    B = len(columns["tokens"])
    columns = columns | {
        "den_actions": np.full(B, float(columns["action_mask"].sum()), np.float32),
        "den_sequences": np.full(B, float(B), np.float32),
        "den_max_len": np.full(B, float(max_len), np.float32),
    }
    return MultiAgentBatch({MODULE_ID: SampleBatch(columns)}, env_steps=B)


def minibatches(batch: Any, parts: int, rng: np.random.Generator) -> list:
    """`parts` disjoint random minibatches of a learner batch's rows, each normalised over its own rows.

    PPO's minibatches: one optimizer step each, so each is a whole (global) batch of its own
    (its denominators are recounted; RLlib then splits it across learners). One part = the batch.
    """
    from actors.learner import MODULE_ID

    rows = batch.policy_batches[MODULE_ID]
    parts = min(parts, len(rows))  # a batch left with fewer rows (zero-advantage groups dropped) than minibatches
    if parts == 1:
        return [batch]
    max_len = float(rows["den_max_len"][0])
    names = [k for k in rows if not k.startswith("den_")]
    order = rng.permutation(len(rows))
    return [_with_denominators({k: rows[k][part] for k in names}, max_len) for part in np.array_split(order, parts)]


def learner_metrics(results: Any) -> dict[str, float]:
    """The learners' metrics as one: with several (DDP), each reports its own rows, a loss as its share times the
    world size, so the mean over learners is the whole batch's (the largest for a `_max`)."""
    from actors.learner import MODULE_ID

    per_learner = [_numbers(r.get(MODULE_ID, {})) for r in (results if isinstance(results, list) else [results])]
    out = {}
    for key in dict.fromkeys(k for m in per_learner for k in m):
        values = [m[key] for m in per_learner if key in m]
        out[key] = max(values) if key.endswith("_max") else sum(values) / len(values)
    return out


def _numbers(metrics: dict) -> dict[str, float]:
    """One learner's numbers, RLlib's own as `learner/...`. RLlib logs some once (the trainable parameters, at
    the first update) and reads NaN for them after; those are left out, where NaN in the loss's own stays."""
    out = {}
    for key, value in metrics.items():
        value = value.peek() if hasattr(value, "peek") else value
        if not isinstance(value, (int, float, np.floating, torch.Tensor)):
            continue
        if "/" in key:
            out[key] = float(value)
        elif not math.isnan(float(value)):
            out[f"learner/{key}"] = float(value)
    return out


def sampler_gap(first_update: dict[str, float] | None) -> dict[str, float]:
    """How far the learner's log-probs of the sampled actions are from the sampler's, read at the iteration's first
    minibatch, before any optimizer step: with the samplers on the learner's version (strict on-policy, the
    default) the two compute one policy, so the gap is their float arithmetic's (a KV-cached decoding step
    against a whole-sequence forward), and anything larger means the samples are not the learner's policy's.
    Samplers that lag (`rl.sync_every`) add the policy's drift. Empty when nothing was trained."""
    from actors.learner import LOGPROB_GAP_MAX, LOGPROB_GAP_MEAN

    if not first_update or LOGPROB_GAP_MAX not in first_update:
        return {}
    return {GAP_MAX: first_update[LOGPROB_GAP_MAX], GAP_MEAN: first_update[LOGPROB_GAP_MEAN]}


def with_learner_logprobs(rollouts: Rollouts, learner_dist: torch.Tensor) -> tuple[Rollouts, dict[str, float]]:
    """The rollouts with the log-probs of their actions read from `learner_dist`, the (B, T, V) log-probs of the
    learner's float32 weights at the version that sampled (`rl.old_logprobs: learner`), and how far the sampler's
    were from them: a sampler in another precision draws from nearly the policy, and PPO's ratio and the KL then
    start from the learner's numbers rather than from its rounding."""
    mask = rollouts.action_mask.float()
    logp = taken_logprobs(learner_dist, rollouts.tokens) * mask
    gap = (logp - rollouts.logprobs).abs() * mask
    measured = {GAP_MAX: gap.max().item(), GAP_MEAN: (gap.sum() / mask.sum().clamp(min=1)).item()}
    return replace(rollouts, logprobs=logp), measured


def without_gap(metrics: dict[str, float]) -> dict[str, float]:
    """The learner's metrics less its log-prob gap, which after the first step measures the update, not the sampler."""
    from actors.learner import LOGPROB_GAP_MAX, LOGPROB_GAP_MEAN

    return {k: v for k, v in metrics.items() if k not in (LOGPROB_GAP_MAX, LOGPROB_GAP_MEAN)}
