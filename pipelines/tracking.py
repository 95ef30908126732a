"""MLflow for every stage: a local SQLite store inside the project unless told otherwise.

`MLFLOW_TRACKING_URI` switches to an MLflow server without code changes. A stage keeps its
run id in its directory, so a resumed stage logs into the same MLflow run, unless that run is
not this directory's to write (`run_to_resume`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FORKED_FROM = "forked_from"  # in a stage directory copied from another run (pipelines/fork.py): its origin
RUN_ID_FILE = "mlflow_run_id"  # in every stage directory: the MLflow run it logs into
STAGE_DIR_TAG = "tokenmdp.stage_dir"  # on every stage's run: the directory that logs into it
SERVER_WAIT_S = 30.0  # how long a command waits for a tracking server that does not answer yet (one starting up)


class TrackingUnreachable(ConnectionError):
    """The MLflow tracking server does not answer: MLflow itself would retry for four minutes, then fail in a
    traceback of some hundred lines."""


def is_server(uri: str) -> bool:
    """Whether a tracking URI is an http(s) server (its artifacts fetched over HTTP), not a local store."""
    return uri.startswith(("http://", "https://"))


def require_tracking_server(uri: str, wait_s: float | None = None) -> None:
    """Return once an http(s) tracking server answers; other stores (a local SQLite file) need no server.

    A server still starting (`docker compose up` brings it up beside the job) gets `wait_s` seconds."""
    if not is_server(uri):
        return
    wait_s = SERVER_WAIT_S if wait_s is None else wait_s
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # something answers there; what it says is MLflow's to report
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            if time.monotonic() >= deadline:
                raise TrackingUnreachable(
                    f"the MLflow tracking server at {uri} (MLFLOW_TRACKING_URI) does not answer ({reason}) after "
                    f"{wait_s:.0f} s: start it (`mlflow server ...`, `docker compose up -d mlflow`), or unset "
                    "MLFLOW_TRACKING_URI for the project's local store"
                ) from None
            if not said:
                print(f"waiting up to {wait_s:.0f} s for the MLflow tracking server at {uri} ({reason})",
                      file=sys.stderr, flush=True)  # fmt: skip
                said = True
            time.sleep(1.0)


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def local_store_folder(tracking_uri: str) -> Path | None:
    """The folder of a local SQLite store (`sqlite:///path/mlflow.db`); None for a server or other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent


def use_experiment(name: str, tracking_uri: str) -> None:
    """Make `name` the active experiment. One new on a local SQLite store keeps its artifacts beside the
    database (`mlruns/<name>` next to `mlflow.db`): MLflow's default, `./mlruns` of whatever directory the
    command started in, scattered a run's artifacts away from its store (and the tests' into the project)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    folder = local_store_folder(tracking_uri)
    if folder is not None and mlflow.get_experiment_by_name(name) is None:
        with suppress(MlflowException):  # created meanwhile by another process: use theirs
            mlflow.create_experiment(name, artifact_location=(folder / "mlruns" / name).as_uri())
    mlflow.set_experiment(name)


def flatten(data: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"pretrain.lr": "0.001", ...} for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(value)
    return flat


def open_store(experiment: str, tracking_uri: str | None = None) -> str:
    """Point MLflow at the store (`tracking_uri`, else the default) with `experiment` active; returns its URI."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    require_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    use_experiment(experiment, uri)
    return uri


@contextmanager
def stage_run(stage_dir: Path, *, experiment: str, run_name: str, tracking_uri: str | None = None) -> Iterator[object]:
    """Start, or resume, the MLflow run that belongs to `stage_dir`.

    Inside an active run (the workflow's parent run) the stage's run is nested under it.
    """
    import mlflow

    uri = open_store(experiment, tracking_uri)
    run_id, tags = run_to_resume(stage_dir, logged_run_id(stage_dir), uri)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_id=run_id, run_name=run_name, nested=nested) as run:
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / RUN_ID_FILE).write_text(run.info.run_id)
        mlflow.set_tags(tags | {STAGE_DIR_TAG: str(stage_dir.resolve())})  # a moved directory takes its run along
        yield run


