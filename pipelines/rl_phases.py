"""The phases of one RLHF iteration, in the order `pipelines/rlhf.py` `iteration_step` calls them.

Each phase is the controller's side of one step of the loop: it calls the actors (`pipelines/rl_actors.py`)
and the pure math (`algos/`), and hands the next phase what it needs. Every phase's wall time goes to
`Laps` as `time/<phase>`; the judges' own times (`time/score`, `time/reference`, `time/critic`) overlap,
since they run at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from algos import advantages as adv
from conf.schema import Config, RLConfig
from models.gpt import GPT
from models.rollout import Rollouts, state_logprobs, taken_logprobs
from pipelines.dynamic_sampling import Drawn, draw_with_signal
from pipelines.rl_actors import Actors, Variant, call_sharded, sample, wait_timed
from pipelines.rl_batch import (
    learner_batch,
    learner_metrics,
    minibatches,
    sampler_gap,
    with_learner_logprobs,
    without_gap,
)
from pipelines.rl_kl import rollout_kl
from pipelines.rl_metrics import gold_rewards, kl_concentration, rare_action_rate, rm_agreement
from pipelines.rl_prompts import prompts_at
from pipelines.rl_ptx import PtxData, with_ptx
from pipelines.train_loop import step_seed
from world.actions import ActionSpace
from world.exam import Question


class Laps:
    """Each phase's wall time, `time/<name>`, from the end of the phase before it."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.began = self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times[f"time/{name}"] = now - self._clock
        self._clock = now

    def finish(self) -> None:
        """The iteration's wall time, and the share of it weight sync and the buffer took (target: under 5%)."""
        self.times["time/iteration"] = time.perf_counter() - self.began
        self.times["time/sync_buffer_share"] = (self.times["time/sync"] + self.times["time/buffer"]) / max(
            self.times["time/iteration"], 1e-9
        )


@dataclass(frozen=True)
class Sampled:
    """What the samplers drew this iteration: group g of `rollouts` answers `asked[g]`."""

    rollouts: Rollouts  # the rows the learner takes
    asked: list[Question]
    drawn: Drawn | None  # dynamic sampling (`rl.dynamic_sampling_rounds`): every round drawn, scored as drawn


def sample_phase(
    cfg: Config, actors: Actors, space: ActionSpace, questions: list[Question], iteration: int,
    by_template: dict[str, list[Question]] | None,
) -> Sampled:  # fmt: skip
    """The policy's own actions on this iteration's prompts, tagged with its version; with dynamic sampling,
    scored rounds of more prompts until enough groups carry signal."""
    rl = cfg.rl
    asked = prompts_at(questions, cfg.rl_seed, iteration, rl.prompts_per_iteration, by_template)
    rollouts = sample(actors, space, asked, cfg)
    if not rl.dynamic_sampling_rounds:
        return Sampled(rollouts, asked, None)
    drawn = draw_with_signal(actors, space, questions, cfg, iteration, by_template, rollouts, asked)
    return Sampled(drawn.rollouts.select(drawn.trained), drawn.asked, drawn)


@dataclass(frozen=True)
class Judged:
    """The sampled rows as the judges saw them."""

    rollouts: Rollouts  # the learner's rows; their old log-probs the learner's where `rl.old_logprobs` says so
    proxy: torch.Tensor  # (B,) the reward RL trains on: the RM's score at <eor>, or the grader's
    gold: torch.Tensor  # (B,) the gold grader's reward
    formed: torch.Tensor  # (B,) 1 = a well-formed answer
    ref_dist: torch.Tensor  # (B, T, V) the reference's log-probs of every action, for the learner's exact KL
    ref_logprobs: torch.Tensor  # (B, T) the reference's log-probs of the actions taken, 0 off them
    values: torch.Tensor | None  # (B, T) the critic's values (PPO with GAE), else None
    kl: torch.Tensor  # (B, T) each action's KL to the reference (`rl.kl_estimator`)
    recomputed: dict[str, float]  # the sampler's gap to the learner's log-probs, where they were recomputed


