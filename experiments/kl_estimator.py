"""The KL to the reference as RLHF charges it: the sampled k3 (the default), k3 clamped at 10 (verl's bound), or
the exact KL of each state (`full`, the action space being small).

k3 is unbiased for the KL of the states a response passed, but it grows as exp(-log ratio): one action the
policy has all but stopped taking, sampled anyway, can carry an iteration's KL and, with the KL in the loss, its
largest gradient (`tokenmdp rollouts --kl` shows such actions). Every arm logs the exact KL beside what it charged
(`rl/kl_exact`), the share of an iteration's KL its largest responses carry and its largest response's KL; the
table counts the iterations whose charged KL ran over twice the exact one, and the plot shows both per iteration.
With `--set rl.dynamic_sampling_rounds=3` the batch is picked for disagreement, which biases a sampled estimate.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean, median

from experiments.plots import curves
from experiments.rl_arms import over_iterations, rl_experiment, summary_row
from experiments.runner import Arm, ArmResult, metric_history
from pipelines.rl_metrics import KL_SOURCES

METRICS = ("rl/kl", "rl/kl_exact", "reward/gold")  # charged, exact, what was sampled
ARMS = (Arm("k3"), Arm("k3-clamp-10", ("rl.kl_clamp=10",)), Arm("full", ("rl.kl_estimator=full",)))


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    rows, series = [], {}
    for r in results:
        rl_dir = r.run_dir / "rlhf"
        series[r.arm.name] = {key: metric_history(client, rl_dir, key) for key in METRICS}
        (_, charged), (_, exact) = series[r.arm.name]["rl/kl"], series[r.arm.name]["rl/kl_exact"]
        pairs = [(c, e) for c, e in zip(charged, exact, strict=True) if e > 0]  # iteration 1: both 0
        rows.append(summary_row(r) | {
            "exact KL": r.final.get("rl/kl_exact", float("nan")),
            "charged / exact (median)": median(c / e for c, e in pairs) if pairs else float("nan"),
            "iterations charged > 2x exact": sum(c > 2 * e for c, e in pairs),
            "largest response KL": over_iterations(client, r, "rl/kl_max", max),
            f"share of the {KL_SOURCES} largest": over_iterations(client, r, f"rl/kl_share_top{KL_SOURCES}", mean),
        })  # fmt: skip
    return rows, curves(series, out / "kl_estimator.png", METRICS)


EXPERIMENT = rl_experiment(
    name="kl-estimator",
    question="what does the sampled KL estimate cost against the exact KL the small action space allows?",
    changes=("rl.kl_clamp", "rl.kl_estimator"),
    arms=ARMS,
    report=report,
)
