"""Forking a run: which stages a changed config may reuse, and `tokenmdp run --from` end to end."""

import json

import mlflow
import pytest
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config
from models.checkpoint import save_checkpoint
from models.gpt import GPT, GPTConfig
from pipelines.run_config import first_reader, reusable_stages
from world.actions import ActionSpace


def test_each_field_is_first_read_by_the_stage_that_trains_on_it():
    assert first_reader("model.d_model") == "pretrain"
    assert first_reader("world.digit_order") == "pretrain"
    assert first_reader("world.bank_size") == "sft"  # the exam bank: SFT is the first to read it
    assert first_reader("sft.lr") == "sft"
    assert first_reader("world.label_noise") == "preferences"
    assert first_reader("reward.prompts") == "preferences"
    assert first_reader("evaluate.max_new_tokens") == "preferences"  # the preference samples' budget
    assert first_reader("reward.views") == "reward"
    assert first_reader("rl.actors.sampler.replicas") == "rlhf"  # the samplers' random streams: the result
    assert first_reader("rl.actors.sampler.num_gpus") is None  # where an actor runs: not the result
    assert first_reader("sft.checkpoint_every") is None  # when a resumable state is written
    assert first_reader("rl.snapshot_every") == "rlhf"  # a fork asking for snapshots trains RLHF to make them
    assert first_reader("rl.sync") is None and first_reader("rl.sync_every") == "rlhf"  # how weights travel; a lag
    assert first_reader("rl.threads") is None and first_reader("sft.threads") is None  # speed, not training
    assert first_reader("rl.watch_drop") is None and first_reader("rl.watch_window") is None  # watched, not trained
    assert first_reader("serve.port") is None and first_reader("evaluate.questions") is None
    assert first_reader("a_field_added_later") == "pretrain"  # unknown: reuse nothing


def test_the_stages_before_the_first_changed_one_are_reusable():
    base = load_config("tiny").model_dump()
    reuse = lambda *overrides: reusable_stages(base, load_config("tiny", list(overrides)).model_dump())  # noqa: E731
    assert reuse() == ("pretrain", "sft", "preferences", "reward", "rlhf")
    assert reuse("rl.advantage=gae") == ("pretrain", "sft", "preferences", "reward")
    assert reuse("rl.actors.sampler.replicas=2") == ("pretrain", "sft", "preferences", "reward")
    assert reuse("rl.snapshot_every=2") == ("pretrain", "sft", "preferences", "reward")  # RLHF makes them
    assert reuse("rl.actors.sampler.num_cpus=0.25", "rl.actors.placement_strategy=SPREAD") == (
        "pretrain", "sft", "preferences", "reward", "rlhf",
    )  # fmt: skip
    assert reuse("reward.views=2") == ("pretrain", "sft", "preferences")
    assert reuse("reward.prompts=7", "rl.lr=1e-3") == ("pretrain", "sft")
    assert reuse("sft.steps=3", "rl.lr=1e-3") == ("pretrain",)
    assert reuse("pretrain.steps=3") == ()
    assert reuse("sft.threads=2", "serve.port=9000") == ("pretrain", "sft", "preferences", "reward", "rlhf")
    everything = ("pretrain", "sft", "preferences", "reward", "rlhf")
    assert reuse("rl.watch_drop=0.2", "rl.watch_window=3") == everything  # the watch only watches...
    assert reuse("rl.watch_stop=true") == everything[:-1]  # ...unless RLHF stops where it warns
    assert reuse("rl.watch_stop=true", "rl.watch_drop=0.2") == everything[:-1]
    stopping = load_config("tiny", ["rl.watch_stop=true"]).model_dump()
    assert reusable_stages(stopping, load_config("tiny", ["rl.watch_stop=true", "rl.watch_window=3"]).model_dump()) == (
        everything[:-1]
    )  # fmt: skip


