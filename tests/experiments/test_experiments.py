"""Each experiment end to end on tiny: its arms run, differ only in the named setting, and leave a table and a plot."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest

from conf.load import load_config
from experiments import registry
from experiments.runner import run
from pipelines.run_config import config_differences

pytestmark = pytest.mark.slow

FAST = ["rl.iterations=3", "rl.eval_every=3", "rl.checkpoint_every=3", "evaluate.questions=16"]
PNG = b"\x89PNG"


@pytest.fixture
def out(tiny_sft_run, tmp_path):
    """An experiment directory whose shared base already holds the session's tiny pretrain and SFT."""
    exp_dir = tmp_path / "exp"
    for stage in ("pretrain", "sft"):
        shutil.copytree(tiny_sft_run / stage, exp_dir / "base" / stage, ignore=shutil.ignore_patterns("mlflow_run_id"))
    return exp_dir


def run_experiment(name, out, tmp_path, overrides=()):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = registry()[name]
    rows = run(exp, load_config("tiny", [*FAST, *overrides]), out, tracking_uri=uri)
    return exp, rows, mlflow.MlflowClient(tracking_uri=uri)


def check_outputs(exp, out, rows, client):
    """One row per arm, the table, the plot, nested MLflow runs, and arms that differ only where named."""
    assert [r["arm"] for r in rows] == [a.name for a in exp.arms]
    assert len((out / "table.md").read_text().splitlines()) == len(rows) + 2
    assert json.loads((out / "results.json").read_text())["rows"] == json.loads(json.dumps(rows))
    plots = list(out.glob("*.png"))
    assert len(plots) == 1 and plots[0].read_bytes()[:4] == PNG
    resolved = {a.name: json.loads((out / a.name / "config.json").read_text()) for a in exp.arms}
    first = next(iter(resolved.values()))
    differing = set().union(*(config_differences(first, r) for r in resolved.values()))
    allowed = {f"config.{field}" for field in exp.changes} | {"variant"}
    assert differing and differing <= allowed, differing
    parent = (out / "mlflow_run_id").read_text().strip()
    arms = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in arms) == sorted(f"arm:{a.name}" for a in exp.arms)
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"table.md", "results.json", plots[0].name} <= artifacts


