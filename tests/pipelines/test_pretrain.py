"""Tiny pretraining runs through a real local MLflow store."""

import mlflow
import pytest
import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from pipelines import pretrain
from world.actions import ActionSpace, ActionSpaceMismatch
from world.audit import CorpusStats, audit

pytestmark = pytest.mark.slow


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_tiny_pretrain_logs_metrics_and_artifacts(tmp_path, uri):
    cfg = load_config("tiny")
    final = pretrain.main(cfg, tmp_path / "run", tracking_uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(final["run_id"])
    assert run.data.params["pretrain.steps"] == str(cfg.pretrain.steps)
    losses = client.get_metric_history(final["run_id"], "loss/lm")
    assert [m.step for m in losses] == list(range(1, cfg.pretrain.steps + 1))
    assert losses[-1].value < losses[0].value  # it learns
    assert {m.step for m in client.get_metric_history(final["run_id"], "eval/val_loss")} == {6, 12}
    artifacts = [a.path for a in client.list_artifacts(final["run_id"], "checkpoint")]
    assert artifacts == ["checkpoint/checkpoint.pt"]
    # The checkpoint carries the action space and the corpus statistics for the audit.
    _, _, state = load_checkpoint(tmp_path / "run" / "pretrain" / "checkpoint.pt", ActionSpace())
    stats = CorpusStats.from_dict(state["corpus_stats"])
    assert audit("sft", [["<bos>", "1", ",", "2", "?", "3", "<eor>"]], stats) == 1
    with pytest.raises(ActionSpaceMismatch):
        load_checkpoint(tmp_path / "run" / "pretrain" / "checkpoint.pt", ActionSpace(digit_order="lsb"))


def test_resume_continues_identically(tmp_path, uri):
    cfg = load_config("tiny")
    straight = pretrain.main(cfg, tmp_path / "a", tracking_uri=uri)
    first = pretrain.main(cfg, tmp_path / "b", tracking_uri=uri, stop_at=6)
    resumed = pretrain.main(cfg, tmp_path / "b", tracking_uri=uri)
    assert resumed["run_id"] == first["run_id"]  # the same MLflow run
    a, _, _ = load_checkpoint(tmp_path / "a" / "pretrain" / "checkpoint.pt")
    b, _, _ = load_checkpoint(tmp_path / "b" / "pretrain" / "checkpoint.pt")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(resumed["run_id"], "loss/lm")
    assert sorted(m.step for m in history) == list(range(1, 13))  # metrics before the "kill" are kept
    assert straight["loss/lm"] == pytest.approx(resumed["loss/lm"], abs=0)
