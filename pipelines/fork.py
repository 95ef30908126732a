"""Fork a run: reuse the leading stages another run trained exactly as this config would.

Trying an RL setting should not retrain the SFT policy and the reward model it starts
from. Each config field is read first by one stage (`pipelines.run_config`): the stages
before the first one that reads a changed field are copied from the source run, the rest
are trained. Copied stages start new MLflow runs tagged `tokenmdp.forked_from` with the
source stage's run: the source's runs are never written to.

    tokenmdp run demo --from runs/demo --out runs/demo-gae --set rl.advantage=gae
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conf.schema import Config
from pipelines.run_config import RunDirError, reusable_stages, run_config_dict
from pipelines.tracking import FORKED_FROM, RUN_ID_FILE, logged_run_id

FORK_RECORD = "fork.json"  # in the forked run's directory: the source and the stages copied from it


class ForkError(ValueError):
    """The source of a fork is not a run directory this one can copy stages from."""


def fork(source: Path, cfg: Config, out: Path) -> tuple[str, ...]:
    """Copy into `out` the stages of the run in `source` that `cfg` would train the same way;
    returns their names. Stages `out` already holds (a fork resumed) are left as they are."""
    try:
        saved = run_config_dict(source)
    except RunDirError as err:
        raise ForkError(str(err)) from None
    if source.resolve() == out.resolve():
        raise ForkError(f"--from and --out are the same directory ({out}): a fork needs a directory of its own")
    copied = []
    for stage in reusable_stages(saved, cfg.model_dump()):
        if not (source / stage).is_dir():
            break  # a stage the source never ran: it and the ones after it are trained here
        copy_stage(source / stage, out / stage)
        copied.append(stage)
    out.mkdir(parents=True, exist_ok=True)
    (out / FORK_RECORD).write_text(json.dumps({"run_dir": str(source.resolve()), "stages": copied}))
    return tuple(copied)


def copy_stage(source: Path, target: Path) -> None:
    """Copy a stage's directory without its MLflow run id, noting the run it came from."""
    if target.exists():
        return
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(RUN_ID_FILE))
    origin = {"stage_dir": str(source.resolve()), "mlflow_run_id": logged_run_id(source)}
    (target / FORKED_FROM).write_text(json.dumps(origin))
