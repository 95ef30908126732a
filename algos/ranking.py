"""Does the reward model still rank the policy's answers as the gold grader does, where the policy is now?

The RM is judged once, on the SFT policy's answers (its held-out accuracy); RL then moves the policy to
answers the RM never saw, and that is where a learnt reward fails (the policy finds its errors). Within
each group (the answers to one prompt, WORLDVIEW rule 4: only those are compared), every pair the grader
tells apart is a question the RM answers by ordering the two scores; the share it orders as the grader
does, on each iteration's own samples, is the RM's accuracy on the current policy. A tie counts half
(a coin), so 0.5 is chance, as for the held-out accuracy. Pure torch: no Ray, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def within_group_agreement(proxy: torch.Tensor, gold: torch.Tensor, group: torch.Tensor) -> tuple[float, int]:
    """(pairs ordered as gold orders them, ties half; pairs gold tells apart) over (B,) scores of one batch.

    A pair is two rows of one group with different gold rewards; it agrees when the proxy puts the row gold
    prefers higher. Order within a pair does not matter: each is counted once, from its better side.
    """
    same_group = group[:, None] == group[None, :]  # (B, B)
    gold_prefers = (gold[:, None] > gold[None, :]) & same_group  # row i beats row j by gold
    above = (proxy[:, None] > proxy[None, :]).float() + 0.5 * (proxy[:, None] == proxy[None, :]).float()
    pairs = int(gold_prefers.sum())
    return float((above * gold_prefers).sum()), pairs


def pooled(rates: Sequence[float], pairs: Sequence[float]) -> float | None:
    """Agreement over several batches, each weighted by its pairs; None when none had a pair."""
    total = sum(pairs)
    if total == 0:
        return None
    return sum(rate * n for rate, n in zip(rates, pairs, strict=True) if n) / total
