"""Starting or joining Ray: an embedded local cluster by default, a real one with RAY_ADDRESS.

The embedded cluster caps the object store (otherwise it reserves a third of RAM) and
keeps the dashboard off; on 2 cores a half-CPU actor is the unit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from conf.schema import ActorsConfig, Resources

OBJECT_STORE_BYTES = 256 * 1024**2


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join `address` (or RAY_ADDRESS) if given; otherwise start a small local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster needs no token
    # On 2 busy cores Serve's HTTP proxy can take longer than the 5 s readiness check to import.
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
    ray.init(
        address="local",  # a private instance even where `ray start` runs one: Ray would join that, and refuse num_cpus
        num_cpus=num_cpus or os.cpu_count() or 2,
        object_store_memory=OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=True,
        configure_logging=False,
    )


def actor_options(resources: Resources, strategy: str = "PACK") -> dict:
    """`.options(...)` of one actor from its config section; SPREAD places replicas on different nodes."""
    options: dict = {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus}
    if strategy == "SPREAD":
        options["scheduling_strategy"] = "SPREAD"
    return options


class ActorsLost(RuntimeError):
    """Actors kept dying: every restart the config allows (`rl.actor_restarts`) is spent. Checkpoints are kept."""


class DoesNotFit(RuntimeError):
    """The actors a config asks for can never all start on this Ray cluster: Ray would wait for them forever."""


@dataclass(frozen=True)
class Demand:
    """`count` actors of one kind, each asking for `cpus` CPUs and `gpus` GPUs (the config field that sets it)."""

    field: str
    count: int
    cpus: float
    gpus: float


def rl_demands(actors: ActorsConfig, uses_rm: bool, uses_critic: bool, refreshes_rm: bool = False) -> list[Demand]:
    """What RLHF's actors ask Ray for: the samplers, the scorer (with the RM), the reference, the critic (PPO with
    GAE), the buffer, the RM's trainer (iterated RLHF) and the learner actors (none for the local learner, which
    runs in the controller)."""
    kinds = ["sampler", *(["reward"] if uses_rm else []), "reference", *(["critic"] if uses_critic else []), "buffer"]
    kinds += ["reward_trainer"] if refreshes_rm else []
    demands = []
    for name in kinds:
        each: Resources = getattr(actors, name)
        demands.append(Demand(f"rl.actors.{name}", each.replicas, each.num_cpus, each.num_gpus))
    learner = actors.learner
    if learner.num_learners:  # 0: the local learner, inside the controller
        each_cpus, each_gpus = learner.num_cpus_per_learner, learner.num_gpus_per_learner
        demands.append(Demand("rl.actors.learner", learner.num_learners, each_cpus, each_gpus))
    return demands


def shortfall(demands: list[Demand], nodes: list[dict[str, float]]) -> str | None:
    """Why `demands` can never all be placed on `nodes` (each node's total CPU and GPU), or None if they can.

    Two checks, both certain: the sums against the cluster's, and each actor against the largest node."""
    have = {unit: sum(node.get(unit, 0.0) for node in nodes) for unit in ("CPU", "GPU")}
    want = {
        "CPU": sum(d.count * d.cpus for d in demands),
        "GPU": sum(d.count * d.gpus for d in demands),
    }
    short = [unit for unit in ("CPU", "GPU") if want[unit] > have[unit] + 1e-9]
    largest = {unit: max((node.get(unit, 0.0) for node in nodes), default=0.0) for unit in ("CPU", "GPU")}
    too_big = [d for d in demands if d.cpus > largest["CPU"] + 1e-9 or d.gpus > largest["GPU"] + 1e-9]
    if not short and not too_big:
        return None
    if short:
        asks = ", ".join(f"{d.count} x {d.field} of {_amount(d.cpus, d.gpus)}" for d in demands)
        return (
            f"they ask for {_amount(want['CPU'], want['GPU'])} in all ({asks}), the cluster has "
            f"{_amount(have['CPU'], have['GPU'])}"
        )
    return (
        f"{', '.join(d.field for d in too_big)} ask{'s' if len(too_big) == 1 else ''} for more than the largest "
        f"node has ({_amount(largest['CPU'], largest['GPU'])})"
    )


def _amount(cpus: float, gpus: float) -> str:
    return f"{cpus:g} CPU{'s' if cpus != 1 else ''} and {gpus:g} GPU{'s' if gpus != 1 else ''}"


def require_room(demands: list[Demand], what: str, fields: str) -> None:
    """Refuse actors the running Ray cluster can never start; on a joined cluster, which may grow, only say so."""
    import sys

    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problem = shortfall(demands, nodes)
    if problem is None:
        return
    if os.environ.get("RAY_ADDRESS"):  # an autoscaler may add nodes: Ray waits for them, and so do we
        print(f"{what} wait for resources: {problem}; Ray starts them as nodes join", file=sys.stderr, flush=True)
        return
    raise DoesNotFit(
        f"{what} can never all start on this machine's Ray, which would wait for them forever: {problem}. "
        f"Ask for less ({fields}), or run on a cluster that has it (RAY_ADDRESS, --ray-address)"
    )
