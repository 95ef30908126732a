"""SFT: learn to continue a given sequence with the exam's next term and stop with `<eor>`.

State = `<bos>prefix?`, actions = `answer<eor>`; the policy's loss sees only the actions,
through the action mask (`algos.lm`); `sft.state_loss_weight` adds a separate next-token
loss on the shown series, which is the same task on the same forward pass. Before any
step, every SFT example is audited against the pretraining corpus statistics saved in
the pretraining checkpoint (WORLDVIEW rule 3): data that needs an action pretraining
never took is refused, with the advice to move it into pretraining. With
`sft.extra_questions`, a share of every batch is your own questions, checked line by line
first (`own_questions`). Starts from the pretrained policy; resumable like pretraining.

    tokenmdp sft tiny
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from algos.lm import sft_loss
from conf.schema import Config
from models.checkpoint import load_checkpoint
from pipelines import train_loop
from pipelines.data_files import data_to_read, digest_key
from pipelines.evaluate import eval_questions, evaluate_policy, sampled_pass_at_1
from pipelines.exam import exam_problems
from pipelines.run_config import trained_checkpoint
from pipelines.tracking import flatten, stage_run
from world.actions import ActionSpace
from world.audit import CorpusStats, audit
from world.exam import Question, draw_questions, group_by_template
from world.exam import questions as bank_questions
from world.user_data import lines_and_problems, parse_line, refuse_problems


def sft_example(space: ActionSpace, question: Question) -> tuple[list[int], int]:
    """(tokens of prompt + response, index of the first action)."""
    prompt = space.encode_prompt(question.prefix)
    return prompt + space.encode_response(question.answer), len(prompt)


def batch_at(
    space: ActionSpace, questions: list[Question], seed: int, step: int, batch_size: int,
    by_template: dict[str, list[Question]] | None = None, pack_width: int | None = None,
    extra: Sequence[Question] = (), extra_share: float = 0.0,
) -> train_loop.Batch:  # fmt: skip
    """A pure function of (seed, step): resumed runs see the same batches; `by_template` draws templates evenly;
    `pack_width` packs the examples into rows of that many tokens (`train_loop.pack`); `extra_share` of them
    are your own questions (`extra`)."""
    rng = random.Random(train_loop.step_seed("sft", seed, step))
    mine = round(extra_share * batch_size) if extra else 0  # none: the batches they always were
    drawn = draw_questions(questions, rng, batch_size - mine, by_template) + [rng.choice(extra) for _ in range(mine)]
    examples = [sft_example(space, q) for q in drawn]
    return train_loop.lay_out([e[0] for e in examples], space.pad_id, pack_width, [e[1] for e in examples])


def batch_loss(state_weight: float) -> train_loop.LossFn:
    """SFT's loss of a batch, packed or not: the actions' loss plus `state_weight` times the shown series'."""

    def loss(model, batch: train_loop.Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.tokens, batch.mask, batch.documents)
        return sft_loss(logits, batch.tokens, batch.target_mask(), batch.action_mask, state_weight)

    return loss


def train_questions(cfg: Config) -> list[Question]:
    w = cfg.world
    return bank_questions(w.seed, w.bank_size, "sft", w.max_difficulty, w.feedback_share)


def own_questions(
    cfg: Config, space: ActionSpace, stats: CorpusStats, max_len: int, text: str, source: str
) -> list[Question]:
    """Your questions to fine-tune on (`tokenmdp exam`'s format), each line checked as `tokenmdp exam` checks
    it (the audit, the context) and refused if it is one of the run's held-out or feedback-pool questions:
    training on those would inflate the held-out pass rate, or show SFT the reward model's and RL's prompts.
    Every bad line at once, in order."""
    exam, problems = lines_and_problems(text, parse_line)
    problems += exam_problems(exam, space, stats, max_len)
    w = cfg.world
    held_out = {q.prefix for q in eval_questions(cfg)}
    feedback = {q.prefix for q in bank_questions(w.seed, w.bank_size, "feedback", w.max_difficulty, w.feedback_share)}
    for item in exam:
        shown = f"line {item.line}: {' '.join(map(str, item.question.prefix))}"
        if item.question.prefix in held_out:
            problems.append(f"{shown} is a question of the run's held-out exam: training on it inflates its pass rate")
        elif item.question.prefix in feedback:
            problems.append(f"{shown} is in the run's feedback pool (the reward model's and RL's prompts, never SFT's)")
    refuse_problems(source, problems if exam or problems else ["no questions"])
    return [item.question for item in exam]


def main(cfg: Config, run_dir: Path, tracking_uri: str | None = None, stop_at: int | None = None) -> dict[str, float]:
    """SFT from `run_dir/pretrain` into `run_dir/sft`; returns the final metrics."""
    stage_dir = run_dir / "sft"
    torch.set_num_threads(cfg.sft.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    model, _, pretrained = load_checkpoint(trained_checkpoint(run_dir, "pretrain", needed_by="sft"), space)
    questions = train_questions(cfg)
    # --- the action-space audit, before any update --------------------------------------
    stats = CorpusStats.from_dict(pretrained["corpus_stats"])
    audited = audit("sft", (space.decode_tokens(sft_example(space, q)[0]) for q in questions), stats)
    mine, mine_digest = data_to_read(
        "sft.extra_questions", cfg.sft.extra_questions, stage_dir / "checkpoint.pt", cfg.sft.steps,
        lambda text, path: own_questions(cfg, space, stats, model.cfg.max_len, text, str(path)),
    )  # fmt: skip
    mine = mine or []
    by_template = group_by_template(questions) if cfg.sft.balance_templates else None
    width = cfg.model.max_len if cfg.sft.pack else None
    stage = train_loop.Stage(
        name="sft",
        checkpoint=stage_dir / "checkpoint.pt",
        optim=cfg.sft,
        space=space,
        batch_at=lambda step: batch_at(
            space, questions, cfg.world.seed, step, cfg.sft.batch_size, by_template, width, mine, cfg.sft.extra_share
        ),
        evaluate=lambda m: evaluate_policy(m, space, cfg),
        loss=batch_loss(cfg.sft.state_loss_weight),
        extra_state=lambda model: {
            "corpus_stats": stats.to_dict(),
            "config": cfg.model_dump(),
            digest_key("sft.extra_questions"): mine_digest,
        },
    )
    with stage_run(stage_dir, experiment=cfg.name, run_name="sft", tracking_uri=tracking_uri) as run:
        import mlflow

        if not stage.checkpoint.is_file():
            mlflow.log_params(flatten(cfg.model_dump(include={"sft", "evaluate"})))
            mlflow.log_metric("data/sft_examples_audited", audited + len(mine))
            if mine:
                mlflow.log_params({"data/extra_questions": len(mine), "data/extra_questions_sha256": mine_digest})
        model, final, _ = train_loop.run(stage, model, stop_at=stop_at)
        sampled = sampled_pass_at_1(model, space, cfg)  # the greedy metrics came with the last step
        mlflow.log_metrics(sampled, step=cfg.sft.steps)
        final |= sampled
        mlflow.log_artifact(str(stage.checkpoint), artifact_path="checkpoint")
    return {**final, "run_id": run.info.run_id}
