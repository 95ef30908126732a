"""How often does the SFT policy's own log-likelihood order a preference pair like the gold grader?

A baseline for the reward model (`sft/plain`): score each response by log pi_SFT(response |
prompt) and count the pairs where the gold-preferred response scores higher. Beside it,
the same under the pretrained model, and (`*/views`) the score averaged over views of
the prompt with its first k terms dropped (k = 0 .. views-1, at least `min_terms` terms
left): a probe of whether test-time augmentation makes the likelihood know more (on the
2026-12-02 demo it did not: +1 to 2 points on held-out pairs, -1 to +1 on training pairs).

    python scripts/likelihood_pairs.py runs/demo [--views 3] [--min-terms 3] [--split train --limit 2000]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.rollout import action_logprobs
from pipelines import preferences
from world.actions import ActionSpace


def response_logprobs(policy, space: ActionSpace, prompts: list[list[int]], response: tuple[int, ...]) -> list[float]:
    """log pi(response | prompt) for each prompt (one batch, left-padded)."""
    rows = [p + list(response) for p in prompts]
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), space.pad_id)
    mask = torch.zeros_like(tokens)
    for i, r in enumerate(rows):
        tokens[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    with torch.no_grad():
        logp = action_logprobs(policy, tokens, mask)
    return logp[:, width - len(response) :].sum(-1).tolist()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--min-terms", type=int, default=3)
    parser.add_argument(
        "--split", choices=["heldout", "train"], default="heldout", help="train: pairs the RM trained on"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N pairs only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"sft": load_checkpoint(args.run_dir / "sft" / "checkpoint.pt")}
    pretrained = args.run_dir / "pretrain" / "checkpoint.pt"
    if pretrained.exists():
        models["pretrain"] = load_checkpoint(pretrained)
    prefs = preferences.load(args.run_dir / "preferences")
    pairs = (prefs.heldout if args.split == "heldout" else prefs.train)[: args.limit]
    agree: dict[str, int] = defaultdict(int)
    for pair in pairs:
        space = models["sft"][1]
        terms = space.decode_terms(list(pair.prompt[1:-1]))  # between <bos> and '?'
        views = [space.encode_prompt(terms[k:]) for k in range(args.views) if len(terms) - k >= args.min_terms]
        scores = {}
        for name, (model, model_space, _) in models.items():
            chosen = response_logprobs(model, model_space, views, pair.chosen)
            rejected = response_logprobs(model, model_space, views, pair.rejected)
            scores[f"{name}/plain"] = (chosen[0], rejected[0])
            scores[f"{name}/views"] = (sum(chosen) / len(chosen), sum(rejected) / len(rejected))
        if "pretrain" in models:
            c = scores["sft/views"][0] + scores["pretrain/views"][0]
            r = scores["sft/views"][1] + scores["pretrain/views"][1]
            scores["sft+pretrain/views"] = (c, r)
        for name, (c, r) in scores.items():
            agree[name] += (c > r) == pair.gold_agrees
    n = max(len(pairs), 1)
    print(json.dumps({f"{args.split}_pairs": len(pairs), **{k: round(v / n, 3) for k, v in agree.items()}}))


if __name__ == "__main__":
    main()
