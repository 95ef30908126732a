"""Best-of-k with the run's reward model: how far a perfect optimiser of the RM would take the SFT policy.

For each held-out question, n answers of the policy RL starts from, drawn as RL draws them (`rl.temperature`,
`rl.max_new_tokens`); the RM picks its favourite among k of them and the gold grader grades the pick. For
k = 1, 2, 4, .., n: the expected pass rate of the RM's pick over every k-subset of the n draws
(`algos.best_of`), the grader's own pick (pass@k: the ceiling of any reranker of these draws) and the most
KL from the policy that best-of-k costs, log k - (k - 1) / k nats a response. Beside them, the run's RLHF
policy with the KL it spent: where RL stands on the RM's curve. Below the RM's curve at RL's KL, RL did not
optimise the RM as well as it could; the RM's curve below pass@k is the RM's error, which no optimiser of it
can remove. Reads the run's stages; nothing is trained or written. With iterated RLHF (`rl.rm_refresh`), the
RM is the reward stage's, the one RL started against.

    tokenmdp best-of runs/demo --n 16
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from actors.reward_scorer import RewardScorerImpl
from algos.best_of import best_of_k, best_of_k_kl_bound
from algos.kl import kl_per_state
from models.gpt import GPT
from models.rollout import Rollouts, sample_rollouts, state_logprobs
from pipelines.evaluate import eval_questions, held_out_passes, pass_at_k
from pipelines.policy_source import stage_policy
from pipelines.run_config import RunDirError, checkpointed
from world.actions import ActionSpace
from world.exam import Question

ROWS_PER_CALL = 512  # responses sampled in one `generate` call


@dataclass(frozen=True)
class Point:
    """Best-of-k on the held-out questions."""

    k: int
    kl_bound: float  # log k - (k - 1) / k: the most KL from the policy drawn from, nats a response
    rm_pick: float  # the gold pass rate of the RM's favourite of k draws, expected over the draws
    rm_pick_stderr: float  # across questions
    gold_pick: float  # pass@k: the grader's favourite, the ceiling of any reranker
    rm_score: float  # the RM's score of its favourite, expected over the draws: the proxy reward it optimises


@dataclass(frozen=True)
class BestOf:
    """The curve, and the run's RLHF policy beside it."""

    stage: str  # the policy drawn from
    draws: int  # n per question
    questions: int
    temperature: float
    points: list[Point]
    greedy: float  # the drawn policy's greedy gold pass rate
    rlhf: dict[str, float] | None  # beside the SFT policy's curve, the run's RLHF policy: drawn as above, its KL

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def draws(
    policy: GPT, space: ActionSpace, questions: list[Question], n: int, max_new_tokens: int, temperature: float,
    seed: int,
) -> list[Rollouts]:  # fmt: skip
    """n responses to each question in batches of `ROWS_PER_CALL` rows, each question's prompt read once for its n."""
    per_call = max(1, ROWS_PER_CALL // n)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for start in range(0, len(questions), per_call):
        prompts = [space.encode_prompt(q.prefix) for q in questions[start : start + per_call]]
        batch = sample_rollouts(
            policy, space, prompts, group_size=n, max_new_tokens=max_new_tokens, policy_version=0,
            temperature=temperature, generator=generator,
        )  # fmt: skip
        batches.append(batch)
    return batches


def answers_of(batches: list[Rollouts], n: int) -> list[list[list[int]]]:
    """Each question's n responses (their action ids, `<eor>` included), from the batches `draws` made."""
    rows = [response for batch in batches for response in batch.responses()]
    return [rows[i : i + n] for i in range(0, len(rows), n)]


def drawn_answers(
    policy: GPT, space: ActionSpace, questions: list[Question], n: int, max_new_tokens: int, temperature: float,
    seed: int,
) -> list[list[list[int]]]:  # fmt: skip
    """n responses to each question."""
    return answers_of(draws(policy, space, questions, n, max_new_tokens, temperature, seed), n)


def mean_kl(policy: GPT, reference: GPT, batches: list[Rollouts], temperature: float) -> float:
    """The exact KL(pi || pi_ref) summed over each response's actions, averaged over the responses."""
    total, responses = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logp = state_logprobs(policy, b.tokens, b.mask, temperature)
            ref_logp = state_logprobs(reference, b.tokens, b.mask, temperature)
            total += (kl_per_state(logp, ref_logp) * b.action_mask).sum().item()
            responses += b.size
    return total / responses


def curve(scores: list[list[float]], verdicts: list[list[bool]], n: int) -> list[Point]:
    """Best-of-k for k = 1, 2, 4, .., n from each question's n scores and verdicts."""
    points = []
    for k in (2**i for i in range(n.bit_length()) if 2**i <= n):
        picked = [best_of_k(s, v, k) for s, v in zip(scores, verdicts, strict=True)]
        stderr = statistics.stdev(picked) / len(picked) ** 0.5 if len(picked) > 1 else float("nan")
        gold = sum(pass_at_k(n, sum(v), k) for v in verdicts) / len(verdicts)
        proxy = sum(best_of_k(s, s, k) for s in scores) / len(scores)  # the favourite's own score
        points.append(Point(k, best_of_k_kl_bound(k), sum(picked) / len(picked), stderr, gold, proxy))
    return points


def best_of(run_dir: Path, n: int = 16, stage: str = "sft", seed: int = 0) -> BestOf:
    """Best-of-k with the run's RM on `stage`'s answers to the held-out questions, and its RLHF policy beside it."""
    if n < 1:
        raise ValueError(f"n={n}: at least one draw per question")
    drawn = stage_policy(run_dir, stage)
    cfg, space, rl = drawn.cfg, drawn.space, drawn.cfg.rl
    rm_path = run_dir / "reward" / "checkpoint.pt"
    if not rm_path.is_file():
        raise RunDirError(f"{run_dir} has no reward model ({rm_path}): best-of-k picks with it; run `tokenmdp reward`")
    questions = eval_questions(cfg)
    answers = drawn_answers(drawn.model, space, questions, n, rl.max_new_tokens, rl.temperature, seed)
    scorer = RewardScorerImpl(str(rm_path), cfg.world.digit_order, threads=rl.threads)
    points = curve(rm_scores(scorer, questions, answers), graded(space, questions, answers), n)
    greedy = _rate(held_out_passes(drawn.model, space, cfg, questions))
    rlhf = None  # beside the SFT policy's curve, the RLHF policy that started from it
    if stage == "sft" and checkpointed(run_dir, "rlhf"):
        rlhf = _rlhf(run_dir, questions, n, seed, scorer, reference=drawn.model)
    return BestOf(stage, n, len(questions), rl.temperature, points, greedy, rlhf)


def rm_scores(scorer: RewardScorerImpl, questions: list[Question], answers: list[list[list[int]]]) -> list[list[float]]:
    """The RM's score of each drawn response, question by question (one call a question: batching them all was
    no faster, and pads each to another width)."""
    return [scorer.score_texts([list(q.prefix)] * len(rs), rs) for q, rs in zip(questions, answers, strict=True)]


def graded(space: ActionSpace, questions: list[Question], answers: list[list[list[int]]]) -> list[list[bool]]:
    """The gold grader's verdict on each drawn response, question by question."""
    return [
        [q.is_answered_by(space.parse_response(r).answer) for r in responses]
        for q, responses in zip(questions, answers, strict=True)
    ]


def _rlhf(
    run_dir: Path, questions: list[Question], n: int, seed: int, scorer: RewardScorerImpl, reference: GPT
) -> dict[str, float]:
    """The run's final RLHF policy on the same questions: greedy; its own n draws' mean verdict and RM score (what
    best-of-k's pick compares with: both are a policy's expected gold and proxy reward) and their exact KL from
    the SFT policy; and the KL its last iteration measured on the prompts it trained on."""
    policy = stage_policy(run_dir, "rlhf")
    cfg, space, rl = policy.cfg, policy.space, policy.cfg.rl
    batches = draws(policy.model, space, questions, n, rl.max_new_tokens, rl.temperature, seed)
    answers = answers_of(batches, n)
    drawn = [sum(v) / n for v in graded(space, questions, answers)]
    scored = [sum(s) / n for s in rm_scores(scorer, questions, answers)]
    m = policy.state["last_metrics"]
    return {
        "greedy": _rate(held_out_passes(policy.model, space, cfg, questions)),
        "drawn": sum(drawn) / len(drawn),
        "rm_score": sum(scored) / len(scored),
        "kl": mean_kl(policy.model, reference, batches, rl.temperature),  # exact, on these questions
        "kl_trained": m["rl/kl"],  # the run's estimator on its last iteration's prompts
        **({"kl_trained_exact": m["rl/kl_exact"]} if "rl/kl_exact" in m else {}),
        "iteration": float(policy.state["iteration"]),
    }


def _rate(passed: list[bool]) -> float:
    return sum(passed) / len(passed)
