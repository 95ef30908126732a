"""RewardScorer: the reward model as a Ray actor, one score per response.

Scores are the RM's scalar at `<eor>`, averaged over the views of the prompt the RM was
trained to be read with (`reward.views`, saved in its checkpoint), standardised with the
statistics saved beside the model in training; with `per_prompt=True` they are further
standardised within each prompt's group, which is where Bradley-Terry scores mean something.
"""

from __future__ import annotations

import ray
import torch

from algos.advantages import normalize_within_groups
from models.checkpoint import load_checkpoint
from models.heads import score_sequences
from models.rollout import Rollouts
from world.actions import ActionSpace


class RewardScorerImpl:
    """Plain class (testable without Ray); `RewardScorer` is its actor."""

    def __init__(
        self, checkpoint: str | bytes, digit_order: str = "msb", threads: int = 1, per_prompt: bool = False
    ) -> None:
        torch.set_num_threads(threads)
        self.space = ActionSpace(digit_order=digit_order)
        self.model, _, state = load_checkpoint(checkpoint, self.space)
        self.model.eval()
        norm = state.get("reward_norm") or {}
        self.mean, self.std = norm.get("mean", 0.0), norm.get("std", 1.0)
        reading = state.get("reward_views") or {}
        self.views, self.min_terms = reading.get("views", 1), reading.get("min_terms", 3)
        self.per_prompt = per_prompt
        self.version = 0  # refreshes of the RM during RL (`pipelines/rm_refresh.py`) it scores with

    def load_refreshed(self, weights: dict) -> int:
        """Score with a refreshed RM from now on: its weights and the normalisation of its scores."""
        self.model.load_state_dict(weights["model"])
        self.model.eval()
        norm = weights["norm"] or {}
        self.mean, self.std = norm.get("mean", 0.0), norm.get("std", 1.0)
        self.version = weights["version"]
        return self.version

    def raw_scores(self, sequences: list[list[int]]) -> torch.Tensor:
        """Unnormalised scores of whole `<bos>prompt?response` sequences, through the RM's views."""
        return score_sequences(self.model, self.space, sequences, self.views, self.min_terms)

    @torch.no_grad()
    def score(self, rollouts: Rollouts, per_prompt: bool | None = None) -> torch.Tensor:
        """(B,) reward of each rollout's response; `per_prompt` overrides the scorer's own setting
        (a tool that reads one response alone and a group with one model)."""
        rows = zip(rollouts.tokens.tolist(), rollouts.mask.tolist(), strict=True)
        raw = self.raw_scores([[t for t, real in zip(row, mask, strict=True) if real] for row, mask in rows])
        scores = (raw - self.mean) / self.std
        if self.per_prompt if per_prompt is None else per_prompt:
            scores = normalize_within_groups(scores, rollouts.group)
        return scores

    @torch.no_grad()
    def score_texts(self, prompts: list[list[int]], responses: list[list[int]]) -> list[float]:
        """Scores for (prefix terms, response token ids) pairs, for tools and tests."""
        rows = [self.space.encode_prompt(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
        return ((self.raw_scores(rows) - self.mean) / self.std).tolist()


RewardScorer = ray.remote(RewardScorerImpl)
