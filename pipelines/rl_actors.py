"""RLHF's actors as the controller sees them: started with the resources their config asks for,
restored from a checkpoint, and called on shards of a batch across their replicas.

The actors themselves live in `actors/`; this module is the controller's side of them
(`pipelines/rlhf.py` runs the loop).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conf.schema import Config
from models.gpt import GPT
from models.rollout import Rollouts, concat_rollouts
from pipelines.train_loop import step_seed
from world.actions import ActionSpace
from world.exam import Question


@dataclass(frozen=True)
class Variant:
    """Where an experiment's deliberately different arm plugs in (`experiments/`); LIBRARY is the real path.

    `learner_class` replaces the policy-gradient learner, `advantages(rewards, group, action_mask)`
    replaces the advantage estimate. The library itself never sets either.
    """

    name: str = "library"
    learner_class: type | None = None
    advantages: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


LIBRARY = Variant()


@dataclass
class Actors:
    samplers: list
    scorers: list
    references: list
    critic: Any | None
    buffer: Any
    learner: Any  # ray.rllib LearnerGroup
    sync: Any  # actors.weight_sync.WeightSync
    reward_trainer: Any | None = None  # iterated RLHF's (`pipelines/rm_refresh.py`)

    def stop(self) -> None:
        """Release every actor and its resources now, not when the handles are collected: a next
        stage in the same process (an experiment's next arm) must not wait for them."""
        import ray

        self.sync.close()
        self.learner.shutdown()
        for actor in [*self.samplers, *self.scorers, *self.references, self.critic, self.buffer, self.reward_trainer]:
            if actor is not None:
                ray.kill(actor)


def start_actors(cfg: Config, run_dir: Path, space: ActionSpace, policy: GPT, variant: Variant = LIBRARY) -> Actors:
    """Every actor with the resources its config section asks for."""
    import ray

    from actors.buffer import OnPolicyBuffer
    from actors.cluster import actor_options, require_room, rl_demands
    from actors.critic import Critic
    from actors.learner import build_learner_group, policy_weights
    from actors.reference import Reference
    from actors.reward_scorer import RewardScorer
    from actors.sampler import Sampler
    from actors.weight_sync import WeightSync
    from pipelines.rm_refresh import RewardTrainer, trainer_inputs

    rl, res, order = cfg.rl, cfg.rl.actors, cfg.world.digit_order
    refreshes = bool(rl.rm_refresh.every)
    demands = rl_demands(res, rl.reward_source == "rm", rl.advantage == "gae", refreshes)
    require_room(demands, "RLHF's actors", "rl.actors.*")
    rm_path = run_dir / "reward" / "checkpoint.pt"
    # Checkpoints travel as bytes through the object store: actors on other nodes need no shared disk.
    sft = ray.put((run_dir / "sft" / "checkpoint.pt").read_bytes())
    rm = ray.put(rm_path.read_bytes()) if rm_path.is_file() else None
    kinds = ("sampler", "reward", "reference", "critic", "buffer", "reward_trainer")
    opts = {name: actor_options(getattr(res, name), res.placement_strategy) for name in kinds}
    samplers = [
        Sampler.options(**opts["sampler"]).remote(
            sft, order, rl.threads_of("sampler"), step_seed("sampler", cfg.rl_seed, rank), rl.sampler_precision
        )
        for rank in range(res.sampler.replicas)
    ]
    scorers = []
    if rl.reward_source == "rm":
        scorers = [
            RewardScorer.options(**opts["reward"]).remote(rm, order, rl.threads_of("reward"), rl.normalize_reward)
            for _ in range(res.reward.replicas)
        ]
    references = [
        Reference.options(**opts["reference"]).remote(sft, order, rl.threads_of("reference"), rl.temperature)
        for _ in range(res.reference.replicas)
    ]
    critic = None
    if rl.advantage == "gae":
        trunk = rm if rm is not None else sft
        critic = Critic.options(**opts["critic"]).remote(
            trunk, order, rl.threads_of("critic"), rl.critic_lr, rl.value_clip, rl.grad_clip
        )
    buffer = OnPolicyBuffer.options(**opts["buffer"]).remote(rl.max_staleness)
    trainer = None
    if refreshes:  # the RM's bytes and the reward stage's pairs through the object store, as the checkpoints travel
        rm_bytes, prefs = trainer_inputs(run_dir)
        trainer = (
            ray.remote(RewardTrainer)
            .options(**opts["reward_trainer"])
            .remote(cfg, rm_bytes, ray.put(prefs), rl.threads_of("reward_trainer"))
        )
    # A constructor's error (a checkpoint of another action space, say) surfaces here, with
    # its message, instead of as a sampler that never joins the weight-sync group.
    started = (*samplers, *scorers, *references, critic, buffer, trainer)
    ray.get([a.__ray_ready__.remote() for a in started if a is not None])
    learner = build_learner_group(rl, policy.cfg, space.size, variant.learner_class)
    learner.set_weights(policy_weights(policy))
    sync = WeightSync(samplers, rl.sync)
    return Actors(samplers, scorers, references, critic, buffer, learner, sync, trainer)


def restore_actors(actors: Actors, state: dict) -> None:
    """The learner's optimizer, the critic, the buffer and the samplers' RNG as the checkpoint holds them."""
    import ray

    actors.learner.set_state(state["learner"])
    if actors.critic is not None:
        ray.get(actors.critic.set_state.remote(state["critic"]))
    ray.get(actors.buffer.set_state.remote(state["buffer"]))
    rngs = zip(actors.samplers, state["sampler_rng"], strict=False)
    ray.get([s.set_rng_state.remote(r) for s, r in rngs])


def load_scorers(actors: Actors, weights: dict) -> float:
    """A refreshed RM's weights to every RewardScorer (one copy in the object store); the seconds it took."""
    import ray

    began = time.perf_counter()
    shared = ray.put(weights)
    ray.get([scorer.load_refreshed.remote(shared) for scorer in actors.scorers])
    return time.perf_counter() - began


def split(items: list, parts: int) -> list[list]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def sample(actors: Actors, space: ActionSpace, questions: list[Question], cfg: Config) -> Rollouts:
    """G responses per question, split across the samplers; rows come back in question order."""
    import ray

    chunks = split(questions, len(actors.samplers))
    refs = [
        s.sample.remote([space.encode_prompt(q.prefix) for q in chunk], cfg.rl.group_size, cfg.rl.max_new_tokens,
                        cfg.rl.temperature)
        for s, chunk in zip(actors.samplers, chunks, strict=False)
    ]  # fmt: skip
    return concat_rollouts(ray.get(refs), space.pad_id)


def group_shards(rollouts: Rollouts, parts: int) -> list[torch.Tensor]:
    """Row indices split into `parts` shards of whole prompt groups (per-prompt normalisation needs a whole group)."""
    groups = split(sorted(set(rollouts.group.tolist())), parts)
    return [torch.nonzero(torch.isin(rollouts.group, torch.tensor(g))).squeeze(1) for g in groups]


@dataclass(frozen=True)
class ShardedCall:
    """One actor method in flight on shards of a batch across its replicas."""

    refs: list
    shards: list[torch.Tensor]
    rows: int

    def collect(self) -> torch.Tensor:
        """The replies, their rows put back in the batch's order."""
        import ray

        outs = ray.get(self.refs)
        result = torch.zeros((self.rows, *outs[0].shape[1:]), dtype=outs[0].dtype)
        for rows, out in zip(self.shards, outs, strict=False):
            result[rows] = out
        return result


def call_sharded(workers: list, method: str, rollouts: Rollouts) -> ShardedCall:
    """Start `method` on shards of the batch across replicas; nothing waits until `collect`."""
    shards = group_shards(rollouts, len(workers))
    refs = [getattr(w, method).remote(rollouts.select(rows)) for w, rows in zip(workers, shards, strict=False)]
    return ShardedCall(refs, shards, rollouts.size)


def wait_timed(calls: dict[str, ShardedCall], since: float) -> dict[str, float]:
    """Wait for every call; the seconds from `since` to each one's last reply.

    The calls run at once on their own actors, so each is timed to its own end: the times
    overlap and do not add up to the phase's wall time."""
    import ray

    owner = {ref: name for name, call in calls.items() for ref in call.refs}
    left = {name: len(call.refs) for name, call in calls.items()}
    finished: dict[str, float] = {}
    pending = list(owner)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            left[owner[ref]] -= 1
            if left[owner[ref]] == 0:
                finished[owner[ref]] = time.perf_counter() - since
    return finished
