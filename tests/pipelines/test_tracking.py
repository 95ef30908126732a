"""The embedded MLflow store: artifacts beside the database, and the registered policy stored as code."""

import logging
import re
from pathlib import Path

import mlflow
import pytest
import torch

from pipelines.tracking import StepLog, local_store_folder, stage_run


def test_only_a_local_sqlite_store_has_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_store_folder("sqlite:////srv/runs/mlflow.db") == Path("/srv/runs")
    assert local_store_folder("sqlite:///mlflow.db") == tmp_path  # relative to where the command starts
    assert local_store_folder("http://mlflow:5000") is None


def test_a_local_stores_artifacts_stay_beside_it_wherever_the_command_starts(tmp_path, monkeypatch):
    elsewhere, store = tmp_path / "elsewhere", tmp_path / "store"
    elsewhere.mkdir()
    store.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with stage_run(tmp_path / "run" / "sft", experiment="probe", run_name="sft", tracking_uri=uri) as run:
        mlflow.log_text("hello", "note.txt")
    assert (store / "mlruns" / "probe").is_dir()
    assert list(elsewhere.iterdir()) == []  # MLflow's default would have made ./mlruns here
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "hello"


def test_the_registered_policy_is_code_not_a_pickle(tiny_sft_run, tmp_path, caplog):
    from serve.engine import PolicyEngine, Sampling
    from serve.pyfunc_model import register_policy

    checkpoint = tiny_sft_run / "sft" / "checkpoint.pt"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with (
        caplog.at_level(logging.WARNING),
        stage_run(tmp_path / "reg", experiment="reg", run_name="r", tracking_uri=uri),
    ):
        model_uri = register_policy(checkpoint, "tokenmdp-probe")
    assert model_uri == "models:/tokenmdp-probe/1"
    assert "CloudPickle" not in caplog.text  # MLflow warns when it pickles a python_model
    flavor = mlflow.models.Model.load(model_uri).flavors["python_function"]
    assert flavor.get("model_code_path")
    prefixes = [[1, 2, 4, 8, 16], [3, 6, 9]]
    expected = [r.terms[0] if r.terms else None for r in PolicyEngine(checkpoint).continue_batch(
        [(p, 1, Sampling()) for p in prefixes])]  # fmt: skip
    assert list(mlflow.pyfunc.load_model(model_uri).predict(prefixes)) == expected
    low = mlflow.pyfunc.load_model(model_uri, model_config={"precision": "bfloat16"})  # as serve.precision serves
    assert low.unwrap_python_model().engine.model.tok_emb.weight.dtype == torch.bfloat16
    assert list(low.predict(prefixes)) == [r.terms[0] if r.terms else None for r in PolicyEngine(
        checkpoint, precision="bfloat16").continue_batch([(p, 1, Sampling()) for p in prefixes])]  # fmt: skip
    # a registry URI that names nothing is refused in the command, naming what the registry holds, before any
    # Serve replica tries it (each failed start used to print a traceback: 342 lines in all)
    from typer.testing import CliRunner

    from cli.main import app
    from pipelines.policy_source import resolve_model

    for missing, hint in (("models:/tokenmdp-probe/9", "(tokenmdp-probe has version 1)"),
                          ("models:/tokenmdp-prob/1", "(registered models: tokenmdp-probe)")):  # fmt: skip
        with pytest.raises(FileNotFoundError, match=re.escape(hint)):
            resolve_model(missing, tracking_uri=uri)
    said = CliRunner(env={"MLFLOW_TRACKING_URI": uri}).invoke(
        app, ["serve", "tiny", "--model", "models:/tokenmdp-probe/9"], terminal_width=400
    )
    assert said.exit_code == 2 and "(tokenmdp-probe has version 1)" in said.output, said.output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_tracking_server_that_does_not_answer_stops_the_command_before_it_trains(tmp_path, monkeypatch, capsys):
    import time

    from typer.testing import CliRunner

    from cli.main import app
    from pipelines import tracking

    dead = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnreachable, match=re.escape(f"server at {dead} (MLFLOW_TRACKING_URI)")):
        tracking.require_tracking_server(dead, wait_s=1.5)
    assert time.monotonic() - started >= 1.5  # a server starting up gets its time
    assert capsys.readouterr().err.count("waiting up to 2 s for the MLflow tracking server") == 1
    tracking.require_tracking_server(f"sqlite:///{tmp_path / 'mlflow.db'}", wait_s=0)  # a local store needs none
    monkeypatch.setattr(tracking, "SERVER_WAIT_S", 0.0)
    run_dir = tmp_path / "run"
    said = CliRunner(env={"MLFLOW_TRACKING_URI": dead}).invoke(app, ["run", "tiny", "--out", str(run_dir)])
    assert said.exit_code == 1 and "does not answer" in said.output, said.output
    assert not (run_dir / "pretrain").exists()  # nothing trained, nothing to lose


