"""Every run under a folder, a line each: where it stands and what it scored.

Forks, experiments' arms and reruns pile up under `runs/`; `tokenmdp runs` answers "which
of these finished, and how did each do?" from the directories alone (each one's checkpoints
and `summary.json`), without MLflow or Ray.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.run_config import is_run_config, saved_config
from pipelines.status import run_status


@dataclass(frozen=True)
class RunLine:
    run_dir: str
    name: str | None
    stands: str  # "every stage done", or the stage a re-run picks up at and how far it got
    writer: str | None  # the command writing it now, if one is
    sft: float | None  # held-out greedy gold pass rates, from summary.json
    reward_accuracy: float | None
    rlhf: float | None
    gain: float | None  # RLHF over SFT, paired over the same questions
    gain_stderr: float | None
    model_uri: str | None
    forked_from: str | None
    overoptimised_at: int | None  # the iteration RLHF's over-optimisation watch warned at, if it did
    stopped: bool  # and RLHF ended there (`rl.watch_stop`)


def find_runs(root: Path) -> list[Path]:
    """The run directories at or below `root`: those whose config.json is a run's or an experiment arm's (an
    experiment's own is not)."""
    found = []
    for path in sorted(root.rglob("config.json")):
        try:
            config = saved_config(path.parent)
        except (OSError, ValueError):
            continue
        if is_run_config(config):
            found.append(path.parent)
    return found


def run_line(run_dir: Path) -> RunLine:
    status = run_status(run_dir)
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    stages = summary.get("stages", {}) or (arm_stages(run_dir) if status.arm else {})
    sft, reward, rlhf = (stages.get(s, {}) for s in ("sft", "reward", "rlhf"))
    return RunLine(
        run_dir=str(run_dir), name=status.config_name, stands=status.position(), writer=status.writer,
        sft=sft.get("gold_pass_rate"), reward_accuracy=reward.get("gold_accuracy"), rlhf=rlhf.get("gold_pass_rate"),
        gain=rlhf.get("gain_over_sft"), gain_stderr=rlhf.get("gain_over_sft_stderr"),
        model_uri=status.model_uri, forked_from=summary.get("forked_from", {}).get("run_dir"),
        overoptimised_at=(status.overoptimised or {}).get("iteration"), stopped=status.stages[-1].state == "stopped",
    )  # fmt: skip


def arm_stages(arm_dir: Path) -> dict:
    """An experiment arm's scores in `summary.json`'s shape, from its row of the experiment's table (an arm has no
    summary of its own): RLHF's held-out rate and gain, and SFT's rate, which is the one less the other."""
    results = arm_dir.parent / "results.json"
    rows = json.loads(results.read_text()).get("rows", []) if results.is_file() else []
    row = next((r for r in rows if r.get("arm") == arm_dir.name), None)
    if row is None or "gold pass (held-out)" not in row:  # not reported yet, or an experiment without RL
        return {}
    rlhf, gain = row["gold pass (held-out)"], row.get("gain over SFT")
    return {
        "rlhf": {"gold_pass_rate": rlhf, "gain_over_sft": gain, "gain_over_sft_stderr": row.get("± paired")},
        "sft": {"gold_pass_rate": None if gain is None else rlhf - gain},
    }


def run_lines(root: Path) -> list[RunLine]:
    return [run_line(run_dir) for run_dir in find_runs(root)]


def to_json(lines: list[RunLine]) -> str:
    return json.dumps([asdict(line) for line in lines])