def test_staleness_arms_lag_by_their_setting_and_strict_stays_on_policy(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("staleness", out, tmp_path)
    check_outputs(exp, out, rows, client)
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["staleness-0"]["mean staleness"] == 0
    # 3 iterations with samplers synced every 3 (or 9) updates: staleness 0, 1, 2
    assert by_arm["staleness-2"]["mean staleness"] == 1 and by_arm["staleness-8"]["mean staleness"] == 1
    assert all(r["refused stale"] == 0 for r in rows)
    # on-policy, the sampler's log-probs are the learner's to float rounding; lagging samplers drew from older weights
    assert by_arm["staleness-0"]["largest log-prob gap"] < 1e-4 < by_arm["staleness-2"]["largest log-prob gap"]


def test_sampler_precision_arms_show_bfloat16s_gap_and_the_recomputed_ratio(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("sampler-precision", out, tmp_path, ["rl.reward_source=gold"])
    check_outputs(exp, out, rows, client)
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["float32"]["largest log-prob gap"] < 1e-4  # the learner's own numbers
    assert (
        by_arm["bfloat16"]["largest log-prob gap"] > 1e-3
        and by_arm["bfloat16-recomputed"]["largest log-prob gap"] > 1e-3
    )
    assert all(r["sample seconds"] > 0 and 0 <= r["clipped (mean)"] <= 1 for r in rows)


def test_zero_advantage_arms_keep_drop_or_refill_the_silent_groups(out, tmp_path, ray_local, capsys):
    exp, rows, client = run_experiment("zero-advantage", out, tmp_path, ["rl.reward_source=gold"])
    check_outputs(exp, out, rows, client)
    assert (out / "table.md").read_text() in capsys.readouterr().out  # a log gets the table whole, no cell cut
    by_arm = {r["arm"]: r for r in rows}
    rl = load_config("tiny", FAST).rl
    batch = rl.prompts_per_iteration * rl.group_size
    assert by_arm["keep"]["responses trained"] == batch and by_arm["keep"]["sampling rounds"] == 1.0
    assert all(-1 <= r["gain over SFT"] <= 1 and r["± paired"] >= 0 for r in rows)  # against the arm's SFT policy
    questions = load_config("tiny", FAST).evaluate.questions
    for r in rows:  # the gain is the questions fixed less those broken, over the questions asked
        fixed, broken = (int(n) for n in r["fixed / broken"].split(" / "))
        assert r["gain over SFT"] == pytest.approx((fixed - broken) / questions)

    def per_iteration(arm, *keys):
        run_id = (out / arm / "rlhf" / "mlflow_run_id").read_text().strip()
        return zip(*([m.value for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
                     for k in keys), strict=True)  # fmt: skip

    for silent, trained in per_iteration("drop", "rl/zero_advantage_groups", "rl/trained_responses"):
        assert trained == (batch if silent == 1 else pytest.approx(batch * (1 - silent)))  # all silent: all kept
    for rounds, signal, trained in per_iteration("refill", "rl/sample_rounds", "rl/signal_groups",
                                                 "rl/trained_responses"):  # fmt: skip
        assert 1 <= rounds <= 4 and (signal == rl.prompts_per_iteration or rounds == 4)  # full, or out of rounds
        assert trained == (signal * rl.group_size if signal else batch)


def test_contrastive_arm_runs_its_own_learner_and_labels(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("contrastive", out, tmp_path, ["rl.reward_source=gold"])
    check_outputs(exp, out, rows, client)
    run_ids = {a.name: (out / a.name / "rlhf" / "mlflow_run_id").read_text().strip() for a in exp.arms}
    variants = {name: client.get_run(rid).data.params["rl.variant"] for name, rid in run_ids.items()}
    assert variants == {"policy-gradient": "library", "positive-negative-sft": "positive-negative-sft"}
    # the contrastive learner logs no clip fraction: it has no ratio to clip
    assert "rl/clip_fraction" in client.get_run(run_ids["policy-gradient"]).data.metrics
    assert "rl/clip_fraction" not in client.get_run(run_ids["positive-negative-sft"]).data.metrics


def test_overoptimisation_reports_the_gold_peak_per_arm(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("overoptimisation", out, tmp_path, ["rl.reward_source=rm", "reward.steps=10"])
    check_outputs(exp, out, rows, client)
    assert all(1 <= r["iteration of gold peak"] <= 3 for r in rows)
    for r in rows:  # the RM's agreement over the arm's first and last quarter, pooled by hand from its history
        run_id = (out / r["arm"] / "rlhf" / "mlflow_run_id").read_text().strip()
        pairs, rates = ([m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
                        for key in ("reward/rm_pairs", "reward/rm_agreement"))  # fmt: skip
        quarter = max(1, len(pairs) // 4)
        for name, part in (("first", slice(None, quarter)), ("last", slice(-quarter, None))):
            n = sum(pairs[part])
            agreed = sum(rate * k for rate, k in zip(rates[part], pairs[part], strict=True) if k)
            assert r[f"RM agrees, {name} quarter"] == (pytest.approx(agreed / n) if n else None), name


def test_rm_pairs_trains_one_reward_model_per_arm_and_rl_with_each(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("rm-pairs", out, tmp_path, ["reward.steps=10", "reward.eval_every=10"])
    check_outputs(exp, out, rows, client)
    for row in rows:
        assert 0 <= row["RM gold accuracy (within prompt)"] <= 1
    same, cross = (out / arm / "reward" / "checkpoint.pt" for arm in ("same-prompt", "cross-prompt"))
    assert same.read_bytes() != cross.read_bytes()


def test_action_space_arm_is_refused_by_the_audit_and_the_experiment_bypasses_it(tmp_path, ray_local):
    from pipelines import pretrain, sft
    from world.audit import ActionSpaceAuditError

    fast = ["sft.steps=100", "sft.eval_every=100", "sft.checkpoint_every=100", "rl.reward_source=gold"]
    exp, rows, client = run_experiment("action-space", tmp_path / "exp", tmp_path, fast)
    check_outputs(exp, tmp_path / "exp", rows, client)
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["query-in-pretraining"]["SFT examples the audit refuses"] == 0
    assert by_arm["query-only-in-sft"]["SFT examples the audit refuses"] == 1
    # the library itself still refuses that SFT: the bypass lives in the experiment only
    cfg = load_config("tiny", ["world.query_rate=0", *fast])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pretrain.main(cfg, tmp_path / "plain", tracking_uri=uri)
    with pytest.raises(ActionSpaceAuditError, match="'\\?'"):
        sft.main(cfg, tmp_path / "plain", tracking_uri=uri)


def test_kl_estimator_arms_charge_the_sampled_the_clamped_or_the_exact_kl(out, tmp_path, ray_local):
    exp, rows, client = run_experiment("kl-estimator", out, tmp_path, ["rl.reward_source=gold", "rl.lr=1e-3"])
    check_outputs(exp, out, rows, client)
    by_arm = {r["arm"]: r for r in rows}
    full = by_arm["full"]  # what it charges is the exact KL
    assert full["charged / exact (median)"] == pytest.approx(1.0, rel=1e-4)
    assert full["iterations charged > 2x exact"] == 0 and full["KL"] == pytest.approx(full["exact KL"], rel=1e-4)
    for r in rows:
        assert r["exact KL"] > 0 and r["largest response KL"] > 0 and 0 < r["share of the 4 largest"] <= 1


def test_seeds_repeat_rlhf_at_the_next_seeds_and_tabulate_the_spread(out, tmp_path, ray_local, capsys):
    from typer.testing import CliRunner

    from cli.main import app
    from pipelines.rl_metrics import ROLLOUTS_DIR
    from pipelines.rollouts import logged_rlhf, read_table
    from pipelines.runs import run_lines
    from pipelines.status import NotARun, run_status

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = registry()["seeds"]
    rows = run(exp, load_config("tiny", FAST), out, tracking_uri=uri, seeds=2)
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert [(r["arm"], r["RL seed"]) for r in rows] == [("rlhf", 0), ("rlhf-seed1", 1)]
    configs = {arm: json.loads((out / arm / "config.json").read_text())["config"] for arm in ("rlhf", "rlhf-seed1")}
    assert config_differences(configs["rlhf"], configs["rlhf-seed1"]) == ["rl.seed"]
    assert configs["rlhf"]["rl"]["seed"] is None and configs["rlhf-seed1"]["rl"]["seed"] == 1

    def first_prompts(arm):  # what the iteration asked, from the run's own rollouts table (`tokenmdp rollouts`)
        table = read_table(logged_rlhf(out / arm, uri), ROLLOUTS_DIR)
        return sorted(r["prompt"] for r in table if r["iteration"] == min(t["iteration"] for t in table))

    assert first_prompts("rlhf") != first_prompts("rlhf-seed1")  # the seed picked other prompts
    (spread,) = json.loads((out / "results.json").read_text())["across_seeds"]
    gold = [r["gold pass (held-out)"] for r in rows]
    assert spread["arm"] == "rlhf" and spread["seeds"] == "0, 1"
    assert spread["gold pass (mean)"] == pytest.approx(sum(gold) / 2)
    assert spread["± sd over seeds"] == pytest.approx(abs(gold[0] - gold[1]) / 2**0.5)
    assert (spread["lowest"], spread["highest"]) == (min(gold), max(gold))
    assert spread["vs first arm"] is None and "| — | — |" in (out / "seeds.md").read_text()  # not 0 +- 0
    assert (out / "seeds.md").read_text() in capsys.readouterr().out
    parent = (out / "mlflow_run_id").read_text().strip()
    assert {"seeds.md", "seeds.png", "table.md"} <= {a.path for a in client.list_artifacts(parent)}
    arms = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_name for r in arms) == ["arm:rlhf", "arm:rlhf-seed1"]
    # an arm is a run directory to the commands that read runs; the experiment's own directory is not
    status = run_status(out / "rlhf-seed1")
    assert status.arm and status.resumes_at is None
    with pytest.raises(NotARun, match="holds an experiment, not a run"):
        run_status(out)
    said = CliRunner().invoke(app, ["status", str(out / "rlhf-seed1")], terminal_width=300)
    said_line = f"an experiment's arm, registered by `tokenmdp register {out / 'rlhf-seed1'}`"
    assert said.exit_code == 0 and "".join(said_line.split()) in "".join(said.output.split())  # rich wraps it
    lines = {Path(line.run_dir).name: line for line in run_lines(out)}
    assert set(lines) == {"rlhf", "rlhf-seed1"}  # and not the experiment's record
    for row in rows:  # the scores from the experiment's table: an arm has no summary.json
        line = lines[row["arm"]]
        assert (line.rlhf, line.gain) == (row["gold pass (held-out)"], row["gain over SFT"])
        assert line.sft == pytest.approx(row["gold pass (held-out)"] - row["gain over SFT"])
    compared = CliRunner().invoke(app, ["compare", str(out / "rlhf"), str(out / "rlhf-seed1")], terminal_width=300)
    assert compared.exit_code == 0, compared.output
    assert json.loads(compared.stdout.strip().splitlines()[-1])["seed_only"] is True
    assert "read the difference as the seed's noise" in compared.stdout


def test_a_sweep_runs_the_arms_given_on_the_command_line(out, tmp_path, ray_local):
    from experiments.sweep import sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = sweep(["base", "hot rl.temperature=1.5"])
    rows = run(exp, load_config("tiny", FAST), out, tracking_uri=uri)
    check_outputs(exp, out, rows, mlflow.MlflowClient(tracking_uri=uri))
    assert [r["settings"] for r in rows] == ["(as configured)", "rl.temperature=1.5"]
    hot = json.loads((out / "hot" / "config.json").read_text())["config"]["rl"]
    assert hot["temperature"] == 1.5
