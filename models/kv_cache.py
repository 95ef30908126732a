"""Where sampling keeps keys and values: the KV cache of one call (`KVCache`), on memory a model
keeps between calls and lends to one call at a time (`KVMemory`).

A cache on fresh memory costs more than its size suggests: the pages come new from the
operating system each call, so zeroing them and the first writes of every decoding step
take page faults. Lending the last call's memory to the next avoids both: the RL sampler's call
(64 prompts x 4 samples, a 28 MB cache) ran 6% faster in an A/B (bench/README). The memory holds the last
call's keys and values, all finite: a step never reads a position before writing it, or
(the eager step) reads it under a -inf bias, where a finite value adds nothing.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

Take = Callable[[int, torch.dtype, torch.device], torch.Tensor]  # (numel, dtype, device) -> flat memory


class KVMemory:
    """One flat buffer, grown to the largest cache asked for and kept. A call borrows it with
    `lend()`; a call made while it is out (another thread) gets None and fresh memory."""

    def __init__(self) -> None:
        self._flat: torch.Tensor | None = None
        self._out = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[Take | None]:
        if not self._out.acquire(blocking=False):
            yield None
            return
        try:
            yield self._take
        finally:
            self._out.release()

    def _take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        flat = self._flat
        if flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != torch.device(device):
            self._flat = flat = torch.zeros(numel, dtype=dtype, device=device)
        return flat[:numel]

    def __reduce__(self):
        """Copies and pickles (a model sent to an actor, `copy.deepcopy`) start with no memory of their own."""
        return (KVMemory, ())


class KVCache:
    """Keys and values of every layer, preallocated to `capacity` positions and filled in place.

    Concatenating a growing cache each step cost a quarter of the sampling time; writing
    into a buffer sized once per batch does not. The buffer holds finite values, so a decoding
    step may attend over the whole capacity (contiguous memory, the unfilled positions
    masked out by the caller's bias) instead of over a strided slice the attention kernel
    would first copy. `group` rows share one prompt: the prompt's keys are computed once
    and written to each of its rows. `memory` lends it memory a model keeps between calls
    (`KVMemory`): finite, not zero, which the bias makes alike.
    """

    def __init__(
        self, n_layer: int, batch: int, n_head: int, capacity: int, head_size: int, dtype, device, group: int = 1,
        memory: Take | None = None,
    ) -> None:  # fmt: skip
        shape = (n_layer, batch, n_head, capacity, head_size)
        size = math.prod(shape)
        flat = memory(2 * size, dtype, device) if memory else torch.zeros(2 * size, dtype=dtype, device=device)
        self.keys, self.values = flat[:size].view(shape), flat[size:].view(shape)
        self.group = group
        self.length = 0  # positions filled
        self.fused_weights: list[torch.Tensor] | None = None  # gathered once per cache by GPT.fused_weights

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, nh, T, hs) keys/values for `layer` (B = rows / group while the prompt is read);
        returns all of them so far, B rows."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions is full")
        rows = k.shape[0]
        for store, new in ((self.keys, k), (self.values, v)):
            store[layer].view(rows, -1, *store.shape[2:])[:, :, :, self.length : end] = new[:, None]
        if self.length == 0:  # the prompt itself: no past to attend to
            return k, v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]
