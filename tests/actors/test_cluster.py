"""The embedded Ray stays private: a cluster started on the same machine with `ray start` is not joined."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray_start")]  # one worker: both run `ray start`
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` leaves its address for `ray.init()`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_embedded_ray_is_private_where_ray_start_runs_a_cluster(tmp_path):
    saved = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.is_file() else None
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    port = free_port()
    ray = str(Path(sys.executable).parent / "ray")
    log = tmp_path / "head.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", "--block"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (CURRENT_CLUSTER.is_file() and CURRENT_CLUSTER.read_text().endswith(f":{port}")):
            assert time.monotonic() < deadline and head.poll() is None, log.read_text()
            time.sleep(0.5)
        joined = subprocess.run(
            [sys.executable, "-c", "from actors.cluster import init_ray; import ray; init_ray(num_cpus=1); "
             "print(ray.get_runtime_context().gcs_address)"],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert joined.returncode == 0, joined.stderr[-2000:]  # Ray refuses num_cpus when it joins a cluster
        assert not joined.stdout.strip().endswith(f":{port}")
    finally:
        os.killpg(head.pid, signal.SIGINT)  # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        if saved is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        else:
            CURRENT_CLUSTER.write_text(saved)
