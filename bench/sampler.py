"""Sampling speed with and without the KV cache, on an untrained policy of the demo shape.

    python -m bench.sampler [--batch 64] [--new-tokens 32] [--threads 1] [--sweep 1,8,64,256] [--group 4]

Prints one JSON line. `where_time_goes` splits one of our calls at the headline batch
into the prefill and the rest (the decoding steps and the choices between them, in C++), the
same call with that loop in Python into the prefill, the steps and the loop, and by operator kind;
beside them the floor the call's matrix products alone set on this machine (`products_floor_ms`,
bench/products.py) and the time a call may take to be 3x transformers (`call_ms_for_3x`).
Every row is forced to run all `new_tokens` steps (no early `<eor>`), so every variant
does the same work; each figure is the best of `--repeats` rounds, ours and transformers'
taken in turn within a round, and each `..._paired` is the ratio taken within each round (its
median and quartiles: bench/paired.py), which says how far a comparison holds on a noisy machine.
`eager_tokens_per_s` is ours with the decoding step eager instead of fused (models/fused_decode.py),
in the same run; `onednn_tokens_per_s` and `sgemm_tokens_per_s` are ours with the linears
on each kernel (models/kernels.py), in the same run; `tokens_per_s` is the one this
machine uses by default (`linears`). With the optional `bench` extra (`pip install -e
'.[bench]'`), Hugging Face `transformers` `generate` runs on a GPT-2 of the same shape
(layers, heads, width, vocabulary, context) on the same left-padded prompts, sampling
with its KV cache, in the same run: `hf_tokens_per_s`. The sweep repeats the comparison
per batch size; `group` is the RL sampler's workload: `batch` prompts with G samples
each (ours reads each prompt once, `samples_per_prompt`; transformers with
`num_return_sequences`). `bfloat16` is both with bfloat16 weights (`rl.sampler_precision`), against each other,
against our float32 rate of the same run and against our bfloat16 sampler with its decoding step eager.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable

import torch

from bench.paired import Rates
from bench.products import call_products, floor_ms
from models.fused_decode import fused
from models.fused_decode import load as load_fused_step
from models.gpt import GPT, GPTConfig
from models.kernels import current_kernel, onednn
from models.sampling import generate, left_pad
from world.actions import ActionSpace

NO_STOP = -1  # an id never sampled: rows run to the end

Run = Callable[[list[list[int]], int, int], int]  # (prompts, new tokens, samples per prompt) -> tokens made


def ours(
    model: GPT, use_cache: bool = True, kernel: str | None = None, fused_step: bool = True, loop_in_cpp: bool = True
) -> Run:
    """Our sampler; `kernel` "onednn" or "sgemm" forces where its linears run (models/kernels.py),
    `fused_step` False keeps the decoding step eager (models/fused_decode.py), `loop_in_cpp` False
    the loop around the fused steps in Python."""

    def run(prompts: list[list[int]], new_tokens: int, group: int) -> int:
        with onednn((kernel or current_kernel()) == "onednn"), fused(fused_step):
            gen = generate(
                model, prompts, max_new_tokens=new_tokens, eor_id=NO_STOP, pad_id=0, temperature=1.0,
                use_cache=use_cache, samples_per_prompt=group, loop_in_cpp=loop_in_cpp,
            )  # fmt: skip
        return gen.tokens.numel()

    return run


def transformers_generate(pad_id: int, dtype: torch.dtype = torch.float32) -> Run | None:
    """transformers.generate on a same-size GPT-2 (random weights: speed does not depend on them)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        return None
    config = GPT2Config(vocab_size=16, n_positions=128, n_embd=128, n_layer=4, n_head=4, pad_token_id=pad_id)
    model = GPT2LMHeadModel(config).eval().to(dtype)

    def run(prompts: list[list[int]], new_tokens: int, group: int) -> int:
        tokens, mask = left_pad(prompts, pad_id)
        with torch.no_grad():
            out = model.generate(
                input_ids=tokens, attention_mask=mask, do_sample=True, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, eos_token_id=None, num_return_sequences=group,
            )  # fmt: skip
        return (out.shape[1] - tokens.shape[1]) * out.shape[0]

    return run


# What a profile's operators are, for `where_time_goes`: the rest counts as "other".
OP_KINDS = {
    "aten::addmm": "linears", "aten::mm": "linears", "aten::linear": None,
    "aten::bmm": "attention products", "aten::baddbmm": "attention products",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "prefill attention",
    "aten::gelu": "gelu", "aten::native_layer_norm": "layer norm", "aten::_softmax": "softmax",
    "aten::copy_": "copies", "aten::fill_": "fills",
}  # fmt: skip


