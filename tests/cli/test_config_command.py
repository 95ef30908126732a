"""`tokenmdp config`: the resolved config as YAML that runs as it reads, or every setting explained."""

import json

import yaml
from typer.testing import CliRunner

from cli.main import app
from conf.describe import settings
from conf.load import load_config
from conf.schema import Config

runner = CliRunner()


def test_every_setting_says_what_it_does():
    undocumented = [s.name for s in settings(Config()) if not s.doc]
    assert undocumented == []
    assert len(settings(Config())) > 100  # every leaf, nested sections included


def test_the_yaml_it_prints_loads_back_to_the_same_config(tmp_path):
    said = runner.invoke(app, ["config", "tiny", "--set", "rl.iterations=9", "--set", "sft.lr=0.004"])
    assert said.exit_code == 0, said.output
    saved = tmp_path / "mine.yaml"
    saved.write_text(said.stdout)
    assert load_config(str(saved)) == load_config("tiny", ["rl.iterations=9", "sft.lr=0.004"])


def test_the_table_marks_what_the_preset_changes_and_can_show_only_that():
    said = runner.invoke(app, ["config", "demo", "--changed"], terminal_width=400)
    assert said.exit_code == 0, said.output
    lines = {line.split("│")[1].strip(): line for line in said.stdout.splitlines() if line.count("│") >= 4}
    assert "rl.iterations *" in lines and "│ 40 " in lines["rl.iterations *"] and "│ 30 " in lines["rl.iterations *"]
    assert "rl.gamma" not in lines  # the demo keeps the default
    everything = runner.invoke(app, ["config", "demo", "--docs"], terminal_width=400)
    assert any(line.split("│")[1].strip() == "rl.gamma" for line in everything.stdout.splitlines() if "│" in line)


def test_a_run_directory_shows_the_config_its_stages_were_trained_under(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(load_config("tiny", ["sft.lr=1.0"]).model_dump()))
    said = runner.invoke(app, ["config", str(tmp_path)])
    assert said.exit_code == 0, said.output
    assert yaml.safe_load(said.stdout)["sft"]["lr"] == 1.0
    assert runner.invoke(app, ["config", "no-such-preset"]).exit_code == 2


def test_a_section_written_in_part_keeps_an_empty_configs_values_for_the_rest(tmp_path):
    from conf.schema import SFTConfig

    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "sft: {steps: 123}\nworld: {family_weights: {arithmetic: 2}}\nrl: {actors: {sampler: {replicas: 2}}}\n"
    )
    cfg, empty = load_config(str(mine)), Config()
    assert cfg.sft.steps == 123
    assert (cfg.sft.lr, cfg.sft.warmup_steps) == (empty.sft.lr, empty.sft.warmup_steps) != (SFTConfig().lr, 20)
    assert cfg.rl.actors.sampler.replicas == 2 and cfg.rl.actors.sampler.num_cpus == empty.rl.actors.sampler.num_cpus
    assert cfg.world.family_weights == {"arithmetic": 2.0}  # a mapping is taken as written, not merged
