"""What the RL-only experiments share: run an arm's RLHF stage with its variant, summarise it."""

from __future__ import annotations

from pathlib import Path

from conf.schema import Config
from experiments.runner import Arm, ArmResult
from pipelines import rlhf
from pipelines.rl_actors import LIBRARY, Variant

VARIANTS: dict[str, Variant] = {"library": LIBRARY}


def register_variant(variant: Variant) -> Variant:
    VARIANTS[variant.name] = variant
    return variant


def run_rlhf_arm(cfg: Config, arm: Arm, arm_dir: Path, uri: str) -> ArmResult:
    final = rlhf.main(cfg, arm_dir, tracking_uri=uri, variant=VARIANTS[arm.variant])
    return ArmResult(arm, cfg, arm_dir, final)


def summary_row(result: ArmResult) -> dict:
    """The columns every RL comparison reports: held-out gold, format and 114514 rates, KL."""
    f = result.final
    return {
        "arm": result.arm.name,
        "gold pass (held-out)": f.get("eval/gold_pass_rate", float("nan")),
        "format rate": f.get("eval/format_rate", float("nan")),
        "114514 rate": f.get("eval/rate_114514", float("nan")),
        "KL": f.get("rl/kl", float("nan")),
    }
