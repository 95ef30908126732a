"""Sampler: the policy generating rollouts, tagged with the version of the weights that drew them.

Its weights are the learner's in float32, or cast to bfloat16 (`rl.sampler_precision`), as rollout engines run.

Weights arrive after every update either by a gloo/NCCL broadcast (`join_sync_group`
then `receive_weights`, driven by `actors.weight_sync`) or through Ray's object store
(`set_weights`). The version moves only when new weights are in place.
"""

from __future__ import annotations

import ray
import torch

from models.checkpoint import load_checkpoint
from models.rollout import Rollouts, sample_rollouts
from world.actions import ActionSpace


class SamplerImpl:
    def __init__(
        self, checkpoint: str | bytes, digit_order: str = "msb", threads: int = 1, seed: int = 0,
        precision: str = "float32",
    ) -> None:  # fmt: skip
        torch.set_num_threads(threads)
        self.space = ActionSpace(digit_order=digit_order)
        self.model, _, _ = load_checkpoint(checkpoint, self.space)
        self.model.eval().in_precision(precision)  # new weights are cast as they are copied in
        self.version = 0
        self.generator = torch.Generator().manual_seed(seed)

    def sample(
        self, prompts: list[list[int]], group_size: int, max_new_tokens: int, temperature: float = 1.0,
        top_k: int | None = None,
    ) -> Rollouts:  # fmt: skip
        return sample_rollouts(
            self.model, self.space, prompts, group_size=group_size, max_new_tokens=max_new_tokens,
            policy_version=self.version, temperature=temperature, top_k=top_k, generator=self.generator,
        )  # fmt: skip

    def policy_version(self) -> int:
        return self.version

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    # --- weight sync through the object store -------------------------------------------
    def set_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> int:
        self.model.load_state_dict(state_dict)
        self.version = version
        return version

    # --- weight sync by broadcast -------------------------------------------------------
    def join_sync_group(self, init_method: str, rank: int, world_size: int, backend: str = "gloo") -> None:
        import torch.distributed as dist

        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)

    def receive_weights(self, version: int) -> int:
        """Receive the flat parameter vector broadcast from rank 0 and load it."""
        import torch.distributed as dist

        params = list(self.model.state_dict().values())
        flat = torch.empty(sum(p.numel() for p in params))
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        self.version = version
        return version

    def leave_sync_group(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def checksum(self) -> float:
        return float(sum(p.double().sum() for p in self.model.state_dict().values()))


Sampler = ray.remote(SamplerImpl)
