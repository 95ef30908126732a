"""Critic: V(state) for every action's state, trained with the clipped value loss (PPO only).

Its trunk starts from a checkpoint (the reward model's, whose features already track
correctness, or the SFT policy's) with a fresh scalar head.
"""

from __future__ import annotations

import ray
import torch

from algos.policy_loss import clipped_value_loss
from models.checkpoint import load_checkpoint
from models.heads import ScalarModel
from models.rollout import Rollouts
from world.actions import ActionSpace


class CriticImpl:
    def __init__(
        self, checkpoint: str | bytes, digit_order: str = "msb", threads: int = 1, lr: float = 1e-4,
        value_clip: float = 0.2, grad_clip: float = 1.0,
    ) -> None:  # fmt: skip
        torch.set_num_threads(threads)
        model, _, _ = load_checkpoint(checkpoint, ActionSpace(digit_order=digit_order))
        self.model = model if isinstance(model, ScalarModel) else ScalarModel(model)
        torch.nn.init.zeros_(self.model.head.weight)
        torch.nn.init.zeros_(self.model.head.bias)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.value_clip, self.grad_clip = value_clip, grad_clip

    @torch.no_grad()
    def values(self, rollouts: Rollouts) -> torch.Tensor:
        """(B, T): V(state before each action), 0 off the actions."""
        self.model.eval()
        return self.model.state_values(rollouts.tokens, rollouts.mask) * rollouts.action_mask

    def update(self, rollouts: Rollouts, returns: torch.Tensor, old_values: torch.Tensor) -> dict[str, float]:
        self.model.train()
        mask = rollouts.action_mask.float()
        values = self.model.state_values(rollouts.tokens, rollouts.mask)
        loss = (clipped_value_loss(values, old_values, returns, self.value_clip) * mask).sum() / mask.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        explained = 1 - ((returns - values.detach()) * mask).var() / (returns * mask).var().clamp(min=1e-8)
        return {"critic/value_loss": loss.item(), "critic/explained_variance": explained.item()}

    def get_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def set_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


Critic = ray.remote(CriticImpl)
