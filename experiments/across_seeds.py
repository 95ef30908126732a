"""An experiment's arms over several RL seeds (`tokenmdp experiment --seeds N`): each arm's mean and spread,
and each arm's difference from the first, paired by seed.

One RLHF run's held-out figure carries the paired standard error of its questions; another seed moves it
further (other prompts, other draws). The spread across seeds is what a difference between arms has to beat.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from algos.stats import seed_difference, seed_spread

if TYPE_CHECKING:
    from experiments.runner import ArmResult

GOLD, GAIN, KL = "eval/gold_pass_rate", "eval/gain_over_sft", "rl/kl"


def across_seeds(results: list[ArmResult]) -> list[dict[str, Any]]:
    """A row per arm: its seeds, held-out gold pass rate and gain over SFT (mean, sd over seeds, range), KL,
    and its gold pass rate less the first arm's at the same seeds (mean, standard error; None for the first)."""
    by_arm: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for r in results:
        by_arm[r.arm.family][r.cfg.rl_seed] = r.final
    first = next(iter(by_arm.values()))
    rows = []
    for name, runs in by_arm.items():
        seeds = sorted(runs)
        gold = [runs[s].get(GOLD, float("nan")) for s in seeds]
        gold_mean, gold_sd = seed_spread(gold)
        gain_mean, gain_sd = seed_spread([runs[s].get(GAIN, float("nan")) for s in seeds])
        shared = [s for s in seeds if s in first]
        diff, diff_se = (None, None) if runs is first else seed_difference(
            [first[s].get(GOLD, float("nan")) for s in shared], [runs[s].get(GOLD, float("nan")) for s in shared]
        )  # fmt: skip
        rows.append({
            "arm": name,
            "seeds": ", ".join(map(str, seeds)),
            "gold pass (mean)": gold_mean,
            "± sd over seeds": gold_sd,
            "lowest": min(gold),
            "highest": max(gold),
            "gain over SFT (mean)": gain_mean,
            "gain ± sd": gain_sd,
            "KL (mean)": seed_spread([runs[s].get(KL, float("nan")) for s in seeds])[0],
            "vs first arm": diff,
            "± stderr": diff_se,
        })  # fmt: skip
    return rows
