"""RLHF on real Ray actors and RLlib learners, on tiny, through a real local MLflow store."""

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models.checkpoint import load_checkpoint
from pipelines import reward, rl_metrics, rlhf
from pipelines.evaluate import eval_questions, evaluate_policy
from pipelines.rl_actors import Variant, start_actors
from world.actions import ActionSpace
from world.user_data import lines_and_problems, parse_pair_line

pytestmark = pytest.mark.slow

GOLD = ["rl.reward_source=gold"]


def weights(path):
    model, _, state = load_checkpoint(path)
    return model.state_dict(), state


def test_rlhf_with_the_reward_model_logs_proxy_and_gold_and_stays_on_policy(sft_run, tmp_path, ray_local, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", ["reward.steps=10", "reward.eval_every=10", "reward.checkpoint_every=10"])
    reward.main(cfg, sft_run, tracking_uri=uri)
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)
    assert final["rl/policy_version"] == cfg.rl.iterations
    assert final["buffer/max_staleness"] == 0 and final["buffer/refused_stale"] == 0
    assert 0 <= final["eval/gold_pass_rate"] <= 1
    assert 0 <= final["eval/practised_pass_rate"] <= 1 and 0 <= final["eval/practised_pass_rate_sft"] <= 1
    # the gain over SFT is counted question by question on the held-out set both answered
    sft_policy, space, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    sft_rate = evaluate_policy(sft_policy, space, cfg)["eval/gold_pass_rate"]
    assert final["eval/gain_over_sft"] == pytest.approx(final["eval/gold_pass_rate"] - sft_rate)
    changed = final["eval/fixed_over_sft"] - final["eval/broken_over_sft"]
    assert changed == pytest.approx(final["eval/gain_over_sft"] * len(eval_questions(cfg)))
    assert final["eval/gain_over_sft_stderr"] >= 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    practised = client.get_metric_history(final["run_id"], "eval/practised_pass_rate")
    steps = sorted(m.step for m in practised)
    assert steps[0] == 0 and steps[-1] == cfg.rl.iterations  # the SFT policy's rate opens the curve
    metrics = client.get_run(final["run_id"]).data.metrics
    for key in ("reward/proxy", "reward/gold", "rl/kl", "time/sample", "time/sync", "time/update", "loss/policy"):
        assert key in metrics, key
    assert 0 <= metrics["rl/rare_action_rate"] <= 1  # actions under 1% of pretraining's tokens (rule 3)
    # the exact KL of the states passed (the learner's, from the reference's whole distributions): 0 while the
    # policy is the reference, then what the sampled k3 estimates
    exact = {m.step: m.value for m in client.get_metric_history(final["run_id"], "rl/kl_exact")}
    assert sorted(exact) == list(range(1, cfg.rl.iterations + 1))
    assert abs(exact[1]) < 1e-5 and all(exact[s] > 0 for s in exact if s > 1)
    # strict on-policy, numerically: before each update the learner gives the sampled actions the sampler's log-probs
    gap = {m.step: m.value for m in client.get_metric_history(final["run_id"], "rl/sampler_gap_max")}
    assert sorted(gap) == list(range(1, cfg.rl.iterations + 1)) and max(gap.values()) < 1e-4
    assert "rl/logprob_gap_max" not in metrics  # the learner's own, after steps: not logged as the sampler's
    # scorer and reference judge at once: the lap is shorter than the two one after another, and
    # the iteration's wall time holds its laps
    laps = ("sample", "judge", "advantage", "buffer", "update", "sync")
    assert metrics["time/judge"] >= max(metrics["time/score"], metrics["time/reference"]) > 0
    assert sum(metrics[f"time/{lap}"] for lap in laps) <= metrics["time/iteration"]
    assert len(client.get_metric_history(final["run_id"], "reward/gold")) == cfg.rl.iterations
    # the RM's agreement with the grader on each iteration's own answers: a share of the pairs gold tells apart
    pairs = {m.step: m.value for m in client.get_metric_history(final["run_id"], "reward/rm_pairs")}
    agreement = {m.step: m.value for m in client.get_metric_history(final["run_id"], "reward/rm_agreement")}
    assert sorted(pairs) == sorted(agreement) == list(range(1, cfg.rl.iterations + 1))
    assert all((0 <= agreement[s] <= 1) if pairs[s] else math.isnan(agreement[s]) for s in pairs)
    # the rollouts table: each iteration's first groups as it scored them, appended at every checkpoint
    checkpoints = [
        i for i in range(1, cfg.rl.iterations + 1) if i % cfg.rl.checkpoint_every == 0 or i == cfg.rl.iterations
    ]
    files = [f.path for f in client.list_artifacts(final["run_id"], "rollouts")]
    assert files == [f"rollouts/iteration-{i:05d}.json" for i in checkpoints]  # a table a checkpoint
    rows = []
    for file in files:
        table = json.loads(Path(client.download_artifacts(final["run_id"], file, str(tmp_path))).read_text())
        rows += [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    G = cfg.rl.group_size
    assert len(rows) == cfg.rl.iterations * rl_metrics.TABLE_GROUPS * G
    assert sorted({r["iteration"] for r in rows}) == list(range(1, cfg.rl.iterations + 1))
    assert all(r["policy_version"] == r["iteration"] - 1 for r in rows)  # strict on-policy
    assert all(r["gold"] == float(r["answer"] == r["exam_answer"]) for r in rows)
    for start in range(0, len(rows), G):  # RLOO: a group's advantages sum to zero
        group = rows[start : start + G]
        assert len({r["prompt"] for r in group}) == 1
        assert sum(r["advantage"] for r in group) == pytest.approx(0.0, abs=1e-5)
    # `tokenmdp rollouts` reads that table back from the run's MLflow run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))  # as `tokenmdp rlhf` writes it
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--json"])
    assert said.exit_code == 0, said.output
    shown = json.loads(said.stdout)
    last = cfg.rl.iterations
    assert shown["iteration"] == last and shown["rollouts"] == [r for r in rows if r["iteration"] == last]
    assert shown["iterations"] == list(range(1, last + 1)) and shown["rows"] == len(rows)
    agreed = shown["rm_agreement"]
    assert agreed["pairs"] == sum(pairs.values())
    # and every pair of answers the RM ranked against the grader, over all groups: the pairs the agreement lost
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--misordered", "--json", "--limit", "1000"])
    assert said.exit_code == 0, said.output
    misses = json.loads(said.stdout)
    assert misses["every_group"] and misses["misordered_total"] == len(misses["misordered"])
    assert [f.path for f in client.list_artifacts(final["run_id"], "rm_misordered")] == [
        f"rm_misordered/iteration-{i:05d}.json" for i in checkpoints
    ]  # a table per checkpoint, each of the iterations since the one before
    lost = sum(m["pairs"] for m in misses["misordered"])  # no ties between two answers' scores here
    assert agreed["rate"] * agreed["pairs"] + lost == pytest.approx(agreed["pairs"], abs=1e-6)
    for m in misses["misordered"]:
        assert m["above_reward"] > m["below_reward"] and m["above_gold"] < m["below_gold"]
    # as a reward.extra_pairs file: each pair of well-formed answers once, the grader's better one first
    written = tmp_path / "misordered.txt"
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--misordered", "--pairs", str(written)])
    assert said.exit_code == 0, said.output
    lines, problems = lines_and_problems(written.read_text(), parse_pair_line)
    assert not problems
    assert {(" ".join(map(str, p.prefix)), p.better, p.worse) for p in lines} == {
        (m["prompt"], tuple(m["below"]), tuple(m["above"]))
        for m in misses["misordered"]
        if m["above"] is not None and m["below"] is not None
    }
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--misordered", "--json", "--iteration", "2"])
    assert json.loads(said.stdout)["misordered"] == [m for m in misses["misordered"] if m["iteration"] == 2]
    table_misses = rl_metrics.misordered(rows)  # the table's groups are among all groups
    assert {(m.iteration, m.prompt, m.above_response, m.below_response) for m in table_misses} <= {
        (m["iteration"], m["prompt"], m["above_response"], m["below_response"]) for m in misses["misordered"]
    }
    # a run from before the per-checkpoint tables: the table's groups only, and it says so
    artifacts = Path(client.get_run(final["run_id"]).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(artifacts / "rm_misordered")
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--misordered", "--json", "--limit", "1000"])
    older = json.loads(said.stdout)
    assert not older["every_group"] and older["misordered"] == [asdict(m) for m in table_misses]
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--iteration", "1"])
    assert said.exit_code == 0 and "iteration 1, policy version 0" in " ".join(said.stdout.split()), said.output
    sft, _ = weights(sft_run / "sft" / "checkpoint.pt")
    tuned, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert state["policy_version"] == cfg.rl.iterations
    assert any(not torch.equal(sft[k], tuned[k]) for k in sft), "RL left the policy unchanged"
    _the_kl_table_says_where_each_iteration_s_kl_came_from(sft_run, client, final["run_id"], cfg, checkpoints)
    shutil.rmtree(artifacts / "kl_sources")
    said = CliRunner().invoke(app, ["rollouts", str(sft_run), "--kl"])
    assert said.exit_code == 2 and "no KL table" in said.output  # a run from before it: said, not a traceback


def _the_kl_table_says_where_each_iteration_s_kl_came_from(run_dir, client, run_id, cfg, checkpoints):
    """`kl_sources/`: each iteration's largest-KL responses, action by action, adding up to its `rl/kl`."""
    n, responses = rl_metrics.KL_SOURCES, cfg.rl.prompts_per_iteration * cfg.rl.group_size
    assert [f.path for f in client.list_artifacts(run_id, "kl_sources")] == [
        f"kl_sources/iteration-{i:05d}.json" for i in checkpoints
    ]
    history = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)}
               for key in ("rl/kl", "rl/kl_exact", "rl/kl_max", f"rl/kl_share_top{n}")}  # fmt: skip
    for iteration in range(1, cfg.rl.iterations + 1):
        said = CliRunner().invoke(app, ["rollouts", str(run_dir), "--kl", "--json", "--iteration", str(iteration)])
        assert said.exit_code == 0, said.output
        shown = json.loads(said.stdout)
        rows = shown["rows"]
        assert shown["iteration"] == iteration and shown["estimator"] == "k3" and len(rows) == n
        assert shown["kl"] == history["rl/kl"][iteration] and shown["exact"] == history["rl/kl_exact"][iteration]
        total = history["rl/kl"][iteration] * responses  # k3 >= 0: the mean response's KL times the responses
        assert [r["kl"] for r in rows] == sorted((r["kl"] for r in rows), reverse=True)  # largest first
        assert rows[0]["kl"] == pytest.approx(history["rl/kl_max"][iteration], rel=1e-6)
        assert sum(r["share"] for r in rows) == pytest.approx(shown["share"], rel=1e-5)
        assert shown["share"] == history[f"rl/kl_share_top{n}"][iteration]
        for r in rows:
            assert r["policy_version"] == iteration - 1 and r["share"] == pytest.approx(r["kl"] / total, rel=1e-4)
            assert r["response"] == " ".join(a[0] for a in r["actions"])
            for _, logp, ref, k in r["actions"]:  # k3 of the action's log ratio, by hand
                assert k == pytest.approx(math.exp(ref - logp) - 1 + (logp - ref), abs=1e-5)
            assert r["kl"] == pytest.approx(sum(a[3] for a in r["actions"]), abs=1e-5)
    peak = max(history["rl/kl"], key=lambda i: history["rl/kl"][i])  # the run's largest KL, named with its iteration
    assert shown["peak"] == [peak, history["rl/kl"][peak]]
    said = CliRunner().invoke(app, ["rollouts", str(run_dir), "--kl"])
    text = " ".join(said.stdout.split())
    assert said.exit_code == 0 and f"iteration {cfg.rl.iterations}, KL" in text and "#1: KL" in text, said.output
    assert (f"(--iteration {peak})" in text) == (peak != cfg.rl.iterations)
    said = CliRunner().invoke(app, ["rollouts", str(run_dir), "--kl", "--misordered"])
    assert said.exit_code == 2 and "different tables" in said.output


