"""SFT variants from one pretrained checkpoint (or from scratch), judged greedily on 500 eval and 500 SFT questions.

The SFT stage's batches (same seeds), optimiser and loss (`algos.lm.sft_loss`), without
MLflow or checkpoints, so that levers can be compared side by side; it also reports the
pass rate on questions SFT trained on, which tells underfitting from overfitting.

    python scripts/sft_probe.py --pretrained runs/demo/pretrain/checkpoint.pt --state-loss-weight 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.gpt import GPT, GPTConfig
from pipelines import train_loop
from pipelines.evaluate import answer_questions, score
from pipelines.sft import batch_at, batch_loss, group_by_template
from world.actions import ActionSpace
from world.exam import questions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrained", help="a pretraining checkpoint; without it, SFT from scratch")
    parser.add_argument("--digit-order", default="msb", help="from scratch only: a checkpoint keeps its own")
    parser.add_argument("--state-loss-weight", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--balanced", action="store_true", help="templates drawn uniformly (sft.balance_templates)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config("demo")
    w = cfg.world
    if args.pretrained:
        model, space, _ = load_checkpoint(args.pretrained)
    else:
        space = ActionSpace(digit_order=args.digit_order)
        model = GPT(GPTConfig(space.size, cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, cfg.model.max_len))
    train = questions(w.seed, w.bank_size, "sft", w.max_difficulty, w.feedback_share)
    held_out = questions(w.seed, w.bank_size, "eval", w.max_difficulty)[:500]
    optim = cfg.sft.model_copy(update={"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size})
    optimizer, schedule = train_loop.make_optimizer(model, optim)
    loss = batch_loss(args.state_loss_weight)

    by_template = group_by_template(train) if args.balanced else None
    start = time.perf_counter()
    for step in range(args.steps):
        batch = batch_at(space, train, w.seed, step, args.batch_size, by_template)
        train_loop.train_step(model, optimizer, schedule, batch, optim.grad_clip, loss)
    result = {**vars(args), "digit_order": space.digit_order, "train_seconds": round(time.perf_counter() - start)}
    for name, qs in (("eval", held_out), ("sft_train", train[:500])):
        metrics = score(qs, answer_questions(model, space, qs, max_new_tokens=16, batch_size=256))
        result[f"{name}_gold_pass_rate"] = metrics["eval/gold_pass_rate"]
        result[f"{name}_format_rate"] = metrics["eval/format_rate"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
