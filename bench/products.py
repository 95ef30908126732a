"""The matrix products one sampling call cannot avoid, and how long they take alone on this machine.

A call's linears are work that any sampler of the same model does: transformers' `generate`
computes the same products (and more: its prefill reads the padding and runs every layer at
every prompt position). Timed alone at their shapes, on the kernel the policy uses, they are
a floor under our call's time; set beside the time a call may take to be k times faster than
transformers, they say how far a speed-up can go here before the arithmetic itself is the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from models.gpt import GPTConfig
from models.kernels import onednn_applies, onednn_linear


@dataclass(frozen=True)
class Product:
    """`count` products of a (rows, inputs) matrix by an (inputs, outputs) one."""

    rows: int
    inputs: int
    outputs: int
    count: int

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.inputs * self.outputs * self.count


def call_products(cfg: GPTConfig, prompt_tokens: int, prompts: int, group: int, new_tokens: int) -> list[Product]:
    """The products of one `generate` call (models/sampling.py) of `prompts` prompts holding `prompt_tokens`
    real tokens in all, `group` samples each, `new_tokens` actions per row.

    The prefill (`GPT.prefill`) runs every layer's keys and values at every real prompt token, the
    layers below the last read on there, and the last reads on at each prompt's last token only;
    each action is chosen from the state's logits (the tied embedding, `new_tokens` times); every
    action but the last is then read by a decoding step through all layers."""
    c, layers, rows = cfg.d_model, cfg.n_layer, prompts * group
    block = [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)]  # qkv, the attention's output, the feed-forward's two
    prefill = [Product(prompt_tokens, k, n, layers - 1) for k, n in block]
    prefill += [Product(prompt_tokens, *block[0], 1)] + [Product(prompts, k, n, 1) for k, n in block[1:]]
    steps = [Product(rows, k, n, (new_tokens - 1) * layers) for k, n in block]
    return [*prefill, *steps, Product(rows, c, cfg.vocab_size, new_tokens)]


def seconds(product: Product, loops: int = 10, calls: int = 10) -> float:
    """The product's time on the kernel the policy's linears call (`models.kernels`: oneDNN or sgemm, as
    this machine's sampler runs them), times its count: the best of `loops` runs of `calls` calls each,
    straight to the kernel, so Python's per-call cost weighs little (the fused step calls it from C++)."""
    x, weight = torch.randn(product.rows, product.inputs), torch.randn(product.outputs, product.inputs)
    on_onednn = onednn_applies(x, weight)
    multiply = (lambda: onednn_linear(x, weight, None)) if on_onednn else (lambda: torch.mm(x, weight.t()))
    with torch.inference_mode():
        multiply()
        best = float("inf")
        for _ in range(loops):
            start = time.perf_counter()
            for _ in range(calls):
                multiply()
            best = min(best, (time.perf_counter() - start) / calls)
    return best * product.count


def floor_ms(products: list[Product]) -> float:
    """Milliseconds the products take alone, each at its best time."""
    return 1e3 * sum(seconds(product) for product in products)
