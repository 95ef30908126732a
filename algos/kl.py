"""Per-token KL between the policy and the reference, estimated from sampled actions.

With log_ratio = log pi(a|s) - log pi_ref(a|s) for the sampled action a (Schulman's
estimators of KL(pi || pi_ref)):
    k1 = log_ratio                           unbiased, high variance, can be negative
    k2 = log_ratio^2 / 2                     biased, low variance, >= 0
    k3 = exp(-log_ratio) - 1 + log_ratio     unbiased, low variance, >= 0
Pure torch.
"""

from __future__ import annotations

from typing import Literal

import torch

Estimator = Literal["k1", "k2", "k3"]


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Estimator) -> torch.Tensor:
    """Same shape as the inputs; the caller masks non-actions."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; choose k1, k2 or k3")
