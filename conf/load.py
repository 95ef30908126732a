"""Load a preset, merge `key=value` overrides, then validate once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from conf.presets import PRESETS_DIR, preset_names
from conf.schema import Config


class ConfigError(ValueError):
    """A preset or override that does not make a valid config."""


def preset_path(name_or_path: str) -> Path:
    """`tiny` names conf/tiny.yaml; anything else is a path."""
    candidate = PRESETS_DIR / f"{name_or_path}.yaml"
    path = candidate if candidate.is_file() else Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"no config preset or file {name_or_path!r} (presets: {', '.join(preset_names())})")
    return path


def apply_override(data: dict[str, Any], override: str) -> None:
    """`world.seed=3` sets data["world"]["seed"] = 3 (the value is parsed as YAML)."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not key=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[leaf] = parse_yaml(raw, f"override {override!r}")


def parse_yaml(text: str, where: str) -> Any:
    """YAML text, or a ConfigError saying where it stops being YAML (line and column): a typo in a
    preset or an override is a usage error, not a traceback."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where} is not valid YAML: {err}") from None


def load_config(name_or_path: str, overrides: Sequence[str] = ()) -> Config:
    path = preset_path(name_or_path)
    data = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a mapping of sections such as `rl:`")
    return _validated(data, overrides, f"config {name_or_path!r}")


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """`cfg` with `key=value` overrides applied and validated again (an experiment's arm)."""
    return _validated(cfg.model_dump(), overrides, f"overrides {list(overrides)}")


def _validated(data: dict[str, Any], overrides: Sequence[str], what: str) -> Config:
    for override in overrides:
        apply_override(data, override)
    try:
        return Config.model_validate(over_defaults(data, Config()))
    except ValidationError as err:
        raise ConfigError(f"invalid {what}:\n{validation_lines(err)}") from err


def validation_lines(err: ValidationError) -> str:
    """One line per problem, `section.field: what is wrong (got value)`: pydantic's own text repeats the whole
    section as its input and a link after every error, which buries the one line that matters."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        said = problem["msg"].removeprefix("Value error, ")
        shown = problem.get("input")
        got = "" if isinstance(shown, dict) or problem["type"] in ("value_error", "missing") else f" (got {shown!r})"
        lines.append(f"  {where}: {said}{got}")
    return "\n".join(lines)


def over_defaults(data: Any, defaults: BaseModel) -> Any:
    """`data` with each section it leaves out a field of filled from `defaults` (an empty Config's).

    A section's own class may default otherwise than the Config does (an empty config's SFT has
    lr 5e-4, `SFTConfig()` 1e-3): without this, a file with `sft: {steps: 1000}` would also move
    SFT's learning rate and warm-up. Only sections merge; a mapping value (`family_weights`) is
    taken as written."""
    if not isinstance(data, dict):
        return data  # not a mapping: pydantic names what is wrong with it
    out = dict(data)
    for name in type(defaults).model_fields:
        default, given = getattr(defaults, name), data.get(name)
        if isinstance(default, BaseModel) and isinstance(given, dict):
            out[name] = over_defaults(default.model_dump() | given, default)
    return out


def with_defaults(saved: Any) -> Any:
    """A resolved config saved by an earlier version, with the fields added since at their defaults.

    New fields default to the old behaviour, so a run directory made before they existed still
    resumes. A config nested in a larger record (an experiment's `base`, an arm's `config`) is
    filled too; a saved config this schema no longer accepts is returned as it is (and will differ).
    """
    if not isinstance(saved, dict):
        return saved
    try:
        return Config.model_validate(saved).model_dump()
    except ValueError:
        return {key: with_defaults(value) for key, value in saved.items()}
