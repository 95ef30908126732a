"""RLHF's seed noise: the same config, the same SFT policy and reward model, RL at several seeds.

The seed picks the prompts of each iteration, the samplers' draws and the minibatches' order; nothing
else differs. The spread of the held-out gold pass rate across seeds (`seeds.md`) is the noise floor every
other experiment's difference (and the main job's gain over SFT) has to be read against; the paired error
over questions in each row does not include it.
"""

from __future__ import annotations

from pathlib import Path

from experiments.plots import curves
from experiments.rl_arms import rl_experiment, summary_row
from experiments.runner import Arm, ArmResult, metric_history

METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")
SEEDS = 3


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    series = {r.arm.name: {key: metric_history(client, r.run_dir / "rlhf", key) for key in METRICS} for r in results}
    rows = [summary_row(r) | {"RL seed": r.cfg.rl_seed} for r in results]
    return rows, curves(series, out / "seeds.png", METRICS)


EXPERIMENT = rl_experiment(
    name="seeds",
    question="how far does RLHF's held-out result move with its seed alone?",
    changes=(),
    arms=(Arm("rlhf"),),
    report=report,
    seeds=SEEDS,
)
