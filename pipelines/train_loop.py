"""The supervised loop shared by pretraining, SFT and the reward model: step, evaluate, log, checkpoint, resume.

What differs between the stages (which tokens are actions, where batches come from,
the loss, what evaluation means) is passed in; the loop itself is the same. Batches are a pure
function of the step, so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from algos.lm import masked_next_token_loss
from algos.schedule import warmup_cosine
from conf.schema import OptimConfig
from models.checkpoint import Model, load_checkpoint, save_checkpoint
from models.gpt import document_starts
from pipelines.progress import stage_progress
from pipelines.tracking import StepLog
from world.actions import ActionSpace


def step_seed(*parts: object) -> int:
    """A stable 32-bit seed from (stage, seed, step, ...): Python's hash() is salted per process."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # (B, T) right-padded
    mask: torch.Tensor  # (B, T) 1 = real token
    action_mask: torch.Tensor  # (B, T) 1 = a token the policy is trained to take
    documents: torch.Tensor | None = None  # (B, T) packed rows: the document number of each token, 0 = padding

    def target_mask(self) -> torch.Tensor:
        """(B, T) 1 = a real token that continues its document: a target of the next-token loss.

        A document's first token (`<bos>`) is no target: in a packed row the token before it
        belongs to another document.
        """
        if self.documents is None:
            return self.mask
        return self.mask * (~document_starts(self.documents)).long()

    def rows(self) -> list[list[int]]:
        """The batch's documents as token lists, one per document (several per packed row)."""
        documents = self.documents if self.documents is not None else self.mask
        found = []
        for row, numbers in zip(self.tokens.tolist(), documents.tolist(), strict=True):
            for number in sorted(set(numbers) - {0}):
                found.append([token for token, n in zip(row, numbers, strict=True) if n == number])
        return found


