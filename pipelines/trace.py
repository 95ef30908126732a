"""One prompt through the token-level MDP, as an RL iteration of a run sees it.

    tokenmdp trace runs/demo 1,2,4,8,16                 # the final policy against its reference
    tokenmdp trace runs/demo 1,2,4,8,16 --stage sft --group 8 --json
    tokenmdp trace runs/demo 3,4,5,6,7 --answer 8       # what the run makes of an answer it did not give
    tokenmdp trace runs/demo 1,2,4,8,16 --iteration 10  # the RLHF policy the run kept at iteration 10
    tokenmdp trace models:/tokenmdp-demo/1 1,2,4,8,16   # a registered policy (or a checkpoint file), against
                                                        # the reference and RM of the run it came from

The greedy response (or a given answer, read teacher-forced), action by action: the state's last tokens, the action, its
probability under the policy and under the reference (the SFT policy), the exact KL
between the two in that state (summed over every action: the space is small), the run's
estimate of it from the one action taken, the policy's entropy, the actions it nearly took
and the reward RL puts on that token. Then a group of G sampled responses scored as one
iteration scores them: the same sampler, reward scorer and reference code as `rlhf`, the
run's reward source, KL estimator and placement, and the advantage each response gets.
Nothing is trained and nothing in the run directory is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import algos.advantages as adv
from actors.reference import ReferenceImpl
from actors.reward_scorer import RewardScorerImpl
from algos.kl import adaptive_kl_coef, categorical_kl, entropy
from algos.ranking import within_group_agreement
from conf.schema import Config, RLConfig
from models.checkpoint import load_checkpoint
from models.gpt import GPT
from models.rollout import Rollouts, action_logprobs, sample_rollouts, state_logprobs
from pipelines.policy_source import kept_snapshots, resolve_model, snapshot_iteration, snapshot_path, trained_in
from pipelines.rl_kl import rollout_kl
from pipelines.run_config import RunDirError, load_run_config, policy_checkpoint
from world.actions import ActionSpace
from world.grader import analyze, grade

STATE_TOKENS = 6  # how much of the state a step shows: its last tokens


class TraceError(RunDirError):
    """The run or the prompt cannot be traced as asked."""


@dataclass(frozen=True)
class Step:
    """One action of a response, in its state."""

    state: str  # the state's last tokens, as the policy reads them
    action: str
    prob: float  # pi(action | state)
    ref_prob: float  # pi_ref(action | state)
    kl: float  # KL(pi || pi_ref) in this state, exact over all actions
    kl_estimate: float  # the run's estimator (k1/k2/k3) from this action alone
    entropy: float  # of pi in this state
    alternatives: list[tuple[str, float]]  # the policy's likeliest other actions
    reward: float  # what RL puts on this token (the score on the last; -beta * KL too when the KL is in the reward)


@dataclass(frozen=True)
class Episode:
    """One response to the prompt with what an RL iteration computes for it."""

    response: str
    answer: list[int] | None  # its terms, None if malformed
    gold: float  # 1 = the exam's answer
    reward: float  # the reward RL trains on (the RM's score as the scorer gives it, or gold)
    kl_sum: float  # the run's KL estimate summed over the response
    advantage: float | None  # on its first action (None: GAE needs the critic, which is not loaded)


@dataclass(frozen=True)
class Trace:
    prompt: list[int]
    exam_answer: list[int] | None
    rule: str | None
    stage: str
    iteration: int | None  # the RLHF snapshot traced; None: the stage's final policy
    policy: str  # as it was named: the run directory, a checkpoint file or a registered model
    reward_source: str
    rm_version: int  # refreshes of the RM during RL (iterated RLHF) behind the one that scores here; 0: as trained
    kl_estimator: str
    kl_in: str
    kl_coef: float
    advantage: str
    traced: str  # "greedy": the policy's own answer; "given": the answer asked about, teacher-forced
    episode: Episode
    steps: list[Step]
    group: list[Episode]

    @property
    def rm_agreement(self) -> tuple[float, int] | None:
        """(pairs ordered alike, pairs the grader tells apart) of the group under the RM, as RLHF's
        `reward/rm_agreement` counts them; None when the grader is the reward."""
        if self.reward_source != "rm" or not self.group:
            return None
        rewards, gold = (torch.tensor([getattr(e, key) for e in self.group]) for key in ("reward", "gold"))
        return within_group_agreement(rewards, gold, torch.zeros(len(self.group), dtype=torch.long))

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"rm_agreement": self.rm_agreement})


def given_rollouts(policy: GPT, space: ActionSpace, prompt: list[int], answer: list[int]) -> Rollouts:
    """The episode answering `prompt` with `answer` then `<eor>`, in the rollout layout, log-probs teacher-forced."""
    response = space.encode_response(answer)
    tokens = torch.tensor([prompt + response])
    action_mask = torch.zeros_like(tokens)
    action_mask[0, len(prompt) :] = 1
    with torch.no_grad():
        logprobs = action_logprobs(policy, tokens, torch.ones_like(tokens)) * action_mask
    return Rollouts(tokens, torch.ones_like(tokens), action_mask, logprobs, torch.zeros(1, dtype=torch.long),
                    torch.ones(1, dtype=torch.bool), policy_version=0, prompt_width=len(prompt))  # fmt: skip


def _traced_checkpoint(run_dir: Path, stage: str, iteration: int | None) -> Path:
    """`stage`'s policy, or the RLHF policy the run kept at `iteration` (`rl.snapshot_every`)."""
    if iteration is None:
        return policy_checkpoint(run_dir, stage)
    if stage != "rlhf":
        raise TraceError(f"--iteration picks one of the policies RLHF kept, not {stage}'s: leave --stage at rlhf")
    path = snapshot_path(run_dir, iteration)
    if not path.is_file():
        kept = ", ".join(str(snapshot_iteration(p)) for p in kept_snapshots(run_dir))
        why = f"it kept iterations {kept}" if kept else "it kept none (rl.snapshot_every was 0)"
        raise TraceError(f"{run_dir} kept no RLHF policy of iteration {iteration}: {why}")
    return path


