"""How much better than expected each action was: advantages for the policy gradient.

Inputs use the rollout layout: (B, T) tensors with an `action_mask` marking the policy's
actions (contiguous within a row), a scalar reward per row earned at its last action,
and `group` (B,) telling which rows answer the same prompt. Outputs are (B, T) with zeros
off the actions. Pure torch: no Ray, no I/O.

    GAE            PPO with a critic: delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum (gamma lam)^l delta_{t+l}
    RLOO           A_i = R_i - mean of the other G-1 rewards of the same prompt
    group          A_i = R_i - mean of the group (GRPO), divided by the group's std if asked
    REINFORCE++    return-to-go of token rewards, whitened over all actions of the batch
"""

from __future__ import annotations

import torch

from algos.masks import last_real_index

EPS = 1e-6


def _group_stats(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (sum, count, sum of squares) over the row's group."""
    n_groups = int(group.max()) + 1 if group.numel() else 0
    sums = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, group, values)
    counts = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, group, torch.ones_like(values))
    squares = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, group, values**2)
    return sums[group], counts[group], squares[group]


def group_mean_std(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row mean and unbiased std of its group (std 0 for a group of one)."""
    sums, counts, squares = _group_stats(values, group)
    mean = sums / counts
    var = (squares - counts * mean**2) / (counts - 1).clamp(min=1)
    return mean, var.clamp(min=0).sqrt()


def normalize_within_groups(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(v - group mean) / (group std + eps): a score that only compares answers to one prompt."""
    mean, std = group_mean_std(values, group)
    return (values - mean) / (std + EPS)


def rloo(rewards: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """(B,) leave-one-out: R_i minus the mean reward of the other responses to the same prompt."""
    sums, counts, _ = _group_stats(rewards, group)
    if bool((counts < 2).any()):
        raise ValueError("RLOO needs at least 2 responses per prompt")
    return rewards - (sums - rewards) / (counts - 1)


def group_baseline(rewards: torch.Tensor, group: torch.Tensor, scale_by_std: bool = False) -> torch.Tensor:
    """(B,) R_i minus its group's mean (GRPO); with `scale_by_std`, divided by the group std + eps."""
    mean, std = group_mean_std(rewards, group)
    advantages = rewards - mean
    return advantages / (std + EPS) if scale_by_std else advantages


def zero_advantage_groups(
    advantages: torch.Tensor, action_mask: torch.Tensor, group: torch.Tensor, atol: float = EPS
) -> torch.Tensor:
    """(B,) True on the rows of a group none of whose actions has an advantage above `atol`.

    Under a group baseline (RLOO, group) that is a prompt whose G responses earned the same
    reward, e.g. G identical answers: it carries no policy-gradient signal, only KL (DAPO
    drops such groups from the batch).
    """
    row_has_signal = ((advantages.abs() * action_mask.to(advantages.dtype)).amax(dim=1) > atol).to(advantages.dtype)
    group_signal = torch.zeros(int(group.max()) + 1 if group.numel() else 0).index_add_(0, group, row_has_signal)
    return group_signal[group] == 0


def rows_of_first_signal_groups(rewards: torch.Tensor, group: torch.Tensor, n: int) -> torch.Tensor:
    """(K,) indices, ascending, of the rows of the first `n` groups (by group id) whose rewards are not all equal.

    DAPO's dynamic sampling trains on these: under a group baseline a group of equal rewards has no advantage."""
    _, std = group_mean_std(rewards, group)
    signal = sorted({int(g) for g in group[std > EPS]})[:n]
    return torch.nonzero(torch.isin(group, torch.tensor(signal, dtype=group.dtype))).squeeze(1)


def per_token(sequence_values: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Broadcast a (B,) value to every action of its row: (B, T)."""
    return sequence_values[:, None] * action_mask.to(sequence_values.dtype)


def token_rewards(rewards: torch.Tensor, action_mask: torch.Tensor, kl: torch.Tensor | None, kl_coef: float):
    """(B, T): the sequence reward on each row's last action, minus kl_coef * KL on every action."""
    mask = action_mask.to(rewards.dtype)
    last = last_real_index(mask)
    out = torch.zeros_like(mask)
    has_action = last >= 0
    out[has_action, last[has_action]] = rewards[has_action]
    if kl is not None:
        out = out - kl_coef * kl * mask
    return out


def returns_to_go(token_rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """(B, T) sum_{s >= t} gamma^(s-t) r_s over actions; 0 off the actions."""
    mask = action_mask.to(token_rewards.dtype)
    out = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[0], dtype=token_rewards.dtype)
    for t in reversed(range(token_rewards.shape[1])):
        running = (token_rewards[:, t] + gamma * running) * mask[:, t]
        out[:, t] = running
    return out


def whiten(values: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """(v - mean) / (std + eps) over the actions of the whole batch; 0 off the actions."""
    mask = action_mask.bool()
    selected = values[mask]
    if selected.numel() < 2:
        return values * action_mask
    return torch.where(mask, (values - selected.mean()) / (selected.std() + EPS), torch.zeros_like(values))


def reinforce_pp(token_rewards: torch.Tensor, action_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++: returns-to-go of the token rewards (KL included), whitened over the batch."""
    return whiten(returns_to_go(token_rewards, action_mask, gamma), action_mask)


def gae(
    token_rewards: torch.Tensor, values: torch.Tensor, action_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both (B, T). `values[:, t]` is V(state before action t).

    The state after a row's last action is terminal (value 0).
    """
    mask = action_mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(values.shape[0], dtype=values.dtype)
    next_advantage = torch.zeros_like(next_value)
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantage * mask[:, t]
    return advantages, (advantages + values) * mask


def estimate(
    kind: str,
    rewards: torch.Tensor,
    group: torch.Tensor,
    action_mask: torch.Tensor,
    *,
    kl: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    values: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
    group_std: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) advantages (and GAE's returns for the critic) by the configured estimator.

    `kl` (B, T) with `kl_coef` > 0 puts the KL penalty in the reward: for the sequence-level
    baselines (rloo, group) as R - kl_coef * sum_t kl_t, for the token-level ones on each token.
    """
    mask = action_mask.to(rewards.dtype)
    if kind in ("rloo", "group"):
        sequence = rewards - kl_coef * (kl * mask).sum(dim=1) if kl is not None else rewards
        baseline = rloo(sequence, group) if kind == "rloo" else group_baseline(sequence, group, group_std)
        return per_token(baseline, mask), None
    per_step = token_rewards(rewards, mask, kl, kl_coef)
    if kind == "reinforce++":
        return reinforce_pp(per_step, mask, gamma), None
    if kind == "gae":
        if values is None:
            raise ValueError("GAE needs the critic's values")
        advantages, returns = gae(per_step, values, mask, gamma, lam)
        return whiten(advantages, mask), returns
    raise ValueError(f"unknown advantage estimator {kind!r}; choose gae, rloo, group or reinforce++")
