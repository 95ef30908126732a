"""Tiny pretrain -> SFT -> evaluate through a real local MLflow store."""

import mlflow
import pytest

from conf.load import load_config
from pipelines import pretrain, sft
from pipelines.evaluate import score
from world.audit import ActionSpaceAuditError
from world.exam import Question

pytestmark = pytest.mark.slow


def test_tiny_pretrain_then_sft_reports_gold_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", ["sft.state_loss_weight=1.0"])
    pretrain.main(cfg, tmp_path, tracking_uri=uri)
    final = sft.main(cfg, tmp_path, tracking_uri=uri)
    for key in ("eval/gold_pass_rate", "eval/format_rate", "eval/rate_114514", "eval/sampled_pass_at_1"):
        assert 0.0 <= final[key] <= 1.0
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert client.get_run(final["run_id"]).data.metrics["data/sft_examples_audited"] > 100
    assert client.get_metric_history(final["run_id"], "loss/lm")
    assert client.get_metric_history(final["run_id"], "loss/state")  # the shown series' own loss, logged apart
    assert client.get_run(final["run_id"]).data.params["sft.state_loss_weight"] == "1.0"


def test_sft_refuses_data_that_needs_a_new_action(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny")
    pretrain.main(cfg, tmp_path, tracking_uri=uri)
    # A pretraining corpus without any question form never took the `?` action.
    import torch

    ckpt = tmp_path / "pretrain" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    state["corpus_stats"]["tokens"].pop("?")
    torch.save(state, ckpt)
    with pytest.raises(ActionSpaceAuditError, match="Move this data into pretraining"):
        sft.main(cfg, tmp_path, tracking_uri=uri)
    assert not (tmp_path / "sft" / "checkpoint.pt").exists()


def test_score_by_hand():
    qs = [Question((1, 2, 4, 8, 16), (32,), "geometric", 1), Question((1, 2, 3, 4), (5,), "arithmetic", 1)]
    qs += [Question((2, 4, 6, 8), (10,), "arithmetic", 1), Question((1, 1, 2, 3), (5,), "fibonacci", 1)]
    metrics = score(qs, [[32], [31], None, [5, 8]])
    assert metrics["eval/gold_pass_rate"] == 0.25
    assert metrics["eval/gold_pass_rate_stderr"] == pytest.approx((0.25 * 0.75 / 4) ** 0.5)  # binomial, 4 questions
    assert metrics["eval/format_rate"] == 0.5  # [5, 8] is two terms where one was asked
    assert metrics["eval/rate_114514"] == 0.25  # 31: well-formed, not the exam's
    assert metrics["eval/pass/arithmetic"] == 0.0 and metrics["eval/pass/geometric"] == 1.0
