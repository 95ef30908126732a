"""Reading masks: pure torch helpers shared by the models and the RL math."""

from __future__ import annotations

import torch


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) column of each row's last 1 (-1 for an empty row); any padding side."""
    columns = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), columns, torch.full_like(columns, -1)).max(dim=1).values
