"""RLHF: on-policy policy gradient on Ray actors, read top to bottom.

One iteration of the single controller:
    sample     Sampler x N draw G responses per exam prompt, tagged with the policy version (with
               `rl.dynamic_sampling_rounds`, scored rounds of more prompts until enough groups carry signal)
    judge      at once, each on its own actors:
                 score      RewardScorer x R give each response its reward at <eor> (or the gold grader does)
                 reference  Reference gives log pi_ref of every action; KL per token by k1/k2/k3
                 critic     Critic gives V(state) per action (PPO with GAE only)
    advantage  algos.advantages: GAE, RLOO, group baseline or REINFORCE++
    buffer     OnPolicyBuffer takes the batch with its version; the learner gets only fresh batches
    update     RLlib LearnerGroup: advantage-weighted PPO surrogate (+ KL in the loss),
               `rl.epochs` passes of `rl.minibatches` optimizer steps over each batch
    sync       the new weights reach every sampler before the next sample; version += 1
    refresh    (iterated RLHF, `rl.rm_refresh`) the labeler judges the answers, and every few
               iterations the RM learns them and reaches every scorer (`pipelines/rm_refresh.py`)
The gold reward is computed beside the proxy reward on every batch, and the policy is
evaluated on held-out exam questions every `rl.eval_every` iterations. Checkpoints hold
the policy, the learner's optimizer, the critic, the buffer, the samplers' RNG and the
version; a killed run resumes from the last one in the same MLflow run. The actors as the
controller calls them are in `pipelines/rl_actors.py`, the prompts each iteration asks in
`pipelines/rl_prompts.py`, the learner's batch in `pipelines/rl_batch.py`, what an iteration reports of its
samples (the gold reward, the RM's agreement with it on the policy's own answers) in `pipelines/rl_metrics.py`.

    tokenmdp rlhf demo
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from algos import advantages as adv
from algos.kl import adaptive_kl_coef
from algos.stats import fixed_and_broken, paired_difference
from conf.schema import Config
from models.checkpoint import load_checkpoint, save_checkpoint
from models.gpt import GPT
from models.rollout import Rollouts, state_logprobs, taken_logprobs
from pipelines.dynamic_sampling import draw_with_signal
from pipelines.evaluate import Judgement, eval_questions, held_out_passes, judge, pass_rate
from pipelines.policy_source import kept_snapshots, snapshot_path
from pipelines.progress import stage_progress
from pipelines.rl_actors import (
    LIBRARY,
    Actors,
    Variant,
    call_sharded,
    load_scorers,
    restore_actors,
    sample,
    start_actors,
    wait_timed,
)
from pipelines.rl_batch import (
    learner_batch,
    learner_metrics,
    minibatches,
    sampler_gap,
    with_learner_logprobs,
    without_gap,
)
from pipelines.rl_kl import rollout_kl
from pipelines.rl_metrics import (
    KL_COLUMNS,
    KL_DIR,
    MISORDERED_COLUMNS,
    MISORDERED_DIR,
    ROLLOUT_COLUMNS,
    ROLLOUTS_DIR,
    checkpoint_table,
    gold_rewards,
    kl_concentration,
    kl_source_rows,
    logged_rows,
    rare_action_ids,
    rare_action_rate,
    rm_agreement,
)
from pipelines.rl_prompts import feedback_pool, practised_for, prompts_at
from pipelines.rl_watch import forget_stop, resumed_watch, warn
from pipelines.rm_refresh import IteratedRM
from pipelines.run_config import forget_registration, trained_checkpoint
from pipelines.status import stopped_by_the_watch
from pipelines.tracking import StepLog, flatten, log_rows, stage_run
from pipelines.train_loop import step_seed
from world.actions import ActionSpace
from world.audit import CorpusStats
from world.exam import Question, group_by_template


def sft_baseline(space: ActionSpace, cfg: Config, run_dir: Path, practised: list[Question], after: list[bool]):
    """The SFT policy's greedy rate on the practised prompts (what `eval/practised_pass_rate`
    started from), and the held-out gain over SFT of the policy whose verdicts are `after`,
    counted question by question: its paired standard error, and how many questions RL fixed and broke."""
    sft_policy, _, _ = load_checkpoint(run_dir / "sft" / "checkpoint.pt", space)
    before = held_out_passes(sft_policy, space, cfg, eval_questions(cfg))
    gain, stderr = paired_difference(before, after)
    fixed, broken = fixed_and_broken(before, after)
    return {
        "eval/practised_pass_rate_sft": pass_rate(sft_policy, space, cfg, practised),
        "eval/gain_over_sft": gain,
        "eval/gain_over_sft_stderr": stderr,
        "eval/fixed_over_sft": float(fixed),
        "eval/broken_over_sft": float(broken),
    }


def pretraining_corpus(run_dir: Path, space: ActionSpace) -> CorpusStats:
    """The pretraining corpus's statistics, as the SFT checkpoint carries them (and the RLHF one passes on)."""
    _, _, state = load_checkpoint(run_dir / "sft" / "checkpoint.pt", space)
    return CorpusStats.from_dict(state["corpus_stats"])


