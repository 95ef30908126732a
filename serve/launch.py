"""Start the Serve app from a checkpoint or a model registered in MLflow.

`--model` takes a checkpoint file, a run directory (its RLHF, else SFT, checkpoint) or a
registry URI such as `models:/tokenmdp-demo/1`, which is resolved through MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path

from conf.schema import ServeConfig


def resolve_model(model: str, tracking_uri: str | None = None) -> tuple[Path, str, str]:
    """(checkpoint file, model name, version) for any accepted `--model` form."""
    if model.startswith("models:/") or model.startswith("runs:/"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        from pipelines.tracking import default_tracking_uri

        mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        found = sorted(local.rglob("*.pt"))
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


def start(model: str, settings: ServeConfig, tracking_uri: str | None = None, blocking: bool = False) -> str:
    """Deploy on (local or `RAY_ADDRESS`) Ray; returns the base URL."""
    from ray import serve

    from actors.cluster import init_ray
    from serve.app import PolicyServer

    if not (model.startswith("models:/") or model.startswith("runs:/")):
        model = str(resolve_model(model)[0].resolve())  # fail fast here, not in the replica
    init_ray()
    serve.start(http_options={"host": settings.host, "port": settings.port})
    deployment = PolicyServer.options(
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.num_cpus},
        max_ongoing_requests=settings.max_ongoing_requests,
    ).bind(model=model, tracking_uri=tracking_uri or "", settings=settings.model_dump())
    serve.run(deployment, name="tokenmdp", route_prefix="/", blocking=blocking)
    return f"http://{settings.host}:{settings.port}"
