"""Linear layers that run their products on oneDNN where this CPU's BLAS is slow.

PyTorch sends a float32 `nn.Linear` on the CPU to MKL's sgemm, which on an AVX-512 AMD
CPU (Zen 4) does not use the AVX-512 units: a 1024-square product runs at ~97 GFLOP/s
against ~228 on oneDNN (the `mkldnn` library PyTorch ships), and a whole SFT step ran
1.4x faster, sampling 1.2x (bench/README). Elsewhere sgemm is as fast or faster: on an
AVX2-only AMD CPU (Zen 3) sgemm 75 GFLOP/s, oneDNN 64, sampling on oneDNN 0.87x; on an
AVX-512 Intel Xeon, where MKL does use AVX-512, sgemm 312, oneDNN 305, sampling 0.85x
and SFT a wash. So oneDNN is the default only on AMD CPUs for which PyTorch reports
AVX-512 (`torch.backends.cpu.get_cpu_capability()`, the vendor from /proc/cpuinfo), and
`TOKENMDP_LINEARS=onednn|sgemm` overrides the choice. `Linear` is `nn.Linear`
with its forward and input gradient on oneDNN from `ONEDNN_MIN_ROWS` rows on (below
that oneDNN's per-call overhead costs more than its kernel saves); the weight gradient
stays on sgemm, where oneDNN is no faster at these shapes. Same parameters, same
float32 arithmetic up to the order of summation, so checkpoints and the learner's
log-probs are unchanged to ~1e-6. Without autograd (sampling, scoring) `FeedForward`
also applies its GELU inside the first product's kernel. Where oneDNN is on, a bfloat16
policy's products (a bfloat16 sampler or server) run on it at any size, GELU inside too: on a
Zen 4 sampling was 1.08x faster at B=64 and 1.32x at one row than on ATen's bfloat16 addmm.
`with onednn(False):` (or `True`) switches within a block (benchmarks and tests compare both
in one run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

ONEDNN_MIN_ROWS = 16
AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
KERNEL_CHOICES = ("onednn", "sgemm")


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor id ("AuthenticAMD", "GenuineIntel", ...), "" where it cannot be read."""
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def default_enabled(capability: str, vendor: str, override: str | None) -> bool:
    """oneDNN by default on AMD CPUs with AVX-512, where MKL's sgemm leaves those units idle
    (measured faster there, slower or a wash on AVX2 and on Intel); `override` (the
    `TOKENMDP_LINEARS` variable) decides when set."""
    if override:
        if override not in KERNEL_CHOICES:
            raise ValueError(f"TOKENMDP_LINEARS={override!r}: expected one of {', '.join(KERNEL_CHOICES)}")
        return override == "onednn" and AVAILABLE
    return AVAILABLE and vendor == "AuthenticAMD" and capability.startswith("AVX512")


_enabled = default_enabled(torch.backends.cpu.get_cpu_capability(), cpu_vendor(), os.environ.get("TOKENMDP_LINEARS"))


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """Within the block, large float32 and bfloat16 CPU linears run on oneDNN (True, where this torch has it)
    or on ATen's addmm (sgemm in float32)."""
    global _enabled
    old, _enabled = _enabled, enabled and AVAILABLE
    try:
        yield
    finally:
        _enabled = old


def current_kernel() -> str:
    """Where large float32 CPU linears run now: "onednn" or "sgemm" (benchmarks report it)."""
    return "onednn" if _enabled else "sgemm"


def onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """oneDNN pays for float32 CPU products of at least `ONEDNN_MIN_ROWS` rows, and for bfloat16 ones
    (a bfloat16 sampler's or server's) of any size: on a Zen 4 its bfloat16 kernel beat ATen's addmm
    from 1 row (20 vs 23 us) to 64 (58 vs 64 us; 73 vs 85 with the GELU inside it)."""
    if not _enabled or x.device.type != "cpu" or x.dtype != weight.dtype:
        return False
    if x.dtype == torch.bfloat16:
        return True
    return x.dtype == torch.float32 and x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1]


def _records_graph(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """x (..., in) @ weight (out, in).T + bias on oneDNN, then (`gelu`) the exact GELU in the same kernel."""
    post_op, algorithm = ("gelu", "none") if gelu else ("none", "")
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, post_op, [], algorithm)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_linear(grad_out, weight.t().contiguous(), None)
        rows = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = rows.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0)
        return grad_x, grad_w, grad_b


class Linear(nn.Linear):
    """`nn.Linear` (same parameters and state dict) whose large float32 CPU products run on oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_applies(x, self.weight):
            if _records_graph(x, self.weight):
                return _OneDNNLinear.apply(x, self.weight, self.bias)
            return onednn_linear(x, self.weight, self.bias)  # sampling and scoring: no graph to record
        return F.linear(x, self.weight, self.bias)


class FeedForward(nn.Sequential):
    """Linear, exact GELU, Linear: a Sequential, so checkpoints keep their `0`/`2` parameter names."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__(Linear(width, hidden), nn.GELU(), Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gelu, down = self
        if onednn_applies(x, up.weight) and not _records_graph(x, up.weight):
            return down(onednn_linear(x, up.weight, up.bias, gelu=True))
        return down(gelu(up(x)))