def run_to_resume(stage_dir: Path, run_id: str | None, tracking_uri: str) -> tuple[str | None, dict[str, str]]:
    """The run `stage_dir` logs into (None: a new one) and the tags a new one starts with.

    A stage resumes its own run. It starts a new one, tagged with the run it continues, where that run is
    not in this store (the directory came from another machine's), was deleted, or is still another
    directory's (this one is a copy: two directories resuming one run would log over each other's steps)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    origin = stage_dir / FORKED_FROM
    if run_id is None:
        if not origin.is_file():
            return None, {}
        source = json.loads(origin.read_text())  # copied by a fork: say which run trained it
        return None, _forked(source["mlflow_run_id"] or "", source["stage_dir"])
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        _say(stage_dir, f"its MLflow run {run_id} is not in {tracking_uri} (a directory from another store?)")
        return None, {"tokenmdp.resumed_from": run_id}
    if run.info.lifecycle_stage == "deleted":
        _say(stage_dir, f"its MLflow run {run_id} was deleted")
        return None, {"tokenmdp.resumed_from": run_id}
    owner = run.data.tags.get(STAGE_DIR_TAG)
    if owner and Path(owner) != stage_dir.resolve() and logged_run_id(Path(owner)) == run_id:
        _say(stage_dir, f"its MLflow run {run_id} is {owner}'s, which still logs into it (this directory is a copy)")
        return None, _forked(run_id, owner)
    return run_id, {}


def _forked(run_id: str, stage_dir: str) -> dict[str, str]:
    return {"tokenmdp.forked_from": run_id, "tokenmdp.forked_from_dir": stage_dir}


def logged_run_id(stage_dir: Path) -> str | None:
    """The MLflow run a stage directory logs into; None before its first run."""
    id_file = stage_dir / RUN_ID_FILE
    return id_file.read_text().strip() if id_file.is_file() else None


def _say(stage_dir: Path, why: str) -> None:
    print(f"{stage_dir}: {why}: logging into a new MLflow run tagged with it", file=sys.stderr, flush=True)


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every artifact it downloads: a reading command's output is its
    table, not a bar per file of a folder of tables."""
    key, before = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


@contextmanager
def ctrl_c_after() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block has run, then deliver it. A KeyboardInterrupt raised inside an
    SQLite write leaves the store's transaction open and the database locked: ending the MLflow run then waits
    out SQLite's timeout and fails with `database is locked`, a page of SQLAlchemy traceback instead of the line
    that says where the run stopped. Off the main thread (where no signal handler can be set), the block runs
    as it is."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            signal.raise_signal(signal.SIGINT)  # now, to the handler that was there before


def log_metrics_batch(rows: list[tuple[int, dict[str, float]]]) -> None:
    """Many steps' metrics in one call: per-point calls cost seconds per thousand points. Not cut by Ctrl-C."""
    import time

    import mlflow
    from mlflow.entities import Metric

    run = mlflow.active_run()
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(value), now, step) for step, values in rows for key, value in values.items()]
    with ctrl_c_after():
        for start in range(0, len(metrics), 900):
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start : start + 900])


class StepLog:
    """Metrics by step into the active MLflow run, each (metric, step) once.

    A stage logs the steps since its last checkpoint just before it writes the next one; killed in between, it
    resumes at the earlier checkpoint and redoes steps whose metrics the run already holds. MLflow keeps every
    point it is given, so those steps would show twice in every chart; they are dropped here instead (a redone
    step repeats what was logged: batches and seeds are functions of the step)."""

    def __init__(self) -> None:
        self._last = last_logged_steps()

    def log(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Log `rows` (step, metrics), leaving out each metric at a step the run already holds it at."""
        new = [(step, {k: v for k, v in values.items() if step > self._last.get(k, -1)}) for step, values in rows]
        log_metrics_batch([(step, values) for step, values in new if values])


def last_logged_steps() -> dict[str, int]:
    """The highest step each metric of the active run is logged at (empty for a new run)."""
    import mlflow

    client, run_id = mlflow.MlflowClient(), mlflow.active_run().info.run_id
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def log_rows(rows: list[dict], columns: list[str], artifact_file: str) -> None:
    """Write `rows` as the table `artifact_file` of the active run ({"columns", "data"}, `mlflow.log_table`'s layout),
    replacing one of that name (a redone checkpoint rewrites its own), even when there are none (no rows says
    "nothing found", no table "not looked"). Not `log_table`, which appends to a table of that name and re-reads
    its digit strings as numbers."""
    import mlflow

    mlflow.log_dict({"columns": columns, "data": [[row[c] for c in columns] for row in rows]}, artifact_file)
