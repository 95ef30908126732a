"""Reference: the frozen SFT policy, giving pi_ref(. | state) of every state the rollouts passed, for the KL."""

from __future__ import annotations

import ray
import torch

from models.checkpoint import load_checkpoint
from models.rollout import Rollouts, state_logprobs
from world.actions import ActionSpace


class ReferenceImpl:
    def __init__(
        self, checkpoint: str | bytes, digit_order: str = "msb", threads: int = 1, temperature: float = 1.0
    ) -> None:
        torch.set_num_threads(threads)
        self.temperature = temperature  # RL's sampling temperature: the KL compares like with like
        self.model, _, _ = load_checkpoint(checkpoint, ActionSpace(digit_order=digit_order))
        self.model.eval()

    @torch.no_grad()
    def distributions(self, rollouts: Rollouts, temperature: float | None = None) -> torch.Tensor:
        """(B, T, V) reference log-probs of every action in the state before each of the rollouts' actions, 0 off
        the actions; at `temperature` (default: RL's). The action space is small, so the whole distribution
        travels: the exact KL compares it with the policy's, where the sampled estimates only estimate it."""
        at = self.temperature if temperature is None else temperature
        logp = state_logprobs(self.model, rollouts.tokens, rollouts.mask, at)
        return logp * rollouts.action_mask[:, :, None]


Reference = ray.remote(ReferenceImpl)
