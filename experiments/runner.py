"""Controlled comparisons: arms that differ in one named setting, same seeds, one MLflow parent run.

An experiment runs the stages its arms share once (`out/base`), copies them into every
arm's directory, then runs each arm's own stages with the arm's config and variant. The
MLflow runs nest experiment -> arm -> stage; each arm's resolved config is saved as
`config.json` (and logged), and the runner refuses to start if two arms differ in any
field the experiment did not name. Every stage resumes, so a killed experiment continues.
The table (`table.md`, `results.json`) and the plot land in `out` and in the parent run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from conf.load import with_defaults, with_overrides
from conf.schema import Config
from experiments.across_seeds import across_seeds
from pipelines import preferences, pretrain, reward, sft
from pipelines.fork import copy_stage
from pipelines.report import history
from pipelines.run_config import (
    ConfigChanged,
    RunDirError,
    arm_record,
    config_differences,
    guard_config,
    reusable_stages,
    run_config_dict,
)
from pipelines.table_cell import cell
from pipelines.tracking import default_tracking_uri, logged_run_id, stage_run

console = Console()
BASE_STAGES: dict[str, Callable[..., Any]] = {
    "pretrain": pretrain.main,
    "sft": sft.main,
    "preferences": lambda cfg, run_dir, tracking_uri: preferences.main(cfg, run_dir),
    "reward": reward.main,
}
STAGE_DIRS = {
    "pretrain": ("pretrain",),
    "sft": ("sft",),
    "preferences": ("preferences",),
    "reward": ("preferences", "reward"),
}


class ExperimentRefused(ValueError):
    """An experiment asked of in a way it cannot run: said before anything starts."""


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: config overrides, and the name of a deliberately different variant."""

    name: str
    overrides: tuple[str, ...] = ()
    variant: str = "library"
    repeats: str | None = None  # the arm this one repeats at another RL seed (`--seeds`)

    @property
    def family(self) -> str:
        """The arm's name across its seeds."""
        return self.repeats or self.name


@dataclass
class ArmResult:
    arm: Arm
    cfg: Config
    run_dir: Path
    final: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)  # what the experiment measured beside the stage metrics


Report = Callable[[list[ArmResult], Path, Any], tuple[list[dict[str, Any]], Path]]  # -> (table rows, plot)


@dataclass(frozen=True)
class Experiment:
    """What one experiment asks, which setting its arms change, and how to run and report them."""

    name: str
    question: str
    changes: tuple[str, ...]  # the only config fields in which arms may differ
    shared: tuple[str, ...]  # base stages run once and copied into every arm ("pretrain", "sft", "reward")
    arms: tuple[Arm, ...]
    run_arm: Callable[[Config, Arm, Path, str], ArmResult]
    report: Report
    seeds: int = 1  # RL seeds each arm runs at unless `--seeds` says otherwise


def seeded_arms(exp: Experiment, cfg: Config, seeds: int) -> tuple[Arm, ...]:
    """Every arm at `seeds` RL seeds: itself at the config's, then `<arm>-seed<s>` at the next ones; all arms'
    first seed before any arm's second, so a stopped experiment has whole comparisons first."""
    if seeds > 1 and "reward" not in exp.shared:
        raise ExperimentRefused(
            f"experiment {exp.name}: its arms train stages before RLHF ({', '.join(_own_stages(exp))}); --seeds "
            "repeats RLHF alone on shared stages, for the experiments whose arms differ only in RLHF"
        )
    if seeds > 1 and (seeded := [arm.name for arm in exp.arms if any(o.startswith("rl.seed=") for o in arm.overrides)]):
        raise ExperimentRefused(f"arm {', '.join(seeded)} sets rl.seed itself, which --seeds sets for each repeat")
    first = cfg.rl_seed
    return tuple(arm if k == 0 else _at_seed(arm, first + k) for k in range(seeds) for arm in exp.arms)


def _at_seed(arm: Arm, seed: int) -> Arm:
    return Arm(f"{arm.name}-seed{seed}", (*arm.overrides, f"rl.seed={seed}"), arm.variant, repeats=arm.name)


def _own_stages(exp: Experiment) -> list[str]:
    return [s for s in ("pretrain", "sft", "preferences", "reward") if s not in exp.shared]


def arm_configs(exp: Experiment, cfg: Config, arms: tuple[Arm, ...] | None = None) -> dict[str, Config]:
    """Each arm's config; refuses arms that differ in a field the experiment does not name (or in the RL seed,
    between the seeds of `seeded_arms`)."""
    arms = arms or exp.arms
    configs = {arm.name: with_overrides(cfg, arm.overrides) for arm in arms}
    allowed = (*exp.changes, "rl.seed") if any(arm.repeats for arm in arms) else exp.changes
    first = next(iter(configs.values())).model_dump()
    for name, arm_cfg in configs.items():
        stray = [f for f in config_differences(first, arm_cfg.model_dump()) if f not in allowed]
        if stray:
            raise ExperimentRefused(
                f"experiment {exp.name}: arm {name} also changes {stray}; only {exp.changes} may differ"
            )
    return configs


