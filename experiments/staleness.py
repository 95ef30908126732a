"""On-policy vs stale: samplers that lag the learner by up to 0, 2 or 8 policy versions.

`rl.sync_every = s + 1` pushes weights to the samplers only every s + 1 updates, as
asynchronous samplers that run ahead of the learner would; `rl.max_staleness = s` lets
the buffer serve those samples. No correction beyond PPO's clipped ratio against the
sampler's own log-probs. Same SFT policy, reward model, prompts and seeds in every arm. The table's largest
log-prob gap is how far the policy the learner starts an update from is from the one that drew the samples
(`rl/sampler_gap_max`): float rounding on-policy, the policy's drift when the samplers lag.
"""

from __future__ import annotations

from pathlib import Path

from experiments.rl_arms import over_iterations, rl_experiment, wall_clock_report
from experiments.runner import Arm, ArmResult

STALENESS = (0, 2, 8)
METRICS = ("eval/gold_pass_rate", "reward/gold", "rl/kl")  # held-out, training batch, KL


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    def columns(r: ArmResult) -> dict:
        return {
            "mean staleness": r.final.get("buffer/mean_staleness", float("nan")),
            "refused stale": r.final.get("buffer/refused_stale", float("nan")),
            "largest log-prob gap": over_iterations(client, r, "rl/sampler_gap_max", max),  # sampler vs learner
        }

    return wall_clock_report(results, client, out / "staleness.png", METRICS, columns)


EXPERIMENT = rl_experiment(
    name="staleness",
    question="does training on samples from older policy versions cost gold reward or KL?",
    changes=("rl.max_staleness", "rl.sync_every"),
    arms=tuple(Arm(f"staleness-{s}", (f"rl.max_staleness={s}", f"rl.sync_every={s + 1}")) for s in STALENESS),
    report=report,
)
