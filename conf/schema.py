"""Pydantic schemas for every stage; a typo or a bad value is an error that names the field.

Only the world exists so far; later stages add their own models beside it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from world.corpus import FAMILIES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorldConfig(Strict):
    """The sequence world: action space, pretraining mix and the exam bank."""

    seed: int = 0
    """Seeds the corpus stream and the exam bank; same seed, same data."""
    digit_order: Literal["msb", "lsb"] = "msb"
    """How numbers are spelled: most- or least-significant digit first. Frozen at pretraining."""
    oeis_weight: float = Field(0.5, ge=0)
    """Share of pretraining documents drawn from the real OEIS extract."""
    family_weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(FAMILIES, 1.0))
    """Mixing weights of the generated families (relative to each other and to oeis_weight)."""
    query_rate: float = Field(0.3, ge=0, le=1)
    """Share of pretraining documents written as `prefix?rest<eor>`, so `?` is a pretrained action."""
    max_tokens: int = Field(96, ge=16)
    """Longest pretraining document, in tokens."""
    bank_size: int = Field(20000, ge=10)
    """Number of distinct exam questions in the bank (train and eval splits together)."""
    label_noise: float = Field(0.1, ge=0, le=0.5)
    """Probability that the simulated labeler flips a preference."""

    @model_validator(mode="after")
    def _known_families(self) -> WorldConfig:
        unknown = set(self.family_weights) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")
        if any(w < 0 for w in self.family_weights.values()):
            raise ValueError("family weights must be >= 0")
        if self.oeis_weight + sum(self.family_weights.values()) <= 0:
            raise ValueError("at least one corpus source needs a positive weight")
        return self


class ModelConfig(Strict):
    """Shape of the GPT policy (the reward model and critic share the trunk)."""

    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    d_model: int = Field(128, ge=8)
    """Width; must be divisible by n_head."""
    max_len: int = Field(128, ge=16)
    """Context length in tokens: prompt plus response."""
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        return self


class OptimConfig(Strict):
    """AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`."""

    steps: int = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(50, ge=1)
    """Evaluate (and log) every this many steps."""
    checkpoint_every: int = Field(50, ge=1)
    """Write a resumable checkpoint every this many steps."""
    threads: int = Field(1, ge=1)
    """torch threads for this process: on 2 shared cores one thread is often fastest."""


class EvalConfig(Strict):
    """Judging a policy on held-out exam questions with the gold grader."""

    questions: int = Field(500, ge=1)
    """How many eval-split questions to ask (all of them if the split is smaller)."""
    max_new_tokens: int = Field(16, ge=2)
    """Response budget: an answer not closed by `<eor>` within it is malformed."""
    batch_size: int = Field(256, ge=1)


class Config(Strict):
    """The whole run; one section per stage."""

    name: str = "tokenmdp"
    seed: int = 0
    """Seeds model initialisation and sampling."""
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    pretrain: OptimConfig = OptimConfig()
    sft: OptimConfig = OptimConfig(steps=200, lr=5e-4, warmup_steps=10)
    evaluate: EvalConfig = EvalConfig()
