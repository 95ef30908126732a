"""How a value reads in the tables the commands print: the CLI's and an experiment's, one format."""

from __future__ import annotations

from typing import Any

NOT_APPLICABLE = "—"  # a cell with no value: the first arm's difference from itself, a figure not measured


def cell(value: Any) -> str:
    """Floats with three decimals, a float that rounds to zero as 0.000 (an exact KL of -1e-8 is float rounding, not
    a negative KL), None as a dash."""
    if value is None:
        return NOT_APPLICABLE
    return f"{round(value, 3) + 0.0:.3f}" if isinstance(value, float) else str(value)
