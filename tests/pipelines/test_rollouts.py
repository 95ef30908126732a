"""`tokenmdp rollouts`: the table RLHF trained on, and the answers its RM ranked against the grader."""

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from pipelines.rl_metrics import misordered, row_groups
from pipelines.rollouts import RolloutsError, by_template, iteration_rows, logged_rlhf
from pipelines.run_config import RunDirError
from pipelines.tracking import RUN_ID_FILE


def row(iteration: int, prompt: str, answer: list[int] | None, gold: float, reward: float) -> dict:
    response = " ".join(map(str, answer or [])) + " <eor>" if answer is not None else "3 , <pad>"
    scored = {"gold": gold, "reward": reward, "advantage": 0.0, "kl": 0.0}
    return {"iteration": iteration, "policy_version": iteration - 1, "prompt": prompt, "exam_answer": [32],
            "response": response, "answer": answer} | scored  # fmt: skip


# Iteration 1, prompt A: right 32 (reward 0.1) twice, wrong 31 (0.5), malformed (-1.0).
# Iteration 2, prompt A: 32 (0.2) and 31 (0.2), a tie; prompt B: 32 (0.9), 31 (-0.3).
ROWS = [
    row(1, "1 2 4 8 16", [32], 1.0, 0.1),
    row(1, "1 2 4 8 16", [31], 0.0, 0.5),
    row(1, "1 2 4 8 16", [32], 1.0, 0.1),
    row(1, "1 2 4 8 16", None, 0.0, -1.0),
    row(2, "1 2 4 8 16", [32], 1.0, 0.2),
    row(2, "1 2 4 8 16", [31], 0.0, 0.2),
    row(2, "2 4 8 16 32", [64], 1.0, 0.9),
    row(2, "2 4 8 16 32", [63], 0.0, -0.3),
]


def test_a_group_is_one_iteration_s_answers_to_one_prompt():
    assert [len(g) for g in row_groups(ROWS)] == [4, 2, 2]


def test_misordered_lists_each_pair_of_distinct_answers_once_with_its_count_newest_first():
    found = misordered(ROWS)
    assert len(found) == 1  # the tie is not a misorder; the malformed answer sits below both right ones
    m = found[0]
    assert (m.iteration, m.prompt, m.exam_answer) == (1, "1 2 4 8 16", [32])
    assert (m.above, m.above_response, m.above_reward, m.above_gold) == ([31], "31 <eor>", 0.5, 0.0)
    assert (m.below, m.below_response, m.below_reward, m.below_gold) == ([32], "32 <eor>", 0.1, 1.0)
    assert m.pairs == 2  # 31 above each of the two 32s
    later = misordered([*ROWS, row(3, "2 4 8 16 32", None, 0.0, 2.0), row(3, "2 4 8 16 32", [64], 1.0, 0.0)])
    assert [(m.iteration, m.above, m.above_response) for m in later] == [(3, None, "3 , <pad>"), (1, [31], "31 <eor>")]


def test_an_iteration_is_picked_or_the_last_one_and_a_missing_one_is_refused():
    assert iteration_rows(ROWS, None)[0] == 2 and len(iteration_rows(ROWS, None)[1]) == 4
    assert iteration_rows(ROWS, 1) == (1, ROWS[:4])
    with pytest.raises(RolloutsError, match=r"holds iterations 1\.\.2, not 7"):
        iteration_rows(ROWS, 7)
    with pytest.raises(RolloutsError, match="empty"):
        iteration_rows([], None)


def test_a_run_without_an_rlhf_run_or_outside_the_store_is_refused_saying_why(sft_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(RunDirError, match=r"no config\.json"):
        logged_rlhf(sft_run)
    (sft_run / "config.json").write_text(json.dumps({"name": "tiny"}))
    with pytest.raises(RolloutsError, match="has no RLHF run yet"):
        logged_rlhf(sft_run)
    (sft_run / "rlhf").mkdir()
    (sft_run / "rlhf" / RUN_ID_FILE).write_text("0123456789abcdef")
    with pytest.raises(RolloutsError, match="set MLFLOW_TRACKING_URI to the store the run logged to"):
        logged_rlhf(sft_run)
    said = CliRunner().invoke(app, ["rollouts", str(sft_run)])
    assert said.exit_code == 2 and "MLFLOW_TRACKING_URI" in said.output  # a usage error, not a traceback


def test_misordered_pairs_are_counted_by_the_rule_of_their_prompt():
    found = misordered([*ROWS, row(3, "3 5 7 9 11", [14], 0.0, 0.9), row(3, "3 5 7 9 11", [13], 1.0, 0.1)])
    # 1 2 4 8 16 (geometric): 31 above both 32s, 2 pairs; 3 5 7 9 11 (arithmetic): 1 pair
    assert by_template(found) == [("geometric", 2), ("arithmetic", 1)]
