"""Start the Serve app from a checkpoint or a model registered in MLflow.

`--model` takes a checkpoint file, a run directory (its RLHF, else SFT, checkpoint) or a
registry URI such as `models:/tokenmdp-demo/1`, which is resolved through MLflow.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from conf.schema import ServeConfig


def resolve_model(model: str, tracking_uri: str | None = None) -> tuple[Path, str, str]:
    """(checkpoint file, model name, version) for any accepted `--model` form."""
    if model.startswith("models:/") or model.startswith("runs:/"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        from pipelines.tracking import default_tracking_uri, require_tracking_server

        uri = tracking_uri or default_tracking_uri()
        require_tracking_server(uri)
        mlflow.set_tracking_uri(uri)
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except mlflow.exceptions.MlflowException as err:
            raise FileNotFoundError(f"{model}: {err.message}{registered_hint(model)}") from None
        found = [local] if local.is_file() else sorted(local.rglob("*.pt"))  # runs:/ may name the file itself
        if not found:
            raise FileNotFoundError(f"{model} holds no checkpoint (*.pt)")
        parts = model.removeprefix("models:/").split("/")
        name, version = (parts[0], parts[1]) if model.startswith("models:/") and len(parts) > 1 else (model, "run")
        return found[0], name, version
    path = Path(model)
    if path.is_dir():
        for stage in ("rlhf", "sft"):
            if (path / stage / "checkpoint.pt").is_file():
                return path / stage / "checkpoint.pt", path.name, stage
        raise FileNotFoundError(f"{path} has no rlhf/ or sft/ checkpoint")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path, path.parent.parent.name or "policy", path.parent.name or "checkpoint"


def registered_hint(model: str) -> str:
    """What the registry does hold, for a `models:/` URI it could not resolve: the name's versions, else the names."""
    if not model.startswith("models:/"):
        return ""
    import mlflow

    client = mlflow.MlflowClient()
    name = model.removeprefix("models:/").split("/")[0].split("@")[0]
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if versions:
        return f" ({name} has version{'s' if len(versions) > 1 else ''} {', '.join(map(str, versions))})"
    names = sorted(m.name for m in client.search_registered_models())
    return f" (registered models: {', '.join(names)})" if names else " (the registry holds no model yet)"


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