def test_a_tracking_server_that_answers_is_taken_whatever_it_says(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from pipelines.tracking import require_tracking_server

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    with HTTPServer(("127.0.0.1", 0), Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        require_tracking_server(base, wait_s=0)
        require_tracking_server(f"{base}/under/a/prefix", wait_s=0)  # a 404 is an answer: MLflow reports it
        server.shutdown()


def _log_step(stage_dir: Path, uri: str, step: int) -> str:
    with stage_run(stage_dir, experiment="moves", run_name="sft", tracking_uri=uri) as run:
        mlflow.log_metric("loss", float(step), step=step)
    return run.info.run_id


def test_a_copied_run_directory_logs_into_a_run_of_its_own(tmp_path, capsys):
    import shutil

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _log_step(tmp_path / "a" / "sft", uri, 0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # `cp -r`: the copy holds the original's run id
    copy = _log_step(tmp_path / "b" / "sft", uri, 1)
    assert copy != first and "this directory is a copy" in capsys.readouterr().err
    assert _log_step(tmp_path / "a" / "sft", uri, 1) == first  # the original resumes its own run
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(first, "loss")] == [0, 1]  # the copy's step is not in it
    tags = client.get_run(copy).data.tags
    assert tags["tokenmdp.forked_from"] == first
    assert tags["tokenmdp.forked_from_dir"] == str((tmp_path / "a" / "sft").resolve())
    assert _log_step(tmp_path / "b" / "sft", uri, 2) == copy  # and the copy its own from then on

    (tmp_path / "a").rename(tmp_path / "moved")  # a moved directory takes its run along
    assert _log_step(tmp_path / "moved" / "sft", uri, 2) == first
    assert client.get_run(first).data.tags["tokenmdp.stage_dir"] == str((tmp_path / "moved" / "sft").resolve())
    assert capsys.readouterr().err == ""

    elsewhere = f"sqlite:///{tmp_path / 'laptop.db'}"  # a directory finished against another store
    resumed = _log_step(tmp_path / "moved" / "sft", elsewhere, 3)
    assert MlflowClient(elsewhere).get_run(resumed).data.tags["tokenmdp.resumed_from"] == first
    assert f"its MLflow run {first} is not in {elsewhere}" in capsys.readouterr().err

    client.delete_run(copy)  # a run deleted in the UI: MLflow would refuse to resume it
    after = _log_step(tmp_path / "b" / "sft", uri, 3)
    assert after != copy and client.get_run(after).data.tags["tokenmdp.resumed_from"] == copy


def test_a_resumed_stage_logs_each_metric_at_a_step_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with stage_run(tmp_path / "sft", experiment="resumes", run_name="sft", tracking_uri=uri) as run:
        StepLog().log([(1, {"loss": 1.0}), (2, {"loss": 0.5, "eval": 0.3})])
    # killed before its checkpoint at 2, the stage resumes at 0 and redoes steps 1 and 2 (and a new metric)
    with stage_run(tmp_path / "sft", experiment="resumes", run_name="sft", tracking_uri=uri):
        StepLog().log([(1, {"loss": 1.1}), (2, {"loss": 0.6, "eval": 0.4, "new": 7.0}), (3, {"loss": 0.2})])
    client = mlflow.MlflowClient(uri)
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in ("loss", "eval", "new")}  # fmt: skip
    assert sorted(history["loss"]) == [(1, 1.0), (2, 0.5), (3, 0.2)]  # what the run held stays, once
    assert history["eval"] == [(2, 0.3)] and history["new"] == [(2, 7.0)]


def test_ctrl_c_inside_a_store_write_waits_for_the_write_to_end():
    import signal

    from pipelines.tracking import ctrl_c_after

    done = []
    with pytest.raises(KeyboardInterrupt), ctrl_c_after():
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the write
        done.append("the rest of the write")  # still runs: the interrupt waits for the block's end
    assert done == ["the rest of the write"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    with ctrl_c_after():  # no Ctrl-C: nothing raised
        done.append("a quiet write")
    assert done[-1] == "a quiet write"
