"""Where the time of one RLHF iteration goes, per phase, with 1 and 2 samplers.

    python -m bench.rl_iteration [--iterations 6] [--prompts 64] [--group 4] [--set rl.threads=2 ...]

Untrained demo-shape policy and reward model (timing does not depend on what they
learned); real actors, real RLlib learner, real weight sync. The first iteration is a
warm-up and is left out. Prints one JSON line: mean seconds per phase for each sampler
count, and the share of sync + buffer in an iteration. The scorer, the reference (and the
critic) judge a batch at once: `judge` is that lap's wall time, `score` and `reference`
each actor's time to its last reply (they share the cores, so each is longer than alone).
`--set` changes a setting of the demo preset for every variant, as `tokenmdp run --set` does
(`rl.threads`, an actor kind's `rl.actors.<kind>.threads`): the JSON names them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from conf.load import load_config
from models.checkpoint import save_checkpoint
from models.gpt import GPT, GPTConfig
from models.heads import ScalarModel
from world.actions import ActionSpace
from world.exam import questions as bank_questions

# Laps of an iteration, one after another: they add up to its wall time.
LAPS = ("sample", "judge", "advantage", "buffer", "update", "sync")
# Inside the judge lap at once, each timed to its own end: they overlap.
JUDGES = ("score", "reference", "critic")


def fake_run(run_dir: Path, cfg, space: ActionSpace) -> GPT:
    torch.manual_seed(0)
    m = cfg.model
    policy = GPT(GPTConfig(space.size, m.n_layer, m.n_head, m.d_model, m.max_len))
    save_checkpoint(run_dir / "sft" / "checkpoint.pt", model=policy, space=space)
    save_checkpoint(run_dir / "reward" / "checkpoint.pt", model=ScalarModel(policy), space=space)
    return policy


def measure(samplers: int, args, run_dir: Path, sync: str) -> dict:
    from actors.cluster import init_ray
    from pipelines import rlhf
    from pipelines.rl_actors import start_actors

    overrides = [
        f"rl.actors.sampler.replicas={samplers}", f"rl.prompts_per_iteration={args.prompts}",
        f"rl.group_size={args.group}", f"rl.sync={sync}", "world.bank_size=2000", *args.set,
    ]  # fmt: skip
    cfg = load_config("demo", overrides)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    policy = fake_run(run_dir, cfg, space)
    questions = bank_questions(0, 2000, "train")  # any prompts do for timing
    init_ray()
    actors = start_actors(cfg, run_dir, space, policy)
    rows, version = [], 0
    try:
        for it in range(args.iterations):
            step = rlhf.iteration_step(cfg, actors, space, policy, questions, it, version)
            version = step.version
            if it > 0:
                rows.append(step.metrics)
    finally:
        actors.stop()
    mean = {p: sum(r[f"time/{p}"] for r in rows) / len(rows) for p in (*LAPS, *JUDGES, "iteration")}
    total = mean.pop("iteration")
    return {
        "seconds": {p: round(v, 4) for p, v in mean.items()},
        "iteration_s": round(total, 3),
        "sync_buffer_share": round((mean["sync"] + mean["buffer"]) / total, 4),
        "sync_transfer_s": round(sum(r["time/sync_transfer"] for r in rows) / len(rows), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a demo setting to change")
    args = parser.parse_args()
    result = {"bench": "rl_iteration", "prompts": args.prompts, "group": args.group, "settings": args.set}
    with tempfile.TemporaryDirectory() as tmp:
        for samplers, sync in ((1, "collective"), (2, "collective"), (1, "object_store")):
            result[f"samplers_{samplers}_{sync}"] = measure(samplers, args, Path(tmp) / f"{samplers}{sync}", sync)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
