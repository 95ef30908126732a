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

from experiments.rl_arms import rl_experiment, wall_clock_report
from experiments.runner import Arm, ArmResult, metric_history

METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")  # held-out, training batch, KL
ARMS = (
    Arm("float32"),
    Arm("bfloat16", ("rl.sampler_precision=bfloat16",)),
    Arm("bfloat16-recomputed", ("rl.sampler_precision=bfloat16", "rl.old_logprobs=learner")),
)


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    def columns(r: ArmResult) -> dict:
        rl_dir = r.run_dir / "rlhf"
        history = {key: metric_history(client, rl_dir, key)[1] for key in
                   ("rl/sampler_gap_max", "rl/sampler_gap_mean", "rl/clip_fraction", "time/sample")}  # fmt: skip
        gap_max, gap_mean, clipped, sample = history.values()
        return {
            "largest log-prob gap": max(gap_max, default=float("nan")),
            "mean log-prob gap": mean(gap_mean) if gap_mean else float("nan"),
            "clipped (mean)": mean(clipped) if clipped else float("nan"),
            "sample seconds": mean(sample) if sample else float("nan"),
        }

    return wall_clock_report(results, client, out / "sampler_precision.png", METRICS, columns)


EXPERIMENT = rl_experiment(
    name="sampler-precision",
    question="what does a bfloat16 rollout policy cost on-policy RL, and does recomputing its log-probs fix it?",
    changes=("rl.sampler_precision", "rl.old_logprobs"),
    arms=ARMS,
    report=report,
)
