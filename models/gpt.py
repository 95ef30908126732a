"""The policy: a small pre-LN GPT over the action space, with a KV cache for sampling.

Positions come from the padding mask (`positions_from_mask`), in sampling, scoring and
training alike: with left-padded prompts and learned absolute positions, a model that
counts positions from the left edge of the padded row would score different states
than the ones it sampled from, i.e. a different policy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import fused_decode
from models.kernels import FeedForward, Linear, onednn_applies
from models.kv_cache import KVCache, KVMemory, Take

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # what a policy may run in
# An inference pass packs its real tokens when they are at most this share of the batch (the
# gathers cost little, but not nothing) and at least this many: below 16 rows the products'
# kernels sum in another order (measured), so small batches keep `forward`'s sums.
PACK_BELOW, PACK_MIN_TOKENS = 0.9, 16


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    max_len: int = 128
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) 1 = real token -> (B, T) position ids that start at 0 on the first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def document_starts(documents: torch.Tensor) -> torch.Tensor:
    """(B, T) document number of each token (0 = padding) -> (B, T) True where a document (or padding) begins."""
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    return starts


def positions_in_documents(documents: torch.Tensor) -> torch.Tensor:
    """(B, T) document number of each token (0 = padding) -> (B, T) its position in its document.

    For rows that pack several documents one after another: each starts again at 0, as it
    would alone in a row of its own.
    """
    column = torch.arange(documents.shape[1], device=documents.device).expand_as(documents)
    return column - torch.where(document_starts(documents), column, 0).cummax(dim=1).values


def attention_bias(
    mask: torch.Tensor, T: int, dtype: torch.dtype, documents: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, T_past + T) mask of real tokens -> (B, 1, T, T_past + T) attention bias: 0 where each of the
    last T tokens attends (causal, real tokens, within its document when rows are packed), -inf elsewhere.

    Additive rather than boolean: the attention kernel turns a boolean mask into this bias in
    every layer (0.3 of its 1.3 ms a layer on 64 prompts), to the same values.
    """
    past_len = mask.shape[1] - T
    causal = torch.ones(T, past_len + T, dtype=torch.bool, device=mask.device).tril(diagonal=past_len)
    allowed = causal[None, None] & mask.bool()[:, None, None, :]
    if documents is not None:
        allowed = allowed & (documents[:, None, :, None] == documents[:, None, None, :])
    own = torch.zeros_like(causal)
    own[torch.arange(T), past_len + torch.arange(T)] = True
    allowed = allowed | own  # a pad attends to itself, so no row is empty (its output is never used)
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, float("-inf"))


