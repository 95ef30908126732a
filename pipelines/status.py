"""Where a run directory stands: each stage's progress, who is writing it now, what it registered.

A run goes for half an hour, often in the background (`make run > log &`, a Ray job) or
after a kill; `tokenmdp status runs/demo` answers "how far is it, is it still going, and
what will a re-run resume?" from the directory alone, without touching MLflow or Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.run_config import LENGTH, REGISTERED, STAGES, RunDirError, checkpointed, is_arm, run_config_dict
from pipelines.run_lock import writer

WATCH_FILE = "overoptimised.json"  # in rlhf/: what RLHF's over-optimisation watch saw when it warned
ENDED = ("stopped", "skipped")  # states of a stage that a re-run does not train
RM_STAGES = ("preferences", "reward")  # what a run rewarded by the gold grader leaves out


@dataclass(frozen=True)
class StageStatus:
    stage: str
    done: int  # steps (iterations for RLHF) checkpointed; for preferences, 1 once collected
    total: int
    unit: str
    updated: float | None  # when its output was last written (seconds since the epoch)
    note: str = ""
    # before its end, yet not to be trained: "stopped", RLHF ended where its over-optimisation watch warned
    # (`rl.watch_stop`); "skipped", a stage the config leaves out (no reward model when the grader rewards)
    ended: str = ""

    @property
    def state(self) -> str:
        if self.done >= self.total:
            return "done"
        return self.ended or ("partial" if self.done else "not started")


@dataclass(frozen=True)
class RunStatus:
    run_dir: Path
    config_name: str | None
    writer: str | None  # "pid N on HOST since T" while a command writes the directory
    stages: list[StageStatus]
    model_uri: str | None
    overoptimised: dict | None  # the over-optimisation watch's record, once it warned (`pipelines.rl_watch`)
    arm: bool = False  # an experiment's arm: `tokenmdp experiment` resumes it, and nothing registers it

    @property
    def next_stage(self) -> StageStatus | None:
        """The first stage not done: where a re-run of `tokenmdp run` picks up."""
        return next((s for s in self.stages if s.state not in ("done", *ENDED)), None)

    @property
    def resumes_at(self) -> str | None:
        return self.next_stage.stage if self.next_stage else None

    def position(self) -> str:
        """Where the run is, in words: "sft (100 of 400 steps checkpointed)", or "every stage done"."""
        stage = self.next_stage
        if stage is None:
            return "every stage done"
        where = f" ({stage.done:,} of {stage.total:,} {stage.unit} checkpointed)" if stage.done else ""
        return f"{stage.stage}{where}"

    def to_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "config": self.config_name, "writer": self.writer,
            "resumes_at": self.resumes_at, "model_uri": self.model_uri, "overoptimised": self.overoptimised,
            "arm": self.arm,
            "stages": {s.stage: {"state": s.state, "done": s.done, "total": s.total, "unit": s.unit,
                                 "updated": s.updated, "note": s.note} for s in self.stages},
        }  # fmt: skip


class NotARun(FileNotFoundError):
    """The directory holds no run (no `config.json`, or an experiment's own)."""


def run_status(run_dir: Path) -> RunStatus:
    try:
        config = run_config_dict(run_dir)
    except RunDirError as err:
        raise NotARun(str(err)) from None
    stages = [_stage(run_dir, s, config) for s in STAGES]
    model_uri = run_dir / REGISTERED
    return RunStatus(
        run_dir, config.get("name"), writer(run_dir), stages,
        model_uri.read_text().strip() if model_uri.is_file() else None, watch_record(run_dir), is_arm(run_dir),
    )  # fmt: skip


def stage_record(stage_dir: Path) -> dict | None:
    """What RLHF's over-optimisation watch saw when it warned, from its stage directory; None while it has not."""
    path = stage_dir / WATCH_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def watch_record(run_dir: Path) -> dict | None:
    """The watch's record of a run (`stage_record` of its RLHF stage)."""
    return stage_record(run_dir / "rlhf")


def stopped_at(run_dir: Path) -> int | None:
    """The iteration where the watch stopped RLHF (`rl.watch_stop`); None when it did not."""
    seen = watch_record(run_dir) or {}
    return seen["iteration"] if seen.get("stopped") else None


def stopped_by_the_watch(run_dir: Path, watch_stop: bool, iteration: int) -> bool:
    """Whether RLHF, checkpointed at `iteration`, ended there where its watch warned: the end while
    `rl.watch_stop` asks for it (off, the run trains on)."""
    return watch_stop and stopped_at(run_dir) == iteration


def _stage(run_dir: Path, stage: str, config: dict) -> StageStatus:
    if stage in RM_STAGES and config["rl"].get("reward_source") == "gold":  # `tokenmdp run` trains no RM then
        unit = "collection" if stage == "preferences" else "steps"
        return StageStatus(stage, 0, 1, unit, None, "no RM: gold reward", ended="skipped")
    return _preferences(run_dir) if stage == "preferences" else _trained(run_dir, stage, config)


def _trained(run_dir: Path, stage: str, config: dict) -> StageStatus:
    section, field, _ = LENGTH[stage]
    total, unit = int(config[section][field]), "iterations" if stage == "rlhf" else "steps"
    path = run_dir / stage / "checkpoint.pt"
    if not path.is_file():
        return StageStatus(stage, 0, total, unit, None)
    done = checkpointed(run_dir, stage)
    if stage == "rlhf" and stopped_by_the_watch(run_dir, config["rl"].get("watch_stop", False), done):
        why = "by the over-optimisation watch (rl.watch_stop)"
        return StageStatus(stage, done, total, unit, path.stat().st_mtime, f"stopped at {done:,} {why}", "stopped")
    return StageStatus(stage, done, total, unit, path.stat().st_mtime)


def _preferences(run_dir: Path) -> StageStatus:
    stats = run_dir / "preferences" / "stats.json"
    if not stats.is_file():
        return StageStatus("preferences", 0, 1, "collection", None)
    counts = json.loads(stats.read_text())
    pairs = sum(v for k, v in counts.items() if k.startswith("train/kept_"))
    return StageStatus("preferences", 1, 1, "collection", stats.stat().st_mtime, f"{pairs:,} training pairs")
