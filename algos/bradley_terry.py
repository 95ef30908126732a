"""Bradley-Terry: P(chosen > rejected) = sigma(r_chosen - r_rejected), trained by max likelihood.

The two rewards are scores of two responses to the same prompt; only their difference
enters the loss, so the reward model's scale and offset are free per prompt, which is
why its scores mean something only within a prompt. Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 0.0, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean of -log sigma(r_chosen - r_rejected - margin) over pairs; (loss, detached metrics).

    With `label_smoothing` = eps each label counts as right with probability 1 - eps:
    -(1 - eps) log sigma(d - margin) - eps log sigma(-(d - margin)), as conservative DPO does
    for noisy preferences, so a flipped label's pull is bounded instead of growing with d.
    """
    diff = r_chosen - r_rejected
    agree, disagree = F.logsigmoid(diff - margin), F.logsigmoid(-(diff - margin))
    loss = -((1.0 - label_smoothing) * agree + label_smoothing * disagree).mean()
    metrics = {
        "loss/bt": loss.detach(),
        "rm/pair_accuracy": (diff > 0).float().mean().detach(),
        "rm/reward_gap": diff.mean().detach(),
    }
    return loss, metrics
