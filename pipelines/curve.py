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
from conf.schema import Config
from pipelines.evaluate import greedy_judgement, pass_rate
from pipelines.policy_source import Policy, named_policy, stage_policy
from pipelines.rl_prompts import practised_for
from pipelines.run_config import RunDirError
from world.exam import questions as bank_questions

SNAPSHOT_GLOB = "iteration-*.pt"


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
    iteration stands for it)."""
    paths = sorted((run_dir / "rlhf" / "snapshots").glob(SNAPSHOT_GLOB))
    if not paths:
        raise RunDirError(
            f"{run_dir} keeps no RLHF snapshots (rl.snapshot_every was 0 when its RLHF trained): a run judges its "
            "policies along the way from the snapshots it kept"
        )
    kept = {p.state["iteration"]: p for p in map(named_policy, map(str, paths))}
    final = run_dir / "rlhf" / "checkpoint.pt"
    if final.is_file():
        last = named_policy(str(final))
        kept.setdefault(last.state["iteration"], last)
    return sorted(kept.items())


def rl_curve(run_dir: Path) -> list[Point]:
    """The SFT policy, then each kept RLHF policy, judged on the held-out exam and the practised prompts."""
    sft = stage_policy(run_dir, "sft")
    cfg = sft.cfg  # the run's: its held-out questions, its practised prompts
    w = cfg.world
    practised = practised_for(cfg, bank_questions(w.seed, w.bank_size, "feedback", w.max_difficulty, w.feedback_share))
    policies = kept_policies(run_dir)
    _, before = greedy_judgement(sft.model, sft.space, cfg)
    return [judge_point(i, policy, cfg, before, practised) for i, policy in [(0, sft), *policies]]


def judge_point(iteration: int, policy: Policy, cfg: Config, before: list[bool], practised: list) -> Point:
    """One policy's point of the curve; `before`: the SFT policy's verdicts on the run's held-out questions."""
    metrics, after = greedy_judgement(policy.model, policy.space, cfg)
    gain, stderr = paired_difference(before, after)
    fixed, broken = fixed_and_broken(before, after)
    return Point(
        iteration=iteration,
        held_out=metrics["eval/gold_pass_rate"],
        held_out_stderr=metrics["eval/gold_pass_rate_stderr"],
        rate_114514=metrics["eval/rate_114514"],
        practised=pass_rate(policy.model, policy.space, cfg, practised),
        gain_over_sft=gain,
        gain_stderr=stderr,
        fixed=fixed,
        broken=broken,
    )


def to_json(points: list[Point]) -> str:
    return json.dumps([asdict(p) for p in points])
