"""An experiment's arms over several RL seeds (`tokenmdp experiment --seeds N`): each arm's mean and spread,
and each arm's difference from the first, paired by seed.

One RLHF run's held-out figure carries the paired standard error of its questions; another seed moves it
further (other prompts, other draws). The spread across seeds is what a difference between arms has to beat.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import TYPE_CHECKING, Any

from algos.stats import seed_difference, seed_spread

if TYPE_CHECKING:
    from experiments.runner import ArmResult

GOLD, GAIN, KL = "eval/gold_pass_rate", "eval/gain_over_sft", "rl/kl"
# The columns every RL comparison's table has (`experiments.rl_arms.summary_row`) and the seeds experiment's seed:
# aggregated above or meaningless to average. An experiment's other numeric columns are averaged over the seeds.
SHARED_COLUMNS = {"arm", "gold pass (held-out)", "gain over SFT", "± paired", "fixed / broken", "format rate",
                  "114514 rate", "KL", "RL seed"}  # fmt: skip


def across_seeds(results: list[ArmResult], table: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """A row per arm: its seeds, held-out gold pass rate and gain over SFT (mean, sd over seeds, range), KL,
    its gold pass rate less the first arm's at the same seeds (mean, standard error; None for the first), and
    the mean over its seeds of each numeric column of the experiment's own `table` (a row per arm and seed)."""
    by_arm: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for r in results:
        by_arm[r.arm.family][r.cfg.rl_seed] = r.final
    own = own_column_means(results, table or [])
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
        } | own.get(name, {}))  # fmt: skip
    return rows


def own_column_means(results: list[ArmResult], table: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each arm family's mean over its seeds of the table's numeric columns beyond SHARED_COLUMNS (a gap, a
    clipped share, seconds), by family; a column with a non-number in any row is left out."""
    family = {r.arm.name: r.arm.family for r in results}
    columns = [c for c in (table[0] if table else {}) if c not in SHARED_COLUMNS]
    numeric = [c for c in columns if all(_is_number(row.get(c)) for row in table)]
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in table:
        for column in numeric:
            values[family.get(row["arm"], row["arm"])][column].append(float(row[column]))
    return {name: {c: mean(v) for c, v in by_column.items()} for name, by_column in values.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