@dataclass(frozen=True)
class IterationResult:
    """What one iteration reports: its metrics, the policy version after it, and a few of its rollouts."""

    metrics: dict[str, float]
    version: int
    samples: list[dict]
    kl_coef: float  # the next iteration's (an adaptive controller's step)
    misordered: list[dict]  # every pair of answers the RM ranked against the grader (none when gold is the reward)
    kl_sources: list[dict]  # the responses that carried the most KL, action by action
    rollouts: Rollouts  # what the policy drew, and the questions its groups answer: for the labeler of
    asked: list[Question]  # iterated RLHF (`pipelines/rm_refresh.py`)


def iteration_step(cfg: Config, actors: Actors, space: ActionSpace, policy: GPT, questions: list[Question],
                   iteration: int, version: int, variant: Variant = LIBRARY,
                   by_template: dict[str, list[Question]] | None = None,
                   rare_ids: torch.Tensor | None = None, kl_coef: float | None = None) -> IterationResult:  # fmt: skip
    """sample -> score -> reference/critic -> advantages -> buffer -> update -> sync: metrics, new version, samples.

    `by_template` (the pool grouped once per stage) draws the prompts' templates evenly;
    `rare_ids`, the actions pretraining hardly took, are counted in `rl/rare_action_rate`.
    """
    import ray

    from actors.learner import gpt_state_dict, learner_update

    rl, t, m = cfg.rl, {}, {}
    kl_coef = rl.kl_coef if kl_coef is None else kl_coef
    clock = began = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        t[f"time/{name}"] = now - clock
        clock = now

    # --- sample: the policy's own actions, tagged with its version -----------------------
    asked = prompts_at(questions, cfg.rl_seed, iteration, rl.prompts_per_iteration, by_template)
    rollouts = sample(actors, space, asked, cfg)
    drawn = None  # dynamic sampling: scored rounds of prompts until enough groups carry signal
    if rl.dynamic_sampling_rounds:
        drawn = draw_with_signal(actors, space, questions, cfg, iteration, by_template, rollouts, asked)
        rollouts, asked = drawn.rollouts.select(drawn.trained), drawn.asked  # the learner's rows
    lap("sample")
    # --- judge: RM scores, reference log-probs and critic values from their actors at once;
    #     the gold reward (and, if asked, the learner's log-probs) meanwhile, on the controller
    dispatched = time.perf_counter()
    calls = {"reference": call_sharded(actors.references, "distributions", rollouts)}
    if actors.scorers and drawn is None:
        calls["score"] = call_sharded(actors.scorers, "score", rollouts)
    if actors.critic is not None:
        calls["critic"] = call_sharded([actors.critic], "values", rollouts)
    gold, formed = gold_rewards(rollouts, asked, space)
    recomputed = {}  # the sampler's gap to the learner's numbers, measured where they are recomputed
    learner_dist = None  # the controller's copy is the sampling version's weights: its (B, T, V) log-probs
    if rl.old_logprobs == "learner":  # while the actors judge
        recomputing = time.perf_counter()
        with torch.no_grad():
            learner_dist = state_logprobs(policy, rollouts.tokens, rollouts.mask, rl.temperature)
        rollouts, recomputed = with_learner_logprobs(rollouts, learner_dist)
        t["time/old_logprobs"] = time.perf_counter() - recomputing
    t |= {"time/score": 0.0, "time/critic": 0.0} | {f"time/{k}": v for k, v in wait_timed(calls, dispatched).items()}
    if drawn is not None:  # its rounds were scored as they were drawn: that time is scoring's, not sampling's
        t["time/sample"] -= drawn.score_seconds
        t["time/score"] = drawn.score_seconds
    proxy = gold  # the grader as the reward, unless the RM scored
    if "score" in calls:
        proxy = calls["score"].collect()
    elif drawn is not None:  # scored as its rounds were drawn
        proxy = drawn.proxy[drawn.trained]
    ref_dist = calls["reference"].collect()  # (B, T, V): every action's log-prob, for the learner's exact KL
    ref_logprobs = taken_logprobs(ref_dist, rollouts.tokens)  # the actions', 0 off them
    values = calls["critic"].collect() if "critic" in calls else None
    if rl.kl_estimator == "full" and rollouts.policy_version != version:  # the validator's sync_every=1 holds
        raise RuntimeError(f"the full KL needs the sampling policy (version {rollouts.policy_version}), not {version}")
    kl = rollout_kl(rollouts, ref_dist, rl, policy, rl.temperature, learner_dist)
    lap("judge")
    # --- advantages ---------------------------------------------------------------------
    kl_in_reward = kl_coef if rl.kl_in == "reward" else 0.0
    if variant.advantages is None:
        advantages, returns = adv.estimate(
            rl.advantage, proxy, rollouts.group, rollouts.action_mask, kl=kl, kl_coef=kl_in_reward, values=values,
            gamma=rl.gamma, lam=rl.lam, group_std=rl.group_std,
        )  # fmt: skip
    else:  # an experiment's arm: its own weights, no critic targets
        advantages, returns = variant.advantages(proxy, rollouts.group, rollouts.action_mask), None
    silent = adv.zero_advantage_groups(advantages, rollouts.action_mask, rollouts.group)
    m["rl/zero_advantage_groups"] = silent.float().mean().item()  # rows share their group's verdict: a group share
    lap("advantage")
    # --- the buffer: only batches fresh enough for this policy version reach the learner ---
    trained, trained_advantages, trained_ref, trained_dist = rollouts, advantages, ref_logprobs, ref_dist
    if rl.drop_zero_advantage_groups and not bool(silent.all()):  # DAPO: only groups that carry signal
        keep = torch.nonzero(~silent).squeeze(1)
        trained, trained_advantages = rollouts.select(keep), advantages[keep]
        trained_ref, trained_dist = ref_logprobs[keep], ref_dist[keep]
    m["rl/trained_responses"] = float(trained.size)
    batch = learner_batch(trained, trained_advantages, trained_ref, trained_dist, rl.max_new_tokens, kl_coef)
    ray.get(actors.buffer.put.remote(rollouts.policy_version, batch))
    served = ray.get(actors.buffer.take.remote(version))
    lap("buffer")
    # --- update: RLlib learners, advantage-weighted policy gradient ----------------------
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    shuffle = np.random.default_rng(step_seed("minibatch", cfg.rl_seed, iteration))  # a resume draws the same
    critic_update = None  # the critic learns on its own actor while the policy learns here
    if actors.critic is not None and returns is not None:
        critic_update = actors.critic.update.remote(rollouts, returns, values)
    first_update = None  # the learner's report before its first step: what `sampler_gap` reads
    for _, fresh in served:
        for _ in range(rl.epochs):
            for part in minibatches(fresh, rl.minibatches, shuffle):
                results = learner_update(
                    actors.learner, batch=part,
                    timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: (iteration + 1) * rollouts.size},
                )  # fmt: skip
                update = learner_metrics(results)
                first_update = first_update or update
                m |= without_gap(update)
    m |= recomputed or sampler_gap(first_update)
    if critic_update is not None:
        m |= ray.get(critic_update)
    lap("update")
    # --- sync: the new weights reach every sampler before the next rollout ---------------
    policy.load_state_dict(gpt_state_dict(actors.learner.get_weights()))
    version += 1 if served else 0
    pushed = served and version % rl.sync_every == 0  # sync_every > 1: samplers lag, as async ones do
    t["time/sync_transfer"] = actors.sync.push(policy.state_dict(), version) if pushed else 0.0
    lap("sync")
    # what the policy did, over everything it sampled (with dynamic sampling, more than the learner took)
    seen, seen_asked, seen_proxy, seen_gold, seen_formed = rollouts, asked, proxy, gold, formed
    if drawn is not None:
        seen, seen_asked, seen_proxy = drawn.rollouts, drawn.asked, drawn.proxy
        seen_gold, seen_formed = gold_rewards(seen, seen_asked, space)
        m |= {"rl/sample_rounds": float(drawn.rounds), "rl/signal_groups": float(drawn.signal_groups),
              "rl/zero_advantage_groups": drawn.silent_share}  # fmt: skip
    seen_mask = seen.action_mask.float()
    m |= {
        "reward/proxy": seen_proxy.mean().item(),
        "reward/gold": seen_gold.mean().item(),
        "reward/proxy_minus_gold": (seen_proxy - seen_gold).mean().item(),
        "rl/rate_114514": (seen_formed - seen_gold).mean().item(),
        "rl/sample_tokens_per_s": seen_mask.sum().item() / max(t["time/sample"], 1e-9),
        "rl/kl": (kl.sum(dim=1)).mean().item(),  # over the rows the learner took
        **kl_concentration(kl),  # and whether a few of them carry it
        "rl/response_length": seen_mask.sum(dim=1).mean().item(),
        "rl/finished_rate": seen.finished.float().mean().item(),
        # WORLDVIEW rule 3: how much of what the policy does falls on actions pretraining hardly took
        "rl/rare_action_rate": rare_action_rate(seen, rare_ids) if rare_ids is not None else float("nan"),
        "rl/policy_version": float(version),
        "rl/sample_staleness": float(version - 1 - rollouts.policy_version) if served else float("nan"),
        "rl/kl_coef": kl_coef,
    }
    if actors.scorers:  # the RM's ranking of this policy's answers beside the grader's: is the proxy still right here?
        m |= rm_agreement(seen_proxy, seen_gold, seen.group)
    if rl.kl_ctrl == "adaptive":
        kl_coef = adaptive_kl_coef(kl_coef, m["rl/kl"], rl.kl_target, rl.kl_horizon, rollouts.size)
    t["time/iteration"] = time.perf_counter() - began
    t["time/sync_buffer_share"] = (t["time/sync"] + t["time/buffer"]) / max(t["time/iteration"], 1e-9)
    samples, misses = logged_rows(
        rollouts, asked, space, proxy, gold, advantages, kl, iteration + 1, bool(actors.scorers)
    )
    kl_sources = kl_source_rows(rollouts, asked, space, proxy, gold, ref_logprobs, kl, iteration + 1)
    report = m | t | ray.get(actors.buffer.report.remote())
    return IterationResult(report, version, samples, kl_coef, misses, kl_sources, seen, seen_asked)


