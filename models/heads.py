"""Scalar heads on the policy's trunk: the reward model and the critic.

Both read the same GPT hidden states (`GPT.hidden`, positions from the padding mask) and
put one linear unit on top: one number per position. The reward model reads it at the
last real token of a response (its `<eor>` when it finished); the critic reads it in every
state, i.e. at the position just before each action.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from algos.masks import last_real_index
from models.gpt import GPT
from models.sampling import left_pad
from world.actions import ActionSpace
from world.views import prompt_views

SCORE_BATCH = 256


class ScalarModel(nn.Module):
    """GPT trunk + a linear head: (B, T) tokens -> (B, T) scalars.

    With `query_id`, a response's score also counts how likely the trunk's own LM head finds
    it: `head(h at <eor>) + w * sum of log p(action)` over the actions after the query token,
    `w` learnt and starting at 1. A reward model starting from the SFT trunk then starts from
    the policy's likelihood (which already orders most pairs like the grader) instead of
    from zero, and Bradley-Terry learns what to add to it.
    """

    def __init__(self, trunk: GPT, query_id: int | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.cfg = trunk.cfg
        self.query_id = query_id
        self.head = nn.Linear(trunk.cfg.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        if query_id is not None:
            self.likelihood_weight = nn.Parameter(torch.ones(()))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.hidden(tokens, mask)).squeeze(-1)

    def score(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B,) the scalar at each row's last real token (plus the weighted response likelihood)."""
        hidden = self.trunk.hidden(tokens, mask)
        last = last_real_index(mask)[:, None]
        scores = self.head(hidden).squeeze(-1).gather(1, last).squeeze(1)
        if self.query_id is None:
            return scores
        return scores + self.likelihood_weight * response_logprob(self.trunk, hidden, tokens, mask, self.query_id)

    def state_values(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) where column t is V(state before token t), i.e. the head at position t-1; column 0 is 0."""
        per_position = self(tokens, mask)
        return torch.cat([torch.zeros_like(per_position[:, :1]), per_position[:, :-1]], dim=1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def response_logprob(
    trunk: GPT, hidden: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, query_id: int
) -> torch.Tensor:
    """(B,) sum of log p(token | prefix) under the trunk's LM head, over the real tokens after the first query token."""
    logp = torch.log_softmax(hidden[:, :-1] @ trunk.tok_emb.weight.T, dim=-1)
    taken = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1): log p of token t+1
    is_query = (tokens == query_id).long()
    after_query = (is_query.cumsum(1) - is_query) > 0
    actions = (after_query & mask.bool())[:, 1:]
    return (taken * actions).sum(1)


@torch.no_grad()
def score_sequences(
    rm: ScalarModel, space: ActionSpace, sequences: Sequence[Sequence[int]], views: int = 1, min_terms: int = 3
) -> torch.Tensor:
    """(N,) raw score of each `<bos>prompt?response` sequence, averaged over `views` views of
    its prompt (`world.views`: the series with its first terms dropped, `min_terms` left)."""
    rm.eval()
    expanded, owner = [], []
    for index, sequence in enumerate(sequences):
        for view in prompt_views(space, sequence, views, min_terms):
            expanded.append(view)
            owner.append(index)
    if not expanded:
        return torch.zeros(0)
    scores = torch.cat(
        [rm.score(*left_pad(expanded[i : i + SCORE_BATCH], space.pad_id)) for i in range(0, len(expanded), SCORE_BATCH)]
    )
    owners = torch.tensor(owner)
    total = torch.zeros(len(sequences)).index_add_(0, owners, scores)
    return total / torch.zeros(len(sequences)).index_add_(0, owners, torch.ones_like(scores))
