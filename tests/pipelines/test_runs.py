"""`tokenmdp runs`: every run under a folder, where it stands and what it scored, from the directories alone."""

import json

import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config


def _run(run_dir, cfg, done: dict[str, int], summary: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump()))
    for stage, steps in done.items():
        (run_dir / stage).mkdir()
        torch.save({"iteration" if stage == "rlhf" else "step": steps}, run_dir / stage / "checkpoint.pt")
    if summary is not None:
        (run_dir / "preferences").mkdir()
        (run_dir / "preferences" / "stats.json").write_text(json.dumps({"train/kept_correctness": 10}))
        (run_dir / "summary.json").write_text(json.dumps(summary))
        (run_dir / "model_uri").write_text("models:/tokenmdp-tiny/3\n")


def test_each_run_below_the_folder_with_where_it_stands_and_its_scores(tmp_path):
    cfg = load_config("tiny")
    totals = {"pretrain": cfg.pretrain.steps, "sft": cfg.sft.steps, "reward": cfg.reward.steps,
              "rlhf": cfg.rl.iterations}  # fmt: skip
    stages = {
        "sft": {"gold_pass_rate": 0.5}, "reward": {"gold_accuracy": 0.75},
        "rlhf": {"gold_pass_rate": 0.52, "gain_over_sft": 0.02, "gain_over_sft_stderr": 0.01},
    }  # fmt: skip
    _run(tmp_path / "runs" / "done", cfg, totals, {"stages": stages, "forked_from": {"run_dir": "/x/runs/demo"}})
    watched = {"iteration": 23, "gold_peak_iteration": 17, "gold_at_peak": 0.7, "gold_now": 0.55, "proxy_rise": 0.2}
    (tmp_path / "runs" / "done" / "rlhf" / "overoptimised.json").write_text(json.dumps(watched))  # the watch warned
    _run(tmp_path / "runs" / "experiments" / "tiny" / "arm", cfg, {"pretrain": 4})
    experiment = tmp_path / "runs" / "experiments" / "tiny"
    (experiment / "config.json").write_text(json.dumps({"experiment": "staleness", "base": cfg.model_dump()}))
    said = CliRunner().invoke(app, ["runs", str(tmp_path / "runs"), "--json"])
    assert said.exit_code == 0, said.output
    lines = {line["run_dir"].removeprefix(str(tmp_path / "runs") + "/"): line for line in json.loads(said.stdout)}
    assert set(lines) == {"done", "experiments/tiny/arm"}  # an experiment's own record is not a run
    done, arm = lines["done"], lines["experiments/tiny/arm"]
    assert (done["stands"], done["sft"], done["reward_accuracy"], done["rlhf"]) == ("every stage done", 0.5, 0.75, 0.52)
    assert (done["gain"], done["gain_stderr"], done["model_uri"]) == (0.02, 0.01, "models:/tokenmdp-tiny/3")
    assert done["forked_from"] == "/x/runs/demo" and done["overoptimised_at"] == 23
    assert arm["overoptimised_at"] is None
    assert arm["stands"] == f"pretrain (4 of {cfg.pretrain.steps} steps checkpointed)" and arm["sft"] is None
    table = CliRunner().invoke(app, ["runs", str(tmp_path / "runs")], terminal_width=300)
    assert "+2.0 ± 1.0" in table.stdout and "50.0%" in table.stdout and "52.0%*" in table.stdout
    assert "RLHF over-optimised: the watch warned at iteration 23" in " ".join(table.stdout.split())
    assert CliRunner().invoke(app, ["runs", str(tmp_path / "nowhere")]).exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["runs", str(tmp_path / "empty")])
    assert empty.exit_code == 0 and f"no run directory under {tmp_path / 'empty'}" in empty.output
    assert json.loads(CliRunner().invoke(app, ["runs", str(tmp_path / "empty"), "--json"]).stdout) == []


def test_a_run_its_watch_stopped_is_done_and_says_where(tmp_path):
    cfg = load_config("tiny", ["rl.watch_stop=true"])
    totals = {"pretrain": cfg.pretrain.steps, "sft": cfg.sft.steps, "reward": cfg.reward.steps, "rlhf": 2}
    _run(tmp_path / "runs" / "stopped", cfg, totals, {"stages": {"rlhf": {"gold_pass_rate": 0.4}}})
    watched = {"iteration": 2, "gold_peak_iteration": 1, "gold_at_peak": 0.5, "gold_now": 0.3, "proxy_rise": 0.2}
    record = tmp_path / "runs" / "stopped" / "rlhf" / "overoptimised.json"
    record.write_text(json.dumps(watched | {"stopped": True}))
    line = json.loads(CliRunner().invoke(app, ["runs", str(tmp_path / "runs"), "--json"]).stdout)[0]
    assert (line["stands"], line["overoptimised_at"], line["stopped"]) == ("every stage done", 2, True)
    table = CliRunner().invoke(app, ["runs", str(tmp_path / "runs")], terminal_width=300)
    assert "warned at iteration 2 (its gold reward fell while the RM's rose); RLHF stopped there" in " ".join(
        table.stdout.split()
    )  # fmt: skip
    record.write_text(json.dumps(watched | {"stopped": False}))  # warned, trained on past it: 2 of 4 is not the end
    line = json.loads(CliRunner().invoke(app, ["runs", str(tmp_path / "runs"), "--json"]).stdout)[0]
    assert (line["stands"], line["stopped"]) == ("rlhf (2 of 4 iterations checkpointed)", False)
