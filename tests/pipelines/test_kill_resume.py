"""SIGKILL mid-stage, start again: the interrupted stage continues in the same MLflow run, no metric lost or doubled."""

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


def tokenmdp(args: list[str], env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cli.main", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_sigkill_during_sft_then_rerun_finishes_in_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | {"MLFLOW_TRACKING_URI": uri}
    run_dir = tmp_path / "run"
    log = tmp_path / "stderr.log"
    first = tokenmdp(["run", "tiny", "--out", str(run_dir)], env, log)
    checkpoint = run_dir / "sft" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert first.poll() is None, log.read_text()[-2000:]
    os.killpg(first.pid, signal.SIGKILL)  # mid-SFT: the first checkpoint (step 100 of 400) is on disk
    first.wait()
    sft_run_id = (run_dir / "sft" / "mlflow_run_id").read_text().strip()
    second = tokenmdp(["run", "tiny", "--out", str(run_dir)], env, log)
    assert second.wait(timeout=900) == 0, log.read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"]["sft"]["run_id"] == sft_run_id
    steps = [m.step for m in mlflow.MlflowClient(tracking_uri=uri).get_metric_history(sft_run_id, "loss/lm")]
    assert sorted(steps) == list(range(1, 401))  # every step logged exactly once across the two processes
