"""The samplers' precision: float32, the learner's own numbers, or bfloat16, as rollout engines run, with PPO's
ratio starting from the sampler's log-probs or from the learner's recomputed ones (`rl.old_logprobs: learner`).

A bfloat16 sampler draws from nearly the learner's policy, and its log-probs of the actions it drew are that
policy's rounded: the gap (`rl/sampler_gap_max`) shows it before every update, and PPO's first ratio is off 1
by it, so clipping acts on rounding. Recomputing the log-probs from the learner's float32 weights (verl's
default) brings the ratio back to 1 at one forward pass a batch. The table gives each arm's largest and mean
gap, its clipped share of actions, its sampling seconds an iteration and its RL seconds in all.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from experiments.rl_arms import over_iterations, rl_experiment, wall_clock_report
from experiments.runner import Arm, ArmResult

METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")  # held-out, training batch, KL
ARMS = (
    Arm("float32"),
    Arm("bfloat16", ("rl.sampler_precision=bfloat16",)),
    Arm("bfloat16-recomputed", ("rl.sampler_precision=bfloat16", "rl.old_logprobs=learner")),
)


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    def columns(r: ArmResult) -> dict:
        return {
            "largest log-prob gap": over_iterations(client, r, "rl/sampler_gap_max", max),
            "mean log-prob gap": over_iterations(client, r, "rl/sampler_gap_mean", mean),
            "clipped (mean)": over_iterations(client, r, "rl/clip_fraction", mean),
            "sample seconds": over_iterations(client, r, "time/sample", mean),
        }

    return wall_clock_report(results, client, out / "sampler_precision.png", METRICS, columns)


EXPERIMENT = rl_experiment(
    name="sampler-precision",
    question="what does a bfloat16 rollout policy cost on-policy RL, and does recomputing its log-probs fix it?",
    changes=("rl.sampler_precision", "rl.old_logprobs"),
    arms=ARMS,
    report=report,
)
