"""Best-of-k with the run's RM: the curve from hand-made draws, and the command on a tiny run with a real RM."""

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models.checkpoint import load_checkpoint, save_checkpoint
from pipelines import best_of as bo
from pipelines import reward
from pipelines.evaluate import eval_questions
from world.actions import ActionSpace

SPACE = ActionSpace()


def test_the_curve_from_two_questions_by_hand():
    # question 1: the RM prefers the wrong one of its two draws; question 2: two right draws, tied
    points = bo.curve([[0.1, 0.9], [0.5, 0.5]], [[True, False], [True, True]], n=2)
    assert [p.k for p in points] == [1, 2]
    assert points[0].rm_pick == points[0].gold_pick == 0.75  # one draw: the mean verdict, whoever picks
    assert points[1].rm_pick == 0.5 and points[1].gold_pick == 1.0  # the RM picks wrong on question 1
    assert points[1].rm_pick_stderr == pytest.approx(0.5)  # per question 0 and 1: sd 0.707 over sqrt(2)
    assert points[1].kl_bound == pytest.approx(0.19315, abs=1e-5)


def test_each_question_gets_its_own_n_draws_across_calls_and_a_seed_draws_the_same(tiny_sft_run, monkeypatch):
    policy, space, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    questions = eval_questions(load_config("tiny"))[:5]
    drawn = bo.drawn_answers(policy, space, questions, 4, 8, 1.0, seed=3)
    assert drawn == bo.drawn_answers(policy, space, questions, 4, 8, 1.0, seed=3)
    assert [len(r) for r in drawn] == [4] * 5
    assert all(r and (r[-1] == space.eor_id or len(r) == 8) for rs in drawn for r in rs)
    greedy = bo.drawn_answers(policy, space, questions, 3, 8, 0.0, seed=0)
    assert all(rs[0] == rs[1] == rs[2] for rs in greedy)  # temperature 0: one answer three times
    assert len({tuple(rs[0]) for rs in greedy}) > 1  # and the questions' answers differ
    monkeypatch.setattr(bo, "ROWS_PER_CALL", 6)  # two questions a call: three calls
    assert bo.drawn_answers(policy, space, questions, 3, 8, 0.0, seed=0) == greedy  # each its own question's


def test_best_of_on_a_run_with_a_reward_model_and_rlhf(tiny_sft_run, sft_run, tmp_path):
    cfg = load_config("tiny", ["reward.steps=10", "reward.eval_every=10", "reward.checkpoint_every=10"])
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))  # as `tokenmdp run` writes it
    refused = CliRunner().invoke(app, ["best-of", str(sft_run), "--n", "2"])
    assert refused.exit_code == 2 and "has no reward model" in " ".join(refused.output.replace("│", " ").split())
    reward.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    shown = CliRunner().invoke(app, ["best-of", str(sft_run), "--n", "4", "--json"])
    assert shown.exit_code == 0, shown.output
    curve = json.loads(shown.stdout)
    assert curve["questions"] == cfg.evaluate.questions and curve["rlhf"] is None  # no RLHF yet
    points = curve["points"]
    assert [p["k"] for p in points] == [1, 2, 4]
    assert points[0]["rm_pick"] == points[0]["gold_pick"]
    assert all(p["rm_pick"] <= p["gold_pick"] + 1e-12 for p in points)  # no reranker beats the grader's pick
    assert [p["gold_pick"] for p in points] == sorted(p["gold_pick"] for p in points)
    # an RLHF policy beside it: here the SFT policy saved as RLHF's, so its greedy rate is the SFT policy's
    policy, space, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    save_checkpoint(
        sft_run / "rlhf" / "checkpoint.pt", model=policy, space=space, iteration=3, policy_version=3,
        config=cfg.model_dump(), last_metrics={"rl/kl": 0.25, "rl/kl_exact": 0.3},
    )  # fmt: skip
    beside = bo.best_of(sft_run, n=4)
    rl = beside.rlhf
    assert rl is not None and rl["greedy"] == beside.greedy
    assert (rl["kl_trained"], rl["kl_trained_exact"]) == (0.25, 0.3)  # what its checkpoint says of its training
    assert rl["drawn"] == pytest.approx(beside.points[0].rm_pick)  # the same policy, the same draws
    assert rl["rm_score"] == pytest.approx(beside.points[0].rm_score, abs=1e-6)
    assert rl["kl"] == 0.0  # exact, on the held-out draws: the policy is its own reference
    plot = tmp_path / "best_of.png"
    table = CliRunner().invoke(app, ["best-of", str(sft_run), "--n", "4", "--plot", str(plot)])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the curve drawn beside the table
    said = " ".join(table.output.split())
    assert table.exit_code == 0 and "at an exact KL of 0.000 from SFT" in said
    assert "Best-of-1, at most 0.000 from SFT" in said  # the first best-of-k as far from SFT as RL went
    pretrained, _, _ = load_checkpoint(tiny_sft_run / "pretrain" / "checkpoint.pt")
    moved = bo.mean_kl(policy, pretrained, bo.draws(policy, space, eval_questions(cfg)[:4], 2, 8, 1.0, seed=0), 1.0)
    assert moved > 0.01  # from another reference, the same draws carry KL
