"""The on-policy buffer's staleness rule, and weight sync to samplers on real Ray actors."""

import pytest
import torch

from actors.buffer import OnPolicyBufferImpl
from models.checkpoint import load_checkpoint
from models.rollout import action_logprobs, concat_rollouts, sample_rollouts
from world.actions import ActionSpace

SPACE = ActionSpace()


def test_strict_buffer_refuses_any_older_batch_and_counts_it():
    buffer = OnPolicyBufferImpl(max_staleness=0)
    buffer.put(3, "old")
    buffer.put(4, "fresh")
    assert buffer.take(current_version=4) == [(0, "fresh")]
    report = buffer.report()
    assert report["buffer/refused_stale"] == 1 and report["buffer/served"] == 1 and report["buffer/size"] == 0


def test_buffer_with_staleness_two_serves_and_reports_it():
    buffer = OnPolicyBufferImpl(max_staleness=2)
    for version in (1, 2, 3):
        buffer.put(version, version)
    assert buffer.take(current_version=4) == [(2, 2), (1, 3)]
    assert buffer.report()["buffer/max_staleness"] == 2
    buffer.put(5, "future")
    with pytest.raises(ValueError, match="newer"):
        buffer.take(current_version=4)


@pytest.mark.slow
def test_sampler_logprobs_are_the_learners_teacher_forced_logprobs(tiny_sft_run):
    """Same states in sampling and training: left padding and positions agree (no hidden off-policy gap)."""
    policy, _, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    prompts = [SPACE.encode_prompt([1, 2, 4, 8, 16, 32, 64]), SPACE.encode_prompt([5]), SPACE.encode_prompt([3, 6])]
    torch.manual_seed(0)  # the same rollouts whichever tests ran before (their float error differs by sample)
    a = sample_rollouts(policy, SPACE, prompts[:1], group_size=3, max_new_tokens=8, policy_version=7)
    b = sample_rollouts(policy, SPACE, prompts[1:], group_size=3, max_new_tokens=8, policy_version=7)
    merged = concat_rollouts([a, b], SPACE.pad_id)
    assert merged.size == 9 and merged.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with torch.no_grad():
        teacher = action_logprobs(policy, merged.tokens, merged.mask) * merged.action_mask
    assert torch.allclose(teacher, merged.logprobs, atol=1e-5)
    assert merged.responses()[:3] == a.responses()
    # at another temperature, the distribution sampled: what the learner and the reference take at it too
    cooled = sample_rollouts(policy, SPACE, prompts, group_size=3, max_new_tokens=8, policy_version=7, temperature=0.5)
    with torch.no_grad():
        at_half = action_logprobs(policy, cooled.tokens, cooled.mask, temperature=0.5) * cooled.action_mask
        at_one = action_logprobs(policy, cooled.tokens, cooled.mask) * cooled.action_mask
    assert torch.allclose(at_half, cooled.logprobs, atol=1e-5)
    assert not torch.allclose(at_one, cooled.logprobs, atol=1e-2)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_the_reference_s_distributions_hold_its_action_log_probs_and_sum_to_one_on_the_actions(
    tiny_sft_run, temperature
):
    from actors.reference import ReferenceImpl

    path = tiny_sft_run / "sft" / "checkpoint.pt"
    policy, _, _ = load_checkpoint(path)
    prompts = [SPACE.encode_prompt([1, 2, 4, 8]), SPACE.encode_prompt([3, 6])]
    rollouts = sample_rollouts(policy, SPACE, prompts, group_size=2, max_new_tokens=6, policy_version=0)
    reference = ReferenceImpl(str(path), SPACE.digit_order, temperature=temperature)
    dist = reference.distributions(rollouts)
    assert dist.shape == (*rollouts.tokens.shape, SPACE.size)
    taken = dist.gather(-1, rollouts.tokens[:, :, None]).squeeze(-1)
    with torch.no_grad():
        teacher = action_logprobs(policy, rollouts.tokens, rollouts.mask, temperature) * rollouts.action_mask
    assert torch.allclose(taken, teacher, atol=1e-5)  # the SFT policy is the reference: its actions' log-probs
    on_actions = rollouts.action_mask.bool()
    assert torch.allclose(dist.exp().sum(-1)[on_actions], torch.ones(int(on_actions.sum())), atol=1e-5)
    assert not dist[~on_actions].any()  # 0 off the actions


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["collective", "object_store"])
def test_weight_sync_reaches_every_sampler_with_the_new_version(tiny_sft_run, ray_local, mode):
    from actors.sampler import Sampler
    from actors.weight_sync import WeightSync

    ckpt = str(tiny_sft_run / "sft" / "checkpoint.pt")
    samplers = [Sampler.options(num_cpus=0.25).remote(ckpt, seed=rank) for rank in range(2)]
    policy, _, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    sync = WeightSync(samplers, mode)
    try:
        seconds = sync.push(policy.state_dict(), version=5)
        expected = float(sum(p.double().sum() for p in policy.state_dict().values()))
        assert seconds > 0
        for sampler in samplers:
            assert ray_local.get(sampler.policy_version.remote()) == 5
            assert abs(ray_local.get(sampler.checksum.remote()) - expected) < 1e-6 * max(abs(expected), 1)
        rollouts = ray_local.get(samplers[0].sample.remote([SPACE.encode_prompt([1, 2, 3])], 2, 4))
        assert rollouts.policy_version == 5
    finally:
        sync.close()
        for s in samplers:
            ray_local.kill(s)
