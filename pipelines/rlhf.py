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
version; a killed run resumes from the last one in the same MLflow run. Each phase of an
iteration is a function of `pipelines/rl_phases.py`; the actors as the
controller calls them are in `pipelines/rl_actors.py`, the prompts each iteration asks in
`pipelines/rl_prompts.py`, the learner's batch in `pipelines/rl_batch.py`, what an iteration reports of its
samples (the gold reward, the RM's agreement with it on the policy's own answers) in `pipelines/rl_metrics.py`.

    tokenmdp rlhf demo
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from algos import advantages as adv
from algos.kl import adaptive_kl_coef
from algos.stats import fixed_and_broken, paired_difference
from conf.schema import Config
from models.checkpoint import load_checkpoint, save_checkpoint
from models.gpt import GPT
from models.rollout import Rollouts
from pipelines.evaluate import Judgement, eval_questions, held_out_passes, judge, pass_rate
from pipelines.policy_source import kept_snapshots, snapshot_path
from pipelines.progress import stage_progress
from pipelines.rl_actors import (
    LIBRARY,
    Actors,
    Variant,
    load_scorers,
    restore_actors,
    start_actors,
)
from pipelines.rl_metrics import RowsSinceCheckpoint, kl_source_rows, logged_rows, rare_action_ids
from pipelines.rl_phases import (
    Laps,
    advantages_of,
    judge_phase,
    sample_phase,
    sync_phase,
    through_buffer,
    update_phase,
    what_the_policy_did,
)
from pipelines.rl_prompts import feedback_pool, practised_for
from pipelines.rl_ptx import PtxData, ptx_data
from pipelines.rl_watch import forget_stop, resumed_watch, warn
from pipelines.rm_refresh import IteratedRM
from pipelines.run_config import forget_registration, trained_checkpoint
from pipelines.status import stopped_by_the_watch
from pipelines.tracking import StepLog, flatten, stage_run
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
                   rare_ids: torch.Tensor | None = None, kl_coef: float | None = None,
                   ptx: PtxData | None = None) -> IterationResult:  # fmt: skip
    """sample -> judge -> advantages -> buffer -> update -> sync: metrics, new version, samples.

    Each phase is a function of `pipelines/rl_phases.py`. `by_template` (the pool grouped once per stage)
    draws the prompts' templates evenly; `rare_ids`, the actions pretraining hardly took, are counted in
    `rl/rare_action_rate`; `ptx`, SFT's questions, join every optimizer step (PPO-ptx, `rl.ptx_coef`).
    """
    import ray

    rl, laps = cfg.rl, Laps()
    kl_coef = rl.kl_coef if kl_coef is None else kl_coef
    # --- sample: the policy's own actions, tagged with its version -----------------------
    sampled = sample_phase(cfg, actors, space, questions, iteration, by_template)
    laps.lap("sample")
    # --- judge: the RM, the reference and the critic at once; the gold grader meanwhile ---
    judged = judge_phase(cfg, actors, space, policy, sampled, version, laps)
    rows = judged.rollouts
    laps.lap("judge")
    # --- advantages ---------------------------------------------------------------------
    advantages, returns = advantages_of(rl, variant, judged, kl_coef)
    silent = adv.zero_advantage_groups(advantages, rows.action_mask, rows.group)
    m = {"rl/zero_advantage_groups": silent.float().mean().item()}  # rows share their group's verdict: a group share
    laps.lap("advantage")
    # --- the buffer: only batches fresh enough for this policy version reach the learner ---
    served, trained = through_buffer(rl, actors, judged, advantages, silent, kl_coef, version)
    m["rl/trained_responses"] = float(trained)
    laps.lap("buffer")
    # --- update: RLlib learners, advantage-weighted policy gradient ----------------------
    m |= update_phase(cfg, actors, judged, returns, served, iteration, ptx)
    laps.lap("update")
    # --- sync: the new weights reach every sampler before the next rollout ---------------
    version = sync_phase(rl, actors, policy, version, served, laps)
    laps.lap("sync")
    # --- report: what the policy did, the KL coefficient's next value, the logged rows ----
    did, seen, seen_asked = what_the_policy_did(
        actors, space, sampled, judged, version, served, kl_coef, rare_ids, laps.times["time/sample"]
    )
    m |= did
    if rl.kl_ctrl == "adaptive":
        kl_coef = adaptive_kl_coef(kl_coef, m["rl/kl"], rl.kl_target, rl.kl_horizon, rows.size)
    laps.finish()
    asked, proxy, gold, kl = sampled.asked, judged.proxy, judged.gold, judged.kl
    samples, misses = logged_rows(rows, asked, space, proxy, gold, advantages, kl, iteration + 1, bool(actors.scorers))
    kl_sources = kl_source_rows(rows, asked, space, proxy, gold, judged.ref_logprobs, kl, iteration + 1)
    report = m | laps.times | ray.get(actors.buffer.report.remote())
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
        return _finished(cfg, run_dir, space, start, questions)
    if start.resumed and (registered := forget_registration(run_dir)):
        said = f"rlhf: training on from iteration {start.iteration} to {rl.iterations}; {registered} stays the policy"
        print(f"{said} of its previous end, the new final policy is registered when the run ends", file=sys.stderr)
    ptx = ptx_data(cfg, space, run_dir)  # your own SFT file, if any, is checked before any actor starts
    init_ray()
    restarts = 0
    while True:
        actors = start_actors(cfg, run_dir, space, start.policy, variant)  # a constructor's error ends the run here
        try:
            return _train_with_actors(
                cfg, run_dir, actors, space, start, questions, ptx, stop_at, tracking_uri, variant
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


def _finished(
    cfg: Config, run_dir: Path, space: ActionSpace, start: StartPoint, questions: list[Question]
) -> dict[str, float]:
    """A finished (or watch-stopped) run's metrics, its policy judged again, starting no actor."""
    practised = practised_for(cfg, questions)
    judged = judge(start.policy, space, cfg, practised)
    return (
        start.state["last_metrics"]
        | judged.metrics
        | sft_baseline(space, cfg, run_dir, practised, judged.held_out)
        | {"run_id": start.state["run_id"]}
    )


def _train_with_actors(
    cfg: Config, run_dir: Path, actors: Actors, space: ActionSpace, start: StartPoint, questions: list[Question],
    ptx: PtxData | None, stop_at: int | None, tracking_uri: str | None, variant: Variant,
) -> dict[str, float]:  # fmt: skip
    """Freshly started actors brought to `start` (restored from its checkpoint when resumed), then trained on; an
    actor's death propagates for `main` to start them all again."""
    rl = cfg.rl
    if start.resumed:
        restore_actors(actors, start.state)
    actors.sync.push(start.policy.state_dict(), start.version)
    kl_coef = start.state.get("kl_coef", rl.kl_coef) if start.resumed else rl.kl_coef  # the controller's
    iterated = None  # iterated RLHF: the RM as the last checkpoint left it (`pipelines/rm_refresh.py`)
    if rl.rm_refresh.every:
        saved = [start.state.get(key) if start.resumed else None for key in ("reward_model", "rm_refresh")]
        iterated = IteratedRM(cfg, space, actors.reward_trainer, partial(load_scorers, actors), *saved)
    return _train(
        cfg, run_dir, actors, space, start.policy, questions, ptx, start.iteration, start.version, kl_coef,
        stop_at, tracking_uri, variant, iterated,
    )  # fmt: skip


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


def _tag_run(cfg: Config, policy: GPT, space: ActionSpace, practised: list[Question], iteration: int,
             variant: Variant, metrics_log: StepLog) -> None:  # fmt: skip
    """A new run's params and its SFT policy judged at iteration 0; at every start, the tags: the length it was
    last asked to run and the actors it last ran on (a resume may lengthen it, or move it to another cluster)."""
    import mlflow

    if iteration == 0:
        mlflow.log_params(flatten(cfg.model_dump(include={"rl"})) | {"rl.variant": variant.name})
        metrics_log.log([(0, judge(policy, space, cfg, practised).metrics)])
    actors_now = json.dumps(cfg.rl.actors.model_dump())
    mlflow.set_tags({"tokenmdp.rl_iterations": cfg.rl.iterations, "tokenmdp.rl_actors": actors_now})


def _train(
    cfg: Config, run_dir: Path, actors: Actors, space: ActionSpace, policy: GPT, questions: list[Question],
    ptx: PtxData | None, iteration: int, version: int, kl_coef: float, stop_at: int | None, tracking_uri: str | None,
    variant: Variant, iterated: IteratedRM | None,
) -> dict[str, float]:  # fmt: skip
    """The iterations from `iteration` on, each logged, judged every `rl.eval_every` and checkpointed every
    `rl.checkpoint_every`, under the over-optimisation watch; returns the final metrics with the gain over SFT."""
    rl = cfg.rl
    stage_dir = run_dir / "rlhf"
    pending: list[tuple[int, dict[str, float]]] = []  # the metrics of the iterations since the last checkpoint
    rows = RowsSinceCheckpoint()  # and their tables' rows
    by_template = group_by_template(questions) if rl.balance_templates else None
    corpus = pretraining_corpus(run_dir, space)
    rare_ids = rare_action_ids(corpus, space)
    practised = practised_for(cfg, questions)
    final: dict[str, float] = {}
    judged: Judgement | None = None
    with stage_run(stage_dir, experiment=cfg.name, run_name="rlhf", tracking_uri=tracking_uri) as run:
        import mlflow

        metrics_log = StepLog()  # a resume redoes the iterations since its checkpoint: the run holds some already
        _tag_run(cfg, policy, space, practised, iteration, variant, metrics_log)
        watch = resumed_watch(rl, mlflow.MlflowClient(), run.info.run_id, iteration, stage_dir)
        if not rl.watch_stop:
            forget_stop(stage_dir)
        with stage_progress("rlhf", rl.iterations, completed=iteration) as advance:
            while iteration < rl.iterations:
                step = iteration_step(
                    cfg, actors, space, policy, questions, iteration, version, variant, by_template, rare_ids, kl_coef,
                    ptx,
                )  # fmt: skip
                metrics, version, kl_coef = step.metrics, step.version, step.kl_coef
                rows.add(step.samples, step.misordered, step.kl_sources)
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
                    rows.log(iteration, rm=bool(actors.scorers))  # the tables, before the checkpoint
                    _checkpoint(stage_dir, actors, policy, space, iteration, version, kl_coef, cfg, metrics,
                                run.info.run_id, corpus, iterated)  # fmt: skip
                if stopping or (checkpointing and stop_at is not None and iteration >= stop_at):
                    break
        if judged is None:  # stopped between evaluations, or nothing left to do: judge the policy as it is
            judged = judge(policy, space, cfg, practised)
            final |= judged.metrics
        final = final | sft_baseline(space, cfg, run_dir, practised, judged.held_out)
        mlflow.log_artifact(str(stage_dir / "checkpoint.pt"), artifact_path="checkpoint")
    return {**final, "run_id": run.info.run_id}
