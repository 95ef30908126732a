"""The judge phase: scorer, reference and critic calls are in flight at once, each timed to its own end."""

import time

import pytest
import torch

from models.gpt import GPT, GPTConfig
from models.rollout import sample_rollouts
from pipelines.rl_actors import call_sharded, wait_timed
from world.actions import ActionSpace

pytestmark = pytest.mark.slow
SPACE = ActionSpace()
NAP = 1.0


class Judge:
    """Answers each row with its prompt's index after a fixed nap, like a scorer that takes NAP seconds."""

    def __init__(self, nap: float) -> None:
        self.nap = nap

    def judge(self, rollouts) -> torch.Tensor:
        time.sleep(self.nap)
        return rollouts.group.float() * 10


def rollouts(n_prompts: int = 4, group: int = 2):
    torch.manual_seed(0)
    policy = GPT(GPTConfig(SPACE.size, n_layer=1, n_head=1, d_model=16, max_len=32))
    prompts = [SPACE.encode_prompt([i, i + 1, i + 2]) for i in range(n_prompts)]
    return sample_rollouts(policy, SPACE, prompts, group_size=group, max_new_tokens=3, policy_version=0)


def test_two_judges_overlap_and_each_is_timed_to_its_own_end(ray_local):
    remote = ray_local.remote(num_cpus=0.1)(Judge)
    slow, fast = remote.remote(NAP), remote.remote(0.75 * NAP)
    ray_local.get([slow.__ray_ready__.remote(), fast.__ray_ready__.remote()])
    batch = rollouts()
    since = time.perf_counter()
    calls = {"slow": call_sharded([slow], "judge", batch), "fast": call_sharded([fast], "judge", batch)}
    finished = wait_timed(calls, since)
    wall = time.perf_counter() - since
    assert wall < NAP * 1.4, f"the calls ran one after another ({wall:.2f} s)"
    assert finished["slow"] >= NAP and 0.75 * NAP <= finished["fast"] < finished["slow"]
    for call in calls.values():
        assert torch.equal(call.collect(), batch.group.float() * 10)


def test_replicas_share_whole_groups_and_rows_come_back_in_order(ray_local):
    remote = ray_local.remote(num_cpus=0.1)(Judge)
    replicas = [remote.remote(0.0) for _ in range(3)]
    batch = rollouts(n_prompts=5, group=3)
    call = call_sharded(replicas, "judge", batch)
    assert len(call.refs) == 3
    for shard in call.shards:  # a group is never split across replicas
        groups = set(batch.group[shard].tolist())
        assert all(set(torch.nonzero(batch.group == g).squeeze(1).tolist()) <= set(shard.tolist()) for g in groups)
    wait_timed({"judge": call}, time.perf_counter())
    assert torch.equal(call.collect(), batch.group.float() * 10)
