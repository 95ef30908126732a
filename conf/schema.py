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


class Config(Strict):
    """The whole run; one section per stage."""

    name: str = "tokenmdp"
    world: WorldConfig = WorldConfig()