@dataclass(frozen=True)
class PackedTokens:
    """Where the real tokens of a padded batch (B, T) sit: an inference pass runs the products on
    them alone, N rows, and the attention on the padded layout (`GPT.prefill`, `GPT.hidden`)."""

    where: torch.Tensor  # (N,) each real token's flat index in the padded (B * T)
    ends: torch.Tensor  # (B,) each row's last real token's index among the N
    attn_bias: torch.Tensor  # (B, 1, T, T), from `attention_bias`
    scratch: torch.Tensor  # (B * T, 3C) a layer's queries, keys and values; zeros at the padding, kept so

    @staticmethod
    def of(mask: torch.Tensor, d_model: int, dtype: torch.dtype) -> PackedTokens:
        real = mask.bool()
        return PackedTokens(
            where=real.reshape(-1).nonzero().squeeze(1),  # row by row: each row's last real token ends its run
            ends=real.sum(1).cumsum(0) - 1,
            attn_bias=attention_bias(mask, mask.shape[1], dtype),
            scratch=torch.zeros(real.numel(), 3 * d_model, dtype=dtype, device=mask.device),
        )


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, attn_bias: torch.Tensor, cache: KVCache | None = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=drop)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def packed(
        self, x: torch.Tensor, packed: PackedTokens, cache: KVCache | None, layer: int, last_only: bool = False
    ) -> torch.Tensor:
        """`forward` over a batch whose real tokens come packed, x (N, C). Their keys and values go to the
        cache if any; returns the output at every token (N, C), or (`last_only`, left-padded prompts) at
        each row's last token (B, C).

        The product sees real tokens only; the attention sees them where `forward` would (the
        padding zeros, masked out), and every query even when one is read: the kernel sums a query
        alone in another order. So each output is `forward`'s to the bit.
        """
        B, _, T, _ = packed.attn_bias.shape
        C = x.shape[1]
        packed.scratch[packed.where] = self.qkv(x)
        q, k, v = packed.scratch.view(B, T, 3, self.n_head, C // self.n_head).transpose(1, 3).unbind(2)
        if cache is not None:
            k, v = cache.append(layer, k, v)  # (B, nh, T, hs) each
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=packed.attn_bias)  # (B, nh, T, hs)
        if last_only:
            return self.proj(y[:, :, -1].reshape(B, C))
        return self.proj(y.transpose(1, 2).reshape(B * T, C)[packed.where])

    def decode(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        """One new token per row, x (B, 1, C), attending over the whole cache plus `bias` (B * nh, 1, capacity).

        Explicit matmuls over the contiguous cache: at one query per row, the fused kernel spent
        its time copying the cache's strided slice, not computing.
        """
        B, _, C = x.shape
        hs = C // self.n_head
        q, k, v = self.qkv(x).view(B, 3, self.n_head, 1, hs).unbind(1)  # (B, nh, 1, hs) each
        at = cache.length
        cache.keys[layer, :, :, at : at + 1] = k
        cache.values[layer, :, :, at : at + 1] = v
        scores = torch.baddbmm(
            bias,
            q.reshape(B * self.n_head, 1, hs),
            cache.keys[layer].view(B * self.n_head, -1, hs).transpose(1, 2),
            alpha=hs**-0.5,
        )  # (B * nh, 1, capacity)
        y = torch.bmm(torch.softmax(scores, -1), cache.values[layer].view(B * self.n_head, -1, hs))
        return self.proj(y.view(B, self.n_head, 1, hs).transpose(1, 2).reshape(B, 1, C))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.mlp = FeedForward(cfg.d_model, 4 * cfg.d_model)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, cache: KVCache | None = None, layer: int = 0):
        x = x + self.attn(self.ln1(x), attn_bias, cache, layer)
        return x + self.mlp(self.ln2(x))

    def packed(
        self, x: torch.Tensor, packed: PackedTokens, cache: KVCache | None, layer: int, last_only: bool = False
    ) -> torch.Tensor:
        """`forward` on packed real tokens (SelfAttention.packed); `last_only`, at each row's last token alone."""
        attended = self.attn.packed(self.ln1(x), packed, cache, layer, last_only)
        x = (x[packed.ends] if last_only else x) + attended
        return x + self.mlp(self.ln2(x))

    def decode(self, x: torch.Tensor, bias: torch.Tensor, cache: KVCache, layer: int) -> torch.Tensor:
        x = x + self.attn.decode(self.ln1(x), bias, cache, layer)
        return x + self.mlp(self.ln2(x))

    def decode_tensors(self) -> list[torch.Tensor]:
        """The block's parameters in the order the fused decoding step reads them (models/csrc)."""
        up, _, down = self.mlp
        return [
            self.ln1.weight, self.ln1.bias, self.attn.qkv.weight, self.attn.qkv.bias,
            self.attn.proj.weight, self.attn.proj.bias, self.ln2.weight, self.ln2.bias,
            up.weight, up.bias, down.weight, down.bias,
        ]  # fmt: skip


