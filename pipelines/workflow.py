"""The orchestrated workflow: every stage in order, each resumable, one summary at the end.

A stage whose checkpoint already reached its configured steps only re-evaluates; a run
killed mid-stage continues from that stage's last checkpoint in the same MLflow run.
So far: pretrain -> SFT -> evaluation; the reward model, RLHF and serving come next.

    tokenmdp run demo
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from conf.schema import Config
from pipelines import pretrain, sft
from pipelines.tracking import default_tracking_uri

console = Console()
SUMMARY_KEYS = ("gold_pass_rate", "sampled_pass_at_1", "format_rate", "rate_114514")


def main(cfg: Config, run_dir: Path, tracking_uri: str | None = None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(), indent=2))
    uri = tracking_uri or default_tracking_uri()
    wall: dict[str, float] = {}
    # --- pretraining --------------------------------------------------------------------
    start = time.perf_counter()
    pre = pretrain.main(cfg, run_dir, tracking_uri=uri)
    wall["pretrain"] = time.perf_counter() - start
    # --- SFT (audited) and evaluation ---------------------------------------------------
    start = time.perf_counter()
    tuned = sft.main(cfg, run_dir, tracking_uri=uri)
    wall["sft"] = time.perf_counter() - start
    summary = {
        "stages": {
            "pretrain": {"val_loss": pre.get("eval/val_loss"), "run_id": pre["run_id"]},
            "sft": {key: tuned.get(f"eval/{key}") for key in SUMMARY_KEYS} | {"run_id": tuned["run_id"]},
        },
        "wall_seconds": {k: round(v, 1) for k, v in wall.items()},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, run_dir)
    return summary


def print_summary(summary: dict, run_dir: Path) -> None:
    table = Table(title=f"TokenMDP run: {run_dir}")
    for col in ("stage", "metric", "value"):
        table.add_column(col)
    for stage, metrics in summary["stages"].items():
        for key, value in metrics.items():
            if key != "run_id":
                table.add_row(stage, key, f"{value:.3f}" if isinstance(value, float) else str(value))
        table.add_row(stage, "wall seconds", str(summary["wall_seconds"][stage]))
    console.print(table)
