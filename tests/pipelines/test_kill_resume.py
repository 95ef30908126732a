"""SIGKILL mid-RLHF, start again: the stage continues in the same MLflow run, no metric lost or doubled."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent.parent


def tokenmdp(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`tokenmdp ...` in its own process group (so SIGKILL reaches all of it), stderr into `log`."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def test_sigkill_during_rlhf_then_rerun_finishes_in_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | {"MLFLOW_TRACKING_URI": uri}
    run_dir, log = tmp_path / "run", tmp_path / "stderr.log"
    first = tokenmdp(["run", "tiny", "--out", str(run_dir)], env, log)
    checkpoint = run_dir / "rlhf" / "checkpoint.pt"
    deadline = time.time() + 800
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, log.read_text()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # mid-RLHF: iteration 2 of 4 is checkpointed
    first.wait()
    rlhf_run_id = (run_dir / "rlhf" / "mlflow_run_id").read_text().strip()
    client = mlflow.MlflowClient(tracking_uri=uri)
    before = [m.step for m in client.get_metric_history(rlhf_run_id, "reward/gold")]
    assert before == [1, 2]
    second = tokenmdp(["run", "tiny", "--out", str(run_dir)], env, log)
    assert second.wait(timeout=900) == 0, log.read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["rlhf"]["run_id"] == rlhf_run_id
    steps = sorted(m.step for m in client.get_metric_history(rlhf_run_id, "reward/gold"))
    assert steps == [1, 2, 3, 4]  # the metrics from before the kill are still there, none doubled
    # the tables of what RL trained on are written before each checkpoint: the kill lost none
    for folder in ("rollouts", "rm_misordered", "kl_sources"):
        written = [f.path for f in client.list_artifacts(rlhf_run_id, folder)]
        assert written == [f"{folder}/iteration-00002.json", f"{folder}/iteration-00004.json"]