def main(
    cfg: Config, run_dir: Path, tracking_uri: str | None = None, stop_at: int | None = None, variant: Variant = LIBRARY
) -> dict[str, float]:
    """RLHF from `run_dir/sft` (and `run_dir/reward`) into `run_dir/rlhf`; returns the final metrics."""
    import ray

    from actors.cluster import ActorsLost, init_ray

    rl = cfg.rl
    torch.set_num_threads(rl.threads)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    if rl.reward_source == "rm":
        trained_checkpoint(run_dir, "reward", needed_by="rlhf with rl.reward_source=rm")
    questions = feedback_pool(cfg)
    start = start_point(run_dir, space)
    stopped = start.resumed and stopped_by_the_watch(run_dir, rl.watch_stop, start.iteration)
    if stopped:
        print(f"rlhf: stopped at iteration {start.iteration} of {rl.iterations} by the over-optimisation watch "
              "(rl.watch_stop); set rl.watch_stop=false to train on", file=sys.stderr, flush=True)  # fmt: skip
    if stopped or (start.resumed and start.iteration >= rl.iterations):  # finished: report, starting no actor
        practised = practised_for(cfg, questions)
        judged = judge(start.policy, space, cfg, practised)
        return (
            start.state["last_metrics"]
            | judged.metrics
            | sft_baseline(space, cfg, run_dir, practised, judged.held_out)
            | {"run_id": start.state["run_id"]}
        )
    if start.resumed and (registered := forget_registration(run_dir)):
        said = f"rlhf: training on from iteration {start.iteration} to {rl.iterations}; {registered} stays the policy"
        print(f"{said} of its previous end, the new final policy is registered when the run ends", file=sys.stderr)
    init_ray()
    restarts = 0
    while True:
        actors = start_actors(cfg, run_dir, space, start.policy, variant)
        try:
            if start.resumed:
                restore_actors(actors, start.state)
            actors.sync.push(start.policy.state_dict(), start.version)
            kl_coef = start.state.get("kl_coef", rl.kl_coef) if start.resumed else rl.kl_coef  # the controller's
            iterated = None  # iterated RLHF: the RM as the last checkpoint left it (`pipelines/rm_refresh.py`)
            if rl.rm_refresh.every:
                saved = [start.state.get(key) if start.resumed else None for key in ("reward_model", "rm_refresh")]
                iterated = IteratedRM(cfg, space, actors.reward_trainer, partial(load_scorers, actors), *saved)
            return _train(
                cfg, run_dir, actors, space, start.policy, questions, start.iteration, start.version, kl_coef,
                stop_at, tracking_uri, variant, iterated,
            )  # fmt: skip
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as err:  # killed, OOM, node lost
            lost = err
        finally:
            actors.stop()
        # --- an actor died: every actor starts again from the last checkpoint, as a resumed run would
        start = start_point(run_dir, space)
        died = f"rlhf: an actor died ({_first_line(lost)})"
        where = f"iteration {start.iteration}" + ("" if start.resumed else " (the SFT policy: no RL checkpoint yet)")
        if restarts == rl.actor_restarts:
            raise ActorsLost(
                f"{died} with the {restarts} restart(s) of rl.actor_restarts spent; the same command resumes from "
                f"{where}"
            ) from lost
        restarts += 1
        print(f"{died}; every actor starts again from {where} (restart {restarts} of {rl.actor_restarts})",
              file=sys.stderr, flush=True)  # fmt: skip


