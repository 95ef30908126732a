"""Shared fixtures: one tiny pretrain+SFT run per session, a local Ray, private MLflow stores."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENMDP_CACHE_DIR", tempfile.mkdtemp(prefix="tokenmdp-test-cache-"))  # not the user's cache
# Rich draws errors and tables to the terminal's width and folds longer lines, paths included, so a longer temporary
# directory (pytest-xdist's popen-gwN/, macOS's /var/folders/...) split the text tests look for across lines.
os.environ["COLUMNS"] = "400"


# The longest tests start first (`make test` runs two xdist workers): collected last, the compose recipe
# (~2 min) ran while the other worker had nothing left to do.
LONGEST_FIRST = (
    "tests/test_cluster_recipe.py",
    "tests/pipelines/test_kill_resume.py",
    "tests/pipelines/test_rm_refresh.py",
    "tests/pipelines/test_fork.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, path in enumerate(LONGEST_FIRST) if item.nodeid.startswith(path)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_sft_run(tmp_path_factory) -> Path:
    """A run directory holding tiny pretrain and SFT checkpoints (built once; copy it before changing it)."""
    from conf.load import load_config
    from pipelines import pretrain, sft

    run_dir = tmp_path_factory.mktemp("tiny_sft")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    cfg = load_config("tiny")
    pretrain.main(cfg, run_dir, tracking_uri=uri)
    sft.main(cfg, run_dir, tracking_uri=uri)
    return run_dir


@pytest.fixture
def sft_run(tiny_sft_run, tmp_path) -> Path:
    """A private copy of the tiny SFT run (without its MLflow ids, so stages log to the test's own store)."""
    run_dir = tmp_path / "run"
    for stage in ("pretrain", "sft"):
        shutil.copytree(tiny_sft_run / stage, run_dir / stage)
    return run_dir


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, started from the project root: its workers import what the driver's
    working directory holds, and test modules define actors (`tests.…`). A command run in-process by an
    earlier test (`tokenmdp run` after `monkeypatch.chdir(tmp_path)`) may have started one elsewhere."""
    import ray

    from actors.cluster import init_ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(Path(__file__).resolve().parent.parent)
        init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
