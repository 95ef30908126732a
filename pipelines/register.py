"""Register a policy of your choosing in the MLflow Model Registry, as the next version of a model.

`tokenmdp run` registers each run's final policy. The one to serve may be another: the snapshot the
over-optimisation watch pointed at, the SFT policy to serve beside RLHF's, a policy trained elsewhere.

    tokenmdp register runs/demo/rlhf/snapshots/iteration-00010.pt
    tokenmdp register runs/demo --stage sft --name tokenmdp-demo-sft

The policy is logged as the pipeline logs it (`serve.pyfunc_model.register_policy`: the policy alone,
stored as code) in an MLflow run of its config's experiment, and the run and the model version are
tagged with where it came from and the RLHF iteration it is of, so the registry tells its versions apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.policy_source import Policy, final_policy, stage_policy
from pipelines.tracking import open_store


@dataclass(frozen=True)
class Registered:
    model_uri: str  # models:/<name>/<version>
    source: str  # where the policy was read: a stage of a run directory, a file, a URI
    iteration: int | None  # the RLHF iteration it is the policy of; None for SFT's


def source_of(policy: Policy, given: str) -> str:
    """Where a policy came from, as a tag says it: absolute, so it means the same from any directory."""
    if policy.run_dir is not None:
        return f"{policy.run_dir.resolve()}/{policy.name}"
    return given if "://" in given or given.startswith("models:/") else str(Path(given).resolve())


def register(
    source: str, stage: str | None = None, name: str | None = None, tracking_uri: str | None = None
) -> Registered:
    """Register `source`'s policy (a run directory's `stage`, by default its final policy; a checkpoint file; a
    registered model, under another name) as the next version of `name` (default: tokenmdp-<its config's name>)."""
    import mlflow

    policy = stage_policy(Path(source), stage) if stage is not None and Path(source).is_dir() else final_policy(source)
    where = source_of(policy, source)
    iteration = policy.state.get("iteration") if "policy_version" in policy.state else None  # RLHF's carry both
    open_store(policy.cfg.name, tracking_uri)
    tags = provenance(where, iteration)
    with mlflow.start_run(run_name="register", tags=tags):
        model_uri = register_checkpoint(policy.checkpoint, name or f"tokenmdp-{policy.cfg.name}", tags)
    return Registered(model_uri, where, iteration)


def provenance(source: str, iteration: int | None) -> dict[str, str]:
    """The tags that say where a registered policy came from."""
    tags = {"tokenmdp.registered_from": source}
    if iteration is not None:
        tags["tokenmdp.rl_iteration"] = str(iteration)
    return tags


def register_checkpoint(checkpoint: Path, name: str, tags: dict[str, str]) -> str:
    """Log the checkpoint's policy in the active MLflow run, register it as `name`'s next version, tag the version
    with `tags`; returns `models:/name/version`."""
    import mlflow

    from serve.pyfunc_model import register_policy

    model_uri = register_policy(checkpoint, name)
    model, version = model_uri.removeprefix("models:/").split("/")
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, value)
    return model_uri
