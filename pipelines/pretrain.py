"""Pretraining: learn how integer sequences are built, one action (next token) at a time.

Math: next-token cross-entropy over every real token after `<bos>` (`algos.lm`), AdamW,
linear warm-up then cosine decay, gradient clipping (`pipelines.train_loop`). Data: the
seeded mix of OEIS sequences, generated families and, with `world.extra_sequences`, your
own (`world.corpus`, `world.user_data`); batch s is a pure function of (seed, s). The
statistics of every token and bigram the corpus contained are saved with the checkpoint:
the action-space audit checks later stages against them.

    tokenmdp pretrain tiny [--set key=value ...]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from algos.lm import masked_next_token_loss
from conf.schema import Config, WorldConfig
from models.gpt import GPT, GPTConfig
from pipelines import train_loop
from pipelines.data_files import data_to_read, digest_key
from pipelines.tracking import flatten, stage_run
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.corpus import Series, Split, render, sample_series
from world.user_data import parse_sequences

EVAL_BATCHES = 4


def documents_at(
    world: WorldConfig, space: ActionSpace, split: Split, step: int, batch_size: int, extra: Sequence[Series] = ()
) -> list[list[int]]:
    """The documents of batch `step`: a pure function of (seed, split, step, your own sequences)."""
    seed = train_loop.step_seed("pretrain", world.seed, split, step)
    rng = random.Random(seed)
    stream = sample_series(split, seed, world.oeis_weight, world.family_weights, extra, world.extra_weight)
    return [render(next(stream), space, rng, world.query_rate, world.max_tokens) for _ in range(batch_size)]


@torch.no_grad()
def val_loss(model: GPT, cfg: Config, space: ActionSpace) -> dict[str, float]:
    """Held-out loss on the val split (unseen A-numbers and family parameters)."""
    model.eval()
    total, actions = 0.0, 0.0
    for i in range(EVAL_BATCHES):
        batch = train_loop.collate(documents_at(cfg.world, space, "val", i, cfg.pretrain.batch_size), space.pad_id)
        _, metrics = masked_next_token_loss(model(batch.tokens, batch.mask), batch.tokens, batch.action_mask)
        total += metrics["loss/lm"].item() * metrics["lm/actions"].item()
        actions += metrics["lm/actions"].item()
    return {"eval/val_loss": total / actions}


def main(cfg: Config, run_dir: Path, tracking_uri: str | None = None, stop_at: int | None = None) -> dict[str, float]:
    """Pretrain (or resume) into `run_dir/pretrain`; returns the final metrics.

    `stop_at` ends the call after that step's checkpoint, as a kill right after it would:
    calling again resumes from there.
    """
    stage_dir = run_dir / "pretrain"
    torch.set_num_threads(cfg.pretrain.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(vocab_size=space.size, **cfg.model.model_dump()))
    stats = CorpusStats()
    width = cfg.model.max_len if cfg.pretrain.pack else None
    extra, extra_digest = data_to_read(
        "world.extra_sequences", cfg.world.extra_sequences, stage_dir / "checkpoint.pt", cfg.pretrain.steps,
        lambda text, path: parse_sequences(text, str(path), path.name),
    )  # fmt: skip
    extra = extra or ()

    def count_actions(batch: train_loop.Batch) -> None:
        for document in batch.rows():
            stats.add(space.decode_tokens(document))

    def restore(state: dict) -> None:
        nonlocal stats
        stats = CorpusStats.from_dict(state["corpus_stats"])

    stage = train_loop.Stage(
        name="pretrain",
        checkpoint=stage_dir / "checkpoint.pt",
        optim=cfg.pretrain,
        space=space,
        batch_at=lambda step: train_loop.lay_out(
            documents_at(cfg.world, space, "train", step, cfg.pretrain.batch_size, extra), space.pad_id, width
        ),
        evaluate=lambda m: val_loss(m, cfg, space),
        extra_state=lambda model: {
            "corpus_stats": stats.to_dict(),
            "config": cfg.model_dump(),
            digest_key("world.extra_sequences"): extra_digest,
        },
        on_batch=count_actions,
        on_resume=restore,
    )
    with stage_run(stage_dir, experiment=cfg.name, run_name="pretrain", tracking_uri=tracking_uri) as run:
        import mlflow

        if not stage.checkpoint.is_file():
            mlflow.log_params(flatten(cfg.model_dump(include={"seed", "world", "model", "pretrain"})))
            if extra:
                mlflow.log_params({"data/extra_sequences": len(extra), "data/extra_sequences_sha256": extra_digest})
        _, final, _ = train_loop.run(stage, model, stop_at=stop_at)
        mlflow.log_artifact(str(stage.checkpoint), artifact_path="checkpoint")
    return {**final, "run_id": run.info.run_id}
