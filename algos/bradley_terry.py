"""Bradley-Terry: P(chosen > rejected) = sigma(r_chosen - r_rejected), trained by max likelihood.

The two rewards are scores of two responses to the same prompt; only their difference
enters the loss, so the reward model's scale and offset are free per prompt, which is
why its scores mean something only within a prompt. Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean of -log sigma(r_chosen - r_rejected - margin) over pairs; (loss, detached metrics)."""
    diff = r_chosen - r_rejected
    loss = -F.logsigmoid(diff - margin).mean()
    metrics = {
        "loss/bt": loss.detach(),
        "rm/pair_accuracy": (diff > 0).float().mean().detach(),
        "rm/reward_gap": diff.mean().detach(),
    }
    return loss, metrics
