"""Starting or joining Ray: an embedded local cluster by default, a real one with RAY_ADDRESS.

The embedded cluster caps the object store (otherwise it reserves a third of RAM) and
keeps the dashboard off; on 2 cores a half-CPU actor is the unit.
"""

from __future__ import annotations

import os

from conf.schema import Resources

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