def test_a_stopped_run_resumes_and_a_finished_one_trains_on_to_the_policy_of_one_straight_run(
    sft_run, tmp_path, ray_local
):
    from pipelines.run_config import REGISTERED

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ppo = [*GOLD, "rl.epochs=2", "rl.minibatches=2", "rl.kl_ctrl=adaptive", "rl.kl_horizon=64"]  # its coef restored
    shorter, longer = load_config("tiny", [*ppo, "rl.iterations=3"]), load_config("tiny", [*ppo, "rl.iterations=5"])
    straight_dir = tmp_path / "straight"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, straight_dir / stage)
    rlhf.main(shorter, sft_run, tracking_uri=uri, stop_at=2)
    _, half = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert half["iteration"] == 2
    rlhf.main(shorter, sft_run, tracking_uri=uri)  # resumed after a stop, it ends at 3 (evaluated, checkpointed)
    (sft_run / REGISTERED).write_text("models:/tokenmdp-tiny/1")  # as `tokenmdp run` registers a finished run
    continued = rlhf.main(longer, sft_run, tracking_uri=uri)  # then asked for 5
    straight = rlhf.main(longer, straight_dir, tracking_uri=uri)
    a, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    b, _ = weights(straight_dir / "rlhf" / "checkpoint.pt")
    assert state["policy_version"] == 5
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert continued["reward/gold"] == straight["reward/gold"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    history = client.get_metric_history(continued["run_id"], "reward/gold")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]  # one MLflow run keeps every iteration's metrics
    run = client.get_run(continued["run_id"]).data
    assert (run.params["rl.iterations"], run.tags["tokenmdp.rl_iterations"]) == ("3", "5")
    assert "reward/rm_agreement" not in run.metrics  # the grader is the reward: nothing to agree with
    assert not (sft_run / REGISTERED).exists()  # the registered policy is no longer the run's final one