def judge_phase(
    cfg: Config, actors: Actors, space: ActionSpace, policy: GPT, sampled: Sampled, version: int, laps: Laps
) -> Judged:
    """RM scores, reference log-probs and critic values from their actors at once; the gold reward (and, if asked,
    the learner's log-probs) meanwhile, on the controller. Each judge's time goes to `laps`."""
    rl, rollouts, drawn = cfg.rl, sampled.rollouts, sampled.drawn
    dispatched = time.perf_counter()
    calls = {"reference": call_sharded(actors.references, "distributions", rollouts)}
    if actors.scorers and drawn is None:
        calls["score"] = call_sharded(actors.scorers, "score", rollouts)
    if actors.critic is not None:
        calls["critic"] = call_sharded([actors.critic], "values", rollouts)
    gold, formed = gold_rewards(rollouts, sampled.asked, space)
    recomputed: dict[str, float] = {}  # the sampler's gap to the learner's numbers, measured where recomputed
    learner_dist = None  # the controller's copy is the sampling version's weights: its (B, T, V) log-probs
    if rl.old_logprobs == "learner":  # while the actors judge
        recomputing = time.perf_counter()
        with torch.no_grad():
            learner_dist = state_logprobs(policy, rollouts.tokens, rollouts.mask, rl.temperature)
        rollouts, recomputed = with_learner_logprobs(rollouts, learner_dist)
        laps.times["time/old_logprobs"] = time.perf_counter() - recomputing
    waited = {f"time/{name}": seconds for name, seconds in wait_timed(calls, dispatched).items()}
    laps.times |= {"time/score": 0.0, "time/critic": 0.0} | waited
    if drawn is not None:  # its rounds were scored as they were drawn: that time is scoring's, not sampling's
        laps.times["time/sample"] -= drawn.score_seconds
        laps.times["time/score"] = drawn.score_seconds
    proxy = gold  # the grader as the reward, unless the RM scored
    if "score" in calls:
        proxy = calls["score"].collect()
    elif drawn is not None:  # scored as its rounds were drawn
        proxy = drawn.proxy[drawn.trained]
    ref_dist = calls["reference"].collect()
    values = calls["critic"].collect() if "critic" in calls else None
    if rl.kl_estimator == "full" and rollouts.policy_version != version:  # the validator's sync_every=1 holds
        raise RuntimeError(f"the full KL needs the sampling policy (version {rollouts.policy_version}), not {version}")
    kl = rollout_kl(rollouts, ref_dist, rl, policy, rl.temperature, learner_dist)
    ref_logprobs = taken_logprobs(ref_dist, rollouts.tokens)
    return Judged(rollouts, proxy, gold, formed, ref_dist, ref_logprobs, values, kl, recomputed)


def advantages_of(
    rl: RLConfig, variant: Variant, judged: Judged, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) advantages and (PPO with GAE) the critic's targets, by `rl.advantage` (algos/advantages.py), the
    KL in the reward if `rl.kl_in` puts it there; an experiment's arm brings its own weights and no targets."""
    rows = judged.rollouts
    if variant.advantages is not None:
        return variant.advantages(judged.proxy, rows.group, rows.action_mask), None
    kl_in_reward = kl_coef if rl.kl_in == "reward" else 0.0
    return adv.estimate(
        rl.advantage, judged.proxy, rows.group, rows.action_mask, kl=judged.kl, kl_coef=kl_in_reward,
        values=judged.values, gamma=rl.gamma, lam=rl.lam, group_std=rl.group_std,
    )  # fmt: skip


def through_buffer(
    rl: RLConfig, actors: Actors, judged: Judged, advantages: torch.Tensor, silent: torch.Tensor, kl_coef: float,
    version: int,
) -> tuple[list, int]:  # fmt: skip
    """The learner's batch into the OnPolicyBuffer with the version that drew it, and what the buffer serves the
    learner at `version` (only batches fresh enough); with `rl.drop_zero_advantage_groups` (DAPO), only the
    groups that carry signal. Returns the served batches and how many responses the learner takes."""
    import ray

    rows, kept, ref_logprobs, ref_dist = judged.rollouts, advantages, judged.ref_logprobs, judged.ref_dist
    if rl.drop_zero_advantage_groups and not bool(silent.all()):
        keep = torch.nonzero(~silent).squeeze(1)
        rows, kept, ref_logprobs, ref_dist = rows.select(keep), advantages[keep], ref_logprobs[keep], ref_dist[keep]
    batch = learner_batch(rows, kept, ref_logprobs, ref_dist, rl.max_new_tokens, kl_coef)
    ray.get(actors.buffer.put.remote(judged.rollouts.policy_version, batch))
    return ray.get(actors.buffer.take.remote(version)), rows.size