@dataclass(frozen=True)
class StartPoint:
    """Where RLHF starts: its last checkpoint (`resumed`), else the SFT policy at iteration 0."""

    policy: GPT
    state: dict
    iteration: int
    version: int
    resumed: bool


def start_point(run_dir: Path, space: ActionSpace) -> StartPoint:
    """RLHF's last checkpoint, else the SFT policy."""
    ckpt = run_dir / "rlhf" / "checkpoint.pt"
    if ckpt.is_file():
        policy, _, state = load_checkpoint(ckpt, space)
        return StartPoint(policy, state, state["iteration"], state["policy_version"], resumed=True)
    policy, _, state = load_checkpoint(trained_checkpoint(run_dir, "sft", needed_by="rlhf"), space)
    return StartPoint(policy, state, 0, 0, resumed=False)


def _first_line(err: BaseException) -> str:
    """An error's first non-empty line: Ray's actor errors run to a page."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _snapshot(run_dir: Path, policy: GPT, space: ActionSpace, iteration: int, version: int, cfg: Config,
              corpus: CorpusStats, metrics: dict[str, float], iterated: IteratedRM | None) -> None:  # fmt: skip
    """Keep this iteration's policy (`rl.snapshot_every`): on disk and among the run's MLflow artifacts; with a
    refreshed RM, the RM it trained against then (what `trace` scores a snapshot's answers with)."""
    import mlflow

    snapshot = snapshot_path(run_dir, iteration)
    rm = {"reward_model": iterated.weights()} if iterated else {}
    save_checkpoint(
        snapshot, model=policy, space=space, iteration=iteration, policy_version=version,
        config=cfg.model_dump(), corpus_stats=corpus.to_dict(), last_metrics=metrics, **rm,
    )  # fmt: skip
    mlflow.log_artifact(str(snapshot), artifact_path="snapshots")


def _checkpoint(
    stage_dir: Path, actors: Actors, policy: GPT, space: ActionSpace, iteration: int, version: int, kl_coef: float,
    cfg: Config, metrics: dict[str, float], run_id: str, corpus: CorpusStats, iterated: IteratedRM | None,
) -> None:  # fmt: skip
    """Everything a resume needs: the policy, the learner's optimizer, the critic, the buffer, the samplers' RNG
    (and a refreshed RM with its optimizer and labelled pairs)."""
    import ray

    save_checkpoint(
        stage_dir / "checkpoint.pt", model=policy, space=space, iteration=iteration,
        policy_version=version, learner=actors.learner.get_state(),
        critic=ray.get(actors.critic.get_state.remote()) if actors.critic else None,
        buffer=ray.get(actors.buffer.get_state.remote()),
        sampler_rng=ray.get([s.rng_state.remote() for s in actors.samplers]), kl_coef=kl_coef,
        config=cfg.model_dump(), last_metrics=metrics, run_id=run_id,
        corpus_stats=corpus.to_dict(),  # the audit's, so the policy is judged without its run dir
        **({"reward_model": iterated.weights(), "rm_refresh": iterated.state()} if iterated else {}),
    )  # fmt: skip


def _train(
    cfg, run_dir, actors, space, policy, questions, iteration, version, kl_coef, stop_at, tracking_uri, variant,
    iterated: IteratedRM | None,
):  # fmt: skip
    rl = cfg.rl
    stage_dir = run_dir / "rlhf"
    pending: list[tuple[int, dict[str, float]]] = []
    table: list[dict] = []  # rollouts of the iterations since the last checkpoint
    misses: list[dict] = []  # and the answers the RM ranked against the grader
    kl_table: list[dict] = []  # and the responses that carried the most KL
    by_template = group_by_template(questions) if rl.balance_templates else None
    corpus = pretraining_corpus(run_dir, space)
    rare_ids = rare_action_ids(corpus, space)
    practised = practised_for(cfg, questions)
    final: dict[str, float] = {}
    judged: Judgement | None = None
    with stage_run(stage_dir, experiment=cfg.name, run_name="rlhf", tracking_uri=tracking_uri) as run:
        import mlflow

        metrics_log = StepLog()  # a resume redoes the iterations since its checkpoint: the run holds some already
        if iteration == 0:
            mlflow.log_params(flatten(cfg.model_dump(include={"rl"})) | {"rl.variant": variant.name})
            metrics_log.log([(0, judge(policy, space, cfg, practised).metrics)])
        # params are written once (as the run started); the tags say the length it was last asked to run and the
        # actors it last ran on (a resume may move it to another cluster)
        actors_now = json.dumps(rl.actors.model_dump())
        mlflow.set_tags({"tokenmdp.rl_iterations": rl.iterations, "tokenmdp.rl_actors": actors_now})
        watch = resumed_watch(rl, mlflow.MlflowClient(), run.info.run_id, iteration, stage_dir)
        if not rl.watch_stop:
            forget_stop(stage_dir)
        with stage_progress("rlhf", rl.iterations, completed=iteration) as advance:
            while iteration < rl.iterations:
                step = iteration_step(
                    cfg, actors, space, policy, questions, iteration, version, variant, by_template, rare_ids, kl_coef
                )
                metrics, version, kl_coef = step.metrics, step.version, step.kl_coef
                table += step.samples
                misses += step.misordered
                kl_table += step.kl_sources
                iteration += 1
                proxy, gold, kl = metrics["reward/proxy"], metrics["reward/gold"], metrics["rl/kl"]
                advance(f"rlhf proxy {proxy:.2f} gold {gold:.2f} kl {kl:.3f}")  # the RM's view beside the truth
                turn = watch.observe(iteration, gold, proxy)
                stopping = turn is not None and rl.watch_stop  # the policy learns the RM's errors: end here
                judging = iteration % rl.eval_every == 0 or iteration == rl.iterations or stopping
                if iterated is not None:  # iterated RLHF: the labeler judges these answers; the RM learns them
                    metrics["reward/rm_version"] = float(iterated.version)  # the refreshes behind this one's scores
                    metrics |= iterated.observe(step.rollouts, step.asked, iteration, judge=judging)
                judged = None  # the policy of this iteration, if it was judged
                if judging:  # (meanwhile a refresh with a lag trains on its own actor)
                    judged = judge(policy, space, cfg, practised)
                    metrics |= judged.metrics
                pending.append((iteration, metrics))
                final = metrics
                if rl.snapshot_every and iteration % rl.snapshot_every == 0:  # this iteration's policy, kept
                    _snapshot(run_dir, policy, space, iteration, version, cfg, corpus, metrics, iterated)
                if turn:  # after the snapshot (it may be the one to take); a kill before the checkpoint below
                    # resumes at an earlier one, where the watch has not warned yet (`resumed_watch`)
                    warn(turn, watch, iteration, stage_dir, kept_snapshots(run_dir), rl.snapshot_every, stopping)
                checkpointing = stopping or iteration % rl.checkpoint_every == 0 or iteration == rl.iterations
                if checkpointing:
                    metrics_log.log(pending)
                    pending = []
                    # the tables of the iterations since the last checkpoint, before this one (`checkpoint_table`)
                    log_rows(table, ROLLOUT_COLUMNS, checkpoint_table(ROLLOUTS_DIR, iteration))
                    log_rows(kl_table, KL_COLUMNS, checkpoint_table(KL_DIR, iteration))
                    if actors.scorers:  # with the RM as the reward; empty if it ranked every pair as the grader
                        log_rows(misses, MISORDERED_COLUMNS, checkpoint_table(MISORDERED_DIR, iteration))
                    _checkpoint(stage_dir, actors, policy, space, iteration, version, kl_coef, cfg, metrics,
                                run.info.run_id, corpus, iterated)  # fmt: skip
                    table, misses, kl_table = [], [], []
                if stopping or (checkpointing and stop_at is not None and iteration >= stop_at):
                    break
        if judged is None:  # stopped between evaluations, or nothing left to do: judge the policy as it is
            judged = judge(policy, space, cfg, practised)
            final |= judged.metrics
        final = final | sft_baseline(space, cfg, run_dir, practised, judged.held_out)
        mlflow.log_artifact(str(stage_dir / "checkpoint.pt"), artifact_path="checkpoint")
    return {**final, "run_id": run.info.run_id}
