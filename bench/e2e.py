"""End to end: wall time of every stage of `tokenmdp run` for a config, into a fresh directory.

    python -m bench.e2e tiny        # or demo (about 15 minutes)

Uses a private MLflow store in the run directory. Prints one JSON line with the stage
wall times and the headline metrics of summary.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from conf.load import load_config
from pipelines import workflow


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.perf_counter()
        summary = workflow.main(load_config(args.config), run_dir, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        total = time.perf_counter() - start
    stages = summary["stages"]
    print(json.dumps({
        "bench": "e2e", "config": args.config, "total_s": round(total, 1), "stage_s": summary["wall_seconds"],
        "sft_gold_pass_rate": stages["sft"]["gold_pass_rate"], "rlhf_gold_pass_rate": stages["rlhf"]["gold_pass_rate"],
        "rm_gold_accuracy": stages["reward"]["gold_accuracy"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
