import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from conf.load import ConfigError, load_config
from models import fused_decode
from models.kernels import current_kernel

runner = CliRunner()


def test_grade_json_has_the_promised_keys():
    result = runner.invoke(app, ["grade", "1,2,4,8,16", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["answer"] == [32] and data["rule"]


def test_grade_says_no_rule_instead_of_a_wrong_number():
    data = json.loads(runner.invoke(app, ["grade", "837,130,5,391,3281", "--json"]).stdout)
    assert data["status"] == "no_rule" and data["answer"] is None


def test_grade_a_continuation_in_text():
    result = runner.invoke(app, ["grade", "1,2,4,8,16", "--answer", "31"])
    assert "answer: 32" in result.stdout and "grade:  0" in result.stdout


def test_grade_rejects_non_integers_and_terms_too_long_to_read_naming_them():
    result = runner.invoke(app, ["grade", "1,two,3"], terminal_width=400)
    assert result.exit_code == 2
    assert "'two' in the sequence is not an integer" in result.output
    result = runner.invoke(app, ["grade", "1,2", "--answer", "9" * 5000], terminal_width=400)
    assert result.exit_code == 2
    assert "a term of 5,000 digits in the answer: more than 4,300" in result.output


def test_console_script_help_is_installed():
    out = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True, check=True)
    assert all(cmd in out.stdout for cmd in ("grade", "world", "pretrain", "sft", "evaluate", "run"))


def test_world_stats_runs_on_tiny():
    result = runner.invoke(app, ["world", "stats", "tiny", "--set", "world.bank_size=60", "--documents", "200"])
    assert result.exit_code == 0, result.output
    assert "exam bank" in result.stdout and "total (train/eval)" in result.stdout


def test_presets_validate_and_overrides_apply():
    for preset in ("tiny", "demo", "full", "cluster"):
        assert load_config(preset).world.bank_size > 0
    assert load_config("tiny", ["world.seed=5"]).world.seed == 5


def test_an_unknown_preset_is_refused_with_the_list_of_presets():
    with pytest.raises(ConfigError, match="'dmeo' \\(presets: tiny, demo, full, cluster\\)"):
        load_config("dmeo")
    result = runner.invoke(app, ["run", "--help"])
    assert "tiny, demo, full, cluster" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("world.sedd=1", "sedd"),
        ("world.query_rate=2", "query_rate"),
        ("world.family_weights={bogus: 1}", "bogus"),
        ("rl.minibatches=100000", "minibatches=100000 is more than"),
        ("reward.label_smoothing=0.5", "label_smoothing"),
        ("model.max_len=32", "world.max_tokens=48 exceeds model.max_len=32"),
        ("reward.views=0", "views"),
        ("serve.max_ongoing_requests=4", "could never fill a batch"),
        ("rl.iterations=[1", "override 'rl.iterations=\\[1' is not valid YAML"),
    ],
)
def test_bad_config_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_a_bad_config_is_one_line_a_problem_naming_the_field_and_the_value():
    with pytest.raises(ConfigError) as caught:
        load_config("tiny", ["rl.lr=-1", "rl.loss_agg=sum", "rl.foo=3"])
    assert str(caught.value).splitlines() == [
        "invalid config 'tiny':",
        "  rl.loss_agg: Input should be 'token-mean', 'seq-mean-token-mean' or 'seq-mean-token-sum-norm' (got 'sum')",
        "  rl.lr: Input should be greater than 0 (got -1)",
        "  rl.foo: Extra inputs are not permitted (got 3)",
    ]  # not pydantic's dump of the whole section as its input, nor a link after each error
    with pytest.raises(ConfigError) as caught:
        load_config("tiny", ["rl.dynamic_sampling_rounds=2", "rl.advantage=gae"])
    assert str(caught.value).splitlines()[1].startswith("  rl: dynamic_sampling_rounds=2 samples more prompts")


def test_stopping_at_the_watch_needs_the_watch_on():
    with pytest.raises(ConfigError, match=r"watch_stop=true stops at .* but watch_drop=null turns the watch off"):
        load_config("tiny", ["rl.watch_stop=true", "rl.watch_drop=null"])
    assert load_config("tiny", ["rl.watch_stop=true"]).rl.watch_stop


