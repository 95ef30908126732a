"""Scalar heads on the policy's trunk: the reward model and the critic.

Both read the same GPT hidden states (`GPT.hidden`, positions from the padding mask) and
put one linear unit on top: one number per position. The reward model reads it at the
last real token of a response (its `<eor>` when it finished); the critic reads it in every
state, i.e. at the position just before each action.
"""

from __future__ import annotations

import torch
from torch import nn

from algos.masks import last_real_index
from models.gpt import GPT


class ScalarModel(nn.Module):
    """GPT trunk + a linear head: (B, T) tokens -> (B, T) scalars."""

    def __init__(self, trunk: GPT) -> None:
        super().__init__()
        self.trunk = trunk
        self.cfg = trunk.cfg
        self.head = nn.Linear(trunk.cfg.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.hidden(tokens, mask)).squeeze(-1)

    def score(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) the scalar at each row's last real token: the reward of the whole response."""
        per_position = self(tokens, mask)
        return per_position.gather(1, last_real_index(mask)[:, None]).squeeze(1)

    def state_values(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) where column t is V(state before token t), i.e. the head at position t-1; column 0 is 0."""
        per_position = self(tokens, mask)
        return torch.cat([torch.zeros_like(per_position[:, :1]), per_position[:, :-1]], dim=1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