class GPT(nn.Module):
    """Trunk + tied LM head. `hidden()` is shared with the value and reward heads."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.kv_memory = KVMemory()  # lent to sampling's caches, one call at a time
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def hidden(
        self,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tokens (B, T) -> hidden states (B, T, C). `mask` (B, T_past + T) marks real tokens.

        With a `cache`, `tokens` continue the cached positions and are appended to it.
        With `documents` (B, T), the document number of each token in a packed row (0 =
        padding), a token attends only within its document and counts its position from
        the document's start: each document gets the states it would get alone.

        An inference pass (no autograd, eval mode) over a batch with much padding (RL's rollouts:
        left-padded prompts, right-padded responses, ~65% real) runs its products on the real
        tokens alone (`PackedTokens`): the same states to the bit from 16 real tokens on, zeros
        at the padding. Training keeps the padded products: its weight gradients sum over the rows.
        """
        if self._packs(mask, cache, positions, documents):
            packed = PackedTokens.of(mask, self.cfg.d_model, self.tok_emb.weight.dtype)
            states = self._run_packed(tokens, mask, packed, None, last_only=False)
            return (
                states.new_zeros(mask.numel(), states.shape[1])
                .index_copy_(0, packed.where, states)
                .view(*mask.shape, -1)
            )
        T = tokens.shape[1]
        past_len = cache.length if cache is not None else 0
        if documents is not None and cache is not None:
            raise ValueError("packed documents are for training passes, not for a KV cache")
        if positions is None:
            positions = (
                positions_from_mask(mask)[:, past_len:] if documents is None else positions_in_documents(documents)
            )
        return self._run(tokens, positions, attention_bias(mask, T, self.tok_emb.weight.dtype, documents), cache)

    def _packs(
        self, mask: torch.Tensor, cache: KVCache | None, positions: torch.Tensor | None, documents: torch.Tensor | None
    ) -> bool:
        """Whether `hidden` runs packed: inference, no cache or given positions, and enough padding to pay."""
        if (
            self.training
            or torch.is_grad_enabled()
            or cache is not None
            or positions is not None
            or documents is not None
        ):
            return False
        real = int(mask.sum())
        return real >= PACK_MIN_TOKENS and real <= PACK_BELOW * mask.numel()

    def prefill(self, tokens: torch.Tensor, mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Read left-padded prompts (B, T) into an empty `cache`; returns each row's last hidden state (B, C).

        What `hidden(tokens, mask, cache)[:, -1]` returns and writes, for less: the products run
        on the real tokens alone (prompts of unequal length leave padding), and the last layer,
        read at one position per row, computes its attention's output and its feed-forward
        there alone (its keys and values everywhere, for the cache). To the bit the same where
        the products' kernel sums rows alike whatever their number (from 16 rows on, measured).
        """
        if cache.length:
            raise ValueError("prefill reads a prompt into an empty cache")
        packed = PackedTokens.of(mask, self.cfg.d_model, self.tok_emb.weight.dtype)
        x = self._run_packed(tokens, mask, packed, cache, last_only=True)
        cache.length += tokens.shape[1]
        return x

    def _run_packed(
        self, tokens: torch.Tensor, mask: torch.Tensor, packed: PackedTokens, cache: KVCache | None, last_only: bool
    ) -> torch.Tensor:
        """The blocks over the real tokens alone: (N, C) states after ln_f, or (`last_only`) (B, C)."""
        real = mask.bool()
        positions = positions_from_mask(mask)
        self._check_context(positions)
        x = self.tok_emb(tokens[real]) + self.pos_emb(positions[real])  # (N, C)
        for i, block in enumerate(self.blocks):
            x = block.packed(x, packed, cache, i, last_only=last_only and i == len(self.blocks) - 1)
        return self.ln_f(x)

    def _check_context(self, positions: torch.Tensor) -> None:
        if int(positions.max()) >= self.cfg.max_len:
            raise ValueError(f"sequence longer than the model's context of {self.cfg.max_len} tokens")

    def decode(
        self, actions: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        """One sampling step: actions (B, 1) at `positions` (B, 1) -> hidden states (B, 1, C).

        `bias` (B, 1, 1, capacity) is added to the attention scores: 0 where a row may attend
        (its real tokens, this one included), -inf elsewhere (padding, positions not yet
        filled). The caller keeps positions and the bias up to date and checks the context
        length, so nothing is rebuilt per step. In inference the step runs as one C++ call
        (models/fused_decode.py); the eager blocks below are its reference.
        """
        x = self.tok_emb(actions) + self.pos_emb(positions)
        B, nh = x.shape[0], self.cfg.n_head
        fused = fused_decode.active() if self._fusable(x) else None
        if fused is not None:
            h = fused.decode_step(
                x[:, 0], self.fused_weights(cache), cache.keys, cache.values, bias.reshape(B, -1), cache.length,
                self.ln_f.weight, self.ln_f.bias, onednn_applies(x[:, 0], self.blocks[0].attn.qkv.weight),
            )  # fmt: skip
            cache.length += 1
            return h[:, None]
        bias = bias.expand(B, nh, 1, -1).reshape(B * nh, 1, -1)  # once per step, not once per layer
        for i, block in enumerate(self.blocks):
            x = block.decode(x, bias, cache, i)
        cache.length += 1
        return self.ln_f(x)

    def fused_weights(self, cache: KVCache) -> list[torch.Tensor]:
        """The blocks' parameters in the fused step's order, gathered once per cache: nn.Module attribute
        lookups cost ~50 us a step."""
        if cache.fused_weights is None:
            cache.fused_weights = [t for block in self.blocks for t in block.decode_tensors()]
        return cache.fused_weights

    def _fusable(self, x: torch.Tensor) -> bool:
        """The fused step (models/fused_decode.py) serves inference on float32 or bfloat16 (a bfloat16
        sampler's) CPU tensors, its linears on the kernel the eager step would use (models/kernels.py)."""
        return (
            not self.training
            and not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
        )

    def _run(
        self, tokens: torch.Tensor, positions: torch.Tensor, attn_bias: torch.Tensor, cache: KVCache | None
    ) -> torch.Tensor:
        self._check_context(positions)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, attn_bias, cache, i)
        if cache is not None:
            cache.length += tokens.shape[1]
        return self.ln_f(x)

    def in_precision(self, precision: str) -> GPT:
        """This policy with its weights, and so its KV caches, in `precision`: how a sampler, a server or
        an evaluation runs it (`rl.sampler_precision`, `serve.precision`). Log-probs stay float32."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        return self.to(PRECISIONS[precision])

    def new_cache(self, batch: int, capacity: int, group: int = 1, memory: Take | None = None) -> KVCache:
        """A cache for `batch` prompts of `group` rows each, on `memory` if lent (`self.kv_memory.lend()`)."""
        c, p = self.cfg, self.tok_emb.weight
        head_size = c.d_model // c.n_head
        return KVCache(c.n_layer, batch * group, c.n_head, capacity, head_size, p.dtype, p.device, group, memory)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, documents: torch.Tensor | None = None) -> torch.Tensor:
        """tokens, mask (B, T) -> logits (B, T, V): the action distribution in every state
        (`documents`: rows packed with several documents, see `hidden`)."""
        return self.hidden(tokens, mask, documents=documents) @ self.tok_emb.weight.T

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
