"""Tiny pretraining runs through a real local MLflow store."""

import hashlib

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


def test_killed_between_logging_and_its_checkpoint_the_resumed_run_logs_each_step_once(tmp_path, uri, monkeypatch):
    from pipelines import train_loop

    save = train_loop.save_checkpoint

    def dying_at_the_second_checkpoint(path, **state):
        if state["step"] == 12:
            raise KeyboardInterrupt  # after steps 7-12 were logged, before they were checkpointed
        save(path, **state)

    cfg = load_config("tiny")
    monkeypatch.setattr(train_loop, "save_checkpoint", dying_at_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        pretrain.main(cfg, tmp_path / "run", tracking_uri=uri)
    monkeypatch.setattr(train_loop, "save_checkpoint", save)
    resumed = pretrain.main(cfg, tmp_path / "run", tracking_uri=uri)  # from step 6: redoes 7-12
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(resumed["run_id"], "loss/lm")] == list(range(1, 13))
    assert [m.step for m in client.get_metric_history(resumed["run_id"], "eval/val_loss")] == [6, 12]


def test_your_own_sequences_are_pretrained_on_and_held_to_one_version(tmp_path, uri):
    from typer.testing import CliRunner

    from cli.main import app
    from world.user_data import DataFileError, read_sequences

    mine = tmp_path / "mine.txt"
    mine.write_text("# A007491\n2 5 11 17 29 37 53 67 83 101\n")
    cfg = load_config("tiny", [f"world.extra_sequences={mine}", "world.extra_weight=1000000"])
    space = ActionSpace(digit_order=cfg.world.digit_order)
    extra, digest = read_sequences(mine), hashlib.sha256(mine.read_bytes()).hexdigest()
    for doc in pretrain.documents_at(cfg.world, space, "train", 0, 8, extra):  # at this weight, every one is mine
        assert "".join(space.decode_tokens(doc)).replace("?", ",").endswith("67,83,101<eor>")
    assert pretrain.documents_at(cfg.world, space, "val", 0, 8) == pretrain.documents_at(
        load_config("tiny").world, space, "val", 0, 8
    )  # the held-out loss reads what it always read

    run = tmp_path / "run"
    first = pretrain.main(cfg, run, tracking_uri=uri, stop_at=6)
    params = mlflow.MlflowClient(tracking_uri=uri).get_run(first["run_id"]).data.params
    assert (params["data/extra_sequences"], params["data/extra_sequences_sha256"]) == ("1", digest)
    plain = pretrain.main(load_config("tiny"), tmp_path / "plain", tracking_uri=uri, stop_at=6)
    assert first["loss/lm"] != plain["loss/lm"]  # the same seed trained on other documents
    mine.write_text("# A007491\n2 5 11 17 29 37 53 67 83 101 127\n")  # edited while pretraining was stopped
    with pytest.raises(DataFileError, match=r"another version of world\.extra_sequences up to step 6"):
        pretrain.main(cfg, run, tracking_uri=uri)
    mine.write_text("# A007491\n2 5 11 17 29 37 53 67 83 101\n")
    pretrain.main(cfg, run, tracking_uri=uri)
    mine.unlink()  # finished pretraining reads no more data
    assert pretrain.main(cfg, run, tracking_uri=uri)["run_id"] == first["run_id"]

    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x\n2 5 11\n5\n")
    result = CliRunner().invoke(
        app, ["pretrain", "tiny", "--set", f"world.extra_sequences={bad}", "--out", str(tmp_path / "bad_run")]
    )
    assert result.exit_code == 2 and "2 problem(s)" in result.stderr
    assert "line 1: 'x' in the sequence" in result.stderr and "line 3: a sequence needs at least 2" in result.stderr
    assert not (tmp_path / "bad_run" / "pretrain").exists()  # refused before anything was trained or logged
