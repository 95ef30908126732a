"""Sampling speed with and without the KV cache, on an untrained policy of the demo shape.

    python -m bench.sampler [--batch 64] [--new-tokens 32] [--threads 1]

Prints one JSON line. Every row is forced to run all `new_tokens` steps (no early
`<eor>`), so every variant does the same work. With the optional `bench` extra
(`pip install -e '.[bench]'`), Hugging Face `transformers` `generate` runs on a GPT-2 of
the same shape (layers, heads, width, vocabulary, context) on the same left-padded
prompts, sampling with its KV cache, in the same run: `hf_tokens_per_s`.
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


def hf_tokens_per_s(prompts: list[list[int]], new_tokens: int, pad_id: int) -> float | None:
    """transformers.generate on a same-size GPT-2 (random weights: speed does not depend on them)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    from models.sampling import left_pad

    config = GPT2Config(vocab_size=16, n_positions=128, n_embd=128, n_layer=4, n_head=4, pad_token_id=pad_id)
    model = GPT2LMHeadModel(config).eval()
    tokens, mask = left_pad(prompts, pad_id)
    kw = {"do_sample": True, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "eos_token_id": None}
    with torch.no_grad():
        model.generate(
            input_ids=tokens[:4], attention_mask=mask[:4], **(kw | {"max_new_tokens": 4, "min_new_tokens": 4})
        )
        start = time.perf_counter()
        out = model.generate(input_ids=tokens, attention_mask=mask, **kw)
    return (out.shape[1] - tokens.shape[1]) * out.shape[0] / (time.perf_counter() - start)


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
    hf = hf_tokens_per_s(prompts, args.new_tokens, space.pad_id)
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
                "hf_tokens_per_s": round(hf) if hf else None,
                "vs_hf": round(cached / hf, 2) if hf else None,
            }
        )
    )


if __name__ == "__main__":
    main()
