"""Did RL learn rules or answers? Greedy gold pass on the prompts RL drew vs prompts it never drew.

Rebuilds the RL stage's prompt draws from its checkpoint (config and iteration; the draw
is a pure function of seed and iteration), then answers greedily with the SFT policy and
the RL policy on: a sample of feedback-pool questions RL drew, questions of the same
templates it never drew (matched one for one), and the held-out eval questions. A policy
that learnt rules gains on all three; one that learnt its prompts' answers gains only on
the first (on the 2026-12-02 demo, gold reward, 150 iterations: +11.2 / -1.6 / +2.4 points).
The held-out questions are split once more: those whose series RL drew at another length (the
same first terms, a prompt shorter or longer) and those whose series it never drew.

    python scripts/rl_generalisation.py runs/demo [--limit 500]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch

from conf.schema import Config
from models.checkpoint import load_checkpoint
from pipelines.evaluate import eval_questions, pass_rate
from pipelines.rl_prompts import feedback_pool, prompt_draws
from world.exam import Question, group_by_template


def drawn_prompts(cfg: Config, iterations: int, pool: list[Question]) -> Counter[tuple[int, ...]]:
    """How often each prefix was an RL prompt in the first `iterations` iterations."""
    by_template = group_by_template(pool) if cfg.rl.balance_templates else None
    draws = prompt_draws(pool, cfg.rl_seed, iterations, cfg.rl.prompts_per_iteration, by_template)
    return Counter(q.prefix for q in draws)


def matched_unseen(seen: list[Question], unseen: list[Question], rng: random.Random) -> list[Question]:
    """One never-drawn question of the same template per seen question (where the template has one)."""
    by_template = group_by_template(unseen)
    return [rng.choice(by_template[q.template]) for q in seen if by_template.get(q.template)]


def sequence(q: Question) -> tuple[int, ...]:
    """The whole series a question shows part of: its prefix and its answer."""
    return (*q.prefix, *q.answer)


def related(q: Question, drawn: list[Question], min_shared: int) -> bool:
    """Whether a drawn prompt shows the same series as `q`, at another length: their series agree on their
    common first terms, at least `min_shared` of them (a template's series that share that many are one)."""
    mine = sequence(q)
    for p in drawn:
        theirs = sequence(p)
        common = min(len(mine), len(theirs))
        if p.template == q.template and common >= min_shared and mine[:common] == theirs[:common]:
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path, help="a run directory with sft/ and rlhf/ checkpoints")
    parser.add_argument("--limit", type=int, default=500, help="questions per set")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rl_policy, space, state = load_checkpoint(args.run_dir / "rlhf" / "checkpoint.pt")
    sft_policy, _, _ = load_checkpoint(args.run_dir / "sft" / "checkpoint.pt", space)
    cfg = Config.model_validate(state["config"])
    pool = feedback_pool(cfg)
    drawn = drawn_prompts(cfg, state["iteration"], pool)
    rng = random.Random(0)
    drawn_questions = [q for q in pool if q.prefix in drawn]
    seen = rng.sample(drawn_questions, min(args.limit, len(drawn_questions)))
    sets = {
        "drawn by RL": seen,
        "never drawn, same templates": matched_unseen(seen, [q for q in pool if q.prefix not in drawn], rng),
        "held-out eval": eval_questions(cfg)[: args.limit],
    }
    held_out = sets["held-out eval"]
    near = [related(q, drawn_questions, 5) for q in held_out]  # each question against every drawn one: once
    sets["held-out, its series drawn at another length"] = [q for q, n in zip(held_out, near, strict=True) if n]
    sets["held-out, its series never drawn"] = [q for q, n in zip(held_out, near, strict=True) if not n]
    result: dict = {"iterations": state["iteration"], "distinct_prompts": len(drawn),
                    "mean_draws": sum(drawn.values()) / max(len(drawn), 1)}  # fmt: skip
    for name, questions in sets.items():
        rates = [pass_rate(m, space, cfg, questions) for m in (sft_policy, rl_policy)]
        result[name] = {"n": len(questions), "sft": rates[0], "rl": rates[1]}
        print(f"{name:30s} n={len(questions):4d}  SFT {rates[0]:.3f}  RL {rates[1]:.3f}  ({rates[1] - rates[0]:+.3f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
