"""Pretraining: learn how integer sequences are built, one action (next token) at a time.

Math: next-token cross-entropy over every real token after `<bos>` (`algos.lm`), AdamW,
linear warm-up then cosine decay, gradient clipping. Data: the seeded mix of OEIS
sequences and generated families (`world.corpus`); the batch of step s is a pure
function of (seed, s), so a resumed run sees exactly the batches it would have seen.
The statistics of every token and bigram the corpus contained are saved with the
checkpoint: they are what the action-space audit checks later stages against.

    tokenmdp pretrain tiny            # or: python -m pipelines.pretrain tiny
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import torch
from rich.progress import Progress

from algos.lm import masked_next_token_loss
from algos.schedule import warmup_cosine
from conf.load import load_config
from conf.schema import Config, OptimConfig, WorldConfig
from models.checkpoint import load_checkpoint, save_checkpoint
from models.gpt import GPT, GPTConfig
from pipelines.tracking import flatten, log_metrics_batch, stage_run
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.corpus import Split, render, sample_series

EVAL_BATCHES = 4


def documents_at(world: WorldConfig, space: ActionSpace, split: Split, step: int, batch_size: int) -> list[list[int]]:
    """The documents of batch `step`: a pure function of (seed, split, step)."""
    seed = int.from_bytes(hashlib.sha256(f"{world.seed}:{split}:{step}".encode()).digest()[:4], "big")
    rng = random.Random(seed)
    stream = sample_series(split, seed, world.oeis_weight, world.family_weights)
    return [render(next(stream), space, rng, world.query_rate, world.max_tokens) for _ in range(batch_size)]


def collate(documents: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad documents -> tokens (B, T) and mask (B, T), 1 = real token."""
    width = max(map(len, documents))
    tokens = torch.full((len(documents), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for row, doc in enumerate(documents):
        tokens[row, : len(doc)] = torch.tensor(doc)
        mask[row, : len(doc)] = 1
    return tokens, mask


def make_optimizer(model: GPT, optim: OptimConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(s, total=optim.steps, warmup=optim.warmup_steps, min_ratio=optim.min_lr_ratio),
    )
    return optimizer, schedule


def train_step(model: GPT, optimizer, schedule, tokens, mask, grad_clip: float) -> dict[str, float]:
    model.train()
    action_mask = mask.clone()
    action_mask[:, 0] = 0  # <bos> is the start state, not an action
    loss, metrics = masked_next_token_loss(model(tokens, mask), tokens, action_mask)
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


@torch.no_grad()
def evaluate_loss(model: GPT, cfg: Config, space: ActionSpace) -> dict[str, float]:
    """Held-out loss on the val split (unseen A-numbers and family parameters)."""
    model.eval()
    total, actions = 0.0, 0.0
    for i in range(EVAL_BATCHES):
        tokens, mask = collate(documents_at(cfg.world, space, "val", i, cfg.pretrain.batch_size), space.pad_id)
        action_mask = mask.clone()
        action_mask[:, 0] = 0
        _, metrics = masked_next_token_loss(model(tokens, mask), tokens, action_mask)
        total += metrics["loss/lm"].item() * metrics["lm/actions"].item()
        actions += metrics["lm/actions"].item()
    return {"eval/val_loss": total / actions}


def main(cfg: Config, run_dir: Path, tracking_uri: str | None = None, stop_at: int | None = None) -> dict[str, float]:
    """Pretrain (or resume) into `run_dir/pretrain`; returns the final metrics.

    `stop_at` ends the call after that step's checkpoint, as a kill right after it would:
    calling again resumes from there.
    """
    stage_dir = run_dir / "pretrain"
    ckpt_path = stage_dir / "checkpoint.pt"
    torch.set_num_threads(cfg.pretrain.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    # --- model, optimizer, and where we left off ----------------------------------------
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(vocab_size=space.size, **cfg.model.model_dump()))
    optimizer, schedule = make_optimizer(model, cfg.pretrain)
    step, stats = 0, CorpusStats()
    if ckpt_path.is_file():
        model, _, state = load_checkpoint(ckpt_path, space)
        optimizer, schedule = make_optimizer(model, cfg.pretrain)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        step, stats = state["step"], CorpusStats.from_dict(state["corpus_stats"])

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path, model=model, space=space, optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
            torch_rng=torch.get_rng_state(), step=step, corpus_stats=stats.to_dict(), config=cfg.model_dump(),
        )  # fmt: skip

    with stage_run(stage_dir, experiment=cfg.name, run_name="pretrain", tracking_uri=tracking_uri) as run:
        import mlflow

        if step == 0:
            mlflow.log_params(flatten(cfg.model_dump(include={"seed", "world", "model", "pretrain"})))
        pending: list[tuple[int, dict[str, float]]] = []
        final: dict[str, float] = {}
        # --- the loop --------------------------------------------------------------------
        with Progress(disable=not sys.stderr.isatty()) as progress:
            task = progress.add_task("pretrain", total=cfg.pretrain.steps, completed=step)
            while step < cfg.pretrain.steps:
                docs = documents_at(cfg.world, space, "train", step, cfg.pretrain.batch_size)
                for doc in docs:
                    stats.add(space.decode_tokens(doc))
                tokens, mask = collate(docs, space.pad_id)
                metrics = train_step(model, optimizer, schedule, tokens, mask, cfg.pretrain.grad_clip)
                step += 1
                progress.update(task, advance=1, description=f"pretrain loss {metrics['loss/lm']:.3f}")
                if step % cfg.pretrain.eval_every == 0 or step == cfg.pretrain.steps:
                    metrics |= evaluate_loss(model, cfg, space)
                pending.append((step, metrics))
                final = metrics
                if step % cfg.pretrain.checkpoint_every == 0 or step == cfg.pretrain.steps:
                    log_metrics_batch(pending)  # logged before the checkpoint, so a resume never loses them
                    pending = []
                    checkpoint()
                    if stop_at is not None and step >= stop_at:
                        break
        mlflow.log_artifact(str(ckpt_path), artifact_path="checkpoint")
        final = {**final, "run_id": run.info.run_id}
    return final


if __name__ == "__main__":
    config = load_config(sys.argv[1] if len(sys.argv) > 1 else "tiny", sys.argv[2:])
    print(main(config, Path("runs") / config.name))
