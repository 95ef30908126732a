"""Controlled experiments that show why the library's rules hold (`tokenmdp experiment NAME`)."""

from __future__ import annotations

from experiments.runner import Experiment


def registry() -> dict[str, Experiment]:
    """Every experiment by name (imported lazily: they pull in Ray and RLlib)."""
    from experiments import (
        action_space,
        contrastive,
        kl_estimator,
        overoptimisation,
        rm_pairs,
        sampler_precision,
        seeds,
        staleness,
        zero_advantage,
    )

    modules = (
        staleness, action_space, rm_pairs, contrastive, overoptimisation, zero_advantage, kl_estimator, seeds,
        sampler_precision,
    )  # fmt: skip
    return {m.EXPERIMENT.name: m.EXPERIMENT for m in modules}