def test_an_actor_that_dies_is_started_again_from_the_checkpoint_and_the_run_ends_as_one_straight_run(
    sft_run, tmp_path, ray_local, monkeypatch, capsys
):
    import ray

    from actors.cluster import ActorsLost
    from actors.weight_sync import WeightSync

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    straight_dir = tmp_path / "straight"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, straight_dir / stage)
    step, push, kills = rlhf.iteration_step, WeightSync.push, []

    def killing_a_sampler_as_iteration_4_samples(*args):  # (cfg, actors, space, policy, questions, iteration, ...)
        if args[5] == 3 and not kills:  # past the checkpoint of iteration 2, one iteration done since
            kills.append(args[1].samplers[0])
            ray.kill(kills[-1])
        return step(*args)

    def killing_a_sampler_in_the_broadcast_of_version_3(sync, weights, version):  # its peers see gloo's error
        if version == 3 and len(kills) == 1:
            kills.append(sync.samplers[0])
            ray.kill(kills[-1])
        return push(sync, weights, version)

    monkeypatch.setattr(rlhf, "iteration_step", killing_a_sampler_as_iteration_4_samples)
    lost = r"with the 0 restart\(s\) of rl.actor_restarts spent; the same command resumes from iteration 2"
    with pytest.raises(ActorsLost, match=lost):
        rlhf.main(load_config("tiny", [*GOLD, "rl.actor_restarts=0"]), sft_run, tracking_uri=uri)
    _, kept = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert kept["iteration"] == 2
    monkeypatch.setattr(WeightSync, "push", killing_a_sampler_in_the_broadcast_of_version_3)
    survived = rlhf.main(load_config("tiny", GOLD), sft_run, tracking_uri=uri)  # 2 restarts allowed: it needs 1
    assert len(kills) == 2
    assert "every actor starts again from iteration 2 (restart 1 of 2)" in capsys.readouterr().err
    monkeypatch.setattr(rlhf, "iteration_step", step)
    monkeypatch.setattr(WeightSync, "push", push)
    straight = rlhf.main(load_config("tiny", GOLD), straight_dir, tracking_uri=uri)
    a, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    b, _ = weights(straight_dir / "rlhf" / "checkpoint.pt")
    assert state["policy_version"] == 4 and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert survived["reward/gold"] == straight["reward/gold"]
    history = mlflow.MlflowClient(tracking_uri=uri).get_metric_history(survived["run_id"], "reward/gold")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # iteration 3, done twice, logged once


