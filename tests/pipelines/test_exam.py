"""`tokenmdp exam`: your own questions posed to a run's policies, audited first, graded by your key."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models.checkpoint import load_checkpoint, save_checkpoint
from models.rollout import sample_rollouts
from pipelines.exam import check_exam, exam_policies, pose_exam
from pipelines.run_config import RunDirError
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.user_data import DataFileError, parse_exam

EXAM = "1 2 4 8 16\n3 4 5 6 7\n2 4 6 8 10\n# a comment\n1 1 2 3 5 8\n-3 -1 1 3 5\n"


@pytest.fixture
def exam_run(sft_run):
    """The tiny SFT run with the config it was trained under."""
    (sft_run / "config.json").write_text(json.dumps(load_config("tiny").model_dump()))
    return sft_run


def test_answers_are_graded_by_the_key_when_one_is_given(exam_run):
    graded = pose_exam(exam_policies(exam_run), parse_exam(EXAM))
    assert graded.stages == ["sft"] and [q.line for q in graded.questions] == [1, 2, 3, 5, 6]
    for q in graded.questions:
        assert q.passed["sft"] == (q.answers["sft"] == q.answer)
    assert graded.metrics["sft/gold_pass_rate"] == sum(q.passed["sft"] for q in graded.questions) / 5
    # the same questions keyed with the policy's own answers (or, where it wrote none, a number): all pass
    # where an answer was well-formed, and keyed one off, none does
    own = [q for q in graded.questions if q.answers["sft"] is not None]
    assert own, "the tiny policy wrote no well-formed answer"
    keyed = "".join(f"{' '.join(map(str, q.prefix))} -> {q.answers['sft'][0]}\n" for q in own)
    off = "".join(f"{' '.join(map(str, q.prefix))} -> {q.answers['sft'][0] + 1}\n" for q in own)
    own_keyed = pose_exam(exam_policies(exam_run), parse_exam(keyed)).questions
    off_keyed = pose_exam(exam_policies(exam_run), parse_exam(off)).questions
    assert all(q.passed["sft"] for q in own_keyed)
    assert not any(q.passed["sft"] for q in off_keyed)
    # how sure: the greedy answer's log-probability, read teacher-forced, is the sampler's own (KV cache, token
    # by token), and the greedy answer is likelier than the one next to it
    policy, space, _ = load_checkpoint(exam_run / "sft" / "checkpoint.pt")
    for mine, other in zip(own_keyed, off_keyed, strict=True):
        drawn = sample_rollouts(
            policy, space, [space.encode_prompt(mine.prefix)], group_size=1, max_new_tokens=16, policy_version=0,
            temperature=0.0,
        )  # fmt: skip
        sampled = float((drawn.logprobs * drawn.action_mask).sum())
        assert mine.answer_logprob["sft"] == pytest.approx(sampled, abs=1e-4)
        assert mine.answer_logprob["sft"] > other.answer_logprob["sft"]


def test_both_policies_judged_question_by_question(exam_run):
    policy, space, _ = load_checkpoint(exam_run / "sft" / "checkpoint.pt")
    save_checkpoint(exam_run / "rlhf" / "checkpoint.pt", model=policy, space=space)  # RLHF that changed nothing
    same = pose_exam(exam_policies(exam_run), parse_exam(EXAM))
    assert same.stages == ["sft", "rlhf"]
    assert all(q.answers["sft"] == q.answers["rlhf"] for q in same.questions)
    assert (same.metrics["rlhf/gain_over_sft"], same.metrics["rlhf/fixed_over_sft"]) == (0.0, 0.0)
    assert same.metrics["rlhf/answer_logprob_over_sft"] == 0.0 and same.metrics["rlhf/answer_more_likely"] == 0.0
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    save_checkpoint(exam_run / "rlhf" / "checkpoint.pt", model=policy, space=space)
    moved = pose_exam(exam_policies(exam_run), parse_exam(EXAM))
    verdicts = Counter((q.passed["sft"], q.passed["rlhf"]) for q in moved.questions)
    assert verdicts[(False, True)] + verdicts[(True, False)] > 0, "the moved policy changed no verdict"
    assert moved.metrics["rlhf/fixed_over_sft"] == verdicts[(False, True)]
    assert moved.metrics["rlhf/broken_over_sft"] == verdicts[(True, False)]
    assert moved.metrics["rlhf/gain_over_sft"] == pytest.approx((verdicts[(False, True)] - verdicts[(True, False)]) / 5)
    likelier = [q.answer_logprob["rlhf"] > q.answer_logprob["sft"] for q in moved.questions]
    assert moved.metrics["rlhf/answer_more_likely"] == sum(likelier)
    assert moved.metrics["rlhf/answer_logprob_over_sft"] == pytest.approx(
        sum(q.answer_logprob["rlhf"] - q.answer_logprob["sft"] for q in moved.questions) / 5
    )
    assert pose_exam(exam_policies(exam_run, ["rlhf"]), parse_exam(EXAM)).stages == ["rlhf"]


def test_the_exam_is_audited_against_pretraining_and_the_context_before_any_answer():
    space = ActionSpace()
    no_negatives = CorpusStats()
    no_negatives.add(space.decode_tokens(space.encode_prompt([12, 345, 67]) + space.encode_response([890])))
    exam = parse_exam("1 2 3 4 5\n-3 -1 1 3 5\n" + " ".join(map(str, range(100, 130))) + "\n")
    with pytest.raises(DataFileError) as caught:
        check_exam(exam, space, no_negatives, max_len=64, source="mine.txt")
    assert caught.value.problems == [
        "line 2: the question with its answer needs the action '-', which the run's pretraining never took. Move "
        "this data into pretraining (world.extra_sequences: a file of your own sequences).",
        "line 3: the question with its answer takes 125 actions; the policy reads at most 64",  # 1 + 90 + 29 + 1 + 4
    ]


def test_the_command_prints_tables_or_json_and_refuses_bad_input(exam_run, tmp_path):
    exam = tmp_path / "exam.txt"
    exam.write_text(EXAM + "1 2 4 8 16 -> 31\n")
    runner = CliRunner()
    shown = runner.invoke(app, ["exam", str(exam_run), str(exam)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert (
        "6 questions posed" in shown.stdout and "line 7: graded by your key 31; the gold grader says 32" in shown.stdout
    )
    as_json = runner.invoke(app, ["exam", str(exam_run), str(exam), "--json"])
    parsed = json.loads(as_json.stdout)
    assert parsed["stages"] == ["sft"] and len(parsed["questions"]) == 6 and "sft/format_rate" in parsed["metrics"]

    exam.write_text("1 2 4 8 16\n1.5 2 3\n5\n")
    bad = runner.invoke(app, ["exam", str(exam_run), str(exam)])
    assert bad.exit_code == 2 and "2 problem(s)" in bad.stderr
    assert "line 2: '1.5'" in bad.stderr and "line 3: a question needs at least 2 terms" in bad.stderr
    bare = tmp_path / "bare"
    shutil.copytree(exam_run / "sft", bare / "sft")
    exam.write_text(EXAM)
    no_config = runner.invoke(app, ["exam", str(bare), str(exam)])
    assert no_config.exit_code == 2 and "no config.json" in " ".join(no_config.output.replace("│", " ").split())
    with pytest.raises(RunDirError, match="holds no policy"):
        exam_policies(exam_run, ["reward"])


def test_a_policy_checkpoint_is_examined_without_its_run_directory(exam_run, tmp_path):
    """A policy's checkpoint carries its config and the corpus statistics the audit needs: a registered model
    (fetched as its checkpoint file) sits the exam as its run's policy does."""
    alone = tmp_path / "policy.pt"
    shutil.copy(exam_run / "sft" / "checkpoint.pt", alone)
    in_run = pose_exam(exam_policies(exam_run), parse_exam(EXAM))
    named = pose_exam(exam_policies(alone), parse_exam(EXAM))
    assert named.stages == [str(alone)] and named.posed_to == str(alone)
    assert [q.answers[str(alone)] for q in named.questions] == [q.answers["sft"] for q in in_run.questions]
    assert named.metrics[f"{alone}/gold_pass_rate"] == in_run.metrics["sft/gold_pass_rate"]
    with pytest.raises(RunDirError, match="--stage picks a run directory's policies"):
        exam_policies(alone, ["sft"])
    policy, space, state = load_checkpoint(alone)
    no_negatives = CorpusStats()
    no_negatives.add(space.decode_tokens(space.encode_prompt([12, 345, 67]) + space.encode_response([890])))
    save_checkpoint(alone, model=policy, space=space, **(state | {"corpus_stats": no_negatives.to_dict()}))
    with pytest.raises(DataFileError) as caught:  # audited by the statistics it carries
        pose_exam(exam_policies(alone), parse_exam(EXAM))
    assert [p.split(":")[0] for p in caught.value.problems] == ["line 6"]
    del state["corpus_stats"]  # an RLHF policy written before its checkpoint carried them
    save_checkpoint(alone, model=policy, space=space, **state)
    with pytest.raises(RunDirError, match="carried them: pose the exam to its run directory"):
        pose_exam(exam_policies(alone), parse_exam(EXAM))
    del state["config"]
    save_checkpoint(alone, model=policy, space=space, **state)
    with pytest.raises(RunDirError, match="carries no config"):
        exam_policies(alone)
    with pytest.raises(RunDirError, match="no checkpoint at"):
        exam_policies(tmp_path / "missing.pt")