@pytest.mark.parametrize(
    ("text", "message"),
    [("name: x\nrl: [1, 2\n", "(?s)is not valid YAML: .*line 2"), ("- 1\n- 2\n", "holds a list, not a mapping")],
)
def test_a_config_file_that_is_not_a_yaml_mapping_is_a_usage_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "bad.yaml" in result.output


def test_experiment_names_match_the_registry_and_an_unknown_one_is_refused():
    from cli.train import EXPERIMENT_NAMES
    from experiments import registry

    assert set(EXPERIMENT_NAMES) == set(registry())
    result = runner.invoke(app, ["experiment", "stalenes", "tiny"])
    assert result.exit_code != 0 and "choose from staleness" in result.output


def test_experiment_refuses_a_base_run_trained_under_another_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(load_config("tiny", ["sft.lr=0.1"]).model_dump()))
    result = runner.invoke(app, ["experiment", "staleness", "tiny", "--base-run", str(tmp_path),
                                 "--out", str(tmp_path / "exp")])  # fmt: skip
    assert result.exit_code != 0 and "sft.lr" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "tiny", "--arm", "base"], "two arms or more"),
        (["sweep", "tiny", "--arm", "base", "--arm", "x rl.lr=-1"], "rl.lr"),  # the value, checked before training
        (["sweep", "tiny", "--arm", "base", "--arm", "x rl.lr=1e-5", "--seeds", "0"], "--seeds"),
        (["staleness", "tiny", "--arm", "x rl.lr=1e-5"], "--arm is for `tokenmdp experiment sweep`"),
    ],
)
def test_a_sweep_is_refused_in_a_line_before_anything_is_made(tmp_path, args, message):
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", *args, "--out", str(out)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("name", ["rm-pairs", "action-space"])
def test_seeds_are_refused_for_experiments_whose_arms_train_before_rlhf(tmp_path, name):
    out = tmp_path / "exp"
    result = runner.invoke(app, ["experiment", name, "tiny", "--seeds", "2", "--out", str(out)])
    assert result.exit_code == 2 and "--seeds repeats RLHF alone" in result.output
    assert not out.exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("command", "needed"),
    [
        (["sft"], "tokenmdp pretrain"),
        (["preferences"], "tokenmdp sft"),
        (["reward"], "tokenmdp sft"),
        (["rlhf"], "tokenmdp reward"),  # the RM is checked first: it is what RLHF optimises
        (["rlhf", "--set", "rl.reward_source=gold"], "tokenmdp sft"),
        (["reward-curve"], "tokenmdp sft"),
        (["evaluate"], "tokenmdp sft"),
    ],
)
def test_a_stage_run_before_its_input_says_which_command_to_run(tmp_path, command, needed):
    result = runner.invoke(app, [command[0], "tiny", "--out", str(tmp_path / "run"), *command[1:]])
    assert result.exit_code == 2, result.output  # a usage error, not a traceback
    assert needed in " ".join(result.output.replace("│", " ").split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_evaluate_refuses_a_checkpoint_that_is_not_there(tmp_path):
    result = runner.invoke(app, ["evaluate", "tiny", "--checkpoint", str(tmp_path / "nope.pt")])
    assert result.exit_code == 2 and "--checkpoint" in result.output and "nope.pt" in result.output


def test_evaluate_refuses_questions_spelled_under_another_action_space(tiny_sft_run):
    other = {"msb": "lsb", "lsb": "msb"}[load_config("tiny").world.digit_order]
    policy = str(tiny_sft_run / "sft" / "checkpoint.pt")
    result = runner.invoke(app, ["evaluate", "tiny", "--set", f"world.digit_order={other}", "--checkpoint", policy])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and "the action space is frozen at pretraining" in said, result.output  # no traceback
    assert f"'digit_order': '{other}'" in said and "the policy " in said


def test_evaluate_judges_the_policy_at_the_precision_it_would_be_served(tiny_sft_run):
    policy = str(tiny_sft_run / "sft" / "checkpoint.pt")
    judged = {}
    for precision in ("float32", "bfloat16"):
        result = runner.invoke(app, ["evaluate", "--checkpoint", policy, "--precision", precision])
        assert result.exit_code == 0, result.output
        judged[precision] = json.loads(result.stdout.strip().splitlines()[-1])
        assert judged[precision]["precision"] == precision
    exact, low = judged["float32"]["eval/format_rate"], judged["bfloat16"]["eval/format_rate"]
    assert exact > 0.5 and abs(low - exact) <= 0.1  # the same policy (tiny's: well-formed answers), near-ties apart
    refused = runner.invoke(app, ["evaluate", "--checkpoint", policy, "--precision", "half"])
    assert refused.exit_code == 2 and "bfloat16" in refused.output


def test_serve_refuses_an_address_it_cannot_listen_on_before_starting_ray(tmp_path):
    import socket

    checkpoint = tmp_path / "policy.pt"
    checkpoint.write_bytes(b"")  # never read: the address is refused first
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = runner.invoke(app, ["serve", "tiny", "--model", str(checkpoint), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in " ".join(result.output.replace("│", " ").split())


def test_version_names_tokenmdp_and_what_it_runs_on():
    from importlib.metadata import version

    said = runner.invoke(app, ["--version"])
    assert said.exit_code == 0
    lines = said.stdout.splitlines()
    assert lines[:2] == [f"tokenmdp {version('tokenmdp')}", f"torch {version('torch')}"]
    assert lines[-3].startswith(f"cpu {torch.backends.cpu.get_cpu_capability()} ")
    assert lines[-2].startswith(f"linears {current_kernel()} ")
    assert lines[-1] == f"fused decoding step {fused_decode.status()}"
    with fused_decode.fused(False):
        off = runner.invoke(app, ["--version"]).stdout.splitlines()[-1]
    assert off == "fused decoding step off (TOKENMDP_FUSED_DECODE=0)"


def test_the_fused_steps_status_says_whether_it_is_built(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # an empty extension cache: nothing built
    with fused_decode.fused(True):
        assert fused_decode.status() == "on, compiled at the first sampling (~25 s)"
        name = fused_decode.this_extension_name()
        assert not (tmp_path / name).exists()  # asking built nothing
        one_thread = fused_decode.this_extension_name(fused_decode.ONE_THREAD)
        (tmp_path / one_thread).mkdir()
        (tmp_path / one_thread / f"{one_thread}.so").touch()  # the build a compiler without OpenMP makes
        assert fused_decode.status() == "on, built without OpenMP (its attention on one thread)"
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.so").touch()
        assert fused_decode.status() == "on, built"


@pytest.mark.parametrize(
    ("setting", "text", "said"),
    [
        ("reward.extra_pairs", "1 2 4 8 16 -> 32\n", "line 1: a pair reads PROMPT -> BETTER > WORSE"),
        ("sft.extra_questions", "1 2 4 8 16\n1 2 x\n", "line 2: 'x' in the question is not an integer"),
        ("world.extra_sequences", "", "no sequences"),
        ("reward.extra_pairs", None, "cannot read it"),
    ],
)
def test_a_run_refuses_a_bad_data_file_before_its_first_stage(tmp_path, setting, text, said):
    data = tmp_path / "mine.txt"
    if text is not None:
        data.write_text(text)
    result = runner.invoke(app, ["run", "tiny", "--out", str(tmp_path / "run"), "--set", f"{setting}={data}"])
    assert result.exit_code == 2 and said in result.output, result.output
    assert not (tmp_path / "run" / "pretrain").exists()  # refused in seconds, not after pretraining


def test_a_table_shows_a_value_that_rounds_to_zero_without_a_sign(capsys):
    from cli.report import print_rows

    print_rows("t", [{"KL": -1e-8, "log pi": -0.0004, "ratio": -2.3456}], ["KL", "log pi", "ratio"])
    shown = capsys.readouterr().out
    assert "-0.000" not in shown and "0.000" in shown and "-2.346" in shown  # float rounding is not a negative KL


def test_a_cell_shows_floats_to_three_decimals_and_no_value_as_a_dash():
    from pipelines.table_cell import cell

    assert [cell(v) for v in (-1e-8, -2.3456, 0.5, 12, "k3", None)] == ["0.000", "-2.346", "0.500", "12", "k3", "—"]


def test_ctrl_c_of_an_experiment_says_nothing_of_a_run_it_is_not(tmp_path):
    from cli.common import _kept

    (tmp_path / "config.json").write_text(json.dumps({"experiment": "seeds", "base": {"name": "tiny"}}))
    assert _kept(tmp_path) == ""  # its arms are the runs; it read the record as a run's config and hit a KeyError