def collate(documents: list[list[int]], pad_id: int, first_action: list[int] | None = None) -> Batch:
    """Right-pad documents; tokens from `first_action[i]` on are actions (default: all after `<bos>`)."""
    width = max(map(len, documents))
    tokens = torch.full((len(documents), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    action_mask = torch.zeros_like(tokens)
    for row, doc in enumerate(documents):
        tokens[row, : len(doc)] = torch.tensor(doc)
        mask[row, : len(doc)] = 1
        action_mask[row, (first_action[row] if first_action else 1) : len(doc)] = 1
    return Batch(tokens, mask, action_mask)


def lay_out(
    documents: list[list[int]], pad_id: int, pack_width: int | None, first_action: list[int] | None = None
) -> Batch:
    """`pack` into rows of `pack_width` tokens, or (None) `collate` one document per padded row."""
    if pack_width is None:
        return collate(documents, pad_id, first_action)
    return pack(documents, pad_id, pack_width, first_action)


def pack(documents: list[list[int]], pad_id: int, width: int, first_action: list[int] | None = None) -> Batch:
    """Documents packed into rows of `width` tokens (first fit, longest first), each row right-padded.

    The same tokens, actions and loss as `collate`, with less padding to compute: a demo SFT
    batch is ~60% real tokens padded to its longest document, ~95% packed into rows of 128.
    The model keeps documents apart through `Batch.documents` (`GPT.hidden`).
    """
    longest = max(map(len, documents))
    if longest > width:
        raise ValueError(f"a document of {longest} tokens does not fit a packed row of {width}")
    rows: list[list[int]] = []  # document indices per row
    room: list[int] = []
    for index in sorted(range(len(documents)), key=lambda i: -len(documents[i])):
        size = len(documents[index])
        row = next((r for r, free in enumerate(room) if free >= size), None)
        if row is None:
            rows.append([])
            room.append(width)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= size
    used = max(width - free for free in room)
    tokens = torch.full((len(rows), used), pad_id, dtype=torch.long)
    numbers = torch.zeros_like(tokens)
    action_mask = torch.zeros_like(tokens)
    for row, members in enumerate(rows):
        at = 0
        for number, index in enumerate(members, start=1):
            doc = documents[index]
            tokens[row, at : at + len(doc)] = torch.tensor(doc)
            numbers[row, at : at + len(doc)] = number
            action_mask[row, at + (first_action[index] if first_action else 1) : at + len(doc)] = 1
            at += len(doc)
    return Batch(tokens, (numbers > 0).long(), action_mask, numbers)


def make_optimizer(model: Model, optim: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and norms) with warm-up and cosine decay."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    no_decay = [p for p in trained if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, total=optim.steps, warmup=optim.warmup_steps, min_ratio=optim.min_lr_ratio),
    )
    return optimizer, schedule


LossFn = Callable[[Any, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def lm_loss(model: Model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pretraining and SFT: next-token loss on the batch's actions."""
    return masked_next_token_loss(model(batch.tokens, batch.mask, batch.documents), batch.tokens, batch.action_mask)


def train_step(
    model: Model, optimizer, schedule, batch: Any, grad_clip: float, loss_fn: LossFn = lm_loss
) -> dict[str, float]:
    model.train()
    loss, metrics = loss_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()
    return {
        **{k: v.item() for k, v in metrics.items()},
        "optim/grad_norm": grad_norm.item(),
        "optim/lr": schedule.get_last_lr()[0],
    }


@dataclass
class Stage:
    """One supervised stage: what to train, on which batches, judged how."""

    name: str
    checkpoint: Path
    optim: OptimConfig
    space: ActionSpace
    batch_at: Callable[[int], Any]
    evaluate: Callable[[Any], dict[str, float]]
    loss: LossFn = lm_loss
    progress_metric: str = "loss/lm"
    extra_state: Callable[[Any], dict[str, Any]] = lambda model: {}  # saved with every checkpoint
    on_batch: Callable[[Any], None] = lambda batch: None
    on_resume: Callable[[dict[str, Any]], None] = lambda state: None  # restore what extra_state saved
    prepare: Callable[[Any], None] = lambda model: None  # applied to the fresh or resumed model (e.g. freezing)


def run(stage: Stage, model: Model, stop_at: int | None = None) -> tuple[Model, dict[str, float], dict[str, Any]]:
    """Train `model` (or the checkpoint's, when resuming); returns (model, final metrics, saved state)."""
    stage.prepare(model)
    optimizer, schedule = make_optimizer(model, stage.optim)
    step, state = 0, {}
    if stage.checkpoint.is_file():
        model, _, state = load_checkpoint(stage.checkpoint, stage.space)
        stage.prepare(model)
        optimizer, schedule = make_optimizer(model, stage.optim)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        stage.on_resume(state)
    pending: list[tuple[int, dict[str, float]]] = []
    metrics_log = StepLog()  # a resume redoes the steps since its checkpoint: the run holds some already
    final: dict[str, float] = {}
    with stage_progress(stage.name, stage.optim.steps, completed=step) as advance:
        while step < stage.optim.steps:
            batch = stage.batch_at(step)
            stage.on_batch(batch)
            metrics = train_step(model, optimizer, schedule, batch, stage.optim.grad_clip, stage.loss)
            step += 1
            advance(f"{stage.name} {stage.progress_metric} {metrics[stage.progress_metric]:.3f}")
            if step % stage.optim.eval_every == 0 or step == stage.optim.steps:
                metrics |= stage.evaluate(model)
            pending.append((step, metrics))
            final = metrics
            if step % stage.optim.checkpoint_every == 0 or step == stage.optim.steps:
                metrics_log.log(pending)  # logged before the checkpoint, so a resume never loses them
                pending = []
                state = {
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "step": step,
                    **stage.extra_state(model),
                }
                save_checkpoint(stage.checkpoint, model=model, space=stage.space, **state)
                if stop_at is not None and step >= stop_at:
                    break
    if not final:  # nothing left to train (a finished stage run again): still report where it stands
        final = stage.evaluate(model)
    return model, final, state
