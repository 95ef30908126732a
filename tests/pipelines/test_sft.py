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


def test_a_batch_holds_its_share_of_your_questions_and_nothing_else_changes():
    from world.actions import ActionSpace

    space = ActionSpace()
    bank = [Question((1, 2, 3, i), (i + 1,), "arithmetic", 1) for i in range(4, 40)]
    mine = [Question((2, 5, 11, 17, 29), (37,), "keyed", 0)]
    plain = sft.batch_at(space, bank, 0, 3, 8)
    assert sft.batch_at(space, bank, 0, 3, 8, extra=mine, extra_share=0.0).tokens.equal(plain.tokens)
    mixed = sft.batch_at(space, bank, 0, 3, 8, extra=mine, extra_share=0.25)
    rows = [space.decode_tokens([t for t in row.tolist() if t != space.pad_id]) for row in mixed.tokens]
    assert sum(r == ["<bos>", *space.spell_terms([2, 5, 11, 17, 29]), "?", "3", "7", "<eor>"] for r in rows) == 2
    bank_rows = [space.decode_tokens([t for t in row.tolist() if t != space.pad_id]) for row in sft.batch_at(
        space, bank, 0, 3, 6).tokens]  # fmt: skip
    assert rows[:6] == bank_rows  # the bank's part is the batch of 6 it always was


def test_sft_learns_your_questions_and_refuses_held_out_or_bad_ones(tmp_path):
    from models.checkpoint import load_checkpoint
    from pipelines.evaluate import answer_questions, eval_questions
    from world.user_data import DataFileError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    held_out = eval_questions(load_config("tiny"))[0]
    bad = tmp_path / "bad.txt"
    bad.write_text(f"1 2 x\n{' '.join(map(str, held_out.prefix))}\n2 5 11 17 29 -> 37\n")
    cfg = load_config("tiny", [f"sft.extra_questions={bad}"])
    pretrain.main(cfg, tmp_path, tracking_uri=uri)
    with pytest.raises(DataFileError) as caught:
        sft.main(cfg, tmp_path, tracking_uri=uri)
    assert [p.split(":")[0] for p in caught.value.problems] == ["line 1", "line 2"]
    assert "held-out exam: training on it inflates its pass rate" in caught.value.problems[1]
    assert not (tmp_path / "sft").exists()  # refused before anything was trained or logged

    mine = tmp_path / "mine.txt"
    mine.write_text("2 5 11 17 29 -> 37   # A007491\n")
    cfg = load_config("tiny", [f"sft.extra_questions={mine}", "sft.extra_share=0.25"])
    final = sft.main(cfg, tmp_path, tracking_uri=uri)
    params = mlflow.MlflowClient(tracking_uri=uri).get_run(final["run_id"]).data.params
    assert params["data/extra_questions"] == "1"
    policy, space, _ = load_checkpoint(tmp_path / "sft" / "checkpoint.pt")
    question = Question((2, 5, 11, 17, 29), (37,), "keyed", 0)
    assert answer_questions(policy, space, [question], max_new_tokens=8, batch_size=1) == [[37]]