def where_time_goes(model: GPT, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict:
    """One of our calls split by phase and by operator kind, beside the floor its products set.

    The prefill (the model's `prefill`, reading the prompts) is timed through a wrapper on this
    instance; the rest of the call is the loop of decoding steps and choices, in C++. The same call
    with that loop in Python (`python_loop`) splits it further: the steps (`decode`, timed the same
    way) and the loop around them, which is what running the loop in C++ saves. Operators come from
    `torch.profiler`'s self CPU time. `products_floor_ms` is the call's matrix products timed alone at
    their shapes (bench/products.py): work any sampler of this model does, so no sampler beats it here.
    """
    spent = {"prefill": 0.0, "decode": 0.0}

    def timed(name: str, method):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = method(*args, **kwargs)
            spent[name] += time.perf_counter() - start
            return out

        return call

    def best_split(run: Run) -> dict[str, float]:
        best: dict[str, float] | None = None
        for _ in range(repeats):
            spent.update(prefill=0.0, decode=0.0)
            start = time.perf_counter()
            run(prompts, new_tokens, 1)
            total = time.perf_counter() - start
            if best is None or total < best["total"]:
                best = {"total": total, **spent}
        return best

    model.prefill, model.decode = timed("prefill", model.prefill), timed("decode", model.decode)
    try:
        in_cpp, in_python = best_split(ours(model)), best_split(ours(model, loop_in_cpp=False))
    finally:
        del model.prefill, model.decode  # back to the class's methods
    with torch.profiler.profile() as prof:
        ours(model)(prompts, new_tokens, 1)
    ops: dict[str, float] = {}
    for event in prof.key_averages():
        kind = OP_KINDS.get(event.key, "other")
        if kind is not None:
            ops[kind] = ops.get(kind, 0.0) + event.self_cpu_time_total / 1e3
    return {
        "call_ms": round(in_cpp["total"] * 1e3, 1),
        "prefill_ms": round(in_cpp["prefill"] * 1e3, 1),
        "after_prompt_ms": round((in_cpp["total"] - in_cpp["prefill"]) * 1e3, 1),
        "python_loop": {
            "call_ms": round(in_python["total"] * 1e3, 1),
            "prefill_ms": round(in_python["prefill"] * 1e3, 1),
            "decode_ms_per_step": round(in_python["decode"] * 1e3 / max(new_tokens - 1, 1), 3),
            "loop_ms": round((in_python["total"] - in_python["prefill"] - in_python["decode"]) * 1e3, 1),
        },
        "profiled_ops_ms": {k: round(v, 1) for k, v in sorted(ops.items(), key=lambda kv: -kv[1])},
        "products_floor_ms": round(
            floor_ms(call_products(model.cfg, sum(map(len, prompts)), len(prompts), 1, new_tokens)), 1
        ),
    }


def rates_by_round(
    runs: dict[str, Run | None], prompts: list[list[int]], new_tokens: int, group: int, repeats: int
) -> Rates:
    """New tokens/s of each run in each of `repeats` rounds, the runs taken in turn so drift hits them alike
    (bench/paired.py: the best round is the headline, the ratio within rounds says how far a comparison holds)."""
    rounds: dict[str, list[float]] = {name: [] for name, run in runs.items() if run is not None}
    for run in runs.values():
        if run is not None:
            run(prompts[:2], 2, group)  # warm-up
    for _ in range(repeats):
        for name, run in runs.items():
            if run is None:
                continue
            start = time.perf_counter()
            made = run(prompts, new_tokens, group)
            rounds[name].append(made / (time.perf_counter() - start))
    return Rates(rounds)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", default="1,8,64,256", help="batch sizes, comma-separated ('' = none)")
    parser.add_argument("--group", type=int, default=4, help="samples per prompt of the RL workload (1 = skip)")
    return parser.parse_args()


def _headline(rates: Rates, with_hf: bool) -> dict:
    """The B=64 call's figures: ours (the CPU's kernel) against each kernel, the eager step, no cache, transformers."""
    return {
        "tokens_per_s": round(rates["ours"]),
        "onednn_tokens_per_s": round(rates["onednn"]),
        "sgemm_tokens_per_s": round(rates["sgemm"]),
        "onednn_speedup": round(rates["onednn"] / rates["sgemm"], 2),
        "onednn_speedup_paired": rates.paired("onednn", "sgemm"),
        "fused_step": load_fused_step() is not None,
        "eager_tokens_per_s": round(rates["eager"]),
        "fused_speedup": round(rates["ours"] / rates["eager"], 2),
        "uncached_tokens_per_s": round(rates["uncached"]),
        "kv_speedup": round(rates["ours"] / rates["uncached"], 2),
        "hf_tokens_per_s": round(rates["hf"]) if with_hf else None,
        "vs_hf": round(rates["ours"] / rates["hf"], 2) if with_hf else None,
        "vs_hf_paired": rates.paired("ours", "hf"),
    }


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = ActionSpace()
    model = GPT(GPTConfig(vocab_size=space.size, n_layer=4, n_head=4, d_model=128, max_len=128)).eval()

    def prompts(n: int) -> list[list[int]]:
        return [space.encode_prompt([i, 2 * i, 4 * i, 8 * i, 16 * i]) for i in range(1, n + 1)]

    hf = transformers_generate(space.pad_id)
    default = current_kernel()
    variants = {
        "onednn": ours(model, kernel="onednn"), "sgemm": ours(model, kernel="sgemm"),
        "eager": ours(model, fused_step=False), "uncached": ours(model, use_cache=False), "hf": hf,
    }  # fmt: skip
    main_rates = rates_by_round(variants, prompts(args.batch), args.new_tokens, 1, args.repeats)
    main_rates = main_rates.renamed(default, "ours")
    sweep = []
    for batch in [int(b) for b in args.sweep.split(",") if b]:
        rates = rates_by_round({"ours": ours(model), "hf": hf}, prompts(batch), args.new_tokens, 1, args.repeats)
        sweep.append({"batch": batch, **_compare(rates)})
    phases = where_time_goes(model, prompts(args.batch), args.new_tokens, args.repeats)
    if hf is not None:  # the time a call may take to make its tokens at 3x transformers' rate of this run
        phases["call_ms_for_3x"] = round(1e3 * args.batch * args.new_tokens / (3 * main_rates["hf"]), 1)
    group = None
    if args.group > 1:
        rates = rates_by_round(
            {"ours": ours(model), "hf": hf}, prompts(args.batch), args.new_tokens, args.group, args.repeats
        )
        group = {"prompts": args.batch, "samples_per_prompt": args.group, **_compare(rates)}
    bf16 = bfloat16_rates(model, space.pad_id, prompts(args.batch), args, main_rates["ours"], hf is not None)
    print(
        json.dumps(
            {
                "bench": "sampler",
                "params": model.num_params(),
                "batch": args.batch,
                "new_tokens": args.new_tokens,
                "threads": args.threads,
                "linears": default,
                **_headline(main_rates, hf is not None),
                "sweep": sweep,
                "group": group,
                "where_time_goes": phases,
                "bfloat16": bf16,
            }
        )
    )


def bfloat16_rates(
    model: GPT, pad_id: int, prompts: list[list[int]], args: argparse.Namespace, float32_rate: float, with_hf: bool
) -> dict:
    """Ours and transformers' with bfloat16 weights (`rl.sampler_precision: bfloat16`), at the headline batch and
    on the RL workload, beside our float32 rate of the same run and our bfloat16 step eager (`fused_speedup`)."""
    low = copy.deepcopy(model).to(torch.bfloat16)
    runs = {"ours": ours(low), "eager": ours(low, fused_step=False)}
    runs["hf"] = transformers_generate(pad_id, torch.bfloat16) if with_hf else None
    rates = rates_by_round(runs, prompts, args.new_tokens, 1, args.repeats)
    grouped = rates_by_round(runs, prompts, args.new_tokens, args.group, args.repeats) if args.group > 1 else None
    group = {**_compare(grouped), "fused_speedup": round(grouped["ours"] / grouped["eager"], 2)} if grouped else None
    return {
        **_compare(rates),
        "vs_float32": round(rates["ours"] / float32_rate, 2),
        "eager_tokens_per_s": round(rates["eager"]),
        "fused_speedup": round(rates["ours"] / rates["eager"], 2),
        "group": group,
    }


def _compare(rates: Rates) -> dict[str, float | dict | None]:
    hf = rates.get("hf")
    return {
        "tokens_per_s": round(rates["ours"]),
        "hf_tokens_per_s": round(hf) if hf else None,
        "vs_hf": round(rates["ours"] / hf, 2) if hf else None,
        "vs_hf_paired": rates.paired("ours", "hf"),
    }


if __name__ == "__main__":
    main()