def adapted_kl_coef(cfg: Config, state: dict) -> float:
    """The KL coefficient an adaptive controller had come to after the checkpoint's iteration: the final
    checkpoint keeps it; a snapshot keeps the one its iteration used and that iteration's KL, from which the
    controller's step is taken again."""
    if "kl_coef" in state:
        return state["kl_coef"]
    used = state.get("last_metrics", {})
    if "rl/kl_coef" not in used:
        return cfg.rl.kl_coef
    rl = cfg.rl
    responses = rl.prompts_per_iteration * rl.group_size
    return adaptive_kl_coef(used["rl/kl_coef"], used["rl/kl"], rl.kl_target, rl.kl_horizon, responses)


def _with_kl_coef_reached(cfg: Config, run_dir: Path, traced: Path, state: dict, iteration: int | None) -> Config:
    """Under an adaptive KL controller, the run's config at the coefficient RL had come to where the traced
    policy was kept (its snapshot's `state`, else the final checkpoint's), not the one it began with."""
    ended = traced if iteration is not None else run_dir / "rlhf" / "checkpoint.pt"
    if cfg.rl.kl_ctrl != "adaptive" or not ended.is_file():
        return cfg
    ended_state = state if ended == traced else torch.load(ended, map_location="cpu", weights_only=False)
    coef = adapted_kl_coef(cfg, ended_state)
    return cfg.model_copy(update={"rl": cfg.rl.model_copy(update={"kl_coef": coef})})


def _named_policy(source: str, stage: str, iteration: int | None) -> tuple[Path, Path]:
    """(the run directory that trained it, its checkpoint) for a policy named by a checkpoint file or a registered
    model: traced against that run's reference and reward model."""
    if iteration is not None or stage != "rlhf":
        raise TraceError(f"--stage and --iteration pick among a run directory's policies; {source} is one policy")
    try:
        checkpoint = resolve_model(source)[0]
    except FileNotFoundError as err:
        raise TraceError(str(err)) from None
    run_dir, origin = trained_in(source)
    if run_dir is None:
        raise TraceError(
            f"a trace reads the policy against the run that trained it (its SFT reference, its reward model), and "
            f"{source} came from {origin}, which is no run directory on this machine: trace it where that run is"
        )
    return run_dir, checkpoint


@dataclass(frozen=True)
class _Traced:
    """The policy a trace reads and the run it came from."""

    run_dir: Path
    cfg: Config  # the run's, its KL coefficient where the traced policy's RL had brought it
    space: ActionSpace
    policy: GPT
    state: dict  # the policy's checkpoint
    stage: str
    iteration: int | None


