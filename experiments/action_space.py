"""The action space: a prompt format pretraining never saw vs the same format moved into pretraining.

The exam's question marker `?` is the only token the SFT format adds to plain sequences.
The library puts question-form documents into pretraining (`world.query_rate`), so the
audit passes. The `query-only-in-sft` arm pretrains with `world.query_rate=0`: `?` never
occurs, the audit refuses SFT, and this experiment (and nothing else) bypasses it, to
show what the refusal protects. Both arms then run SFT and RLHF with the same seeds.
The shift is measured before SFT: the share of SFT examples the audit would refuse, and
the pretrained policy's loss on the SFT answers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

from conf.schema import Config
from experiments.plots import curves
from experiments.rl_arms import summary_row
from experiments.runner import Arm, ArmResult, Experiment, metric_history
from models.checkpoint import load_checkpoint
from pipelines import pretrain, reward, rlhf, sft
from pipelines.train_loop import collate, lm_loss
from world.actions import ActionSpace
from world.audit import ActionSpaceAuditError, CorpusStats, audit

SHIFT_SAMPLE = 512


@contextlib.contextmanager
def audit_bypassed() -> Iterator[None]:
    """SFT without the action-space audit: the deliberate breach this experiment exists to show."""

    def count_only(stage: str, examples, stats: CorpusStats) -> int:
        return sum(1 for _ in examples)

    with mock.patch.object(sft, "audit", count_only):
        yield


def refused_share(stats: CorpusStats, examples: list[list[str]]) -> float:
    """Share of examples the audit refuses (each checked on its own)."""
    refused = 0
    for tokens in examples:
        try:
            audit("probe", [tokens], stats)
        except ActionSpaceAuditError:
            refused += 1
    return refused / max(len(examples), 1)


@torch.no_grad()
def action_space_shift(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Before SFT: how much of the SFT data pretraining never covered, and the pretrained loss on its answers."""
    space = ActionSpace(digit_order=cfg.world.digit_order)
    model, _, state = load_checkpoint(run_dir / "pretrain" / "checkpoint.pt", space)
    stats = CorpusStats.from_dict(state["corpus_stats"])
    questions = random.Random(cfg.seed).sample(sft.train_questions(cfg), SHIFT_SAMPLE)
    examples = [sft.sft_example(space, q) for q in questions]
    batch = collate([e[0] for e in examples], space.pad_id, first_action=[e[1] for e in examples])
    model.eval()
    loss, _ = lm_loss(model, batch)
    return {
        "shift/refused_share": refused_share(stats, [space.decode_tokens(e[0]) for e in examples]),
        "shift/pretrained_answer_loss": loss.item(),
    }


def run_arm(cfg: Config, arm: Arm, arm_dir: Path, uri: str) -> ArmResult:
    pretrain.main(cfg, arm_dir, tracking_uri=uri)
    shift = action_space_shift(cfg, arm_dir)
    with audit_bypassed() if arm.variant == "audit-bypassed" else contextlib.nullcontext():
        tuned = sft.main(cfg, arm_dir, tracking_uri=uri)
    if cfg.rl.reward_source == "rm":
        reward.main(cfg, arm_dir, tracking_uri=uri)
    final = rlhf.main(cfg, arm_dir, tracking_uri=uri)
    return ArmResult(arm, cfg, arm_dir, final, extra=shift | {f"sft/{k}": v for k, v in tuned.items()})


def report(results: list[ArmResult], out: Path, client) -> tuple[list[dict], Path]:
    rows, series = [], {}
    for r in results:
        series[r.arm.name] = {k: metric_history(client, r.run_dir / "sft", k) for k in ("loss/lm",)}
        rows.append({
            "arm": r.arm.name,
            "SFT examples the audit refuses": r.extra["shift/refused_share"],
            "pretrained loss on SFT answers": r.extra["shift/pretrained_answer_loss"],
            "SFT gold pass": r.extra.get("sft/eval/gold_pass_rate", float("nan")),
            "SFT format rate": r.extra.get("sft/eval/format_rate", float("nan")),
        } | {f"RLHF {k}" if k != "arm" else k: v for k, v in summary_row(r).items() if k != "arm"})  # fmt: skip
    return rows, curves(series, out / "action_space.png", ("loss/lm",))


EXPERIMENT = Experiment(
    name="action-space",
    question="what does opening an action after pretraining cost, against moving that data into pretraining?",
    changes=("world.query_rate",),
    shared=(),
    arms=(Arm("query-in-pretraining"), Arm("query-only-in-sft", ("world.query_rate=0",), variant="audit-bypassed")),
    run_arm=run_arm,
    report=report,
)
