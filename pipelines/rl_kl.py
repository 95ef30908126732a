"""The KL that RLHF charges each action of its rollouts, as the controller computes it for the reward, the
metrics and the tables, and `tokenmdp trace` shows it: a sampled estimate (k1/k2/k3) from the recorded
log-probs, or with `rl.kl_estimator: full` the exact KL of each state from both whole distributions.
"""

from __future__ import annotations

import torch

from algos.kl import kl_per_state, kl_per_token
from conf.schema import RLConfig
from models.gpt import GPT
from models.rollout import Rollouts, state_logprobs, taken_logprobs


def rollout_kl(
    rollouts: Rollouts, ref_dist: torch.Tensor, rl: RLConfig, policy: GPT, temperature: float,
    policy_dist: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """(B, T) KL per action, 0 off the actions. `ref_dist` is the reference's (B, T, V) log-probs
    (`ReferenceImpl.distributions`); `policy` must be the one that sampled (read only for `full`, and not at all
    when the caller passes its (B, T, V) log-probs as `policy_dist`, computed already)."""
    mask = rollouts.action_mask.float()
    if rl.kl_estimator == "full":
        logp = policy_dist
        if logp is None:
            with torch.no_grad():
                logp = state_logprobs(policy, rollouts.tokens, rollouts.mask, temperature)
        return kl_per_state(logp, ref_dist, rl.kl_clamp) * mask
    ref_logprobs = taken_logprobs(ref_dist, rollouts.tokens)
    return kl_per_token(rollouts.logprobs, ref_logprobs, rl.kl_estimator, rl.kl_clamp) * mask
