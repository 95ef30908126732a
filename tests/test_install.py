"""The README's two commands install constraints.txt's versions: the lock must agree with pyproject.toml."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def locked() -> dict[str, str]:
    """Each package constraints.txt pins, by its normalised name, to its version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_lock_pins_every_dependency_the_tests_install_within_pyprojects_bounds():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked()
    for requirement in wanted:
        name = _normal(requirement.name)
        if name == "torch":  # the machine's build (CPU or CUDA): pyproject.toml alone pins it
            assert name not in pins
            continue
        assert name in pins, f"constraints.txt has no {requirement.name}: run `make lock`"
        assert requirement.specifier.contains(pins[name]), f"{requirement.name}=={pins[name]} is outside {requirement}"


def test_the_lock_pins_each_package_once_and_exactly():
    lines = [x for x in (ROOT / "constraints.txt").read_text().splitlines() if x.strip() and not x.startswith("#")]
    names = [_normal(x.split("==")[0]) for x in lines]
    assert all(x.count("==") == 1 for x in lines)
    assert len(names) == len(set(names))
