"""Weight sync: after every update, the learner's new weights reach every sampler.

`collective`: the controller (which holds the learner's weights: the local learner, or
rank 0's weights fetched once) joins a torch.distributed group with the samplers and
broadcasts one flat vector (gloo on CPU, NCCL on GPU). `object_store`: the state dict
goes through Ray's object store, one `set_weights` call per sampler. Both bump the
samplers' policy version only once the weights are in place.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import ray
import torch

JOIN_TIMEOUT = timedelta(minutes=5)  # a sampler that never joins is an error, not a hang
LEAVE_TIMEOUT_S = 10.0  # leaving the group is instant, unless a sampler died or waits in a broken broadcast


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class WeightSync:
    def __init__(self, samplers: list, mode: str = "collective", backend: str = "gloo") -> None:
        self.samplers, self.mode = samplers, mode
        if mode == "collective":
            import torch.distributed as dist

            if dist.is_initialized():
                raise RuntimeError("this process already belongs to a torch.distributed group")
            init = f"tcp://{ray.util.get_node_ip_address()}:{_free_port()}"
            world = len(samplers) + 1
            joined = [s.join_sync_group.remote(init, rank + 1, world, backend) for rank, s in enumerate(samplers)]
            dist.init_process_group(backend, init_method=init, rank=0, world_size=world, timeout=JOIN_TIMEOUT)
            ray.get(joined)
        elif mode != "object_store":
            raise ValueError(f"unknown weight sync {mode!r}; choose collective or object_store")

    def push(self, state_dict: dict[str, torch.Tensor], version: int) -> float:
        """Send `state_dict` to every sampler as `version`; returns the seconds it took."""
        start = time.perf_counter()
        if self.mode == "collective":
            import torch.distributed as dist

            flat = torch.cat([t.detach().reshape(-1).float().cpu() for t in state_dict.values()])
            pending = [s.receive_weights.remote(version) for s in self.samplers]
            try:
                dist.broadcast(flat, src=0)
            except RuntimeError as broken:  # gloo's "connection closed by peer": say which actor died, if one did
                died = dead_actor_error(pending)
                if died is None:
                    raise
                raise died from broken
            ray.get(pending)
        else:
            ref = ray.put({k: v.detach().cpu() for k, v in state_dict.items()})
            ray.get([s.set_weights.remote(ref, version) for s in self.samplers])
        return time.perf_counter() - start

    def close(self) -> None:
        """Leave the group. Samplers that died, or wait in a broadcast that will not come, are not waited for
        long: they are killed next, and the actors of a restart form a new group."""
        if self.mode == "collective":
            import torch.distributed as dist

            left = [s.leave_sync_group.remote() for s in self.samplers]
            ray.wait(left, num_returns=len(left), timeout=LEAVE_TIMEOUT_S)
            if dist.is_initialized():
                dist.destroy_process_group()


def dead_actor_error(pending: list, wait_s: float = LEAVE_TIMEOUT_S) -> Exception | None:
    """The error of an actor that died among the `pending` calls, if one surfaces within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while pending and (left := deadline - time.monotonic()) > 0:
        ready, pending = ray.wait(pending, num_returns=1, timeout=left)
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as err:
                return err
            except Exception:  # a live sampler's own broken broadcast: keep looking
                continue
    return None
