"""How often does the SFT policy's own log-likelihood order a held-out preference pair like the gold grader?

A baseline for the reward model: score each response by log pi_SFT(response | prompt)
and count the held-out pairs where the gold-preferred response scores higher.

    python scripts/likelihood_pairs.py runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.rollout import action_logprobs
from pipelines import preferences
from world.actions import ActionSpace


def response_logprob(policy, space: ActionSpace, prompt: tuple[int, ...], response: tuple[int, ...]) -> float:
    tokens = torch.tensor([list(prompt + response)])
    with torch.no_grad():
        logp = action_logprobs(policy, tokens, torch.ones_like(tokens))
    return logp[0, len(prompt) :].sum().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    policy, space, _ = load_checkpoint(args.run_dir / "sft" / "checkpoint.pt")  # in the run's own digit order
    prefs = preferences.load(args.run_dir / "preferences")
    agree = 0
    for p in prefs.heldout:
        chosen_higher = response_logprob(policy, space, p.prompt, p.chosen) > response_logprob(
            policy, space, p.prompt, p.rejected
        )
        agree += chosen_higher == p.gold_agrees
    print(
        json.dumps(
            {"heldout_pairs": len(prefs.heldout), "likelihood_agrees_with_gold": agree / max(len(prefs.heldout), 1)}
        )
    )


if __name__ == "__main__":
    main()
