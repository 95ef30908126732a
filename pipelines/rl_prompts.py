"""Which exam prompts RLHF asks at each iteration, a pure function of (seed, iteration), so a resumed
run asks the same; and the practised prompts, judged beside the held-out ones.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from conf.schema import Config
from pipelines.train_loop import step_seed
from world.exam import Question, draw_questions, group_by_template
from world.exam import questions as bank_questions


def prompts_at(
    questions: list[Question], seed: int, iteration: int, n: int,
    by_template: dict[str, list[Question]] | None = None, sampling_round: int = 0,
) -> list[Question]:  # fmt: skip
    """The iteration's exam prompts: a pure function of (seed, iteration, round), so a resume asks the same.

    Distinct questions drawn uniformly, or (given `by_template`) a uniform template, then one of its questions.
    Rounds after the first are dynamic sampling's further prompts (`pipelines/dynamic_sampling.py`).
    """
    rng = random.Random(step_seed("rlhf", seed, iteration, *(["round", sampling_round] if sampling_round else [])))
    if by_template is not None:
        return draw_questions(questions, rng, n, by_template)
    return rng.sample(questions, min(n, len(questions)))


def prompt_draws(
    questions: list[Question], seed: int, iterations: int, per_iteration: int,
    by_template: dict[str, list[Question]] | None = None,
) -> Iterator[Question]:  # fmt: skip
    """Every prompt of iterations [0, iterations) in draw order, repeats included: what `prompts_at` asked."""
    for iteration in range(iterations):
        yield from prompts_at(questions, seed, iteration, per_iteration, by_template)


def practised_questions(
    questions: list[Question], seed: int, iterations: int, per_iteration: int, n: int,
    by_template: dict[str, list[Question]] | None = None,
) -> list[Question]:  # fmt: skip
    """The first `n` distinct prompts of iterations [0, iterations): what RL practises on from the start.

    Judged greedily beside the held-out questions (`eval/practised_pass_rate`): a policy that
    learns rules gains on both, one that learns its prompts' answers only on these.
    """
    seen: dict[tuple[int, ...], Question] = {}
    for q in prompt_draws(questions, seed, iterations, per_iteration, by_template):
        seen.setdefault(q.prefix, q)
    return list(seen.values())[:n]


def feedback_pool(cfg: Config) -> list[Question]:
    """RL's prompt pool: the feedback part of the train split, which SFT never saw."""
    w = cfg.world
    return bank_questions(w.seed, w.bank_size, "feedback", w.max_difficulty, w.feedback_share)


def practised_for(cfg: Config, questions: list[Question]) -> list[Question]:
    """The practised prompts of this config: those of the first evaluation window, as many as `evaluate.questions`."""
    rl = cfg.rl
    by_template = group_by_template(questions) if rl.balance_templates else None
    return practised_questions(
        questions, cfg.rl_seed, min(rl.eval_every, rl.iterations), rl.prompts_per_iteration, cfg.evaluate.questions,
        by_template,
    )  # fmt: skip
