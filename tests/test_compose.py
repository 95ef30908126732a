"""docker-compose.yml cannot run here (no Docker): check that every command it runs exists in our CLI."""

import shlex
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from cli.main import app
from conf.load import load_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def tokenmdp_calls() -> list[list[str]]:
    calls = []
    for service in COMPOSE["services"].values():
        command = service.get("command", "")
        for part in command.replace("&&", ";").replace('"', " ").split(";"):
            words = shlex.split(part)
            if "tokenmdp" in words:
                calls.append(words[words.index("tokenmdp") + 1 :])
    return calls


def test_the_compose_file_has_the_cluster_services():
    assert {"ray-head", "ray-worker", "mlflow", "postgres", "train", "serve"} <= set(COMPOSE["services"])
    assert "postgresql://" in COMPOSE["services"]["mlflow"]["command"]


def test_every_tokenmdp_command_in_compose_exists_with_its_options():
    calls = tokenmdp_calls()
    assert {c[0] for c in calls} == {"run", "serve"}
    runner = CliRunner()
    for call in calls:
        command, args = call[0], call[1:]
        help_text = runner.invoke(app, [command, "--help"]).output
        for word in args:
            if word.startswith("--"):
                assert word in help_text, f"tokenmdp {command} has no option {word}"
        config = next(
            w
            for w in args
            if (not w.startswith("-") and not w.startswith("models:/") and "/" not in w) or w.endswith(".yaml")
        )
        load_config(str(ROOT / config) if config.endswith(".yaml") else config)  # the config it names is valid


def test_the_image_copies_every_package_pyproject_installs_and_the_tested_versions():
    dockerfile = (ROOT / "Dockerfile").read_text()
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.removesuffix("*") for pattern in found["include"]]
    assert "experiments" in packages and "cli" in packages
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile, f"the image lacks {package}/"
    assert "-c constraints.txt" in dockerfile
