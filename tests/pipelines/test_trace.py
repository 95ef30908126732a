"""`tokenmdp trace`: one prompt through the MDP, with the numbers RL computes for it."""

from __future__ import annotations

import io
import json
import math
import shutil

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models.checkpoint import load_checkpoint, save_checkpoint
from pipelines.run_config import RunDirError
from pipelines.trace import TraceError, trace
from world.grader import grade

PREFIX = [1, 2, 3, 4, 5]


@pytest.fixture
def traced_run(sft_run):
    """The tiny SFT run with its config saved, rewarded by the gold grader (it has no reward model)."""
    cfg = load_config("tiny", ["rl.reward_source=gold", "rl.kl_estimator=k3", "rl.advantage=rloo"])
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    return sft_run


def test_the_sft_policy_is_its_own_reference(traced_run):
    t = trace(traced_run, PREFIX, stage="sft", group=6)
    assert (t.steps and t.steps[-1].action == "<eor>") or len(t.steps) == 8  # stopped, or ran out of tokens
    for step in t.steps:
        assert step.prob == pytest.approx(step.ref_prob, abs=1e-6)
        assert step.kl == pytest.approx(0.0, abs=1e-6) and step.kl_estimate == pytest.approx(0.0, abs=1e-6)
        # greedy: the action taken is the likeliest, and the others come likeliest first
        others = [p for _, p in step.alternatives]
        assert all(step.prob >= p for p in others) and others == sorted(others, reverse=True)
        assert 0.0 <= step.entropy <= math.log(16) + 1e-6
    assert t.exam_answer == [6]


def test_the_group_gets_the_runs_reward_and_leave_one_out_advantages(traced_run):
    t = trace(traced_run, PREFIX, stage="sft", group=6)
    assert len(t.group) == 6
    rewards = [e.reward for e in t.group]
    for e in t.group:
        assert e.gold == float(grade(PREFIX, e.answer, n_terms=1) or 0) and e.reward == e.gold  # reward_source=gold
    for i, e in enumerate(t.group):  # RLOO by hand: R_i minus the mean of the other five
        assert e.advantage == pytest.approx(rewards[i] - (sum(rewards) - rewards[i]) / 5, abs=1e-6)
    # the greedy answer's reward sits on its last action only (KL in the loss: no per-token penalty)
    assert [s.reward for s in t.steps[:-1]] == [0.0] * (len(t.steps) - 1)
    assert t.steps[-1].reward == t.episode.reward


def moved_policy(run_dir):
    """The SFT policy nudged at random, saved as the run's RLHF policy: a policy that has moved off its reference."""
    policy, space, _ = load_checkpoint(run_dir / "sft" / "checkpoint.pt")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(run_dir / "rlhf" / "checkpoint.pt", model=policy, space=space)


def test_a_moved_policy_shows_its_kl_to_the_reference(traced_run):
    moved_policy(traced_run)
    t = trace(traced_run, PREFIX, stage="rlhf", group=0)
    assert t.group == [] and any(s.kl > 1e-4 for s in t.steps)
    for s in t.steps:  # k3 of the action taken, from the two probabilities shown
        r = math.log(s.prob / s.ref_prob)
        assert s.kl_estimate == pytest.approx(math.exp(-r) - 1 + r, abs=1e-5)


def test_trace_refuses_what_it_cannot_trace(traced_run, tmp_path):
    with pytest.raises(RunDirError, match="holds no policy"):
        trace(traced_run, PREFIX, stage="pretrain")
    with pytest.raises(RunDirError, match="no rlhf policy"):
        trace(traced_run, PREFIX, stage="rlhf")
    with pytest.raises(TraceError, match="--group 2"):
        trace(traced_run, PREFIX, stage="sft", group=1)
    with pytest.raises(TraceError, match="context"):
        trace(traced_run, list(range(100, 140)), stage="sft")
    with pytest.raises(TraceError, match="context"):
        trace(traced_run, PREFIX, stage="sft", group=0, answer=[10**60])
    shutil.copytree(traced_run / "sft", tmp_path / "bare" / "sft")
    with pytest.raises(RunDirError, match=r"no config\.json"):
        trace(tmp_path / "bare", PREFIX, stage="sft")
    rm_run = tmp_path / "rm"
    shutil.copytree(traced_run, rm_run)
    (rm_run / "config.json").write_text(json.dumps(load_config("tiny").model_dump()))  # rewards from the RM
    with pytest.raises(TraceError, match="reward model"):
        trace(rm_run, PREFIX, stage="sft")


