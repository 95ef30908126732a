"""docker-compose.yml's recipe run without Docker: a Ray head started with `ray start`, an MLflow server
serving artifacts, the training job submitted with `ray job submit`, the Serve app loading the registered
model from that server. The compose file itself cannot run here (no Docker engine); its commands can."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray_start")]  # one worker: both run `ray start`
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # `ray start` leaves its address here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not up after {seconds} s: {log.read_text()[-3000:]}"
        time.sleep(1)


def started(command: list[str], env: dict, log: Path, cwd: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """Stop a process group: `ray start --block` and `tokenmdp serve` clean up on SIGINT."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_compose_recipe_runs_on_a_ray_head_and_an_mlflow_server(tmp_path):
    mlflow_port, ray_port, dashboard_port, agent_port, serve_port = (free_port() for _ in range(5))
    tracking = f"http://127.0.0.1:{mlflow_port}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")} | {
        "RAY_AUTH_MODE": "disabled", "MLFLOW_TRACKING_URI": tracking, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "TOKENMDP_CACHE_DIR": str(tmp_path / "cache"),  # the head's workers (serve's replica) read it too
    }  # fmt: skip
    saved = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.is_file() else None
    processes: list[subprocess.Popen] = []
    try:
        server = started(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts",
             "--host", "127.0.0.1", "--port", str(mlflow_port)],
            env, tmp_path / "mlflow.log", tmp_path,
        )  # fmt: skip
        processes.append(server)
        head = started(
            [str(BIN / "ray"), "start", "--head", f"--port={ray_port}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}", "--num-cpus=2",
             "--disable-usage-stats", "--block"],  # the agent's default port is the test session's Ray's
            env, tmp_path / "head.log", tmp_path,
        )  # fmt: skip
        processes.append(head)
        wait_for(f"{tracking}/health", 120, server, tmp_path / "mlflow.log")
        wait_for(f"http://127.0.0.1:{dashboard_port}/api/version", 180, head, tmp_path / "head.log")

        # docker compose run --rm train: the job runs on the cluster, its code uploaded from the project
        run = ["tokenmdp", "run", "tiny", "--out", str(tmp_path / "runs" / "tiny")]
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard_port}",
                  "--working-dir", str(ROOT), "--", *run]  # fmt: skip
        deadline = time.monotonic() + 300
        while True:  # the dashboard answers before its job agent has registered: nothing ran, submit again
            job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
            if "No available agent" not in job.stdout + job.stderr or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "models:/tokenmdp-tiny/1" in job.stdout
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking)
        assert [v.version for v in client.search_model_versions("name='tokenmdp-tiny'")] == ["1"]
        runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        assert {r.info.run_name for r in runs} >= {"pipeline", "pretrain", "sft", "reward", "rlhf"}
        assert any((tmp_path / "artifacts").rglob("*.pt"))  # the server's artifact store holds the checkpoints

        # docker compose up serve (here with --precision bfloat16): joins the cluster, loads the registered model
        # through the server
        serve = started(
            [str(BIN / "tokenmdp"), "serve", "tiny", "--model", "models:/tokenmdp-tiny/1", "--host", "127.0.0.1",
             "--port", str(serve_port), "--precision", "bfloat16"],
            env | {"RAY_ADDRESS": f"127.0.0.1:{ray_port}"}, tmp_path / "serve.log", tmp_path,
        )  # fmt: skip
        processes.insert(0, serve)
        wait_for(f"http://127.0.0.1:{serve_port}/healthz", 240, serve, tmp_path / "serve.log")
        body = httpx.post(  # the replica's first answer may compile the fused decoding step (~25 s)
            f"http://127.0.0.1:{serve_port}/v1/continue", json={"sequence": [1, 2, 4, 8, 16]}, timeout=240
        ).json()
        assert body["model"] == {"name": "tokenmdp-tiny", "version": "1"} and len(body["terms"]) <= 1
        health = httpx.get(f"http://127.0.0.1:{serve_port}/healthz").json()
        assert health["precision"] == "bfloat16"  # `--precision` reached the replicas on the cluster
        fetched = list((tmp_path / "cache" / "models").iterdir())  # serve's check and its replica: one copy
        assert [p.name.startswith("tokenmdp-tiny-v1-") for p in fetched] == [True], fetched
        assert len(list(fetched[0].rglob("*.pt"))) == 1
    finally:
        for process in processes:
            stop(process, signal.SIGTERM if process.args[1] == "server" else signal.SIGINT)
        if saved is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(saved)
