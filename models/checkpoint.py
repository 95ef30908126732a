"""Checkpoints that carry their model config and action space, written atomically.

A checkpoint is loaded only under the action space it was made with: the vocabulary is
frozen at pretraining (WORLDVIEW rule 3). A run killed mid-write leaves the previous
checkpoint intact, since the new one is renamed into place only when complete.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from models.gpt import GPT, GPTConfig
from models.heads import ScalarModel
from world.actions import ActionSpace

Model = GPT | ScalarModel


def save_checkpoint(path: Path, *, model: Model, space: ActionSpace, **state: Any) -> None:
    """Write model weights, configs and any resumable `state` (optimizer, step, rng ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "kind": "scalar" if isinstance(model, ScalarModel) else "policy",
        "gpt_config": model.cfg.to_dict(),
        "query_id": getattr(model, "query_id", None),
        "action_space": space.to_dict(),
        **state,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


# What a policy carries to be judged or served without its run directory; the rest of a training checkpoint
# (optimizer, buffer, samplers' RNG) only resumes training, and is four fifths of an RLHF checkpoint's bytes.
# With iterated RLHF, `reward_model` is the RM the policy last trained against (what `trace` scores with).
POLICY_STATE = ("config", "corpus_stats", "iteration", "policy_version", "step", "last_metrics", "reward_model")


def save_policy(path: Path, *, model: GPT, space: ActionSpace, state: dict[str, Any]) -> None:
    """`model` with only the parts of a checkpoint's `state` that a policy carries (POLICY_STATE)."""
    save_checkpoint(path, model=model, space=space, **{key: state[key] for key in POLICY_STATE if key in state})


def load_checkpoint(
    path: Path | str | bytes, space: ActionSpace | None = None
) -> tuple[Any, ActionSpace, dict[str, Any]]:
    """(model, its action space, the rest of the state); refuses a different action space.

    `path` may also be the checkpoint file's bytes: how actors on other nodes receive it.
    The model is a `GPT` policy or a `ScalarModel` (reward model, critic), as it was saved.
    """
    source = io.BytesIO(path) if isinstance(path, bytes) else path
    payload = torch.load(source, map_location="cpu", weights_only=False)
    saved_space = ActionSpace.from_dict(payload.pop("action_space"))
    if space is not None:
        space.require_same(saved_space, what="checkpoint" if isinstance(path, bytes) else f"checkpoint {path}")
    model: Model = GPT(GPTConfig(**payload.pop("gpt_config")))
    query_id = payload.pop("query_id", None)
    if payload.pop("kind", "policy") == "scalar":
        model = ScalarModel(model, query_id)
    model.load_state_dict(payload.pop("model"))
    return model, saved_space, payload
