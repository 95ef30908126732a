"""DAPO's dynamic sampling: while too few of an iteration's groups carry a policy-gradient signal, ask more prompts.

Under a group baseline (RLOO, GRPO) a prompt whose G answers earned one reward has no advantage: on the demo two in
three prompts, so the learner's batch is a third of what was sampled. With `rl.dynamic_sampling_rounds` > 0 the
controller scores the iteration's answers first and, while fewer than `prompts_per_iteration` groups carry signal,
samples and scores up to that many more rounds of `prompts_per_iteration` prompts (drawn as a pure function of the
iteration and the round, so a resume asks the same); the learner trains on the first `prompts_per_iteration` groups
with signal. What the policy did (rewards, the RM's agreement, lengths) is reported over everything it sampled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from algos.advantages import rows_of_first_signal_groups
from conf.schema import Config
from models.rollout import Rollouts, concat_rollouts
from pipelines.rl_actors import Actors, call_sharded, sample
from pipelines.rl_metrics import gold_rewards
from pipelines.rl_prompts import prompts_at
from world.actions import ActionSpace
from world.exam import Question


@dataclass(frozen=True)
class Drawn:
    """Every round of an iteration's sampling, merged: group g of `rollouts` answers `asked[g]`."""

    rollouts: Rollouts
    asked: list[Question]
    proxy: torch.Tensor  # (B,) each response's reward (the RM's, or the grader's when it is the reward)
    trained: torch.Tensor  # (K,) the rows the learner takes: the first groups with signal
    signal_groups: int  # how many groups those are (0: no round found one, and the learner takes the first round)
    rounds: int
    score_seconds: float  # of the rounds' time, what scoring them took (the rest is sampling)

    @property
    def silent_share(self) -> float:
        """The share of every sampled group whose answers earned one reward (`rl/zero_advantage_groups`)."""
        with_signal = rows_of_first_signal_groups(self.proxy, self.rollouts.group, len(self.asked))
        return 1.0 - int(self.rollouts.group[with_signal].unique().numel()) / len(self.asked)


def rewards(actors: Actors, rollouts: Rollouts, asked: list[Question], space: ActionSpace) -> torch.Tensor:
    """(B,) the reward RL trains on: the scorers' (the RM), else the gold grader's."""
    if actors.scorers:
        return call_sharded(actors.scorers, "score", rollouts).collect()
    return gold_rewards(rollouts, asked, space)[0]


def draw_with_signal(
    actors: Actors, space: ActionSpace, questions: list[Question], cfg: Config, iteration: int,
    by_template: dict[str, list[Question]] | None, first: Rollouts, first_asked: list[Question],
) -> Drawn:  # fmt: skip
    """The iteration's first round (`first`, answering `first_asked`) scored, and more rounds while too few
    groups carry signal, up to `rl.dynamic_sampling_rounds` more."""
    rl, wanted = cfg.rl, cfg.rl.prompts_per_iteration
    clock = time.perf_counter()
    parts, asked, scores = [first], list(first_asked), [rewards(actors, first, first_asked, space)]
    scoring = time.perf_counter() - clock
    merged, proxy = first, scores[0]
    trained = rows_of_first_signal_groups(proxy, merged.group, wanted)
    while merged.group[trained].unique().numel() < wanted and len(parts) <= rl.dynamic_sampling_rounds:
        more = prompts_at(questions, cfg.rl_seed, iteration, wanted, by_template, sampling_round=len(parts))
        parts.append(sample(actors, space, more, cfg))
        clock = time.perf_counter()
        scores.append(rewards(actors, parts[-1], more, space))
        scoring += time.perf_counter() - clock
        asked += more
        merged, proxy = concat_rollouts(parts, space.pad_id), torch.cat(scores)
        trained = rows_of_first_signal_groups(proxy, merged.group, wanted)
    signal = int(merged.group[trained].unique().numel())
    if not signal:  # no group with signal in any round: the first round, KL alone, as without rounds
        trained = torch.arange(first.size)
    return Drawn(merged, asked, proxy, trained, signal, len(parts), scoring)
