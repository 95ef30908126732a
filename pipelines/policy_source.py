"""The policy a command reads: a run directory's stage, a checkpoint file or a registered model.

`resolve_model` turns any of these into a checkpoint file (fetching a `models:/` or `runs:/` URI
through MLflow, once per version from a server: `pipelines/model_fetch.py`), for `serve` and the
reading commands alike. Every policy checkpoint (SFT's,
RLHF's) carries the config it was trained under, so a policy fetched from the registry needs no
run directory to be asked its run's held-out questions:

    tokenmdp compare models:/tokenmdp-demo/1 models:/tokenmdp-demo/2
    tokenmdp exam models:/tokenmdp-demo/2 my_exam.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conf.load import with_defaults
from conf.schema import Config
from models.checkpoint import load_checkpoint
from models.gpt import GPT
from pipelines.run_config import RunDirError, load_run_config, policy_checkpoint
from world.actions import ActionSpace


@dataclass(frozen=True)
class Policy:
    """A policy with the config it was trained under."""

    name: str  # as a reading command shows it: the run directory's stage, else the file or URI it was named by
    checkpoint: Path  # where it was read from (a registered model's: the local copy MLflow fetched)
    model: GPT
    space: ActionSpace
    cfg: Config
    state: dict[str, Any]  # the rest of its checkpoint (corpus statistics, ...)
    run_dir: Path | None  # the run directory it was read from; None for a file or a registered model


def snapshot_path(run_dir: Path, iteration: int) -> Path:
    """Where `rl.snapshot_every` keeps the policy of an iteration."""
    return run_dir / "rlhf" / "snapshots" / f"iteration-{iteration:05d}.pt"


def kept_snapshots(run_dir: Path) -> list[Path]:
    """The RLHF policies a run kept along the way, by iteration."""
    return sorted(snapshot_path(run_dir, 0).parent.glob("iteration-*.pt"))


def snapshot_iteration(snapshot: Path) -> int:
    """The iteration whose policy a snapshot file keeps, from its name."""
    return int(snapshot.stem.removeprefix("iteration-"))


def resolve_model(model: str, tracking_uri: str | None = None) -> tuple[Path, str, str]:
    """(checkpoint file, model name, version) for any accepted `--model` form."""
    if model.startswith("models:/") or model.startswith("runs:/"):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow

        from pipelines.model_fetch import fetch
        from pipelines.tracking import default_tracking_uri, require_tracking_server

        uri = tracking_uri or default_tracking_uri()
        require_tracking_server(uri)
        mlflow.set_tracking_uri(uri)
        try:
            local = fetch(model, uri)
        except mlflow.exceptions.MlflowException as err:
            raise FileNotFoundError(f"{model}: {err.message}{registered_hint(model)}") from None
        found = [local] if local.is_file() else sorted(local.rglob("*.pt"))  # runs:/ may name the file itself
        if not found:
            raise FileNotFoundError(f"{model} holds no checkpoint (*.pt)")
        return found[0], *served_name(model)
    path = Path(model)
    if path.is_dir():
        stage = final_stage(path)
        if stage is None:
            raise FileNotFoundError(f"{path} has no rlhf/ or sft/ checkpoint")
        return path / stage / "checkpoint.pt", path.name, stage
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return (path, *file_model_name(path.resolve()))


def run_dir_holding(path: Path, levels: int = 3) -> Path | None:
    """The run directory a stage directory or checkpoint file lies in (`runs/demo/rlhf`,
    `runs/demo/sft/checkpoint.pt`, `runs/demo/rlhf/snapshots/iteration-00010.pt`), if it is on this machine."""
    path = path.resolve()
    return next((d for d in (path, *path.parents)[: levels + 1] if (d / "config.json").is_file()), None)


def trained_in(source: str, tracking_uri: str | None = None) -> tuple[Path | None, str]:
    """(the run directory that trained a policy file or a registered model, if it is on this machine; where the
    policy says it came from): a registered version's `tokenmdp.registered_from` tag, a `runs:/` artifact's run's
    stage directory, else the file's own place."""
    if not source.startswith(("models:/", "runs:/")):
        return run_dir_holding(Path(source)), source
    import mlflow

    from pipelines.model_fetch import registered_version
    from pipelines.tracking import STAGE_DIR_TAG, default_tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    if source.startswith("runs:/"):
        origin = client.get_run(source.removeprefix("runs:/").split("/")[0]).data.tags.get(STAGE_DIR_TAG)
    else:
        version = registered_version(client, source)
        origin = (client.get_model_version(*version).tags if version else {}).get("tokenmdp.registered_from")
    if origin is None or "://" in origin or origin.startswith("models:/"):
        return None, origin or "no record"
    return run_dir_holding(Path(origin)), origin


