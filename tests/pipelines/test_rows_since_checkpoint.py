"""pipelines/rl_metrics.py `RowsSinceCheckpoint`: the tables' rows wait for the next checkpoint, then go to its own
tables in a real MLflow store."""

import json

import mlflow

from pipelines.rl_metrics import (
    KL_COLUMNS,
    KL_DIR,
    MISORDERED_COLUMNS,
    MISORDERED_DIR,
    ROLLOUT_COLUMNS,
    ROLLOUTS_DIR,
    RowsSinceCheckpoint,
    checkpoint_table,
)
from pipelines.tracking import stage_run


def row(columns: list[str], iteration: int) -> dict:
    return {c: iteration if c == "iteration" else f"{c}@{iteration}" for c in columns}


def table(run_id: str, folder: str, iteration: int) -> dict:
    return json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{checkpoint_table(folder, iteration)}"))


def test_each_checkpoint_writes_the_rows_since_the_last_one_to_its_own_tables(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rows = RowsSinceCheckpoint()
    with stage_run(tmp_path / "run" / "rlhf", experiment="probe", run_name="rlhf", tracking_uri=uri) as run:
        for iteration in (1, 2):
            rows.add(
                [row(ROLLOUT_COLUMNS, iteration)], [row(MISORDERED_COLUMNS, iteration)], [row(KL_COLUMNS, iteration)]
            )
        rows.log(2, rm=True)
        rows.add([row(ROLLOUT_COLUMNS, 3)], [], [row(KL_COLUMNS, 3)])
        rows.log(3, rm=True)
        rows.log(4, rm=False)  # nothing since, and the grader as the reward: no misordered table
    rid = run.info.run_id
    assert [r[0] for r in table(rid, ROLLOUTS_DIR, 2)["data"]] == [1, 2]
    assert [r[0] for r in table(rid, KL_DIR, 2)["data"]] == [1, 2]
    assert (
        table(rid, MISORDERED_DIR, 2)["columns"] == MISORDERED_COLUMNS
        and len(table(rid, MISORDERED_DIR, 2)["data"]) == 2
    )
    assert [r[0] for r in table(rid, ROLLOUTS_DIR, 3)["data"]] == [3]  # not the rows of 1 and 2 again
    assert table(rid, MISORDERED_DIR, 3)["data"] == []  # the RM ranked every pair as the grader: an empty table
    assert table(rid, ROLLOUTS_DIR, 4)["data"] == []
    written = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(rid, MISORDERED_DIR)}
    assert checkpoint_table(MISORDERED_DIR, 4) not in written
