"""Does the feedback pool teach the SFT policy more when given with its answers? SFT trained on, from a run's policy.

RLHF practises on the feedback pool and barely moves the held-out rate (docs/EXPERIMENTS.md §12).
This trains the run's SFT policy on further with the SFT loss on the same pool's questions and their
answers (`--data pool`), on the whole train split (`--data train`: the pool and SFT's own
questions), or on SFT's own questions alone (`--data sft`: the control, more of the same SFT), with
a fresh AdamW at a constant learning rate, and judges it greedily on the held-out eval questions and
on 500 of the pool's, every third of the way. No MLflow, no checkpoint.

    python scripts/sft_on_pool.py runs/demo --lr 2e-4 --steps 900 --batch 128 --data pool
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from conf.schema import Config
from models.checkpoint import load_checkpoint
from pipelines import train_loop
from pipelines.evaluate import eval_questions, pass_rate
from pipelines.rl_prompts import feedback_pool
from pipelines.sft import batch_at, batch_loss, train_questions
from world.exam import group_by_template, questions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path, help="a run directory with an sft/ checkpoint")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--data", choices=("pool", "train", "sft"), default="pool")
    parser.add_argument("--seed", type=int, default=12345, help="the batches' seed (not SFT's, so new batches)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, space, state = load_checkpoint(args.run_dir / "sft" / "checkpoint.pt")
    cfg = Config.model_validate(state["config"])
    pool = feedback_pool(cfg)
    world = cfg.world
    data = {
        "pool": lambda: pool,
        "train": lambda: questions(world.seed, world.bank_size, "train", world.max_difficulty),
        "sft": lambda: train_questions(cfg),
    }[args.data]()
    by_template = group_by_template(data)
    held_out = eval_questions(cfg)

    def judged(step: int) -> dict:
        return {
            "step": step,
            "held_out": pass_rate(model, space, cfg, held_out),
            "pool": pass_rate(model, space, cfg, pool[:500]),
        }

    rows = [judged(0)]
    print(rows[-1], flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    constant = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss = batch_loss(cfg.sft.state_loss_weight)  # the SFT stage's

    start = time.perf_counter()
    for step in range(args.steps):
        batch = batch_at(space, data, args.seed, step, args.batch, by_template, cfg.model.max_len)
        train_loop.train_step(model, optimizer, constant, batch, cfg.sft.grad_clip, loss)
        if (step + 1) % max(args.steps // 3, 1) == 0:
            rows.append(judged(step + 1))
            print(rows[-1], flush=True)
    seconds = round(time.perf_counter() - start)
    print(json.dumps({"data": args.data, "questions": len(data), "lr": args.lr, "batch": args.batch, "rows": rows,
                      "seconds": seconds}))  # fmt: skip


if __name__ == "__main__":
    main()
