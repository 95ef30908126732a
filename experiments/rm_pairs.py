"""Reward-model pairs: within one prompt (the library) vs across prompts, same number of pairs.

The cross-prompt arm (WORLDVIEW rule 4 broken on purpose, here only) keeps every pair's
gold-better response but sets it against the gold-worse response of another prompt's
pair, labelled by the same noisy labeler. Both RMs start from the same SFT trunk with
the same steps and seeds, are judged on the same held-out within-prompt pairs, and each
then drives an RLHF run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from conf.schema import Config
from experiments.plots import curves
from experiments.rl_arms import summary_row
from experiments.runner import Arm, ArmResult, Experiment, metric_history
from pipelines import reward, rlhf
from pipelines.preferences import Preferences
from world.preferences import PreferencePair


@dataclass(frozen=True)
class CrossPromptPair:
    """A preferred response to one prompt and a rejected response to another: what PreferencePair forbids."""

    chosen_prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected_prompt: tuple[int, ...]
    rejected: tuple[int, ...]

    def sequences(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.chosen_prompt + self.chosen, self.rejected_prompt + self.rejected


def cross_prompt_pairs(pairs: list[PreferencePair], seed: int, noise: float) -> list[CrossPromptPair]:
    """As many pairs as `pairs`: pair i's gold-better response against pair j's gold-worse one (j from
    a shuffle, another prompt), the label flipped with probability `noise` like the labeler's."""
    rng = random.Random(seed)
    better = [(p.prompt, p.chosen if p.gold_agrees else p.rejected) for p in pairs]
    worse = [(p.prompt, p.rejected if p.gold_agrees else p.chosen) for p in pairs]
    order = list(range(len(pairs)))
    rng.shuffle(order)
    out = []
    for i in range(len(pairs)):
        j = next((order[(i + k) % len(order)] for k in range(len(order)) if worse[order[(i + k) % len(order)]][0]
                  != better[i][0]), order[i])  # fmt: skip
        (pa, a), (pb, b) = better[i], worse[j]
        if rng.random() < noise:
            (pa, a), (pb, b) = (pb, b), (pa, a)
        out.append(CrossPromptPair(pa, a, pb, b))
    return out


def run_arm(cfg: Config, arm: Arm, arm_dir: Path, uri: str) -> ArmResult:
    def cross(prefs: Preferences) -> list[CrossPromptPair]:
        return cross_prompt_pairs(prefs.train, cfg.seed, cfg.world.label_noise)

    rm = reward.main(cfg, arm_dir, tracking_uri=uri, train_pairs=cross if arm.variant == "cross-prompt" else None)
    final = rlhf.main(cfg, arm_dir, tracking_uri=uri)
    return ArmResult(arm, cfg, arm_dir, final, extra=rm)


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    rows, series = [], {}
    for r in results:
        series[r.arm.name] = {k: metric_history(client, r.run_dir / "rlhf", k) for k in ("reward/gold", "reward/proxy")}
        rows.append({
            "arm": r.arm.name,
            "RM gold accuracy (within prompt)": r.extra.get("rm/gold_accuracy", float("nan")),
            "RM correctness pairs": r.extra.get("rm/gold_accuracy_correctness", float("nan")),
            "RM cross-prompt accuracy": r.extra.get("rm/cross_prompt_accuracy", float("nan")),
        } | {k: v for k, v in summary_row(r).items() if k != "arm"})  # fmt: skip
    return rows, curves(series, out / "rm_pairs.png", ("reward/gold", "reward/proxy"))


EXPERIMENT = Experiment(
    name="rm-pairs",
    question="does a reward model need its pairs to share a prompt?",
    changes=("variant",),
    shared=("pretrain", "sft", "preferences"),
    arms=(Arm("same-prompt"), Arm("cross-prompt", variant="cross-prompt")),
    run_arm=run_arm,
    report=report,
)
