"""Where sharpening could help, does the reward model prefer the right answer?

On the held-out questions whose greedy answer (of the run's SFT policy, or `--stage rlhf`)
is wrong while one of `--samples` answers at temperature 1 is right, score the right
answer and the greedy one with the run's reward model, as RL's scorer does, and count how
often the right one wins. RLHF can only move the policy toward the right answer where the
RM ranks it first.

    python scripts/rm_headroom.py runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from actors.reward_scorer import RewardScorerImpl
from models.checkpoint import load_checkpoint
from pipelines.evaluate import answer_questions, eval_questions
from pipelines.run_config import load_run_config
from world.actions import ActionSpace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--stage", default="sft")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.run_dir)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    policy, _, _ = load_checkpoint(args.run_dir / args.stage / "checkpoint.pt", space)
    asked = eval_questions(cfg)
    budget = {"max_new_tokens": cfg.rl.max_new_tokens, "batch_size": 256}
    greedy = answer_questions(policy, space, asked, **budget)
    drawn = [answer_questions(policy, space, asked, temperature=1.0, seed=s, **budget) for s in range(args.samples)]
    headroom = [
        (q, g)
        for i, (q, g) in enumerate(zip(asked, greedy, strict=True))
        if g is not None and tuple(g) != q.answer and any(d[i] is not None and tuple(d[i]) == q.answer for d in drawn)
    ]
    scorer = RewardScorerImpl(str(args.run_dir / "reward" / "checkpoint.pt"), cfg.world.digit_order, args.threads)
    prefixes = [list(q.prefix) for q, _ in headroom]
    right = scorer.score_texts(prefixes, [space.encode_response(list(q.answer)) for q, _ in headroom])
    wrong = scorer.score_texts(prefixes, [space.encode_response(g) for _, g in headroom])
    prefer = sum(r > w for r, w in zip(right, wrong, strict=True))
    print(json.dumps({
        "held_out": len(asked), "greedy_wrong_sampled_right": len(headroom), "rm_prefers_right": prefer,
        "share": round(prefer / max(len(headroom), 1), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
