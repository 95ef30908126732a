"""Evaluation against the gold grader on held-out exam questions.

Rates, as fractions of the questions asked: `gold_pass_rate` (the exam's answer, then
`<eor>`), `format_rate` (one parseable integer then `<eor>`), `rate_114514` (well-formed
but not the exam's answer: a valid-looking continuation the exam does not want), and the
pass rate per template. Greedy by default; `temperature=1` gives sampled pass@1, and
`samples` n > 1 gives pass@k for k = 1, 2, 4, .. n (unbiased, from n samples per question)
and maj@n (the most frequent of the n answers): how far the greedy answer is from the
right answers the policy can already write, which is what RL can sharpen toward; and
`greedy_missed_sampled_right_at_n`, the questions greedy misses on which some draw is
right: the ceiling of that sharpening on these questions (`sharpening_headroom`).

    tokenmdp evaluate tiny                 # the SFT checkpoint of runs/tiny
    tokenmdp evaluate demo --samples 16    # + pass@1..16 and maj@16
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from algos.stats import clustered_stderr
from conf.schema import Config
from models.checkpoint import load_checkpoint
from models.gpt import GPT
from models.sampling import generate
from world.actions import ActionSpace
from world.exam import Question, questions


def eval_questions(cfg: Config) -> list[Question]:
    held_out = questions(cfg.world.seed, cfg.world.bank_size, "eval", cfg.world.max_difficulty)
    return held_out[: cfg.evaluate.questions]


def answer_questions(
    model: GPT, space: ActionSpace, questions: Sequence[Question], *, max_new_tokens: int, batch_size: int,
    temperature: float = 0.0, seed: int = 0,
) -> list[list[int] | None]:  # fmt: skip
    """The policy's answer to each question: its terms if well-formed, else None."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    answers: list[list[int] | None] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        gen = generate(
            model, [space.encode_prompt(q.prefix) for q in chunk], max_new_tokens=max_new_tokens,
            eor_id=space.eor_id, pad_id=space.pad_id, temperature=temperature, generator=generator,
        )  # fmt: skip
        for row in range(len(chunk)):
            answers.append(space.parse_response(gen.tokens[row].tolist()).answer)
    return answers


def score(
    questions: Sequence[Question], answers: Sequence[list[int] | None], prefix: str = "eval/"
) -> dict[str, float]:
    """Gold pass, format and 114514 rates, overall and per template."""
    n = max(len(questions), 1)
    passed = verdicts(questions, answers)
    formatted = [q.is_formatted_by(a) for q, a in zip(questions, answers, strict=True)]
    by_template: dict[str, list[bool]] = defaultdict(list)
    for q, ok in zip(questions, passed, strict=True):
        by_template[q.template].append(ok)
    metrics = {
        f"{prefix}gold_pass_rate": sum(passed) / n,
        f"{prefix}gold_pass_rate_stderr": clustered_stderr(passed, range(len(passed))),  # questions independent
        f"{prefix}format_rate": sum(formatted) / n,
        f"{prefix}rate_114514": sum(f and not p for f, p in zip(formatted, passed, strict=True)) / n,
    }
    metrics |= {f"{prefix}pass/{name}": sum(oks) / len(oks) for name, oks in sorted(by_template.items())}
    return metrics


def verdicts(questions: Sequence[Question], answers: Sequence[list[int] | None]) -> list[bool]:
    """Whether each answer passes the gold grader, question by question."""
    return [q.is_answered_by(a) for q, a in zip(questions, answers, strict=True)]


def held_out_passes(model: GPT, space: ActionSpace, cfg: Config, questions: Sequence[Question]) -> list[bool]:
    """Whether the policy's greedy answer passes the gold grader, question by question."""
    return verdicts(questions, configured_answers(model, space, cfg, questions))


def configured_answers(
    model: GPT, space: ActionSpace, cfg: Config, questions: Sequence[Question], temperature: float = 0.0, seed: int = 0
) -> list[list[int] | None]:
    """`answer_questions` with the config's `evaluate` budget (new tokens, batch size)."""
    e = cfg.evaluate
    return answer_questions(
        model, space, questions, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, temperature=temperature,
        seed=seed,
    )  # fmt: skip


def evaluate_policy(model: GPT, space: ActionSpace, cfg: Config) -> dict[str, float]:
    """Greedy gold pass, format and 114514 rates, overall and per template."""
    return greedy_judgement(model, space, cfg)[0]


def greedy_judgement(model: GPT, space: ActionSpace, cfg: Config) -> tuple[dict[str, float], list[bool]]:
    """`evaluate_policy`'s metrics and, from the same answers, the verdict on each held-out question."""
    questions = eval_questions(cfg)
    answers = configured_answers(model, space, cfg, questions)
    return score(questions, answers), verdicts(questions, answers)


def pass_rate(
    model: GPT, space: ActionSpace, cfg: Config, questions: Sequence[Question], temperature: float = 0.0, seed: int = 0
) -> float:
    """Gold pass rate of one answer per question (greedy by default) on any set of questions."""
    return score(questions, configured_answers(model, space, cfg, questions, temperature, seed))["eval/gold_pass_rate"]