def served_name(model: str) -> tuple[str, str]:
    """(name, version) a `models:/` URI names, an alias (`@champion`) or stage resolved to the version it points
    at now, so an answer says which version gave it; (the URI, "run") for a `runs:/` artifact."""
    if not model.startswith("models:/"):
        return model, "run"
    import mlflow

    from pipelines.model_fetch import registered_version

    return registered_version(mlflow.MlflowClient(), model) or (model, "logged")


def file_model_name(path: Path) -> tuple[str, str]:
    """(name, version) a checkpoint file is served as: its run and stage for a stage's checkpoint
    (`runs/demo/rlhf/checkpoint.pt`: demo, rlhf), its run and iteration for a snapshot
    (`.../rlhf/snapshots/iteration-00020.pt`: demo, rlhf/iteration-00020), else its folder and name."""
    if path.parent.name == "snapshots":
        return path.parents[2].name, f"{path.parents[1].name}/{path.stem}"
    if path.name == "checkpoint.pt":
        return path.parent.parent.name or "policy", path.parent.name or "checkpoint"
    return path.parent.name or "policy", path.stem


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


def stage_policy(run_dir: Path, stage: str) -> Policy:
    """`stage`'s policy in a run directory, read under the run's action space."""
    cfg = load_run_config(run_dir)
    path = policy_checkpoint(run_dir, stage)
    model, space, state = load_checkpoint(path, ActionSpace(digit_order=cfg.world.digit_order))
    return Policy(stage, path, model, space, cfg, state, run_dir)


def named_policy(source: str) -> Policy:
    """A policy checkpoint file or a registered model (`models:/name/version`, `runs:/...`), with its config."""
    try:
        checkpoint = resolve_model(source)[0]
    except FileNotFoundError as err:
        raise RunDirError(str(err)) from None
    model, space, state = load_checkpoint(checkpoint)
    if not isinstance(model, GPT):
        raise RunDirError(f"{source} is a reward model or a critic, not a policy")
    if "config" not in state:
        raise RunDirError(f"{source} carries no config: pass a policy checkpoint written by `tokenmdp sft` or `rlhf`")
    cfg = Config.model_validate(with_defaults(state["config"]))
    return Policy(source, checkpoint, model, space, cfg, state, None)


def policy_from(source: str | Path, stage: str) -> Policy:
    """A run directory's `stage` policy, else the policy a checkpoint file or registry URI names."""
    return stage_policy(Path(source), stage) if Path(source).is_dir() else named_policy(str(source))


def final_stage(run_dir: Path) -> str | None:
    """The stage of a run directory's final policy: RLHF's, else SFT's; None when it holds neither."""
    return next((s for s in ("rlhf", "sft") if (run_dir / s / "checkpoint.pt").is_file()), None)


def final_policy(source: str | Path) -> Policy:
    """A run directory's final policy (RLHF's, else SFT's), else the policy a checkpoint file or registry URI names."""
    run_dir = Path(source)
    if not run_dir.is_dir():
        return named_policy(str(source))
    return stage_policy(run_dir, final_stage(run_dir) or "sft")  # neither: stage_policy says SFT is missing
