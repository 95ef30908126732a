"""On-policy trajectories: prompts, the actions the policy took, their log-probs and masks.

One layout everywhere: a row is the left-padded prompt followed by the response (padded
after `<eor>`), `mask` marks real tokens and `action_mask` marks the policy's actions.
The sampler, the reward model, the reference, the critic and the learner all read this
layout, with positions from `mask`, so every one of them sees the states the sampler saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from models.gpt import GPT
from models.sampling import generate, left_pad
from world.actions import ActionSpace


@dataclass(frozen=True)
class Rollouts:
    """A batch of trajectories drawn by one policy version; rows of a group share a prompt."""

    tokens: torch.Tensor  # (B, T) prompt (left-padded) + response (right-padded)
    mask: torch.Tensor  # (B, T) 1 = real token
    action_mask: torch.Tensor  # (B, T) 1 = an action the policy took
    logprobs: torch.Tensor  # (B, T) log pi_sampler(action | state) at action columns, 0 elsewhere
    group: torch.Tensor  # (B,) index of the prompt (0..n_prompts-1) the row answers
    finished: torch.Tensor  # (B,) the response ended with <eor>
    policy_version: int
    prompt_width: int  # columns 0..prompt_width-1 are the prompt

    @property
    def size(self) -> int:
        return self.tokens.shape[0]

    def responses(self) -> list[list[int]]:
        """Each row's actions as token ids (through `<eor>` when it finished)."""
        rows = self.tokens[:, self.prompt_width :]
        keep = self.action_mask[:, self.prompt_width :].bool()
        return [row[k].tolist() for row, k in zip(rows, keep, strict=True)]

    def select(self, rows: torch.Tensor) -> Rollouts:
        """A sub-batch (e.g. a micro-batch); keeps version and layout."""
        return Rollouts(
            self.tokens[rows], self.mask[rows], self.action_mask[rows], self.logprobs[rows],
            self.group[rows], self.finished[rows], self.policy_version, self.prompt_width,
        )  # fmt: skip


def sample_rollouts(
    model: GPT,
    space: ActionSpace,
    prompts: Sequence[Sequence[int]],
    *,
    group_size: int,
    max_new_tokens: int,
    policy_version: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Rollouts:
    """`group_size` responses per prompt from the current policy, in the shared layout."""
    expanded = [list(p) for p in prompts for _ in range(group_size)]
    model.eval()
    gen = generate(
        model, [list(p) for p in prompts], max_new_tokens=max_new_tokens, eor_id=space.eor_id,
        pad_id=space.pad_id, temperature=temperature, top_k=top_k, generator=generator, samples_per_prompt=group_size,
    )  # fmt: skip
    prompt_tokens, prompt_mask = left_pad(expanded, space.pad_id)
    width = prompt_tokens.shape[1]
    tokens = torch.cat([prompt_tokens, gen.tokens], dim=1)
    mask = torch.cat([prompt_mask, gen.action_mask], dim=1)
    action_mask = torch.cat([torch.zeros_like(prompt_mask), gen.action_mask], dim=1)
    logprobs = torch.cat([torch.zeros(prompt_mask.shape), gen.logprobs], dim=1)
    group = torch.arange(len(prompts)).repeat_interleave(group_size)
    return Rollouts(tokens, mask, action_mask, logprobs, group, gen.finished, policy_version, width)


def action_logprobs(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Teacher-forced (B, T) log pi(tokens[:, t] | tokens[:, :t]) in column t; column 0 is 0."""
    return taken_logprobs(state_logprobs(model, tokens, mask, temperature), tokens)


def taken_logprobs(dist: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, T) the log-prob of each token taken, read from the (B, T, V) log-probs of the state before it."""
    return dist.gather(-1, tokens[:, :, None]).squeeze(-1)


def state_logprobs(model: GPT, tokens: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, T, V): log pi(. | tokens[:, :t]) over every action in column t; column 0 (no state before it) is 0,
    so its action's log-prob and its entropy come out 0. At a `temperature` other than 1, the distribution
    the sampler draws from at that temperature (logits / temperature), as its recorded log-probs are."""
    return logprobs_of_logits(model(tokens, mask), temperature)


def logprobs_of_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """`state_logprobs` from the model's (B, T, V) logits: one forward pass read at two temperatures."""
    logits = logits[:, :-1]
    logp = torch.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    return torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)


def concat_rollouts(parts: Sequence[Rollouts], pad_id: int) -> Rollouts:
    """One batch from several samplers' batches: prompts re-left-padded, responses re-right-padded.

    Group ids are offset so that each part's prompts stay distinct; all parts must come
    from the same policy version (the buffer checks staleness per batch, not per row).
    """
    versions = {p.policy_version for p in parts}
    if len(versions) != 1:
        raise ValueError(f"cannot merge rollouts of different policy versions {sorted(versions)}")
    width = max(p.prompt_width for p in parts)
    length = max(p.tokens.shape[1] - p.prompt_width for p in parts)

    def pad(t: torch.Tensor, p: Rollouts, value) -> torch.Tensor:
        left, right = width - p.prompt_width, length - (t.shape[1] - p.prompt_width)
        return torch.nn.functional.pad(t, (left, right), value=value)

    offsets, groups = 0, []
    for p in parts:
        groups.append(p.group + offsets)
        offsets += int(p.group.max()) + 1 if p.size else 0
    return Rollouts(
        tokens=torch.cat([pad(p.tokens, p, pad_id) for p in parts]),
        mask=torch.cat([pad(p.mask, p, 0) for p in parts]),
        action_mask=torch.cat([pad(p.action_mask, p, 0) for p in parts]),
        logprobs=torch.cat([pad(p.logprobs, p, 0.0) for p in parts]),
        group=torch.cat(groups),
        finished=torch.cat([p.finished for p in parts]),
        policy_version=versions.pop(),
        prompt_width=width,
    )
