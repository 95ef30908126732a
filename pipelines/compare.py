"""Two runs side by side: their summaries, and one stage's policies judged question by question.

Forks (`tokenmdp run --from`) make a variant cheap; this says what it changed. The two
summaries' figures stand side by side with their difference, and the two policies of one
stage answer the same held-out questions greedily: the gain is counted question by
question, so its error counts only the questions whose verdict changed, far smaller than
the error of either pass rate.

    tokenmdp compare runs/demo runs/demo-gae            # the final (RLHF) policies
    tokenmdp compare runs/demo runs/demo-gae --stage sft
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from algos.stats import fixed_and_broken, paired_difference
from conf.schema import Config
from models.checkpoint import load_checkpoint
from pipelines.evaluate import eval_questions, held_out_passes
from pipelines.run_config import RunDirError, config_differences, load_run_config, policy_checkpoint

# What picks the held-out questions: two runs that differ here were not asked the same exam.
EVAL_SET = ("world.seed", "world.bank_size", "world.max_difficulty", "evaluate.questions")


class CompareError(RunDirError):
    """The two runs cannot be compared as asked."""


@dataclass(frozen=True)
class Run:
    """A finished run: its directory, config and summary."""

    dir: Path
    cfg: Config
    summary: dict


def load_run(run_dir: Path) -> Run:
    """A finished run's config and summary."""
    summary = run_dir / "summary.json"
    cfg = load_run_config(run_dir)
    if not summary.is_file():
        raise CompareError(f"{run_dir} has no summary.json: pass run directories made by `tokenmdp run`")
    return Run(run_dir, cfg, json.loads(summary.read_text()))


def settings_that_differ(a: Config, b: Config) -> list[dict]:
    """Each setting whose value differs between the two runs' configs (setting, a, b): what is being compared."""
    first, second = a.model_dump(), b.model_dump()
    return [{"setting": f, "a": _at(first, f), "b": _at(second, f)} for f in config_differences(first, second)]


def _at(config: dict, dotted: str):
    """The value of a dotted field in a dumped config; None where that config has no such field."""
    for part in dotted.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def side_by_side(a: dict, b: dict) -> list[dict]:
    """One row per figure both summaries report (stage, metric, a, b, b - a); run ids left out."""
    rows = []
    for stage in a.get("stages", {}):
        first, second = a["stages"][stage], b.get("stages", {}).get(stage, {})
        for metric, value in first.items():
            other = second.get(metric)
            if isinstance(value, (int, float)) and isinstance(other, (int, float)):
                rows.append({"stage": stage, "metric": metric, "a": value, "b": other, "b - a": other - value})
    for stage, seconds in a.get("wall_seconds", {}).items():
        if stage in b.get("wall_seconds", {}):
            other = b["wall_seconds"][stage]
            rows.append({"stage": stage, "metric": "wall seconds", "a": seconds, "b": other, "b - a": other - seconds})
    return rows


def same_exam(cfg_a: Config, cfg_b: Config) -> None:
    """Refuse two runs whose held-out questions differ."""
    differ = [f for f in config_differences(cfg_a.model_dump(), cfg_b.model_dump()) if f in EVAL_SET]
    if differ:
        raise CompareError(f"the two runs were asked different held-out questions (they differ in {', '.join(differ)})")


def paired(a: Run, b: Run, stage: str) -> dict[str, float]:
    """`stage`'s policy of run b against run a's on the same held-out questions, question by question."""
    same_exam(a.cfg, b.cfg)
    checkpoints = [policy_checkpoint(run.dir, stage) for run in (a, b)]  # both refused before either is judged
    questions = eval_questions(a.cfg)
    verdicts = []
    for run, checkpoint in zip((a, b), checkpoints, strict=True):
        model, space, _ = load_checkpoint(checkpoint)  # each policy under its own action space
        verdicts.append(held_out_passes(model, space, run.cfg, questions))
    before, after = verdicts
    gain, stderr = paired_difference(before, after)
    fixed, broken = fixed_and_broken(before, after)
    return {
        "questions": float(len(questions)),
        "pass_rate_a": sum(before) / len(before),
        "pass_rate_b": sum(after) / len(after),
        "gain": gain,
        "gain_stderr": stderr,
        "fixed": float(fixed),
        "broken": float(broken),
    }
