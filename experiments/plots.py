"""The experiments' plots: one panel per metric, one line per arm."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Series = dict[str, dict]  # arm -> {metric: (steps, values), "elapsed": {step: seconds}}


def curves(series: Series, out: Path, metrics: tuple[str, ...], against_wall: bool = False) -> Path:
    """Each metric against iterations (and, with `against_wall`, against cumulative wall seconds)."""
    cols = 2 if against_wall else 1
    fig, axes = plt.subplots(len(metrics), cols, figsize=(6 * cols, 3.2 * len(metrics)), squeeze=False)
    for row, metric in enumerate(metrics):
        for arm, data in series.items():
            steps, values = data[metric]
            axes[row][0].plot(steps, values, label=arm)
            if against_wall:
                axes[row][1].plot([data["elapsed"].get(s, float("nan")) for s in steps], values, label=arm)
        axes[row][0].set_xlabel("iteration")
        if against_wall:
            axes[row][1].set_xlabel("wall seconds of RL")
        for ax in axes[row]:
            ax.set_title(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