def test_a_ddp_learner_that_dies_is_a_death_to_restart_from_not_its_peers_broken_allreduce(
    sft_run, tmp_path, ray_local, monkeypatch, capsys
):
    import os
    import signal

    step, kills = rlhf.iteration_step, []

    def killing_the_last_learner_before_iteration_4(*args):  # (cfg, actors, space, policy, questions, iteration..)
        if args[5] == 3 and not kills:  # the survivor, rank 0, answers first: with gloo's error, not a death
            group = args[1].learner
            ids = [r.actor_id for r in group.foreach_learner(lambda _learner: None)]
            kills.append(ids[-1])
            group.foreach_learner(lambda _learner: os.kill(os.getpid(), signal.SIGKILL), remote_actor_ids=ids[-1:],
                                  timeout_seconds=0)  # fmt: skip
        return step(*args)

    monkeypatch.setattr(rlhf, "iteration_step", killing_the_last_learner_before_iteration_4)
    two_learners = ["rl.actors.learner.num_learners=2", "rl.actors.learner.num_cpus_per_learner=0.25",
                    "rl.actors.sampler.num_cpus=0.25"]  # fmt: skip
    final = rlhf.main(load_config("tiny", [*GOLD, *two_learners]), sft_run, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert kills and final["rl/policy_version"] == 4
    assert "every actor starts again from iteration 2 (restart 1 of 2)" in capsys.readouterr().err


def test_a_run_resumes_on_other_actor_counts_with_its_learners_optimizer(sft_run, tmp_path, ray_local):
    """Begun on one sampler and the local learner, ended on two samplers and two DDP learners: the guard lets
    resources change (how a stage runs), and the optimizer's state reaches the new learners."""
    from pipelines.run_config import ConfigChanged, guard_run_dir

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    laptop = load_config("tiny", GOLD)
    guard_run_dir(sft_run, laptop.model_dump())
    rlhf.main(laptop, sft_run, tracking_uri=uri, stop_at=2)
    two_each = ["rl.actors.sampler.replicas=2", "rl.actors.sampler.num_cpus=0.25", "rl.actors.learner.num_learners=2",
                "rl.actors.learner.num_cpus_per_learner=0.25"]  # fmt: skip
    cluster = load_config("tiny", [*GOLD, *two_each])
    guard_run_dir(sft_run, cluster.model_dump())
    with pytest.raises(ConfigChanged, match=r"differs in rl\.lr"):  # what it trains may not change
        guard_run_dir(sft_run, load_config("tiny", [*GOLD, "rl.lr=1e-3"]).model_dump())
    final = rlhf.main(cluster, sft_run, tracking_uri=uri)
    assert final["rl/policy_version"] == laptop.rl.iterations and final["buffer/max_staleness"] == 0
    _, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    adam = state["learner"]["learner"]["optimizer"]["default_policy_default_optimizer"]["state"]["state"]
    steps = {float(param["step"]) for param in adam.values()}
    assert steps == {float(laptop.rl.iterations)}  # one step an iteration, the first two before the move
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(final["run_id"]).data
    assert run.params["rl.actors.sampler.replicas"] == "1"  # as it began
    assert json.loads(run.tags["tokenmdp.rl_actors"])["sampler"]["replicas"] == 2  # as it ended


def test_snapshots_keep_the_policy_of_every_nth_iteration_for_the_reading_commands(sft_run, tmp_path, ray_local):
    from pipelines.compare import paired
    from pipelines.policy_source import policy_from, resolve_model, trained_in

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [*GOLD, "rl.snapshot_every=2"])
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)
    kept = sorted(p.name for p in (sft_run / "rlhf" / "snapshots").iterdir())
    assert kept == ["iteration-00002.pt", "iteration-00004.pt"]
    last, _ = weights(sft_run / "rlhf" / "snapshots" / "iteration-00004.pt")
    end, _ = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert all(torch.equal(last[k], end[k]) for k in end)
    second, state = weights(sft_run / "rlhf" / "snapshots" / "iteration-00002.pt")
    assert (state["iteration"], state["policy_version"]) == (2, 2) and "learner" not in state  # a policy, not a resume
    assert any(not torch.equal(second[k], end[k]) for k in end)
    # a reading command takes it as it takes any policy: its config and the corpus statistics travel with it
    early = policy_from(str(sft_run / "rlhf" / "snapshots" / "iteration-00002.pt"), "rlhf")
    judged = paired(early, policy_from(sft_run, "rlhf"))
    assert judged["pass_rate_b"] == final["eval/gold_pass_rate"] and "corpus_stats" in early.state
    # and from MLflow, where a cluster's run keeps it
    fetched = resolve_model(f"runs:/{final['run_id']}/snapshots/iteration-00002.pt", tracking_uri=uri)[0]
    assert all(torch.equal(weights(fetched)[0][k], second[k]) for k in second)
    # its run's stage directory tag leads `tokenmdp trace` back to the run directory, for its reference and RM
    assert trained_in(f"runs:/{final['run_id']}/snapshots/iteration-00002.pt", uri)[0] == sft_run.resolve()
    # the curve: SFT, then each kept policy, judged as training judged its last one
    shown = CliRunner().invoke(app, ["curve", str(sft_run), "--json"])
    assert shown.exit_code == 0, shown.output
    points = json.loads(shown.stdout)
    assert [p["iteration"] for p in points] == [0, 2, 4]
    start, end = points[0], points[-1]
    assert (start["gain_over_sft"], start["fixed"], start["broken"]) == (0.0, 0, 0)
    assert start["practised"] == final["eval/practised_pass_rate_sft"]
    assert (end["held_out"], end["practised"]) == (final["eval/gold_pass_rate"], final["eval/practised_pass_rate"])
    assert (end["gain_over_sft"], end["fixed"]) == (final["eval/gain_over_sft"], final["eval/fixed_over_sft"])
    shutil.rmtree(sft_run / "rlhf" / "snapshots")
    refused = CliRunner().invoke(app, ["curve", str(sft_run)])
    assert refused.exit_code == 2 and "keeps no RLHF snapshots" in " ".join(refused.output.replace("│", " ").split())