def _traced(source: Path | str, stage: str, iteration: int | None) -> _Traced:
    """`stage`'s policy (at `iteration`: the RLHF policy kept then) of the run directory `source`, or the checkpoint
    file or registered model `source` names, with the run it came from."""
    named = not Path(source).is_dir()
    if named:
        run_dir, checkpoint = _named_policy(str(source), stage, iteration)
    else:
        run_dir = Path(source)
        checkpoint = _traced_checkpoint(run_dir, stage, iteration)
    cfg = load_run_config(run_dir)
    space = ActionSpace(digit_order=cfg.world.digit_order)
    policy, _, state = load_checkpoint(checkpoint, space)
    policy.eval()
    if named:  # RLHF's policies carry their version and iteration (a snapshot's, or the final one's)
        stage, iteration = ("rlhf", state.get("iteration")) if "policy_version" in state else ("sft", None)
    cfg = _with_kl_coef_reached(cfg, run_dir, checkpoint, state, iteration)
    return _Traced(run_dir, cfg, space, policy, state, stage, iteration)


def _group_size(rl: RLConfig, prompt: list[int], terms: int, answer: list[int] | None, space: ActionSpace,
                max_len: int, group: int | None) -> int:  # fmt: skip
    """The group to sample (the run's G unless asked), after checking the prompt (of `terms` terms) and answer fit
    the context and the advantage has a baseline in a group of that size."""
    response_len = rl.max_new_tokens if answer is None else len(space.encode_response(answer))
    if len(prompt) + response_len > max_len:
        raise TraceError(f"{terms} terms and the answer do not fit the policy's context of {max_len}")
    size = rl.group_size if group is None else group
    if size == 1 and rl.advantage in ("rloo", "group"):
        raise TraceError(f"a group of 1 has no baseline for {rl.advantage}: ask for --group 2 or more (or 0: none)")
    return size


