"""The RL loss: advantage-weighted policy gradient (PPO's clipped surrogate), KL to the reference.

Every action's log-probability moves in proportion to its advantage; there is no
"positive minus negative" contrastive term anywhere (WORLDVIEW rule 6). Loss aggregation
is explicit, with denominators counted over the *global* batch (all learners and
micro-batches), so that splitting a batch never changes the gradient:

    token-mean               sum over actions / global number of actions
    seq-mean-token-mean      mean over sequences of (sum over its actions / its length)
    seq-mean-token-sum-norm  sum over actions / (global number of sequences * max_len)   (Dr. GRPO)
Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Aggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


@dataclass(frozen=True)
class Denominators:
    """Counts over the global batch, fixed before it is split across learners and micro-batches."""

    actions: float
    sequences: float
    max_len: float


def denominators(action_mask: torch.Tensor, max_len: int) -> Denominators:
    return Denominators(float(action_mask.sum()), float(action_mask.shape[0]), float(max_len))


def aggregate(per_token: torch.Tensor, action_mask: torch.Tensor, mode: Aggregation, den: Denominators) -> torch.Tensor:
    """This (micro-)batch's share of the global loss; the shares of all parts sum to the full loss."""
    mask = action_mask.to(per_token.dtype)
    summed = per_token * mask
    if mode == "token-mean":
        return summed.sum() / max(den.actions, 1.0)
    if mode == "seq-mean-token-mean":
        lengths = mask.sum(dim=1).clamp(min=1)
        return (summed.sum(dim=1) / lengths).sum() / max(den.sequences, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return summed.sum() / max(den.sequences * den.max_len, 1.0)
    raise ValueError(f"unknown loss aggregation {mode!r}")


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
    clip_eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss -min(rho A, clip(rho, 1-eps, 1+eps_high) A), and where clipping was active.

    `clip_eps_high` (None = `clip_eps`) is DAPO's clip-higher: a wider upper bound lets an
    unlikely action with a positive advantage grow further in one step, against the entropy
    collapse a symmetric clip favours. With `dual_clip` c > 1, the loss of a
    negative-advantage action is capped at -c A, so a huge ratio on a bad action cannot
    blow up the update.
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -ratio * advantages
    clipped = -ratio.clamp(1.0 - clip_eps, 1.0 + high) * advantages
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss, (clipped > unclipped).to(loss.dtype)


def sequence_level_logprobs(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, action_mask: torch.Tensor
) -> torch.Tensor:
    """Log-probs whose ratio to `old_logprobs` is GSPO's (Zheng et al. 2025): one ratio per response.

    Every action's value is old + the response's mean log-ratio, so `clipped_surrogate` sees the geometric mean
    of the response's token ratios on each of its actions and clips the response as a whole; its gradient is the
    action's own log-prob's (GSPO-token: s_i * grad log pi_t), so with a per-response advantage and
    `seq-mean-token-mean` the update is GSPO's. Off the actions the old log-probs are returned unchanged."""
    mask = action_mask.to(logprobs.dtype)
    log_ratio = (logprobs - old_logprobs) * mask
    mean = log_ratio.sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    own = logprobs - logprobs.detach()  # zero in value, the action's own gradient
    return old_logprobs + (mean.detach() + own) * mask


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float
) -> torch.Tensor:
    """Per-token 0.5 * max((V - R)^2, (V_clipped - R)^2) with V_clipped within `clip` of the old value."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
