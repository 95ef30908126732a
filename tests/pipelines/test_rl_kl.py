"""The KL RLHF charges each action (`pipelines/rl_kl.py`), against a uniform reference, by hand."""

import math

import pytest
import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.rollout import sample_rollouts, state_logprobs
from pipelines.rl_kl import rollout_kl


@pytest.fixture
def sampled(tiny_sft_run):
    policy, space, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    torch.manual_seed(0)
    prompts = [space.encode_prompt([1, 2, 4, 8]), space.encode_prompt([3, 6, 9])]
    rollouts = sample_rollouts(policy, space, prompts, group_size=3, max_new_tokens=6, policy_version=0)
    uniform = torch.full((*rollouts.tokens.shape, space.size), -math.log(space.size))
    return policy, space, rollouts, uniform


@pytest.mark.parametrize("clamp", [None, 0.5])
def test_the_charged_kl_is_the_estimator_of_the_recorded_log_probs_clamped_as_configured(sampled, clamp):
    policy, space, rollouts, uniform = sampled
    rl = load_config("tiny", ["rl.kl_estimator=k3", f"rl.kl_clamp={'null' if clamp is None else clamp}"]).rl
    kl = rollout_kl(rollouts, uniform, rl, policy, rl.temperature)
    r = rollouts.logprobs + math.log(space.size)  # log pi - log (1 / V) on every action
    k3 = (torch.exp(-r) - 1 + r) * rollouts.action_mask
    assert torch.allclose(kl, k3 if clamp is None else k3.clamp(max=clamp), atol=1e-5)
    assert not kl[~rollouts.action_mask.bool()].any()


def test_the_full_kl_is_log_v_less_each_state_s_entropy_against_a_uniform_reference(sampled):
    policy, space, rollouts, uniform = sampled
    rl = load_config("tiny", ["rl.kl_estimator=full"]).rl
    kl = rollout_kl(rollouts, uniform, rl, policy, rl.temperature)
    with torch.no_grad():
        logp = state_logprobs(policy, rollouts.tokens, rollouts.mask)
    entropy = -(logp.exp() * logp).sum(-1)
    assert torch.allclose(kl, (math.log(space.size) - entropy) * rollouts.action_mask, atol=1e-5)