def trace(
    source: Path | str, prefix: list[int], stage: str = "rlhf", group: int | None = None, seed: int = 0,
    answer: list[int] | None = None, iteration: int | None = None,
) -> Trace:  # fmt: skip
    """`stage`'s greedy response to `prefix` (or `answer`, teacher-forced), step by step, and a scored group of
    `group` samples; `iteration`: the RLHF policy the run kept then, in place of its final one. `source` is a run
    directory, or a checkpoint file or registered model whose run is on this machine."""
    t = _traced(source, stage, iteration)
    cfg, space, policy, rl = t.cfg, t.space, t.policy, t.cfg.rl
    reference = ReferenceImpl(str(policy_checkpoint(t.run_dir, "sft")), cfg.world.digit_order)
    rm_path = t.run_dir / "reward" / "checkpoint.pt"
    if rl.reward_source == "rm" and not rm_path.is_file():
        raise TraceError(f"the run rewards with its reward model, and {rm_path} is missing: train it first")
    prompt = space.encode_prompt(prefix)
    size = _group_size(rl, prompt, len(prefix), answer, space, policy.cfg.max_len, group)
    scorer = RewardScorerImpl(str(rm_path), cfg.world.digit_order) if rl.reward_source == "rm" else None
    if scorer is not None and t.state.get("reward_model"):  # iterated RLHF: the RM this policy last trained against
        scorer.load_refreshed(t.state["reward_model"])
    if answer is None:
        traced = sample_rollouts(
            policy, space, [prompt], group_size=1, max_new_tokens=rl.max_new_tokens, policy_version=0, temperature=0.0
        )
    else:
        traced = given_rollouts(policy, space, prompt, answer)
    episode, kl_traced = _episodes(
        traced, prefix, space, policy, reference, scorer, cfg, in_group=False, temperature=1.0
    )  # fmt: skip
    steps = _steps(policy, reference.model, traced, space, kl_traced, episode[0], cfg)
    episodes: list[Episode] = []
    if size > 0:  # the group is drawn as RL draws it, and compared with the reference at its temperature
        sampled = sample_rollouts(
            policy, space, [prompt], group_size=size, max_new_tokens=rl.max_new_tokens, policy_version=0,
            temperature=rl.temperature, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        at = rl.temperature
        episodes, _ = _episodes(sampled, prefix, space, policy, reference, scorer, cfg, in_group=True, temperature=at)
    verdict = analyze(prefix)
    return Trace(
        prompt=prefix, exam_answer=list(verdict.answer[:1]) if verdict.answer else None, rule=verdict.rule,
        stage=t.stage, iteration=t.iteration, policy=str(source), reward_source=rl.reward_source,
        rm_version=scorer.version if scorer is not None else 0, kl_estimator=rl.kl_estimator, kl_in=rl.kl_in,
        kl_coef=rl.kl_coef, advantage=rl.advantage, traced="greedy" if answer is None else "given",
        episode=episode[0], steps=steps, group=episodes,
    )  # fmt: skip


def _episodes(
    rollouts: Rollouts, prefix: list[int], space: ActionSpace, policy: GPT, reference: ReferenceImpl,
    scorer: RewardScorerImpl | None, cfg: Config, in_group: bool, temperature: float,
) -> tuple[list[Episode], torch.Tensor]:  # fmt: skip
    """Each response's reward, KL and (`in_group`: the rows are one prompt's group) advantage, as
    `pipelines.rlhf.iteration_step` computes them; and the (B, T) KL, the reference read at the `temperature`
    the rollouts' log-probs were recorded at."""
    rl = cfg.rl
    kl = rollout_kl(rollouts, reference.distributions(rollouts, temperature), rl, policy, temperature)
    answers = [space.parse_response(r).answer for r in rollouts.responses()]
    gold = torch.tensor([float(grade(prefix, a, n_terms=1) or 0) for a in answers])
    # Rewards normalised within the prompt's group as the run's RL does; one response alone has no group.
    rewards = scorer.score(rollouts, per_prompt=in_group and rl.normalize_reward) if scorer is not None else gold
    advantages = None
    if in_group and rl.advantage != "gae":
        kl_in_reward = rl.kl_coef if rl.kl_in == "reward" else 0.0
        advantages, _ = adv.estimate(
            rl.advantage,
            rewards,
            rollouts.group,
            rollouts.action_mask,
            kl=kl,
            kl_coef=kl_in_reward,
            gamma=rl.gamma,
            lam=rl.lam,
            group_std=rl.group_std,
        )
    first = rollouts.prompt_width
    episodes = [
        Episode(
            response=" ".join(space.decode_tokens(r)),
            answer=answers[i],
            gold=float(gold[i]),
            reward=float(rewards[i]),
            kl_sum=float(kl[i].sum()),
            advantage=float(advantages[i, first]) if advantages is not None else None,
        )
        for i, r in enumerate(rollouts.responses())
    ]
    return episodes, kl


def _steps(
    policy: GPT, reference: GPT, rollouts: Rollouts, space: ActionSpace, kl: torch.Tensor, episode: Episode,
    cfg: Config, alternatives: int = 3,
) -> list[Step]:  # fmt: skip
    """Row 0's actions, each in its state, with both policies' whole distributions there."""
    with torch.no_grad():
        logp, ref_logp = (state_logprobs(m, rollouts.tokens, rollouts.mask)[0] for m in (policy, reference))
    rl = cfg.rl
    kl_in_reward = rl.kl_coef if rl.kl_in == "reward" else 0.0
    token_rewards = adv.token_rewards(torch.tensor([episode.reward]), rollouts.action_mask, kl, kl_in_reward)[0]
    tokens = rollouts.tokens[0].tolist()
    real = rollouts.mask[0].bool().tolist()
    steps = []
    for t in torch.nonzero(rollouts.action_mask[0]).squeeze(1).tolist():
        action = tokens[t]
        state = [tok for tok, r in zip(tokens[:t], real[:t], strict=True) if r][-STATE_TOKENS:]
        likeliest = torch.argsort(logp[t], descending=True).tolist()
        steps.append(
            Step(
                state=" ".join(space.decode_tokens(state)),
                action=space.tokens[action],
                prob=float(logp[t, action].exp()),
                ref_prob=float(ref_logp[t, action].exp()),
                kl=float(categorical_kl(logp[t], ref_logp[t])),
                kl_estimate=float(kl[0, t]),
                entropy=float(entropy(logp[t])),
                alternatives=[(space.tokens[a], float(logp[t, a].exp())) for a in likeliest if a != action][
                    :alternatives
                ],
                reward=float(token_rewards[t]),
            )
        )
    return steps