@dataclass(frozen=True)
class Judgement:
    """A policy judged: its metrics, and its verdict on each held-out question (for the paired gain)."""

    metrics: dict[str, float]
    held_out: list[bool]


def judge(policy: GPT, space: ActionSpace, cfg: Config, practised: Sequence[Question]) -> Judgement:
    """The held-out metrics plus the greedy gold pass rate on the practised prompts."""
    metrics, held_out = greedy_judgement(policy, space, cfg)
    return Judgement(metrics | {"eval/practised_pass_rate": pass_rate(policy, space, cfg, practised)}, held_out)


def sampled_pass_at_1(model: GPT, space: ActionSpace, cfg: Config) -> dict[str, float]:
    """Gold pass rate of one sample per question at temperature 1."""
    return {"eval/sampled_pass_at_1": pass_rate(model, space, cfg, eval_questions(cfg), 1.0, cfg.seed)}


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased P(at least one of k draws is right) from n samples of which `correct` are: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= correct <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= correct <= n and 1 <= k <= n (n={n}, correct={correct}, k={k})")
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def majority(answers: Sequence[list[int] | None]) -> list[int] | None:
    """The most frequent answer (malformed ones count as one answer, None); ties go to the first drawn."""
    counts = Counter(None if a is None else tuple(a) for a in answers)
    top = counts.most_common(1)[0][0]
    return None if top is None else list(top)


def sharpening_headroom(greedy_passed: Sequence[bool], right_draws: Sequence[int], samples: int) -> dict[str, float]:
    """Where the greedy answer misses, how often the policy's own samples hold the right one.

    `greedy_missed_sampled_right_at_n`: the greedy answer is wrong but at least one of n
    draws is right: the most that sharpening the policy toward answers it already writes
    (what on-policy RL does first) could add to the greedy pass rate on these questions.
    `greedy_missed_sampled_once_at_n`: of those, right in exactly one draw (a rare answer,
    far from the mode). `greedy_missed_never_at_n`: no draw right: out of sharpening's reach.
    """
    if len(greedy_passed) != len(right_draws) or not greedy_passed:
        raise ValueError("need one greedy verdict and one count of right draws per question")
    n = len(greedy_passed)
    missed = [c for ok, c in zip(greedy_passed, right_draws, strict=True) if not ok]
    return {
        f"eval/greedy_missed_sampled_right_at_{samples}": sum(c > 0 for c in missed) / n,
        f"eval/greedy_missed_sampled_once_at_{samples}": sum(c == 1 for c in missed) / n,
        f"eval/greedy_missed_never_at_{samples}": sum(c == 0 for c in missed) / n,
    }


def sampled_pass_at_k(
    model: GPT, space: ActionSpace, cfg: Config, samples: int, greedy_passed: Sequence[bool] | None = None
) -> dict[str, float]:
    """pass@k (k = 1, 2, 4, .., samples) and maj@samples over `samples` answers per question at temperature 1,
    and with the greedy verdicts (`greedy_passed`) the sharpening headroom.

    The first draw is `sampled_pass_at_1`'s (same seed), so its rate comes along without a second pass.
    """
    questions = eval_questions(cfg)
    draws = [configured_answers(model, space, cfg, questions, 1.0, cfg.seed + i) for i in range(samples)]
    per_question = list(zip(*draws, strict=True))
    correct = [sum(q.is_answered_by(a) for a in answers) for q, answers in zip(questions, per_question, strict=True)]
    ks = [2**i for i in range(samples.bit_length()) if 2**i <= samples]
    metrics = {f"eval/pass_at_{k}": sum(pass_at_k(samples, c, k) for c in correct) / len(questions) for k in ks}
    majorities = [majority(answers) for answers in per_question]
    metrics[f"eval/maj_at_{samples}"] = score(questions, majorities)["eval/gold_pass_rate"]
    metrics["eval/sampled_pass_at_1"] = score(questions, draws[0])["eval/gold_pass_rate"]
    if greedy_passed is not None:
        metrics |= sharpening_headroom(greedy_passed, correct, samples)
    return metrics


def main(cfg: Config, checkpoint: Path, samples: int = 1, precision: str = "float32") -> dict[str, float | str]:
    """The policy at `checkpoint` judged with its weights and KV cache in `precision` (as `serve.precision` serves)."""
    model, space, _ = load_checkpoint(checkpoint, ActionSpace(digit_order=cfg.world.digit_order))
    return judged(model.in_precision(precision), space, cfg, samples) | {"precision": precision}


def judged(model: GPT, space: ActionSpace, cfg: Config, samples: int = 1, name: str = "") -> dict[str, float]:
    """The policy (`name`d in an error) on `cfg`'s held-out questions: greedy, then `samples` answers at
    temperature 1; refused where `cfg` spells its questions under another action space."""
    ActionSpace(digit_order=cfg.world.digit_order).require_same(space, what=f"the policy {name}".strip())
    metrics, greedy_passed = greedy_judgement(model, space, cfg)
    if samples > 1:
        return metrics | sampled_pass_at_k(model, space, cfg, samples, greedy_passed)
    return metrics | sampled_pass_at_1(model, space, cfg)