def test_at_another_temperature_the_learner_and_the_reference_read_the_distribution_sampled(
    sft_run, tmp_path, ray_local
):
    cfg = load_config("tiny", [*GOLD, "rl.iterations=1", "rl.temperature=0.5"])
    final = rlhf.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # the first update starts from the policy that sampled, which is the reference: ratio 1, KL 0
    assert final["rl/ratio_max"] == pytest.approx(1.0, abs=1e-4)
    assert final["rl/kl"] == pytest.approx(0.0, abs=1e-4)


def test_a_bfloat16_sampler_shows_in_the_gap_and_the_learners_log_probs_bring_the_first_ratio_back_to_1(
    sft_run, tmp_path, ray_local
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bf16 = [*GOLD, "rl.iterations=1", "rl.sampler_precision=bfloat16"]
    own = rlhf.main(load_config("tiny", bf16), sft_run, tracking_uri=uri)
    assert own["rl/sampler_gap_max"] > 1e-3  # bfloat16's rounding, seen before the update (float32: < 1e-4)
    assert abs(own["rl/ratio_max"] - 1) > 1e-4  # and PPO's first ratio is off 1 by it
    recomputed = tmp_path / "recomputed"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, recomputed / stage)
    fixed = rlhf.main(load_config("tiny", [*bf16, "rl.old_logprobs=learner"]), recomputed, tracking_uri=uri)
    assert fixed["rl/sampler_gap_max"] == pytest.approx(own["rl/sampler_gap_max"], rel=1e-3)  # the same draws
    assert fixed["rl/ratio_max"] == pytest.approx(1.0, abs=1e-4)  # the ratio starts from the learner's numbers
    assert fixed["time/old_logprobs"] > 0
    with pytest.raises(ValueError, match="sync_every=2 makes them lag; use sync_every=1 or old_logprobs=sampler"):
        load_config("tiny", ["rl.old_logprobs=learner", "rl.sync_every=2", "rl.max_staleness=1"])


