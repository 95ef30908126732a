"""`tokenmdp run tiny` end to end: stages, summary.json, MLflow runs, and a second run that resumes."""

import json

import mlflow
import pytest
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config

pytestmark = pytest.mark.slow


def test_run_tiny_writes_summary_and_reruns_without_training(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's local artifacts land here
    result = CliRunner().invoke(app, ["run", "tiny", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    sft = summary["stages"]["sft"]
    assert set(sft) >= {"gold_pass_rate", "format_rate", "rate_114514", "run_id"}
    assert all(0 <= sft[k] <= 1 for k in ("gold_pass_rate", "format_rate", "rate_114514"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["name"] == "tiny"
    assert 0 <= summary["stages"]["reward"]["gold_accuracy"] <= 1
    rl = summary["stages"]["rlhf"]
    assert all(0 <= rl[k] <= 1 for k in ("gold_pass_rate", "format_rate", "rate_114514"))
    assert rl["max_staleness"] == 0 and rl["kl"] is not None and rl["kl_exact"] >= 0
    # per-iteration diagnostics over the whole run, from its MLflow history
    assert 0 <= rl["zero_advantage_groups_mean"] <= 1 and 0 < rl["sync_buffer_share_mean"] < 1
    assert 0 <= rl["rare_action_rate_max"] <= 1
    assert set(summary["wall_seconds"]) == {"pretrain", "sft", "reward", "rlhf"}
    # the final policy is in the registry, loadable as pyfunc and by the server's resolver
    assert summary["model_uri"] == "models:/tokenmdp-tiny/1"
    from pipelines.policy_source import resolve_model

    checkpoint, name, version = resolve_model(summary["model_uri"], tracking_uri=uri)
    assert checkpoint.is_file() and (name, version) == ("tokenmdp-tiny", "1")
    import torch

    from models.checkpoint import load_checkpoint

    policy, _, state = load_checkpoint(checkpoint)  # the policy alone: no optimizer, buffer or RNG to fetch
    trained, _, _ = load_checkpoint(tmp_path / "run" / "rlhf" / "checkpoint.pt")
    assert set(state) == {"config", "corpus_stats", "iteration", "policy_version", "last_metrics"}
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in trained.state_dict().items())
    mlflow.set_tracking_uri(uri)
    predictions = mlflow.pyfunc.load_model(summary["model_uri"]).predict([[1, 2, 4, 8, 16], [3, 6, 9]])
    assert len(predictions) == 2
    client = mlflow.MlflowClient(tracking_uri=uri)
    # one parent run with a nested run per stage, the report's plots and summary.json as artifacts
    parent = client.get_run(client.get_run(sft["run_id"]).data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "pipeline"
    for stage in ("pretrain", "reward", "rlhf"):
        assert client.get_run(summary["stages"][stage]["run_id"]).data.tags["mlflow.parentRunId"] == parent.info.run_id
    # the summary's RL diagnostics sum up every iteration the RLHF run logged
    history = {
        key: [m.value for m in client.get_metric_history(rl["run_id"], key)]
        for key in ("rl/zero_advantage_groups", "time/sync_buffer_share", "rl/rare_action_rate", "rl/sampler_gap_max")
    }
    assert len(history["rl/zero_advantage_groups"]) == load_config("tiny").rl.iterations
    zero, share, rare, gap = history.values()
    assert rl["sampler_gap_max"] == max(gap) < 1e-4  # on-policy: the sampler's numbers are the learner's
    assert rl["zero_advantage_groups_mean"] == pytest.approx(sum(zero) / len(zero))
    assert rl["sync_buffer_share_mean"] == pytest.approx(sum(share) / len(share))
    assert rl["rare_action_rate_max"] == max(rare)
    # where the training gold reward (trailing mean, as the over-optimisation watch reads it) peaked
    gold = [m.value for m in sorted(client.get_metric_history(rl["run_id"], "reward/gold"), key=lambda m: m.step)]
    window = load_config("tiny").rl.watch_window
    means = [sum(gold[i - window + 1 : i + 1]) / window for i in range(window - 1, len(gold))]  # full windows
    means = means or [sum(gold[: i + 1]) / (i + 1) for i in range(len(gold))]  # a run shorter than the window
    assert rl["gold_peak_iteration"] == len(gold) - len(means) + 1 + means.index(max(means))
    # the RM's agreement with gold on the policy's answers, pooled over the first and the last quarter
    pairs, rates = ([m.value for m in sorted(client.get_metric_history(rl["run_id"], key), key=lambda m: m.step)]
                    for key in ("reward/rm_pairs", "reward/rm_agreement"))  # fmt: skip
    quarter = max(1, len(pairs) // 4)
    for key, part in (("rm_agreement_start", slice(None, quarter)), ("rm_agreement_end", slice(-quarter, None))):
        n, agreed = pairs[part], [r * k for r, k in zip(rates[part], pairs[part], strict=True) if k]
        assert rl[key] == (pytest.approx(sum(agreed) / sum(n)) if sum(n) else None), key
    warned = client.get_run(rl["run_id"]).data.tags.get("tokenmdp.overoptimised")
    assert rl["overoptimised_at"] == (json.loads(warned)["iteration"] if warned else None)
    assert rl["stopped_at"] is None  # rl.watch_stop is off
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)} | {
        a.path for a in client.list_artifacts(parent.info.run_id, "report")
    }
    assert {"summary.json", "report/rlhf_curves.png", "report/per_template.png"} <= artifacts
    steps_before = len(client.get_metric_history(sft["run_id"], "loss/lm"))
    again = CliRunner().invoke(app, ["run", "tiny", "--out", str(tmp_path / "run")])
    assert again.exit_code == 0, again.output
    rerun_stages = json.loads((tmp_path / "run" / "summary.json").read_text())["stages"]
    rerun = rerun_stages["sft"]
    assert rerun["run_id"] == sft["run_id"]  # same MLflow run, resumed
    assert rerun["gold_pass_rate"] == sft["gold_pass_rate"]  # a finished stage still reports its metrics
    assert rerun_stages["pretrain"]["val_loss"] == summary["stages"]["pretrain"]["val_loss"]
    assert rerun_stages["rlhf"] == rl  # a finished RLHF stage reports without training again
    rerun_summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert rerun_summary["model_uri"] == summary["model_uri"]
    # the training's seconds stay in the summary; the re-run's report only adds to them
    assert all(rerun_summary["wall_seconds"][k] >= v for k, v in summary["wall_seconds"].items())
    assert len(client.get_metric_history(sft["run_id"], "eval/gold_pass_rate")) == 2  # steps 6 and 12, once each
    judged = CliRunner().invoke(app, ["evaluate", "tiny", "--out", str(tmp_path / "run"), "--samples", "4"])
    assert judged.exit_code == 0, judged.output
    metrics = json.loads(judged.stdout.strip().splitlines()[-1])
    assert metrics["eval/gold_pass_rate"] == sft["gold_pass_rate"]
    assert 0 <= metrics["eval/sampled_pass_at_1"] <= 1
    assert 0 <= metrics["eval/pass_at_1"] <= metrics["eval/pass_at_2"] <= metrics["eval/pass_at_4"] <= 1
    assert 0 <= metrics["eval/maj_at_4"] <= metrics["eval/pass_at_4"]
    missed = metrics["eval/greedy_missed_sampled_right_at_4"] + metrics["eval/greedy_missed_never_at_4"]
    assert missed == pytest.approx(1 - metrics["eval/gold_pass_rate"])  # every question greedy misses, once
    assert len(client.get_metric_history(sft["run_id"], "loss/lm")) == steps_before  # no step trained twice
    # the registered policy, fetched from the registry, on the questions held out from its own training (tiny's,
    # read from its checkpoint; demo's would be 500 others)
    judged = CliRunner().invoke(app, ["evaluate", "--checkpoint", summary["model_uri"]])
    assert judged.exit_code == 0, judged.output
    registered = json.loads(judged.stdout.strip().splitlines()[-1])
    assert registered["eval/gold_pass_rate"] == rl["gold_pass_rate"]
    assert registered["eval/gold_pass_rate_stderr"] == rl["gold_pass_rate_stderr"]
    # train RLHF on: the same MLflow run carries on, the new final policy is the registry's next version
    iterations = load_config("tiny").rl.iterations
    longer = CliRunner().invoke(
        app, ["run", "tiny", "--out", str(tmp_path / "run"), "--set", f"rl.iterations={iterations + 2}"]
    )
    assert longer.exit_code == 0, longer.output
    extended = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert extended["model_uri"] == "models:/tokenmdp-tiny/2"
    assert extended["stages"]["rlhf"]["run_id"] == rl["run_id"]
    assert len(client.get_metric_history(rl["run_id"], "rl/zero_advantage_groups")) == iterations + 2
    assert len(client.get_metric_history(sft["run_id"], "loss/lm")) == steps_before  # SFT only reported
    # each version says where it came from: the registry tells the run's 4 and 6 iterations apart
    origin = str((tmp_path / "run" / "rlhf").resolve())
    assert [client.get_model_version("tokenmdp-tiny", v).tags for v in ("1", "2")] == [
        {"tokenmdp.registered_from": origin, "tokenmdp.rl_iteration": str(n)} for n in (iterations, iterations + 2)
    ]
    # the two versions, judged question by question and examined without the run directory
    compared = CliRunner().invoke(
        app, ["compare", "models:/tokenmdp-tiny/1", "models:/tokenmdp-tiny/2"], terminal_width=400
    )
    assert compared.exit_code == 0, compared.output
    judged = json.loads(compared.stdout.strip().splitlines()[-1])
    assert judged["settings"] == {"rl.iterations": [iterations, iterations + 2]}  # what each was trained under
    assert judged["pass_rate_a"] == rl["gold_pass_rate"]
    assert judged["pass_rate_b"] == extended["stages"]["rlhf"]["gold_pass_rate"]
    exam = tmp_path / "exam.txt"
    exam.write_text("1 2 4 8 16\n3 4 5 6 7\n-3 -1 1 3 5 -> 7\n")
    answers = []
    for source in ("models:/tokenmdp-tiny/2", str(tmp_path / "run")):
        examined = CliRunner().invoke(app, ["exam", source, str(exam), "--json"])
        assert examined.exit_code == 0, examined.output
        answers.append(json.loads(examined.stdout))
    registered, in_run = answers
    assert registered["stages"] == ["models:/tokenmdp-tiny/2"] and in_run["stages"] == ["sft", "rlhf"]
    assert [q["answers"]["models:/tokenmdp-tiny/2"] for q in registered["questions"]] == [
        q["answers"]["rlhf"] for q in in_run["questions"]
    ]
    missing = CliRunner().invoke(app, ["compare", "models:/tokenmdp-tiny/1", "models:/tokenmdp-tiny/9"])
    assert missing.exit_code == 2 and "versions 1, 2" in " ".join(missing.output.replace("│", " ").split())


def test_run_rejects_a_bad_override(tmp_path):
    result = CliRunner().invoke(app, ["run", "tiny", "--set", "sft.lr=-1", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "lr" in result.output


def test_a_run_directory_refuses_a_different_config(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "sft").mkdir(parents=True)  # SFT trained here, under sft.lr=1.0

    (run_dir / "config.json").write_text(json.dumps(load_config("tiny", ["sft.lr=1.0"]).model_dump()))
    result = CliRunner().invoke(app, ["run", "tiny", "--out", str(run_dir)], terminal_width=400)
    assert result.exit_code != 0
    said = " ".join(result.output.replace("│", " ").split())
    assert "holds sft trained under another config (differs in sft.lr)" in said and "--out" in said


def test_a_stage_not_yet_run_may_take_new_settings_and_a_stage_command_is_guarded_too(tmp_path):
    from pipelines.run_config import ConfigChanged, guard_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "pretrain").mkdir(parents=True)
    guard_run_dir(run_dir, load_config("tiny").model_dump())
    changed = load_config("tiny", ["sft.lr=1e-4", "rl.lr=1e-3", "rl.threads=2"]).model_dump()
    guard_run_dir(run_dir, changed)  # SFT and RLHF have not run: their settings may change
    assert json.loads((run_dir / "config.json").read_text()) == changed
    refused = r"holds pretrain trained under another config \(differs in model\.n_layer\)"
    with pytest.raises(ConfigChanged, match=refused):
        guard_run_dir(run_dir, load_config("tiny", ["model.n_layer=3", "rl.lr=1"]).model_dump())
    (run_dir / "rlhf").mkdir()
    stage = ["rlhf", "tiny", "--out", str(run_dir), "--set", "sft.lr=1e-4", "--set", "rl.lr=1e-2"]
    result = CliRunner().invoke(app, stage, terminal_width=400)
    assert result.exit_code != 0  # RLHF is in the directory: its settings are settled
    said = " ".join(result.output.replace("│", " ").split())
    assert "holds rlhf trained under another config (differs in rl.lr)" in said
    assert json.loads((run_dir / "config.json").read_text()) == changed  # the refused config is not saved


def test_a_stage_command_into_an_experiment_or_its_arm_is_refused_and_writes_nothing(tmp_path):
    from pipelines.run_config import arm_record

    exp_dir, config = tmp_path / "exp", load_config("tiny").model_dump()
    arm = exp_dir / "k3"
    (arm / "rlhf").mkdir(parents=True)
    record, kept = {"experiment": "kl-estimator", "base": config}, json.dumps(arm_record("k3", config))
    (exp_dir / "config.json").write_text(json.dumps(record))
    (arm / "config.json").write_text(kept)
    said = _refused(["rlhf", "tiny", "--out", str(arm)])
    assert f"is an arm of the experiment in {exp_dir}" in said
    assert f"tokenmdp experiment kl-estimator --out {exp_dir}" in said and f"--from {arm}" in said
    assert (arm / "config.json").read_text() == kept  # before, a run's config.json replaced the arm's record
    said = _refused(["run", "tiny", "--out", str(exp_dir)])
    assert "holds the experiment kl-estimator, not a run" in said
    assert json.loads((exp_dir / "config.json").read_text()) == record


def _refused(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, terminal_width=400)
    assert result.exit_code != 0
    return " ".join(result.output.replace("│", " ").split())


def test_a_run_directory_from_before_a_new_field_resumes_at_its_default(tmp_path):
    from pipelines.run_config import ConfigChanged, guard_config

    saved = load_config("tiny").model_dump()
    del saved["reward"]["label_smoothing"]  # as a run directory made before the field existed
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    guard_config(path, load_config("tiny").model_dump())  # the default is the old behaviour: accepted
    assert json.loads(path.read_text())["reward"]["label_smoothing"] == 0.0
    path.write_text(json.dumps(saved))
    with pytest.raises(ConfigChanged, match=r"differs in reward\.label_smoothing"):
        guard_config(path, load_config("tiny", ["reward.label_smoothing=0.1"]).model_dump())
    arm = {"variant": "plain", "config": saved}  # an experiment arm's record nests the config
    path.write_text(json.dumps(arm))
    guard_config(path, {"variant": "plain", "config": load_config("tiny").model_dump()})


def test_the_reward_curve_reads_preferences_only_as_they_were_collected(tmp_path):
    from pipelines.run_config import ConfigChanged, require_trained_as

    run_dir = tmp_path / "run"
    for stage in ("pretrain", "sft", "preferences", "reward"):
        (run_dir / stage).mkdir(parents=True)
    saved = load_config("tiny").model_dump()
    (run_dir / "config.json").write_text(json.dumps(saved))
    require_trained_as(run_dir, load_config("tiny", ["reward.lr=1e-2"]).model_dump(), through="preferences")
    with pytest.raises(
        ConfigChanged, match=r"holds preferences trained under another config \(differs in reward\.prompts\)"
    ):
        require_trained_as(run_dir, load_config("tiny", ["reward.prompts=7"]).model_dump(), through="preferences")
    assert json.loads((run_dir / "config.json").read_text()) == saved  # it reads, it never rewrites
    result = CliRunner().invoke(
        app, ["reward-curve", "tiny", "--out", str(run_dir), "--set", "reward.prompts=7"], terminal_width=400
    )
    assert result.exit_code != 0 and "reward.prompts" in result.output


def test_rlhf_may_train_on_past_the_iterations_it_has_but_no_stage_may_shrink_or_stretch_its_schedule(tmp_path):
    import torch

    from pipelines.run_config import ConfigChanged, guard_run_dir

    run_dir = tmp_path / "run"
    for stage, state in (("sft", {"step": 12}), ("rlhf", {"iteration": 4})):
        (run_dir / stage).mkdir(parents=True)
        torch.save(state, run_dir / stage / "checkpoint.pt")
    (run_dir / "config.json").write_text(json.dumps(load_config("tiny").model_dump()))  # rl.iterations 4
    for longer in ("rl.iterations=8", "rl.iterations=4"):  # on to 8; then back to where it is
        guard_run_dir(run_dir, load_config("tiny", [longer]).model_dump())
        assert json.loads((run_dir / "config.json").read_text())["rl"]["iterations"] == int(longer.split("=")[1])
    guard_run_dir(run_dir, load_config("tiny", ["rl.snapshot_every=2"]).model_dump())  # kept from the resume on
    with pytest.raises(ConfigChanged, match=r"rl\.iterations may grow, not fall below the 4 rlhf has trained"):
        guard_run_dir(run_dir, load_config("tiny", ["rl.iterations=3"]).model_dump())
    torch.save({"iteration": 2}, run_dir / "rlhf" / "checkpoint.pt")  # killed at 2 of 4: 3 is still ahead of it
    guard_run_dir(run_dir, load_config("tiny", ["rl.iterations=3"]).model_dump())
    with pytest.raises(ConfigChanged, match=r"sft\.steps is the length of sft's learning-rate schedule"):
        guard_run_dir(run_dir, load_config("tiny", ["sft.steps=24", "rl.iterations=3"]).model_dump())
