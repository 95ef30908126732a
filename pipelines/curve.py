"""RLHF's policies along the way, judged after the fact: the SFT policy it began from, each snapshot it kept
(`rl.snapshot_every`) and its final policy, on the held-out exam and on the prompts RL practises.

    tokenmdp curve runs/demo
    tokenmdp curve runs/demo --json

Training judges its policy every `rl.eval_every` iterations; the snapshots let a finished run be
judged at every one it kept, each question by question against SFT (the paired gain, fixed and
broken), without training again. Held-out and practised side by side show what the issue-5
analysis found: a policy that learns its prompts' answers gains on the practised prompts only.
Nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from algos.stats import fixed_and_broken, paired_difference
from pipelines.evaluate import Judgement, judge
from pipelines.policy_source import Policy, kept_snapshots, named_policy, stage_policy
from pipelines.rl_prompts import feedback_pool, practised_for
from pipelines.run_config import RunDirError, checkpointed


@dataclass(frozen=True)
class Point:
    """One policy of the run, judged greedily."""

    iteration: int  # 0: the SFT policy
    held_out: float  # gold pass rate on the held-out exam
    held_out_stderr: float
    rate_114514: float  # well-formed but not the exam's answer
    practised: float  # gold pass rate on the prompts RL practises
    gain_over_sft: float  # held-out, question by question
    gain_stderr: float
    fixed: int
    broken: int


def kept_policies(run_dir: Path) -> list[tuple[int, Policy]]:
    """(iteration, policy) of each snapshot and of the final checkpoint, by iteration (a snapshot of the final
    iteration stands for it, and the final checkpoint, 17 MB with the optimizer, is then not loaded)."""
    paths = kept_snapshots(run_dir)
    if not paths:
        raise RunDirError(
            f"{run_dir} keeps no RLHF snapshots (rl.snapshot_every was 0 when its RLHF trained): a run judges its "
            "policies along the way from the snapshots it kept"
        )
    kept = {p.state["iteration"]: p for p in map(named_policy, map(str, paths))}
    last = checkpointed(run_dir, "rlhf")  # the final checkpoint's iteration, read without its weights (0: none)
    if last and last not in kept:
        kept[last] = named_policy(str(run_dir / "rlhf" / "checkpoint.pt"))
    return sorted(kept.items())


def rl_curve(run_dir: Path) -> list[Point]:
    """The SFT policy, then each kept RLHF policy, judged on the held-out exam and the practised prompts."""
    sft = stage_policy(run_dir, "sft")
    cfg = sft.cfg  # the run's: its held-out questions, its practised prompts
    practised = practised_for(cfg, feedback_pool(cfg))
    judged = [(i, judge(p.model, p.space, cfg, practised)) for i, p in [(0, sft), *kept_policies(run_dir)]]
    before = judged[0][1].held_out  # the SFT policy's verdicts
    return [point(i, judgement, before) for i, judgement in judged]


def point(iteration: int, judged: Judgement, before: list[bool]) -> Point:
    """One policy's point of the curve, its held-out verdicts paired with the SFT policy's (`before`)."""
    gain, stderr = paired_difference(before, judged.held_out)
    fixed, broken = fixed_and_broken(before, judged.held_out)
    m = judged.metrics
    return Point(
        iteration=iteration,
        held_out=m["eval/gold_pass_rate"],
        held_out_stderr=m["eval/gold_pass_rate_stderr"],
        rate_114514=m["eval/rate_114514"],
        practised=m["eval/practised_pass_rate"],
        gain_over_sft=gain,
        gain_stderr=stderr,
        fixed=fixed,
        broken=broken,
    )


def to_json(points: list[Point]) -> str:
    return json.dumps([asdict(p) for p in points])
