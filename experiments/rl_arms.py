"""What the RL-only experiments share: run an arm's RLHF stage with its variant, summarise it."""

from __future__ import annotations

from collections.abc import Callable
from itertools import accumulate
from pathlib import Path

from conf.schema import Config
from experiments.plots import curves
from experiments.runner import Arm, ArmResult, Experiment, Report, metric_history
from pipelines import rlhf
from pipelines.rl_actors import LIBRARY, Variant

VARIANTS: dict[str, Variant] = {"library": LIBRARY}


def register_variant(variant: Variant) -> Variant:
    VARIANTS[variant.name] = variant
    return variant


def run_rlhf_arm(cfg: Config, arm: Arm, arm_dir: Path, uri: str) -> ArmResult:
    final = rlhf.main(cfg, arm_dir, tracking_uri=uri, variant=VARIANTS[arm.variant])
    return ArmResult(arm, cfg, arm_dir, final)


def rl_experiment(
    name: str, question: str, changes: tuple[str, ...], arms: tuple[Arm, ...], report: Report, seeds: int = 1
) -> Experiment:
    """An experiment whose arms differ only in RLHF: the stages before it are trained once and shared, and each
    arm runs RLHF with its settings (and its variant), at `seeds` RL seeds unless `--seeds` says otherwise."""
    return Experiment(
        name=name, question=question, changes=changes, shared=("pretrain", "sft", "reward"), arms=arms,
        run_arm=run_rlhf_arm, report=report, seeds=seeds,
    )  # fmt: skip


def over_iterations(client, result: ArmResult, key: str, reduce: Callable, absent: float = float("nan")) -> float:
    """One metric of an arm's RLHF over its iterations, reduced (`statistics.mean`, `max`); `absent` where the
    arm never logged it (a variant without that metric, a setting that logs it only when on)."""
    _, values = metric_history(client, result.run_dir / "rlhf", key)
    return reduce(values) if values else absent


def summary_row(result: ArmResult) -> dict:
    """The columns every RL comparison reports: held-out gold (and its gain over the arm's SFT policy, question by
    question, with the paired standard error to read arms' differences against, and the questions RL fixed and
    broke), format and 114514 rates, KL."""
    f = result.final
    return {
        "arm": result.arm.name,
        "gold pass (held-out)": f.get("eval/gold_pass_rate", float("nan")),
        "gain over SFT": f.get("eval/gain_over_sft", float("nan")),
        "± paired": f.get("eval/gain_over_sft_stderr", float("nan")),
        "fixed / broken": " / ".join(f"{f.get(f'eval/{k}_over_sft', float('nan')):.0f}" for k in ("fixed", "broken")),
        "format rate": f.get("eval/format_rate", float("nan")),
        "114514 rate": f.get("eval/rate_114514", float("nan")),
        "KL": f.get("rl/kl", float("nan")),
    }


def wall_clock_report(
    results: list[ArmResult], client, plot: Path, metrics: tuple[str, ...], columns: Callable[[ArmResult], dict]
) -> tuple[list[dict], Path]:
    """An RL comparison whose arms cost different time per iteration: each arm's `summary_row`, its own `columns`
    and its RL seconds in all, and `metrics` plotted against iterations and against cumulative RL seconds, so
    the arms are compared at equal time too."""
    series, rows = {}, []
    for r in results:
        rl_dir = r.run_dir / "rlhf"
        steps, wall = metric_history(client, rl_dir, "time/iteration")
        series[r.arm.name] = {key: metric_history(client, rl_dir, key) for key in metrics}
        series[r.arm.name]["elapsed"] = {0: 0.0} | dict(zip(steps, accumulate(wall), strict=True))  # 0: SFT's
        rows.append(summary_row(r) | columns(r) | {"RL seconds": sum(wall)})
    return rows, curves(series, plot, metrics, against_wall=True)