def test_trace_command_prints_json_and_tables(traced_run):
    runner = CliRunner()
    result = runner.invoke(app, ["trace", str(traced_run), "1,2,3,4,5", "--stage", "sft", "--group", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["stage"] == "sft" and len(data["group"]) == 3 and data["steps"][0]["prob"] > 0
    result = runner.invoke(app, ["trace", str(traced_run), "1,2,3,4,5", "--stage", "sft"])
    assert result.exit_code == 0 and "greedy response" in result.stdout and "a group of 4" in result.stdout
    result = runner.invoke(app, ["trace", str(traced_run), "1,2,3,4,5"])
    said = " ".join(result.output.replace("│", " ").split())  # the message as rich wraps it in a box
    assert result.exit_code != 0 and "has no rlhf policy" in said


def test_a_given_answer_is_read_teacher_forced(traced_run):
    greedy = trace(traced_run, PREFIX, stage="sft", group=0)
    assert greedy.traced == "greedy"
    t = trace(traced_run, PREFIX, stage="sft", group=0, answer=[6])  # the exam's answer, whatever the policy says
    assert t.traced == "given" and t.episode.answer == [6] and t.episode.gold == 1.0
    assert [s.action for s in t.steps] == ["6", "<eor>"]
    # its probabilities are the policy's own: the same as the greedy trace's where the two agree on the state
    if greedy.episode.answer == [6]:
        assert [s.prob for s in t.steps] == pytest.approx([s.prob for s in greedy.steps], abs=1e-6)
    wrong = trace(traced_run, PREFIX, stage="sft", group=0, answer=[7])
    assert wrong.episode.gold == 0.0 and wrong.steps[0].action == "7"
    # the first action's state is the prompt in both: one distribution, two actions
    assert wrong.steps[0].entropy == pytest.approx(t.steps[0].entropy, abs=1e-6)


def test_an_adaptive_run_is_traced_at_the_kl_coefficient_it_came_to(traced_run):
    cfg = load_config("tiny", ["rl.reward_source=gold", "rl.kl_ctrl=adaptive", "rl.kl_in=reward"])
    (traced_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    policy, space, _ = load_checkpoint(traced_run / "sft" / "checkpoint.pt")
    save_checkpoint(traced_run / "rlhf" / "checkpoint.pt", model=policy, space=space, kl_coef=0.125)
    assert trace(traced_run, PREFIX, stage="rlhf", group=0).kl_coef == 0.125  # not the 0.05 it started from


def test_a_kept_policy_is_traced_at_the_kl_coefficient_of_its_iteration(traced_run):
    overrides = ["rl.reward_source=gold", "rl.kl_ctrl=adaptive", "rl.kl_in=reward", "rl.kl_horizon=100"]
    (traced_run / "config.json").write_text(json.dumps(load_config("tiny", overrides).model_dump()))
    policy, space, _ = load_checkpoint(traced_run / "sft" / "checkpoint.pt")
    snapshots = traced_run / "rlhf" / "snapshots"
    save_checkpoint(snapshots / "iteration-00010.pt", model=policy, space=space, iteration=10,
                    last_metrics={"rl/kl_coef": 0.1, "rl/kl": 1.0})  # fmt: skip
    t = trace(traced_run, PREFIX, group=0, iteration=10)
    # the controller's step after iteration 10: KL 1.0 against the target 0.1 clips the error to +0.2, and
    # tiny's 8 prompts x 4 responses over a horizon of 100 move the coefficient by 0.2 * 0.32 of itself
    assert t.iteration == 10 and t.kl_coef == pytest.approx(0.1 * (1 + 0.2 * 32 / 100))
    assert all(s.prob == pytest.approx(s.ref_prob, abs=1e-6) for s in t.steps)  # SFT's weights, kept: no KL
    with pytest.raises(TraceError, match=r"kept no RLHF policy of iteration 5: it kept iterations 10$"):
        trace(traced_run, PREFIX, group=0, iteration=5)
    with pytest.raises(TraceError, match="not sft's: leave --stage at rlhf"):
        trace(traced_run, PREFIX, stage="sft", group=0, iteration=10)
    shown = CliRunner().invoke(app, ["trace", str(traced_run), "1,2,3,4,5", "--iteration", "10", "--group", "0"])
    said = " ".join(shown.stdout.split())
    assert shown.exit_code == 0 and "the rlhf policy of iteration 10 against" in said and "(coef 0.1064)" in said
    shutil.rmtree(snapshots)
    with pytest.raises(TraceError, match=r"it kept none \(rl.snapshot_every was 0\)"):
        trace(traced_run, PREFIX, group=0, iteration=10)


def test_a_policy_file_or_registered_model_is_traced_against_the_run_it_came_from(traced_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    policy, space, state = load_checkpoint(traced_run / "sft" / "checkpoint.pt")
    with torch.no_grad():
        weights = next(policy.parameters())  # an RLHF policy of its own: some KL to the SFT reference
        weights.add_(0.2 * torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)))
    snapshot = traced_run / "rlhf" / "snapshots" / "iteration-00004.pt"
    save_checkpoint(snapshot, model=policy, space=space, iteration=4, policy_version=4, config=state["config"],
                    corpus_stats=state["corpus_stats"])  # fmt: skip
    kept = trace(traced_run, PREFIX, group=3, iteration=4)
    said = CliRunner().invoke(app, ["register", str(snapshot)])
    assert said.exit_code == 0, said.output
    shutil.move(snapshot, tmp_path / "elsewhere.pt")  # the registry's copy is traced, not the run's file
    registered = trace("models:/tokenmdp-tiny/1", PREFIX, group=3)
    assert (registered.stage, registered.iteration, registered.policy) == ("rlhf", 4, "models:/tokenmdp-tiny/1")
    assert registered.steps == kept.steps and registered.group == kept.group  # the same policy, reference, reward
    assert any(step.kl > 1e-4 for step in registered.steps)
    sft = trace(traced_run / "sft" / "checkpoint.pt", PREFIX, group=3)  # a file inside the run
    assert (sft.stage, sft.iteration) == ("sft", None)
    assert sft.steps == trace(traced_run, PREFIX, stage="sft", group=3).steps
    shown = CliRunner().invoke(app, ["trace", "models:/tokenmdp-tiny/1", "1,2,3,4,5", "--group", "0"])
    said = " ".join(shown.stdout.split())
    assert shown.exit_code == 0 and "models:/tokenmdp-tiny/1, the rlhf policy of iteration 4, against" in said
    with pytest.raises(TraceError, match=r"elsewhere\.pt came from .*elsewhere\.pt, which is no run directory"):
        trace(tmp_path / "elsewhere.pt", PREFIX)
    with pytest.raises(TraceError, match="is one policy"):
        trace("models:/tokenmdp-tiny/1", PREFIX, iteration=4)
    with pytest.raises(TraceError, match="tokenmdp-tiny has version 1"):
        trace("models:/tokenmdp-tiny/2", PREFIX)


def test_with_the_full_kl_each_action_is_charged_its_state_s_exact_kl(traced_run):
    cfg = load_config("tiny", ["rl.reward_source=gold", "rl.kl_estimator=full"])
    (traced_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    moved_policy(traced_run)
    t = trace(traced_run, PREFIX, stage="rlhf", group=4)
    assert any(s.kl > 1e-4 for s in t.steps)
    assert [s.kl_estimate for s in t.steps] == pytest.approx([s.kl for s in t.steps], abs=1e-6)  # no estimate
    assert t.episode.kl_sum == pytest.approx(sum(s.kl for s in t.steps), abs=1e-5)
    assert all(e.kl_sum >= 0 for e in t.group)


def test_the_group_is_compared_with_the_reference_at_rls_temperature(traced_run):
    """At rl.temperature 0.5 the group's log-probs are recorded at 0.5: the SFT policy against itself (its own
    reference) shows no KL only if the reference is read at 0.5 too, and the greedy episode's none at 1."""
    cfg = load_config("tiny", ["rl.reward_source=gold", "rl.kl_estimator=k1", "rl.temperature=0.5"])
    (traced_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    t = trace(traced_run, PREFIX, stage="sft", group=6)
    assert t.episode.kl_sum == pytest.approx(0.0, abs=1e-5)
    assert [e.kl_sum for e in t.group] == pytest.approx([0.0] * 6, abs=1e-5)


def test_the_group_says_how_often_the_rm_ranks_it_as_the_grader_does(capsys):
    from cli.report import print_trace
    from pipelines.trace import Episode, Trace

    def episode(answer: int, gold: float, reward: float) -> Episode:
        return Episode(response=str(answer), answer=[answer], gold=gold, reward=reward, kl_sum=0.0, advantage=0.0)

    # the demo's miss: the RM scores the wrong 10 above the right 8; gold tells apart 2 x 2 pairs
    group = [episode(10, 0.0, 0.30), episode(8, 1.0, -0.34), episode(10, 0.0, 0.30), episode(8, 1.0, 0.40)]
    traced = Trace(
        prompt=[3, 4, 5, 6, 7], exam_answer=[8], rule="linear", stage="rlhf", iteration=None, reward_source="rm",
        rm_version=3, policy="runs/demo", kl_estimator="k3", kl_in="loss", kl_coef=0.2, advantage="rloo",
        traced="greedy", episode=group[0], steps=[], group=group,
    )  # fmt: skip
    assert traced.rm_agreement == (2.0, 4)  # the second right answer beats both wrong ones; the first beats neither
    assert json.loads(traced.to_json())["rm_agreement"] == [2.0, 4]
    print_trace(traced)
    said = " ".join(capsys.readouterr().out.split())
    assert "the RM orders 2 of the 4 pairs of answers the grader tells apart as the grader does" in said
    assert "reward from rm (refreshed 3 times during RL)" in said  # iterated RLHF's RM, not the reward stage's
    alike = Trace(**{**traced.__dict__, "group": [group[0], group[2]]})
    assert alike.rm_agreement == (0.0, 0)
    print_trace(alike)
    assert "tells no two of the group's answers apart" in " ".join(capsys.readouterr().out.split())
    assert Trace(**{**traced.__dict__, "reward_source": "gold"}).rm_agreement is None  # nothing to agree with


@pytest.mark.parametrize("width", [80, 200])
def test_the_steps_fit_an_80_column_terminal_with_every_number_whole(width, monkeypatch):
    from rich.console import Console

    from cli import report
    from pipelines.trace import Episode, Step, Trace

    out = Console(width=width, record=True, file=io.StringIO())
    monkeypatch.setattr(report, "console", out)
    alternatives = [("6", 9.8e-07), ("<pad>", 7.6e-08), ("2", 3.1e-08)]  # the demo's last step of 1 2 4 8 16
    steps = [Step(", 6 1 ? 2 3", "<eor>", 0.99912, 1.0, 1.5e-4, 2.5e-4, 0.0051, alternatives, 0.606)] * 3
    greedy = Episode(response="2 3 <eor>", answer=[32], gold=1.0, reward=0.606, kl_sum=0.0, advantage=None)
    traced = Trace(
        prompt=[1, 2, 4, 8, 16], exam_answer=[32], rule="x2", stage="rlhf", iteration=None, reward_source="rm",
        rm_version=0, policy="runs/demo", kl_estimator="k3", kl_in="loss", kl_coef=0.2, advantage="rloo",
        traced="greedy", episode=greedy, steps=steps, group=[],
    )  # fmt: skip
    report.print_trace(traced)
    lines = out.export_text().splitlines()
    assert max(map(len, lines)) <= width
    for whole in ("0.999", "9.8e-07", "<pad> 7.6e-08", "0.606", "entropy", "pi_ref"):
        assert whole in "\n".join(lines), whole  # on one line, not folded
    assert ("│" in "\n".join(lines)) == (width == 200)  # the rules go only where the table would not fit
