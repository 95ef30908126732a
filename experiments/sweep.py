"""Your own comparison from the command line: `tokenmdp experiment sweep demo --arm "base" --arm "hot
rl.temperature=1.2"`. Each `--arm` is a name and the RLHF settings (`rl.*`) it changes; the stages before RLHF are
trained once and shared, as in every RL-only experiment, and `--seeds N` repeats each arm at N RL seeds.
"""

from __future__ import annotations

import re
from pathlib import Path

from conf.schema import Config
from experiments.rl_arms import rl_experiment, wall_clock_report
from experiments.runner import Arm, ArmResult, Experiment, ExperimentRefused

NAME = "sweep"
METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def parse_arm(text: str) -> Arm:
    """`NAME [rl.FIELD=VALUE ...]`: the arm's directory name, then the settings it changes."""
    name, *overrides = text.split() or [""]
    if not ARM_NAME.fullmatch(name) or "=" in name:
        raise ExperimentRefused(
            f"--arm {text!r}: give the arm a name first (letters, digits, _ . + -), then its settings, "
            'e.g. --arm "hot rl.temperature=1.2"'
        )
    for override in overrides:
        field, eq, _ = override.partition("=")
        if not eq:
            raise ExperimentRefused(f"--arm {text!r}: {override!r} is not FIELD=VALUE")
        if not field.startswith("rl."):
            raise ExperimentRefused(
                f"--arm {text!r}: a sweep's arms change RLHF's settings (rl.*) only, on shared stages before it; "
                f"{field} is not one (set it for every arm with --set)"
            )
    return Arm(name, tuple(overrides))


def sweep(arm_texts: list[str]) -> Experiment:
    """The experiment the `--arm`s describe; its arms may differ in the fields they set and nothing else."""
    arms = tuple(parse_arm(text) for text in arm_texts)
    if len(arms) < 2:
        raise ExperimentRefused('a sweep compares two arms or more: --arm "base" --arm "NAME rl.FIELD=VALUE ..."')
    names = [arm.name for arm in arms]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ExperimentRefused(f"arm names repeat: {', '.join(repeated)}; each arm has a directory of its own")
    changes = tuple(sorted({o.partition("=")[0] for arm in arms for o in arm.overrides}))
    return rl_experiment(
        name=NAME,
        question="which of these RLHF settings does best on the held-out exam?",
        changes=changes,
        arms=arms,
        report=report,
    )


def default_out(cfg: Config, exp: Experiment) -> Path:
    """One directory per set of arms, so two sweeps never share one."""
    return Path("runs") / "experiments" / cfg.name / f"{NAME}-{'-'.join(arm.name for arm in exp.arms)}"


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    def columns(r: ArmResult) -> dict:
        return {"settings": " ".join(r.arm.overrides) or "(as configured)"}

    return wall_clock_report(results, client, out / "sweep.png", METRICS, columns)