def test_the_full_kl_is_charged_in_the_reward_as_the_learner_reads_it(sft_run, tmp_path, ray_local):
    """`full`: the controller's exact KL (its policy copy, the sampling one) is the learner's before it steps."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    full = [*GOLD, "rl.kl_estimator=full", "rl.kl_in=reward", "rl.iterations=3", "rl.lr=1e-3"]
    final = rlhf.main(load_config("tiny", full), sft_run, tracking_uri=uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    kl, exact = ({m.step: m.value for m in client.get_metric_history(final["run_id"], key)}
                 for key in ("rl/kl", "rl/kl_exact"))  # fmt: skip
    assert abs(kl[1]) < 1e-6 and kl[3] > 1e-4  # the reference's own policy first, then moved
    for step in kl:
        assert kl[step] == pytest.approx(exact[step], rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match="sync_every=2 makes them lag"):
        load_config("tiny", ["rl.kl_estimator=full", "rl.sync_every=2", "rl.max_staleness=1"])
    # the learner's log-probs recomputed (float32 samplers: the same policy): the KL reads the distributions the
    # recompute made instead of a second forward pass of the same weights, and charges the same numbers
    recomputed = tmp_path / "recomputed"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, recomputed / stage)
    again = rlhf.main(load_config("tiny", [*full, "rl.old_logprobs=learner"]), recomputed, tracking_uri=uri)
    charged = {m.step: m.value for m in client.get_metric_history(again["run_id"], "rl/kl")}
    assert charged.keys() == kl.keys() and all(charged[s] == pytest.approx(kl[s], rel=1e-4, abs=1e-7) for s in kl)


def test_the_adaptive_kl_controller_steers_the_coefficient_the_learner_uses(sft_run, tmp_path, ray_local):
    from algos.kl import adaptive_kl_coef

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fixed_dir = tmp_path / "fixed"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, fixed_dir / stage)
    two = [*GOLD, "rl.iterations=2", "rl.kl_in=loss"]
    cfg = load_config("tiny", [*two, "rl.kl_ctrl=adaptive", "rl.kl_target=0.5", "rl.kl_horizon=32"])
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)
    history = {
        key: [m.value for m in sorted(mlflow.MlflowClient(tracking_uri=uri).get_metric_history(final["run_id"], key),
                                      key=lambda m: m.step)]
        for key in ("rl/kl_coef", "rl/kl")
    }  # fmt: skip
    responses = cfg.rl.prompts_per_iteration * cfg.rl.group_size
    assert history["rl/kl_coef"][0] == pytest.approx(cfg.rl.kl_coef)
    assert history["rl/kl"][0] == pytest.approx(0.0, abs=1e-5)  # the first samples are the reference's own
    assert history["rl/kl_coef"][1] == pytest.approx(
        adaptive_kl_coef(cfg.rl.kl_coef, history["rl/kl"][0], 0.5, 32, responses)
    )  # below target by all of it: -0.2 x 32/32, the coefficient x 0.8
    _, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert state["kl_coef"] == pytest.approx(adaptive_kl_coef(history["rl/kl_coef"][1], history["rl/kl"][1], 0.5, 32,
                                                              responses))  # fmt: skip
    # the learner's loss uses the batch's coefficient: a fixed one moves the policy otherwise at iteration 2
    rlhf.main(load_config("tiny", two), fixed_dir, tracking_uri=uri)
    adaptive, _ = weights(sft_run / "rlhf" / "checkpoint.pt")
    fixed, _ = weights(fixed_dir / "rlhf" / "checkpoint.pt")
    assert any(not torch.allclose(adaptive[k], fixed[k], atol=1e-7) for k in adaptive)


def test_ppo_with_the_critic_and_kl_in_the_reward(sft_run, tmp_path, ray_local):
    cfg = load_config("tiny", [*GOLD, "rl.advantage=gae", "rl.kl_in=reward", "rl.iterations=2", "rl.sync=object_store"])
    final = rlhf.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "critic/value_loss" in final and final["rl/policy_version"] == 2


def test_rlhf_refuses_to_start_without_a_reward_model(sft_run):
    with pytest.raises(FileNotFoundError, match="tokenmdp reward"):
        rlhf.main(load_config("tiny"), sft_run)


@pytest.mark.timeout(300)
def test_an_actor_that_cannot_start_is_an_error_with_its_reason_not_a_hang(sft_run, ray_local):
    policy, space, _ = load_checkpoint(sft_run / "sft" / "checkpoint.pt")
    other_order = "msb" if space.digit_order == "lsb" else "lsb"
    cfg = load_config("tiny", [*GOLD, f"world.digit_order={other_order}"])  # the actors' space differs
    with pytest.raises(Exception, match="action space"):
        start_actors(cfg, sft_run, ActionSpace(digit_order=space.digit_order), policy)


def test_a_kill_right_after_a_checkpoint_loses_none_of_the_tables_rows(sft_run, tmp_path, ray_local, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", ["reward.steps=10", "reward.eval_every=10", "reward.checkpoint_every=10"])
    reward.main(cfg, sft_run, tracking_uri=uri)
    checkpoint = rlhf._checkpoint

    class Killed(Exception):
        pass

    def killed_after_it(*args, **kwargs):  # the process dies with the checkpoint on disk, before what follows it
        checkpoint(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(rlhf, "_checkpoint", killed_after_it)
    with pytest.raises(Killed):
        rlhf.main(cfg, sft_run, tracking_uri=uri)
    monkeypatch.setattr(rlhf, "_checkpoint", checkpoint)
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)  # resumes after the first checkpoint
    client = mlflow.MlflowClient(tracking_uri=uri)
    every = cfg.rl.checkpoint_every
    for folder in ("rm_misordered", "rollouts", "kl_sources"):
        assert [f.path for f in client.list_artifacts(final["run_id"], folder)] == [
            f"{folder}/iteration-{i:05d}.json" for i in range(every, cfg.rl.iterations + 1, every)
        ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    shown = json.loads(CliRunner().invoke(app, ["rollouts", str(sft_run), "--json"]).stdout)
    assert shown["iterations"] == list(range(1, cfg.rl.iterations + 1))  # none lost to the kill, none doubled
    assert shown["rows"] == cfg.rl.iterations * rl_metrics.TABLE_GROUPS * cfg.rl.group_size


@pytest.mark.parametrize("drop", [False, True])
def test_zero_advantage_groups_are_counted_and_dropped_when_asked(sft_run, tmp_path, ray_local, drop):
    from algos.advantages import per_token

    def first_prompt_silent(rewards, group, action_mask):  # group 0 gets no advantage, the others +-1
        signs = torch.where(torch.arange(len(group)) % 2 == 0, 1.0, -1.0)
        return per_token(torch.where(group == 0, 0.0, signs), action_mask)

    cfg = load_config("tiny", [*GOLD, "rl.iterations=2", f"rl.drop_zero_advantage_groups={str(drop).lower()}"])
    variant = Variant(name="first-prompt-silent", advantages=first_prompt_silent)
    final = rlhf.main(cfg, sft_run, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", variant=variant)
    total = cfg.rl.prompts_per_iteration * cfg.rl.group_size
    assert final["rl/zero_advantage_groups"] == pytest.approx(1 / cfg.rl.prompts_per_iteration)
    assert final["rl/trained_responses"] == (total - cfg.rl.group_size if drop else total)
    assert final["rl/policy_version"] == 2


@pytest.mark.parametrize(("rounds", "sampled", "signal"), [(2, 3, 6), (5, 4, 8)])
def test_dynamic_sampling_asks_more_prompts_until_enough_groups_carry_signal(
    sft_run, tmp_path, ray_local, monkeypatch, rounds, sampled, signal
):
    from pipelines import dynamic_sampling

    def every_fourth_group_split(actors, rollouts, asked, space):  # groups 0 and 4 of each round's 8: 1, 0, 0, 0
        time.sleep(0.05)  # as a scorer takes time
        firsts = torch.ones(rollouts.size, dtype=torch.bool)
        firsts[1:] = rollouts.group[1:] != rollouts.group[:-1]
        return (firsts & (rollouts.group % 4 == 0)).float()

    monkeypatch.setattr(dynamic_sampling, "rewards", every_fourth_group_split)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        "tiny", [*GOLD, "rl.iterations=2", "rl.checkpoint_every=1", f"rl.dynamic_sampling_rounds={rounds}"]
    )
    straight_dir = tmp_path / "straight"
    for stage in ("pretrain", "sft"):
        shutil.copytree(sft_run / stage, straight_dir / stage)
    rlhf.main(cfg, sft_run, tracking_uri=uri, stop_at=1)  # stopped after the first iteration's rounds
    final = rlhf.main(cfg, sft_run, tracking_uri=uri)
    straight = rlhf.main(cfg, straight_dir, tracking_uri=uri)
    a, _ = weights(sft_run / "rlhf" / "checkpoint.pt")
    b, _ = weights(straight_dir / "rlhf" / "checkpoint.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # a resume asks the same further prompts
    assert final["reward/gold"] == straight["reward/gold"] and final["rl/kl"] == straight["rl/kl"]
    # two groups with signal a round: 3 rounds find 6 of the 8 wanted (the rounds run out), 4 rounds find all 8
    assert (final["rl/sample_rounds"], final["rl/signal_groups"]) == (sampled, signal)
    assert final["rl/trained_responses"] == signal * cfg.rl.group_size
    assert final["rl/zero_advantage_groups"] == pytest.approx(0.75)  # of every group sampled
    assert final["reward/proxy"] == pytest.approx(2 / (cfg.rl.prompts_per_iteration * cfg.rl.group_size))
    assert final["time/score"] >= 0.05 * sampled and final["time/sample"] > 0  # scoring the rounds is scoring's time
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # `tokenmdp rollouts` says what the iteration shown drew
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))
    shown = json.loads(CliRunner().invoke(app, ["rollouts", str(sft_run), "--json"]).stdout)
    assert (shown["iteration"], shown["sample_rounds"], shown["signal_groups"]) == (2, sampled, signal)


def test_dynamic_sampling_without_a_group_baseline_is_a_config_error():
    from conf.load import ConfigError

    with pytest.raises(ConfigError, match="only a group baseline gives"):
        load_config("tiny", ["rl.dynamic_sampling_rounds=2", "rl.advantage=gae"])


def test_the_rare_action_rate_counts_actions_only():
    from models.rollout import Rollouts

    space = ActionSpace()
    q, one, eor, pad = space.id("?"), space.id("1"), space.eor_id, space.pad_id
    # two rows: the prompt ends with "?" (not an action); the actions are "? 1 <eor>" and "1 <eor> <pad>"
    tokens = torch.tensor([[one, q, q, one, eor], [one, q, one, eor, pad]])
    action_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 0]])
    rollouts = Rollouts(tokens, (tokens != pad).long(), action_mask, torch.zeros(2, 5), torch.tensor([0, 0]),
                        torch.tensor([True, True]), 0, 2)  # fmt: skip
    assert rl_metrics.rare_action_rate(rollouts, torch.tensor([q])) == pytest.approx(1 / 5)  # one "?" of five actions
    assert rl_metrics.rare_action_rate(rollouts, torch.tensor([pad])) == 0.0  # padding is not an action


def test_a_run_stopped_by_its_watch_stays_stopped_until_told_to_train_on(sft_run, tmp_path, monkeypatch, capsys):
    from algos.overoptimisation import Turn
    from pipelines.status import run_status

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config("tiny", [*GOLD, "rl.watch_stop=true", "rl.checkpoint_every=3"])
    (sft_run / "config.json").write_text(json.dumps(cfg.model_dump()))  # as `tokenmdp run` writes it
    watching = rlhf.resumed_watch

    def fires_at_iteration_2(*args):
        """The run's own watch, told to warn at iteration 2 (a tiny policy's gold reward is too small to fall)."""
        watch = watching(*args)
        observe = watch.observe

        def observed(iteration: int, gold: float, proxy: float):
            observe(iteration, gold, proxy)
            if iteration == 2 and not watch.warned:
                watch.warned = True
                return Turn(peak=0, gold_at_peak=0.5, gold_now=0.3, proxy_rise=0.2)
            return None

        watch.observe = observed
        return watch

    monkeypatch.setattr(rlhf, "resumed_watch", fires_at_iteration_2)
    stopped = rlhf.main(cfg, sft_run, tracking_uri=uri)
    assert "RLHF stops here (rl.watch_stop)" in capsys.readouterr().err
    _, state = weights(sft_run / "rlhf" / "checkpoint.pt")
    assert (state["iteration"], state["policy_version"]) == (2, 2)  # checkpointed where it stopped, not at 3
    assert json.loads((sft_run / "rlhf" / "overoptimised.json").read_text())["stopped"] is True
    client = mlflow.MlflowClient(tracking_uri=uri)
    judged = client.get_metric_history(stopped["run_id"], "eval/gold_pass_rate")
    assert sorted(m.step for m in judged) == [0, 2]  # the policy it stopped on is judged at its iteration
    assert stopped["eval/gold_pass_rate"] == next(m.value for m in judged if m.step == 2)
    status = run_status(sft_run)
    assert status.stages[-1].state == "stopped" and status.resumes_at is None
    said = " ".join(CliRunner().invoke(app, ["status", str(sft_run)]).output.split())
    assert "RLHF stopped there (rl.watch_stop)" in said and "every stage done" in said
    stages = json.loads(CliRunner().invoke(app, ["status", str(sft_run), "--json"]).stdout)["stages"]
    assert (stages["rlhf"]["state"], stages["rlhf"]["done"], stages["rlhf"]["total"]) == ("stopped", 2, 4)
    assert stages["reward"]["state"] == "skipped"  # the grader rewards: `tokenmdp run` trains no RM

    monkeypatch.setattr(rlhf, "resumed_watch", watching)
    again = rlhf.main(cfg, sft_run, tracking_uri=uri)  # run again: it stays stopped, nothing trains
    assert "stopped at iteration 2 of 4 by the over-optimisation watch" in capsys.readouterr().err
    assert weights(sft_run / "rlhf" / "checkpoint.pt")[1]["iteration"] == 2 and again["run_id"] == stopped["run_id"]
    on = load_config("tiny", [*GOLD, "rl.checkpoint_every=3"])  # rl.watch_stop off: train on to the end
    (sft_run / "config.json").write_text(json.dumps(on.model_dump()))
    rlhf.main(on, sft_run, tracking_uri=uri)
    assert weights(sft_run / "rlhf" / "checkpoint.pt")[1]["iteration"] == on.rl.iterations
    assert run_status(sft_run).stages[-1].state == "done"
    seen = json.loads((sft_run / "rlhf" / "overoptimised.json").read_text())
    assert (seen["iteration"], seen["stopped"]) == (2, False)  # the warning kept, the stop no longer the end
    tag = client.get_run(stopped["run_id"]).data.tags["tokenmdp.overoptimised"]
    assert json.loads(tag) == seen