@pytest.mark.slow
def test_run_from_a_finished_run_trains_only_what_changed_and_leaves_the_source_alone(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    source, forked = tmp_path / "source", tmp_path / "forked"
    assert CliRunner().invoke(app, ["run", "tiny", "--out", str(source)]).exit_code == 0
    client = mlflow.MlflowClient(tracking_uri=uri)
    before = json.loads((source / "summary.json").read_text())["stages"]
    sft_curve = len(client.get_metric_history(before["sft"]["run_id"], "loss/lm"))
    result = CliRunner().invoke(
        app, ["run", "tiny", "--from", str(source), "--out", str(forked), "--set", "rl.lr=1e-3"], terminal_width=400
    )
    assert result.exit_code == 0, result.output
    assert "reusing pretrain, sft, preferences, reward" in result.output
    summary = json.loads((forked / "summary.json").read_text())
    assert summary["forked_from"]["stages"] == ["pretrain", "sft", "preferences", "reward"]
    for stage in ("pretrain", "sft", "reward"):  # the very checkpoints, not retrained
        copied = (forked / stage / "checkpoint.pt").read_bytes()
        assert copied == (source / stage / "checkpoint.pt").read_bytes()
    assert (forked / "rlhf" / "checkpoint.pt").read_bytes() != (source / "rlhf" / "checkpoint.pt").read_bytes()
    after = summary["stages"]
    assert after["sft"]["gold_pass_rate"] == before["sft"]["gold_pass_rate"]
    for stage in ("pretrain", "sft", "reward", "rlhf"):  # runs of its own; the reused ones name their origin
        assert after[stage]["run_id"] != before[stage]["run_id"]
    tags = client.get_run(after["sft"]["run_id"]).data.tags
    assert tags["tokenmdp.forked_from"] == before["sft"]["run_id"]
    assert "tokenmdp.forked_from" not in client.get_run(after["rlhf"]["run_id"]).data.tags  # trained here
    assert len(client.get_metric_history(before["sft"]["run_id"], "loss/lm")) == sft_curve  # source untouched
    assert json.loads((source / "summary.json").read_text())["stages"] == before
    assert summary["wall_seconds"]["sft"] < json.loads((source / "summary.json").read_text())["wall_seconds"]["sft"]
    # compare: the fork's RLHF policy against the source's, question by question on the same exam
    compared = CliRunner().invoke(app, ["compare", str(source), str(forked)], terminal_width=400)
    assert compared.exit_code == 0, compared.output
    judged = json.loads(compared.stdout.strip().splitlines()[-1])
    assert (
        judged["pass_rate_a"] == before["rlhf"]["gold_pass_rate"]
        and judged["pass_rate_b"] == after["rlhf"]["gold_pass_rate"]
    )
    assert judged["fixed"] - judged["broken"] == pytest.approx(judged["gain"] * judged["questions"])
    assert all(type(judged[count]) is int for count in ("questions", "fixed", "broken"))  # counts, not 64.000
    assert judged["settings"] == {"rl.lr": [load_config("tiny").rl.lr, 1e-3]}  # what the comparison is of
    assert "settings: a = " in compared.stdout and "(1 differ)" in compared.stdout
    assert judged["seed_only"] is False and "seed's noise" not in compared.stdout
    same = CliRunner().invoke(app, ["compare", str(source), str(forked), "--stage", "sft"], terminal_width=400)
    assert json.loads(same.stdout.strip().splitlines()[-1])["fixed"] == 0  # the very SFT policy
    assert json.loads(same.stdout.strip().splitlines()[-1])["broken"] == 0


def test_run_from_a_directory_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        app, ["run", "tiny", "--from", str(tmp_path / "empty"), "--out", str(tmp_path / "new")], terminal_width=400
    )
    assert result.exit_code != 0
    said = " ".join(result.output.replace("│", " ").split())  # the message as one line, out of its box
    assert "has no config.json: pass a run directory made by `tokenmdp run`" in said and "--from" in said
    assert not (tmp_path / "new" / "pretrain").exists()  # nothing trained


def test_side_by_side_pairs_the_figures_both_summaries_report():
    from pipelines.compare import side_by_side

    a = {"stages": {"sft": {"gold_pass_rate": 0.5, "run_id": "x"}, "rlhf": {"kl": 0.1}}, "wall_seconds": {"sft": 10.0}}
    b = {"stages": {"sft": {"gold_pass_rate": 0.75, "run_id": "y"}}, "wall_seconds": {"sft": 4.0}}
    assert side_by_side(a, b) == [
        {"stage": "sft", "metric": "gold_pass_rate", "a": 0.5, "b": 0.75, "b - a": 0.25},
        {"stage": "sft", "metric": "wall seconds", "a": 10.0, "b": 4.0, "b - a": -6.0},
    ]


def test_runs_that_differ_only_in_their_seed_are_told_apart_from_a_setting():
    from pipelines.compare import seed_only, settings_that_differ

    base = load_config("tiny")
    differ = lambda *overrides: settings_that_differ(base, load_config("tiny", list(overrides)))  # noqa: E731
    assert seed_only(differ("rl.seed=1"))
    assert seed_only(differ("seed=3", "rl.seed=2", "rl.threads=1", "name=other"))  # untrained settings aside
    assert not seed_only(differ("rl.seed=1", "rl.lr=1e-3"))
    assert not seed_only(differ("rl.threads=1"))  # nothing trained differs: no seed to blame
    assert not seed_only(differ())


def test_compare_refuses_runs_asked_different_questions(tmp_path):
    from pipelines.compare import CompareError, paired
    from pipelines.policy_source import policy_from
    from pipelines.run_config import RunDirError

    for name, overrides in (("a", []), ("b", ["evaluate.questions=32"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(load_config("tiny", overrides).model_dump()))
    with pytest.raises(RunDirError, match="holds no policy"):
        policy_from(tmp_path / "a", "reward")
    with pytest.raises(RunDirError, match="has no rlhf policy"):
        policy_from(tmp_path / "a", "rlhf")
    policy = GPT(GPTConfig(vocab_size=ActionSpace().size, **load_config("tiny").model.model_dump()))
    for name in ("a", "b"):
        save_checkpoint(tmp_path / name / "rlhf" / "checkpoint.pt", model=policy, space=ActionSpace())
    with pytest.raises(CompareError, match=r"different held-out questions \(they differ in evaluate\.questions\)"):
        paired(policy_from(tmp_path / "a", "rlhf"), policy_from(tmp_path / "b", "rlhf"))