def update_phase(
    cfg: Config, actors: Actors, judged: Judged, returns: torch.Tensor | None, served: list, iteration: int,
    ptx: PtxData | None = None,
) -> dict[str, float]:  # fmt: skip
    """RLlib's learners take `rl.epochs` passes of `rl.minibatches` steps over each served batch (the minibatches
    drawn from the iteration's seed, so a resume draws the same), each step with SFT's rows of `ptx` (PPO-ptx)
    when given, while the critic learns on its own actor.
    Returns the learner's metrics, the sampler's gap to it, and the critic's."""
    import ray
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    from actors.learner import learner_update

    rl, rollouts = cfg.rl, judged.rollouts
    shuffle = np.random.default_rng(step_seed("minibatch", cfg.rl_seed, iteration))
    critic_update = None
    if actors.critic is not None and returns is not None:
        critic_update = actors.critic.update.remote(rollouts, returns, judged.values)
    metrics: dict[str, float] = {}
    first_update = None  # the learner's report before its first step: what `sampler_gap` reads
    steps = 0
    for _, fresh in served:
        for _ in range(rl.epochs):
            for part in minibatches(fresh, rl.minibatches, shuffle):
                if ptx is not None:
                    part = with_ptx(part, ptx.columns(iteration, steps), ptx.space.pad_id)
                steps += 1
                results = learner_update(
                    actors.learner, batch=part,
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: (iteration + 1) * rollouts.size},
                )  # fmt: skip
                update = learner_metrics(results)
                first_update = first_update or update
                metrics |= without_gap(update)
    metrics |= judged.recomputed or sampler_gap(first_update)
    if critic_update is not None:
        metrics |= ray.get(critic_update)
    return metrics


def sync_phase(rl: RLConfig, actors: Actors, policy: GPT, version: int, served: list, laps: Laps) -> int:
    """The learner's new weights into the controller's policy and to every sampler before the next rollout
    (every `rl.sync_every` versions: above 1 the samplers lag, as asynchronous ones do); returns the version."""
    from actors.learner import gpt_state_dict

    policy.load_state_dict(gpt_state_dict(actors.learner.get_weights()))
    version += 1 if served else 0
    pushed = served and version % rl.sync_every == 0
    laps.times["time/sync_transfer"] = actors.sync.push(policy.state_dict(), version) if pushed else 0.0
    return version


def what_the_policy_did(
    actors: Actors, space: ActionSpace, sampled: Sampled, judged: Judged, version: int, served: list,
    kl_coef: float, rare_ids: torch.Tensor | None, sample_seconds: float,
) -> tuple[dict[str, float], Rollouts, list[Question]]:  # fmt: skip
    """The iteration's report of the policy's samples: over everything it sampled (with dynamic sampling, more
    than the learner took), the proxy and gold rewards and their gap, the 114514 rate, length, KL (over the
    learner's rows) and where it sits, actions rare in pretraining, staleness, and the RM's agreement with the
    grader on these answers. Returns it with the rows and questions it covers."""
    rows, drawn = judged.rollouts, sampled.drawn
    seen, asked, proxy, gold, formed = rows, sampled.asked, judged.proxy, judged.gold, judged.formed
    metrics: dict[str, float] = {}
    if drawn is not None:
        seen, asked, proxy = drawn.rollouts, drawn.asked, drawn.proxy
        gold, formed = gold_rewards(seen, asked, space)
        metrics |= {"rl/sample_rounds": float(drawn.rounds), "rl/signal_groups": float(drawn.signal_groups),
                    "rl/zero_advantage_groups": drawn.silent_share}  # fmt: skip
    mask = seen.action_mask.float()
    metrics |= {
        "reward/proxy": proxy.mean().item(),
        "reward/gold": gold.mean().item(),
        "reward/proxy_minus_gold": (proxy - gold).mean().item(),
        "rl/rate_114514": (formed - gold).mean().item(),
        "rl/sample_tokens_per_s": mask.sum().item() / max(sample_seconds, 1e-9),
        "rl/kl": (judged.kl.sum(dim=1)).mean().item(),  # over the rows the learner took
        **kl_concentration(judged.kl),  # and whether a few of them carry it
        "rl/response_length": mask.sum(dim=1).mean().item(),
        "rl/finished_rate": seen.finished.float().mean().item(),
        # WORLDVIEW rule 3: how much of what the policy does falls on actions pretraining hardly took
        "rl/rare_action_rate": rare_action_rate(seen, rare_ids) if rare_ids is not None else float("nan"),
        "rl/policy_version": float(version),
        "rl/sample_staleness": float(version - 1 - rows.policy_version) if served else float("nan"),
        "rl/kl_coef": kl_coef,
    }
    if actors.scorers:  # the RM's ranking of this policy's answers beside the grader's: is the proxy still right here?
        metrics |= rm_agreement(proxy, gold, seen.group)
    return metrics, seen, asked
