"""Preference collection: on-policy samples from the SFT policy, paired within each prompt.

Prompts come from the feedback pool (train questions SFT never saw, `world.feedback_share`).
For each exam prompt, K responses are drawn with `models.rollout.sample_rollouts`, the
sampler code RL uses; every pair among them goes to the simulated labeler (gold grader
plus `world.label_noise`). Train-split prompts give the training pairs; eval-split
prompts give held-out pairs and a pool of single responses for the cross-prompt check.

    tokenmdp preferences demo
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from conf.schema import Config
from models.checkpoint import load_checkpoint
from models.gpt import GPT
from models.rollout import sample_rollouts
from pipelines.progress import stage_progress
from pipelines.run_config import trained_checkpoint
from world.actions import ActionSpace
from world.exam import Question, questions
from world.grader import SimulatedLabeler
from world.preferences import PreferencePair, pairs_for_prompt

PROMPTS_PER_BATCH = 64


@dataclass(frozen=True)
class ScoredResponse:
    """One sampled response with its gold grade: the material of cross-prompt comparisons."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]
    correct: bool
    well_formed: bool


@dataclass(frozen=True)
class Preferences:
    train: list[PreferencePair]
    heldout: list[PreferencePair]
    heldout_responses: list[ScoredResponse]
    counts: dict[str, int]


def sample_pairs(
    model: GPT, space: ActionSpace, questions: list[Question], cfg: Config, labeler: SimulatedLabeler, split: str,
    generator: torch.Generator,
) -> tuple[list[PreferencePair], list[ScoredResponse], Counter]:  # fmt: skip
    """K on-policy responses per question, all within-prompt pairs, and every response graded."""
    counts: Counter = Counter()
    pairs: list[PreferencePair] = []
    scored: list[ScoredResponse] = []
    k = cfg.reward.responses_per_prompt
    starts = range(0, len(questions), PROMPTS_PER_BATCH)
    with stage_progress(f"preferences {split}", len(starts)) as advance:
        for start in starts:
            chunk = questions[start : start + PROMPTS_PER_BATCH]
            rollouts = sample_rollouts(
                model, space, [space.encode_prompt(q.prefix) for q in chunk], group_size=k,
                max_new_tokens=cfg.evaluate.max_new_tokens, policy_version=0, temperature=cfg.reward.temperature,
                generator=generator,
            )  # fmt: skip
            responses = rollouts.responses()
            for i, q in enumerate(chunk):
                prompt, group = tuple(space.encode_prompt(q.prefix)), responses[i * k : (i + 1) * k]
                pairs += pairs_for_prompt(space, q.prefix, group, labeler, counts, n_terms=len(q.answer))
                for r in group:
                    parsed = space.parse_response(r)
                    correct = q.is_answered_by(parsed.answer)
                    scored.append(ScoredResponse(prompt, tuple(r), correct, parsed.well_formed))
            advance(f"preferences {split} {len(pairs)} pairs")
    counts = Counter({f"{split}/{key}": n for key, n in counts.items()})
    counts[f"{split}/prompts"] = len(questions)
    counts[f"{split}/responses_correct"] = sum(s.correct for s in scored)
    return pairs, scored, counts


def collect(cfg: Config, model: GPT, space: ActionSpace) -> Preferences:
    w = cfg.world
    rng = random.Random(cfg.seed)
    train_qs = questions(w.seed, w.bank_size, "feedback", w.max_difficulty, w.feedback_share)
    eval_qs = questions(w.seed, w.bank_size, "eval", w.max_difficulty)
    train_qs = rng.sample(train_qs, min(cfg.reward.prompts, len(train_qs)))
    eval_qs = eval_qs[: cfg.reward.heldout_prompts]
    generator = torch.Generator().manual_seed(cfg.seed)
    labeler = SimulatedLabeler(noise=cfg.world.label_noise, seed=cfg.seed)
    train, _, counts = sample_pairs(model, space, train_qs, cfg, labeler, "train", generator)
    heldout, scored, heldout_counts = sample_pairs(model, space, eval_qs, cfg, labeler, "heldout", generator)
    return Preferences(train, heldout, scored, dict(counts + heldout_counts))


def save(prefs: Preferences, out: Path) -> None:
    """JSON lines per split; `stats.json` is written last and marks the collection complete."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", prefs.train), ("heldout", prefs.heldout)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in rows))
    (out / "heldout_responses.jsonl").write_text(
        "".join(json.dumps(s.__dict__) + "\n" for s in prefs.heldout_responses)
    )
    (out / "stats.json").write_text(json.dumps(prefs.counts, indent=2))


def load(out: Path) -> Preferences:
    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (out / name).read_text().splitlines() if line]

    return Preferences(
        [PreferencePair.from_dict(r) for r in rows("train.jsonl")],
        [PreferencePair.from_dict(r) for r in rows("heldout.jsonl")],
        [ScoredResponse(tuple(r["prompt"]), tuple(r["response"]), r["correct"], r["well_formed"])
         for r in rows("heldout_responses.jsonl")],
        json.loads((out / "stats.json").read_text()),
    )  # fmt: skip


def main(cfg: Config, run_dir: Path) -> Preferences:
    """Collect once per run directory (`run_dir/preferences`); a complete collection is reused."""
    out = run_dir / "preferences"
    if (out / "stats.json").is_file():
        return load(out)
    torch.set_num_threads(cfg.reward.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    model, _, _ = load_checkpoint(trained_checkpoint(run_dir, "sft", needed_by="preferences"), space)
    prefs = collect(cfg, model, space)
    if not prefs.train:
        raise RuntimeError(f"no preference pairs from {cfg.reward.prompts} prompts: {prefs.counts}")
    save(prefs, out)
    return prefs
