"""Per-token KL between the policy and the reference, estimated from sampled actions.

With log_ratio = log pi(a|s) - log pi_ref(a|s) for the sampled action a (Schulman's
estimators of KL(pi || pi_ref)):
    k1 = log_ratio                           unbiased, high variance, can be negative
    k2 = log_ratio^2 / 2                     biased, low variance, >= 0
    k3 = exp(-log_ratio) - 1 + log_ratio     unbiased, low variance, >= 0
and, where both whole distributions of a state are at hand (the action space is small), the exact KL of
the state (`full`, TRL's name): the expectation every estimator estimates, without the sampled action's noise.
Pure torch.
"""

from __future__ import annotations

from typing import Literal

import torch

Estimator = Literal["k1", "k2", "k3", "full"]


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Estimator, clamp: float | None = None
) -> torch.Tensor:
    """Same shape as the inputs; the caller masks non-actions. `clamp` bounds each estimate to [-clamp, clamp]
    (verl's k3 is clamped at 10): k3 grows as exp(-log_ratio), so one action the policy has all but stopped
    taking, sampled anyway, can outweigh a batch; a clamped estimate passes no gradient."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    elif estimator == "k3":
        kl = torch.expm1(-log_ratio) + log_ratio
    elif estimator == "full":
        raise ValueError("the full KL reads whole distributions, not the actions' log-probs: use kl_per_state")
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")
    return kl if clamp is None else kl.clamp(-clamp, clamp)


def categorical_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) over the last dim (all actions), from log-probs: what the estimators estimate.

    The action space is small, so a state's KL can be summed over every action instead of
    estimated from the one sampled; an action pi never takes adds 0.
    """
    p = logp.exp()
    return torch.where(p > 0, p * (logp - ref_logp), torch.zeros_like(p)).sum(-1)


def kl_per_state(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """(B, T) exact KL(pi || pi_ref) of each state from (B, T, V) log-probs (the `full` estimator), bounded to
    [0, clamp] as the sampled estimates are; with gradients when `logp` has them."""
    kl = categorical_kl(logp, ref_logp)
    return kl if clamp is None else kl.clamp(max=clamp)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of the policy over the last dim (all actions), from log-probs."""
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)


def adaptive_kl_coef(coef: float, observed_kl: float, target: float, horizon: int, n_steps: int) -> float:
    """The next KL coefficient of Ziegler et al. (2019)'s proportional controller (TRL's and verl's `adaptive`).

    The error observed / target - 1 is clipped to +-0.2, so one batch moves the coefficient by at most
    0.2 * n_steps / horizon of itself: up while the KL runs above the target, down while below.
    """
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_steps / horizon)


def largest_responses(per_response: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of the `n` responses whose KL estimate lies farthest from 0, farthest first (ties: the earlier
    row): where a batch's KL comes from. By size, not sign, so k1's negative estimates rank too."""
    order = torch.sort(per_response.abs(), descending=True, stable=True).indices
    return order[:n]


def top_share(per_response: torch.Tensor, n: int) -> float:
    """The share of the batch's KL mass (the responses' |estimates| summed) that its `n` largest carry: about
    n / B when the policy moved alike on every response, near 1 when a few carry the KL (0 for a batch at 0)."""
    mass = per_response.abs()
    total = mass.sum()
    return (mass[largest_responses(per_response, n)].sum() / total).item() if total > 0 else 0.0
