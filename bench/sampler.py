"""Sampling speed with and without the KV cache, on an untrained policy of the demo shape.

    python -m bench.sampler [--batch 64] [--new-tokens 32] [--threads 1]

Prints one JSON line. Every row is forced to run all `new_tokens` steps (no early
`<eor>`), so both variants do the same work.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.gpt import GPT, GPTConfig
from models.sampling import generate
from world.actions import ActionSpace


def tokens_per_s(model: GPT, prompts: list[list[int]], new_tokens: int, use_cache: bool, no_stop_id: int) -> float:
    start = time.perf_counter()
    gen = generate(
        model, prompts, max_new_tokens=new_tokens, eor_id=no_stop_id, pad_id=0, temperature=1.0, use_cache=use_cache
    )
    return gen.tokens.numel() / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = ActionSpace()
    model = GPT(GPTConfig(vocab_size=space.size, n_layer=4, n_head=4, d_model=128, max_len=128)).eval()
    prompts = [space.encode_prompt([i, 2 * i, 4 * i, 8 * i, 16 * i]) for i in range(1, args.batch + 1)]
    no_stop = -1  # an id never sampled: rows run to the end
    tokens_per_s(model, prompts[:4], 4, True, no_stop)  # warm-up
    cached = tokens_per_s(model, prompts, args.new_tokens, True, no_stop)
    uncached = tokens_per_s(model, prompts, args.new_tokens, False, no_stop)
    print(
        json.dumps(
            {
                "bench": "sampler",
                "params": model.num_params(),
                "batch": args.batch,
                "new_tokens": args.new_tokens,
                "threads": args.threads,
                "tokens_per_s": round(cached),
                "uncached_tokens_per_s": round(uncached),
                "kv_speedup": round(cached / uncached, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
