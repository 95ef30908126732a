"""Start the Serve app from a checkpoint or a model registered in MLflow.

`--model` takes a checkpoint file, a run directory (its RLHF, else SFT, checkpoint) or a
registry URI such as `models:/tokenmdp-demo/1`, resolved through MLflow by
`pipelines.policy_source.resolve_model`, as every command that reads a policy resolves it.
"""

from __future__ import annotations

import os
import socket

from conf.schema import ServeConfig


class CannotListen(OSError):
    """The endpoint's address cannot be bound here: taken, not this machine's, or a privileged port."""


def check_can_listen(host: str, port: int) -> None:
    """Refuse an address that cannot be bound before Ray starts: Serve's proxy would otherwise fail to
    bind inside its actor and the command end in ~200 lines of tracebacks from the cluster."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closed port is free
        try:
            probe.bind((host, port))
        except OSError as err:
            reason = f"cannot listen on {host}:{port} ({err.strerror})"
            raise CannotListen(f"{reason}: free it, or choose another --port") from None


def serve_running() -> bool:
    """Whether this process's Ray already runs Serve, whose proxy then holds the port it was started on."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not ray.is_initialized():
        return False
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def start(model: str, settings: ServeConfig, tracking_uri: str | None = None, blocking: bool = False) -> str:
    """Deploy on (local or `RAY_ADDRESS`) Ray; returns the base URL."""
    from ray import serve

    from actors.cluster import Demand, init_ray, require_room
    from pipelines.policy_source import resolve_model
    from serve.app import PolicyServer

    # Fail fast here, not in a replica that Serve restarts over and over, each time with a traceback.
    checkpoint = resolve_model(model, tracking_uri)[0]
    if not (model.startswith("models:/") or model.startswith("runs:/")):
        model = str(checkpoint.resolve())
    if not os.environ.get("RAY_ADDRESS") and not serve_running():  # a new proxy will bind on this machine
        check_can_listen(settings.host, settings.port)
    init_ray()
    replicas = [Demand("serve", settings.replicas, settings.num_cpus, 0.0)]
    require_room(replicas, "Serve's replicas", "serve.replicas, serve.num_cpus")
    serve.start(http_options={"host": settings.host, "port": settings.port})
    deployment = PolicyServer.options(
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.num_cpus},
        max_ongoing_requests=settings.max_ongoing_requests,
    ).bind(model=model, tracking_uri=tracking_uri or "", settings=settings.model_dump())
    serve.run(deployment, name="tokenmdp", route_prefix="/", blocking=blocking)
    return f"http://{settings.host}:{settings.port}"
