"""Two runs or policies side by side: what differs in their settings and figures, and their
policies judged question by question.

Forks (`tokenmdp run --from`) make a variant cheap; this says what it changed. The two
summaries' figures stand side by side with their difference, and the two policies of one
stage answer the same held-out questions greedily: the gain is counted question by
question, so its error counts only the questions whose verdict changed, far smaller than
the error of either pass rate. Either side may also be a registered model or a checkpoint
file (`pipelines.policy_source`): the versions a run registered as it was trained on are
compared without a copy of the run.

    tokenmdp compare runs/demo runs/demo-gae            # the final (RLHF) policies
    tokenmdp compare runs/demo runs/demo-gae --stage sft
    tokenmdp compare models:/tokenmdp-demo/1 models:/tokenmdp-demo/2
"""

from __future__ import annotations

import json

from algos.stats import fixed_and_broken, paired_difference
from conf.schema import Config
from pipelines.evaluate import eval_questions, held_out_passes
from pipelines.policy_source import Policy
from pipelines.run_config import RunDirError, config_differences, first_reader

# What picks the held-out questions: two runs that differ here were not asked the same exam.
EVAL_SET = ("world.seed", "world.bank_size", "world.max_difficulty", "evaluate.questions")
SEEDS = ("seed", "rl.seed")  # the run's seed (every stage) and RLHF's alone


class CompareError(RunDirError):
    """The two runs cannot be compared as asked."""


def summary_of(policy: Policy) -> dict | None:
    """The summary of the finished run a policy was read from; None for a registered model, a file or a run
    not yet finished."""
    path = policy.run_dir / "summary.json" if policy.run_dir is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def settings_that_differ(a: Config, b: Config) -> list[dict]:
    """Each setting whose value differs between the two runs' configs (setting, a, b): what is being compared."""
    first, second = a.model_dump(), b.model_dump()
    return [{"setting": f, "a": _at(first, f), "b": _at(second, f)} for f in config_differences(first, second)]


def seed_only(changed: list[dict]) -> bool:
    """Whether the two runs train differently only by their seed (settings no stage reads aside): then their
    difference is the seed's noise, however large, not a setting's effect."""
    trained = [row["setting"] for row in changed if first_reader(row["setting"]) is not None]
    return bool(trained) and set(trained) <= set(SEEDS)


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


def paired(a: Policy, b: Policy) -> dict[str, float | int]:
    """Policy b against policy a on the same held-out questions, question by question (counts as ints)."""
    same_exam(a.cfg, b.cfg)
    questions = eval_questions(a.cfg)
    before, after = (held_out_passes(p.model, p.space, p.cfg, questions) for p in (a, b))
    gain, stderr = paired_difference(before, after)
    fixed, broken = fixed_and_broken(before, after)
    return {
        "questions": len(questions),
        "pass_rate_a": sum(before) / len(before),
        "pass_rate_b": sum(after) / len(after),
        "gain": gain,
        "gain_stderr": stderr,
        "fixed": fixed,
        "broken": broken,
    }
