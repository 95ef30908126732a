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
from models.gpt import GPT
from models.sampling import generate
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


@dataclass(frozen=True)
class BestOf:
    """The curve, and the run's RLHF policy beside it."""

    stage: str  # the policy drawn from
    draws: int  # n per question
    questions: int
    temperature: float
    points: list[Point]
    greedy: float  # the drawn policy's greedy gold pass rate
    rlhf: dict[str, float] | None  # the run's RLHF policy: greedy and drawn as above, and the KL it ended at

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def drawn_answers(
    policy: GPT, space: ActionSpace, questions: list[Question], n: int, max_new_tokens: int, temperature: float,
    seed: int,
) -> list[list[list[int]]]:  # fmt: skip
    """n responses (their action ids, `<eor>` included) to each question, the prompt read once for its n."""
    per_call = max(1, ROWS_PER_CALL // n)
    generator = torch.Generator().manual_seed(seed)
    policy.eval()
    responses: list[list[list[int]]] = []
    for start in range(0, len(questions), per_call):
        chunk = questions[start : start + per_call]
        gen = generate(
            policy, [space.encode_prompt(q.prefix) for q in chunk], max_new_tokens=max_new_tokens,
            eor_id=space.eor_id, pad_id=space.pad_id, temperature=temperature, generator=generator,
            samples_per_prompt=n,
        )  # fmt: skip
        rows = [row[mask.bool()].tolist() for row, mask in zip(gen.tokens, gen.action_mask, strict=True)]
        responses += [rows[i * n : (i + 1) * n] for i in range(len(chunk))]
    return responses


def curve(scores: list[list[float]], verdicts: list[list[bool]], n: int) -> list[Point]:
    """Best-of-k for k = 1, 2, 4, .., n from each question's n scores and verdicts."""
    points = []
    for k in (2**i for i in range(n.bit_length()) if 2**i <= n):
        picked = [best_of_k(s, v, k) for s, v in zip(scores, verdicts, strict=True)]
        stderr = statistics.stdev(picked) / len(picked) ** 0.5 if len(picked) > 1 else float("nan")
        gold = sum(pass_at_k(n, sum(v), k) for v in verdicts) / len(verdicts)
        points.append(Point(k, best_of_k_kl_bound(k), sum(picked) / len(picked), stderr, gold))
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
    scores = [scorer.score_texts([list(q.prefix)] * n, rs) for q, rs in zip(questions, answers, strict=True)]
    points = curve(scores, graded(space, questions, answers), n)
    greedy = _rate(held_out_passes(drawn.model, space, cfg, questions))
    rlhf = _rlhf(run_dir, questions, n, seed) if stage != "rlhf" and checkpointed(run_dir, "rlhf") else None
    return BestOf(stage, n, len(questions), rl.temperature, points, greedy, rlhf)


def graded(space: ActionSpace, questions: list[Question], answers: list[list[list[int]]]) -> list[list[bool]]:
    """The gold grader's verdict on each drawn response, question by question."""
    return [
        [q.is_answered_by(space.parse_response(r).answer) for r in responses]
        for q, responses in zip(questions, answers, strict=True)
    ]


def _rlhf(run_dir: Path, questions: list[Question], n: int, seed: int) -> dict[str, float]:
    """The run's final RLHF policy on the same questions: greedy, its own n draws' mean verdict (what best-of-k's
    RM pick compares with: both are a policy's expected gold reward), and the KL its last iteration measured."""
    policy = stage_policy(run_dir, "rlhf")
    cfg, space, rl = policy.cfg, policy.space, policy.cfg.rl
    answers = drawn_answers(policy.model, space, questions, n, rl.max_new_tokens, rl.temperature, seed)
    drawn = [sum(v) / n for v in graded(space, questions, answers)]
    m = policy.state["last_metrics"]
    return {
        "greedy": _rate(held_out_passes(policy.model, space, cfg, questions)),
        "drawn": sum(drawn) / len(drawn),
        "kl": m["rl/kl"],  # the run's estimator, summed over a response and averaged
        **({"kl_exact": m["rl/kl_exact"]} if "rl/kl_exact" in m else {}),
        "iteration": float(policy.state["iteration"]),
    }


def _rate(passed: list[bool]) -> float:
    return sum(passed) / len(passed)
