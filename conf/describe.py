"""Every setting of a config: its value, its default and what it does, read back from the schema's docstrings.

`tokenmdp config` prints a resolved config as YAML (to read, or to save, edit and run) or,
with `--docs`, as this table, so what a run does is never more than one command away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from conf.schema import Config


@dataclass(frozen=True)
class Setting:
    name: str  # dotted, as `--set` takes it
    value: Any
    default: Any  # the value of an empty config (no preset, no file)
    doc: str

    @property
    def changed(self) -> bool:
        return self.value != self.default


def settings(cfg: BaseModel, defaults: BaseModel | None = None, prefix: str = "") -> list[Setting]:
    """Every leaf field of `cfg` in schema order, beside its value in `defaults` (an empty Config)."""
    defaults = Config() if defaults is None else defaults
    out = []
    for name, info in type(cfg).model_fields.items():
        value, default = getattr(cfg, name), getattr(defaults, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out += settings(value, default, f"{dotted}.")
        else:
            out.append(Setting(dotted, value, default, " ".join((info.description or "").split())))
    return out


def to_yaml(cfg: Config) -> str:
    """The whole resolved config as YAML that `load_config` reads back to the same config."""
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False, default_flow_style=False)