def run(
    exp: Experiment,
    cfg: Config,
    out: Path,
    tracking_uri: str | None = None,
    base_run: Path | None = None,
    seeds: int | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) every arm of `exp` on top of `cfg` into `out`; returns the table rows.

    `base_run`: a finished run directory (e.g. `runs/demo`) whose shared stages to reuse instead
    of training them again; its config may differ from `cfg` only in the RL and serve sections.
    `seeds`: RL seeds per arm (default the experiment's own): each arm's RLHF again at the next seeds, a row
    each, and a table across seeds (`seeds.md`, `across_seeds` in `results.json`) to read the arms'
    differences against the spread one arm shows from its seed alone.
    """
    uri = tracking_uri or default_tracking_uri()
    arms = seeded_arms(exp, cfg, seeds or exp.seeds)
    configs = arm_configs(exp, cfg, arms)
    out.mkdir(parents=True, exist_ok=True)
    guard_config(out / "config.json", {"experiment": exp.name, "base": cfg.model_dump()})
    if base_run is not None:
        reuse(base_run, cfg, out / "base", exp.shared)
    with stage_run(out, experiment=f"{cfg.name}-experiments", run_name=f"experiment:{exp.name}", tracking_uri=uri):
        import mlflow

        mlflow.set_tag("experiment.question", exp.question)
        mlflow.set_tag("experiment.changes", ", ".join(exp.changes))
        base = out / "base"
        for stage in exp.shared:  # --- stages every arm shares, once -------------------------
            if stage == "reward" and cfg.rl.reward_source == "gold":
                continue  # RL rewarded by the grader needs no reward model
            BASE_STAGES[stage](cfg, base, tracking_uri=uri)
        results = []
        for arm in arms:  # --- each arm's own stages, at each seed -------------------------
            arm_dir = out / arm.name
            arm_dir.mkdir(exist_ok=True)
            _share(base, arm_dir, exp.shared)
            resolved = arm_record(arm.variant, configs[arm.name].model_dump())
            guard_config(arm_dir / "config.json", resolved)
            with stage_run(arm_dir, experiment=f"{cfg.name}-experiments", run_name=f"arm:{arm.name}",
                           tracking_uri=uri):  # fmt: skip
                mlflow.set_tag("arm.variant", arm.variant)
                mlflow.log_artifact(str(arm_dir / "config.json"))
                results.append(exp.run_arm(configs[arm.name], arm, arm_dir, uri))
        rows, plot = exp.report(results, out, mlflow.MlflowClient(tracking_uri=uri))
        spread = across_seeds(results, rows) if len(arms) > len(exp.arms) else None
        _write_table(exp, rows, out, spread)
        for path in (plot, out / "table.md", out / "results.json", out / "seeds.md"):
            if path.is_file():
                mlflow.log_artifact(str(path))
    return rows


def reuse(base_run: Path, cfg: Config, base: Path, stages: tuple[str, ...]) -> None:
    """Copy the shared stages of a finished run that trained them as `cfg` would (`pipelines.fork`):
    new MLflow runs here, tagged with the runs they came from."""
    try:
        source = run_config_dict(base_run)
    except RunDirError as err:
        raise FileNotFoundError(str(err)) from None
    reusable = reusable_stages(source, cfg.model_dump())
    if missing := [stage for stage in stages if stage not in reusable]:
        changed = config_differences(with_defaults(source), cfg.model_dump())
        raise ConfigChanged(
            f"{base_run} trained {', '.join(missing)} under another config (differs in {', '.join(changed[:8])})"
        )
    for stage in stages:
        for name in STAGE_DIRS[stage]:
            if (base_run / name).is_dir():
                copy_stage(base_run / name, base / name)


def _share(base: Path, arm_dir: Path, stages: tuple[str, ...]) -> None:
    """Copy the shared stages' directories into the arm (once), so the arm's own stages find them."""
    for stage in stages:
        for name in STAGE_DIRS[stage]:
            if (base / name).is_dir() and not (arm_dir / name).exists():
                shutil.copytree(base / name, arm_dir / name)


def _write_table(exp: Experiment, rows: list[dict[str, Any]], out: Path, spread: list[dict[str, Any]] | None) -> None:
    """The table (printed, `table.md`), the one across seeds when there are several (`seeds.md`), both in
    `results.json`."""
    (out / "table.md").write_text(_show(f"experiment {exp.name}: {exp.question}", rows))
    results: dict[str, Any] = {"experiment": exp.name, "rows": rows}
    seeds_table = out / "seeds.md"
    if spread is None:
        seeds_table.unlink(missing_ok=True)  # from an earlier run of this directory with --seeds
    else:
        title = f"experiment {exp.name} over RL seeds (the columns after ± stderr: means over the seeds)"
        seeds_table.write_text(_show(title, spread))
        results["across_seeds"] = spread
    (out / "results.json").write_text(json.dumps(results, indent=2))


def _show(title: str, rows: list[dict[str, Any]]) -> str:
    """Print a table and return it as markdown."""
    columns = list(rows[0]) if rows else []
    cells = [[cell(row[c]) for c in columns] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    if console.is_terminal:
        table = Table(*columns, title=title)
        for row in cells:
            table.add_row(*row)
        console.print(table)
    else:  # a log's 80 columns would cut every cell of a dozen columns to two characters: the table's own lines
        print(title, *lines, sep="\n")
    return "\n".join(lines) + "\n"


def metric_history(client, run_dir: Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric of the stage whose directory is `run_dir` (an arm's stage: it has run)."""
    run_id = logged_run_id(run_dir)
    if run_id is None:
        raise FileNotFoundError(f"{run_dir} has logged no MLflow run to read {key} from")
    return history(client, run_id, key)
