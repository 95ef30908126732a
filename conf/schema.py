"""Pydantic schemas for every stage; a typo or a bad value is an error that names the field.

One model per section: world, model, pretrain, sft, reward, rl (with the resources of
every Ray actor), serve and evaluate.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from world.corpus import FAMILIES

Precision = Literal["float32", "bfloat16"]
"""The dtypes a policy's weights and KV cache may take to sample or serve (log-probs are float32 either way)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class WorldConfig(Strict):
    """The sequence world: action space, pretraining mix and the exam bank."""

    seed: int = 0
    """Seeds the corpus stream and the exam bank; same seed, same data."""
    digit_order: Literal["msb", "lsb"] = "msb"
    """How numbers are spelled: most- or least-significant digit first. Frozen at pretraining."""
    oeis_weight: float = Field(0.5, ge=0)
    """Share of pretraining documents drawn from the real OEIS extract."""
    family_weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(FAMILIES, 1.0))
    """Mixing weights of the generated families (relative to each other and to oeis_weight)."""
    extra_sequences: str | None = None
    """A text file of your own sequences (one a line, integers separated by spaces or commas, `#` comments)
    mixed into the pretraining corpus's train split: where the action-space audit sends data that needs an
    action or pattern pretraining never took. Read when pretraining starts; its content may not change after."""
    extra_weight: float = Field(0.5, ge=0)
    """Mixing weight of `extra_sequences` (relative to oeis_weight and the families)."""
    query_rate: float = Field(0.3, ge=0, le=1)
    """Share of pretraining documents written as `prefix?rest<eor>`, so `?` is a pretrained action."""
    max_tokens: int = Field(96, ge=16)
    """Longest pretraining document, in tokens."""
    bank_size: int = Field(20000, ge=10)
    """Number of distinct exam questions in the bank (train and eval splits together)."""
    feedback_share: float = Field(0.3, ge=0.0, lt=1.0)
    """Share of the train split held back from SFT for preference collection and RL prompts."""
    max_difficulty: int = Field(3, ge=1, le=3)
    """Exam templates up to this difficulty (1 = arithmetic, geometric, squares, Fibonacci)."""
    label_noise: float = Field(0.1, ge=0, le=0.5)
    """Probability that the simulated labeler flips a preference."""

    @model_validator(mode="after")
    def _known_families(self) -> WorldConfig:
        unknown = set(self.family_weights) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; choose from {list(FAMILIES)}")
        if any(w < 0 for w in self.family_weights.values()):
            raise ValueError("family weights must be >= 0")
        if self.oeis_weight + sum(self.family_weights.values()) <= 0:
            raise ValueError("at least one corpus source needs a positive weight")
        return self


class ModelConfig(Strict):
    """Shape of the GPT policy (the reward model and critic share the trunk)."""

    n_layer: int = Field(4, ge=1)
    """Transformer blocks."""
    n_head: int = Field(4, ge=1)
    """Attention heads per block; each has d_model / n_head dimensions."""
    d_model: int = Field(128, ge=8)
    """Width; must be divisible by n_head."""
    max_len: int = Field(128, ge=16)
    """Context length in tokens: prompt plus response."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout in training (never when sampling or scoring)."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        return self


class OptimConfig(Strict):
    """AdamW with linear warm-up and cosine decay to `min_lr_ratio * lr`."""

    steps: int = Field(200, ge=1)
    """Optimizer steps; also the length of the learning-rate schedule, so a trained stage cannot be lengthened."""
    batch_size: int = Field(64, ge=1)
    """Documents (questions, preference pairs) per step."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate, reached after the warm-up."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Where the cosine decay ends, as a share of lr."""
    warmup_steps: int = Field(20, ge=0)
    """Steps of linear warm-up from 0 to lr."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW's decoupled weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Clip the global gradient norm to this."""
    eval_every: int = Field(50, ge=1)
    """Evaluate (and log) every this many steps."""
    checkpoint_every: int = Field(50, ge=1)
    """Write a resumable checkpoint every this many steps."""
    threads: int = Field(1, ge=1)
    """torch threads for this process: on 2 shared cores one thread is often fastest."""


class LMConfig(OptimConfig):
    """A next-token stage (pretraining, SFT): its optimiser and how its batches are laid out."""

    pack: bool = True
    """Pack several documents into each row of `model.max_len` tokens, each attending only
    within itself (`pipelines.train_loop.pack`): the same tokens and loss as one document per
    row padded to the longest, with much less padding to compute (bench/README)."""


class SFTConfig(LMConfig):
    """SFT's optimiser, the weight of the prompt's own next-token loss and how questions are drawn."""

    state_loss_weight: float = Field(0.0, ge=0)
    """Weight of the next-token loss on the shown series (the states) beside the actions' loss.

    The shown terms are themselves "what comes next" questions: 0 trains on the answer
    alone, 1 also on every shown term, from the same forward pass (`algos.lm.sft_loss`)."""
    balance_templates: bool = False
    """Draw each example's template uniformly, then one of its questions, instead of
    questions uniformly: the bank is dominated by the templates with many distinct questions."""
    extra_questions: str | None = None
    """A file of your own questions to fine-tune on, in `tokenmdp exam`'s format (`1 2 4 8 16`, or
    `2 5 11 17 29 -> 37` with your key). Audited like the bank's; a question of the run's held-out exam
    or feedback pool is refused. Read when SFT starts; its content may not change after."""
    extra_share: float = Field(0.1, ge=0, le=1)
    """Share of each batch's examples drawn from `extra_questions` (the rest from the exam bank)."""


class EvalConfig(Strict):
    """Judging a policy on held-out exam questions with the gold grader."""

    questions: int = Field(500, ge=1)
    """How many eval-split questions to ask (all of them if the split is smaller)."""
    max_new_tokens: int = Field(16, ge=2)
    """Response budget: an answer not closed by `<eor>` within it is malformed."""
    batch_size: int = Field(256, ge=1)
    """Questions answered per batch (speed only)."""


class RewardConfig(OptimConfig):
    """Preference collection (on-policy, from the SFT policy) and Bradley-Terry training."""

    prompts: int = Field(2000, ge=1)
    """Train-split exam prompts to sample responses for."""
    responses_per_prompt: int = Field(4, ge=2)
    """K responses per prompt; pairs are formed among them, never across prompts."""
    heldout_prompts: int = Field(300, ge=1)
    """Eval-split prompts whose pairs judge the reward model (never trained on)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the responses (1 = the policy itself)."""
    margin: float = Field(0.0, ge=0)
    """Bradley-Terry margin: -log sigma(r_chosen - r_rejected - margin)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Each label is taken as right with probability 1 - this (conservative DPO's smoothing);
    0 = plain Bradley-Terry. The simulated labeler flips `world.label_noise` of them."""
    likelihood_feature: bool = True
    """Score = head at <eor> + w * log p_trunk(response | prompt), w learnt from 1: the RM starts
    from the SFT policy's likelihood ordering instead of from zero. Off = the plain scalar head."""
    freeze_trunk: bool = False
    """Train only the head (and w), not the SFT trunk: the trunk cannot overfit the noisy pairs."""
    views: int = Field(1, ge=1)
    """Score (prompt, response) as the mean over this many views of the prompt: itself, then
    with its first 1, 2 ... terms dropped (`world.views`; a series keeps its rule without its
    first term). Evaluation, the saved normalisation and RL's scorer all read it this way."""
    view_min_terms: int = Field(3, ge=1)
    """A view keeps at least this many terms of the series."""
    train_views: bool = True
    """Train on the same views: each pair is read through one of its prompt's views, drawn at random."""
    extra_pairs: str | None = None
    """A file of your own preference pairs, `PROMPT -> BETTER > WORSE` a line (`-4 4 8 8 4 -4 -> -16 > -10`;
    `tokenmdp rollouts --misordered --pairs` writes the RM's misorders so). Audited like SFT's data; a pair on
    a prompt of the held-out exam or of the RM's held-out pairs is refused. Read when the RM starts."""
    extra_share: float = Field(0.1, ge=0, le=1)
    """Share of each batch's pairs drawn from `extra_pairs` (the rest from the collected pairs)."""


class Resources(Strict):
    """What one kind of Ray actor asks for, and how many of it."""

    num_cpus: float = Field(0.5, ge=0)
    """CPUs Ray reserves for each actor; a fraction shares a core (on 2 cores, half a CPU is the unit)."""
    num_gpus: float = Field(0.0, ge=0)
    """A fraction shares one GPU between actors."""
    replicas: int = Field(1, ge=1)
    """How many actors of this kind; the work of an iteration is split between them."""
    threads: int | None = Field(None, ge=1)
    """torch threads of each actor of this kind; unset, `rl.threads`. The sampler works alone in its phase of an
    iteration, while the scorer and the reference judge a batch at once and share the cores."""


class BufferResources(Resources):
    """The on-policy buffer's: it holds rollouts in memory and runs no torch."""

    num_gpus: float = Field(0.0, ge=0)
    """Always 0: the buffer runs no torch (a GPU reserved for it would sit idle)."""
    threads: int | None = Field(None, ge=1)
    """Always unset: the buffer runs no torch."""

    @model_validator(mode="after")
    def _runs_no_torch(self) -> BufferResources:
        if self.num_gpus or self.threads is not None:
            raise ValueError(
                "actors.buffer takes num_cpus only: it holds rollouts in memory and runs no torch, "
                "so num_gpus and threads would do nothing there"
            )
        return self


class LearnerResources(Strict):
    """RLlib LearnerGroup: 0 learners = one local learner; >= 2 = DDP across learner actors."""

    num_learners: int = Field(0, ge=0)
    """0: one learner inside the controller; N >= 1: N learner actors (DDP when N >= 2)."""
    num_cpus_per_learner: float = Field(1.0, ge=0)
    """CPUs Ray reserves for each learner actor (none with num_learners 0)."""
    num_gpus_per_learner: float = Field(0.0, ge=0)
    """GPUs for each learner actor; with GPUs, DDP runs on NCCL."""


class ActorsConfig(Strict):
    """The resources of every Ray actor of the RLHF stage."""

    sampler: Resources = Resources(num_cpus=0.5)
    reward: Resources = Resources(num_cpus=0.25)
    reference: Resources = Resources(num_cpus=0.25)
    critic: Resources = Resources(num_cpus=0.25)
    buffer: BufferResources = BufferResources(num_cpus=0.0)
    """The on-policy buffer: num_cpus only (it holds rollouts in memory and runs no torch); one replica."""
    reward_trainer: Resources = Resources(num_cpus=0.25)
    """Iterated RLHF's RM training (`rl.rm_refresh`); started only when the RM is refreshed."""
    learner: LearnerResources = LearnerResources()
    """The defaults fit a 2-CPU laptop beside the controller, which hosts the local learner."""
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    """PACK puts the actors on as few nodes as fit; SPREAD places each kind's replicas on different nodes."""

    @model_validator(mode="after")
    def _single_state_actors(self) -> ActorsConfig:
        for name in ("critic", "buffer", "reward_trainer"):
            if getattr(self, name).replicas != 1:
                raise ValueError(f"actors.{name}.replicas must be 1 (it holds one state)")
        return self


class RMRefreshConfig(Strict):
    """Iterated RLHF: the labeler judges the policy's own answers during RL, and the reward model learns them."""

    every: int = Field(0, ge=0)
    """Refresh the RM every this many iterations; 0 keeps the reward stage's RM for the whole run (RLHF as usual)."""
    steps: int = Field(50, ge=1)
    """Bradley-Terry steps of each refresh."""
    lr: float = Field(1e-5, gt=0)
    """The refresh's learning rate (constant; AdamW kept across refreshes and in the checkpoint)."""
    label_share: float = Field(1.0, gt=0, le=1)
    """Share of each iteration's prompt groups whose answers go to the labeler, all pairs of a group: the labelling
    budget (`rm_refresh/labels` counts the comparisons asked)."""
    pool_share: float = Field(0.5, ge=0, le=1)
    """Share of each refresh batch drawn from the policy's labelled pairs; the rest from the reward stage's pairs,
    so the RM keeps what it learnt of the SFT policy's answers."""
    pool_size: int = Field(20_000, ge=1)
    """The newest this many labelled pairs are kept to draw from."""
    lag: int = Field(0, ge=0)
    """Iterations a refresh trains beside RL (on `actors.reward_trainer`) before its RM scores: 0 waits for it;
    k lets the next k iterations sample and learn meanwhile, scored by the RM before it. A checkpoint with a refresh
    still training waits for it and keeps it until it lands, so where it lands is the config's, not the clock's."""

    @model_validator(mode="after")
    def _lands_before_the_next(self) -> RMRefreshConfig:
        if self.every and self.lag >= self.every:
            raise ValueError(
                f"lag={self.lag} lands a refresh after the next one starts (every={self.every}): lag must be < every"
            )
        return self


class RLConfig(Strict):
    """On-policy RLHF: advantage-weighted policy gradient with KL to the SFT reference."""

    iterations: int = Field(30, ge=1)
    """RL iterations (sample, score, update, sync); may grow on a trained run, which then trains on."""
    seed: int | None = Field(None, ge=0)
    """Seeds RLHF alone: the prompts each iteration asks, the samplers' draws, the minibatches' order (and
    iterated RLHF's labeler and RM steps). None: the run's `seed`. Only RLHF reads it, so a run forked with
    another (`tokenmdp run --from`) or `tokenmdp experiment --seeds` repeats RL on the same SFT policy and
    reward model: how far a result moves with the seed alone."""
    prompts_per_iteration: int = Field(32, ge=1)
    """Distinct feedback-pool prompts per iteration, each answered group_size times."""
    group_size: int = Field(4, ge=1)
    """Responses per prompt (G); RLOO and group baselines need G >= 2."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the rollouts; the learner's and the reference's log-probs are taken at the same
    temperature (logits / temperature), so the PPO ratio and the KL compare the distribution sampled."""
    max_new_tokens: int = Field(16, ge=2)
    """Response budget of a rollout: one not closed by `<eor>` within it is malformed (gold reward 0)."""
    sampler_precision: Precision = "float32"
    """The samplers' weights and KV cache: `float32`, the learner's own numbers (their log-probs of an action
    agree to float rounding, `rl/sampler_gap_max`), or `bfloat16`, as rollout engines run (faster on a CPU with
    AMX or AVX512-BF16, slower without), whose log-probs then differ from the learner's (on the demo by 0.005 on
    average and up to 0.51): pair it with `old_logprobs: learner`. Log-probs are taken in float32 from the logits
    either way."""
    old_logprobs: Literal["sampler", "learner"] = "sampler"
    """The log-probs PPO's ratio and the sampled KL start from: the sampler's own as it drew each action, or
    `learner`, recomputed by the controller from the learner's float32 weights while the actors judge (verl's
    default): a first step's ratio is then 1 whatever precision sampled, at one forward pass over the batch.
    Needs samplers on the learner's version (sync_every=1)."""
    balance_templates: bool = False
    """Draw each prompt's template uniformly, then one of its questions: the feedback pool is as skewed
    as the bank, and groups whose G answers are all right carry no advantage."""
    reward_source: Literal["rm", "gold"] = "rm"
    """`rm` is RLHF; `gold` rewards with the grader directly (a verifiable-reward upper bound)."""
    normalize_reward: bool = False
    """Standardise RM scores within each prompt's group in the scorer."""
    advantage: Literal["gae", "rloo", "group", "reinforce++"] = "rloo"
    """gae: PPO with the critic; rloo: leave-one-out; group: GRPO group mean; reinforce++: batch-normalised."""
    group_std: bool = False
    """Divide group advantages by the group's std (GRPO); off = Dr. GRPO."""
    gamma: float = Field(1.0, ge=0, le=1)
    """GAE's discount per token (1: the reward at `<eor>` reaches every action undiminished)."""
    lam: float = Field(0.95, ge=0, le=1)
    """GAE's lambda: 1 is the Monte-Carlo return, 0 the one-step TD error."""
    kl_coef: float = Field(0.05, ge=0)
    """Weight of the per-token KL to the SFT reference (in the reward or the loss, `kl_in`)."""
    kl_ctrl: Literal["fixed", "adaptive"] = "fixed"
    """`fixed` keeps kl_coef; `adaptive` steers it toward `kl_target` (Ziegler et al. 2019's controller, as TRL's
    and verl's): each iteration multiplies it by 1 + e * responses / kl_horizon, e = rl/kl / kl_target - 1
    clipped to +-0.2. The coefficient in use is logged as `rl/kl_coef` and kept in the checkpoint."""
    kl_target: float = Field(0.1, gt=0)
    """The KL the adaptive controller steers to, as `rl/kl` reports it: per response, summed over its tokens."""
    kl_horizon: int = Field(10_000, ge=1)
    """The adaptive controller's horizon in responses: the larger, the slower the coefficient moves."""
    kl_estimator: Literal["k1", "k2", "k3", "full"] = "k3"
    """Per-token estimate of KL(pi || pi_ref) from the action taken: k1 log-ratio, k2 half its square, k3
    ratio - 1 - log-ratio (unbiased, never negative); or `full`, no estimate: the exact KL of each state from
    both whole distributions (the action space is small), in the reward, the loss and `rl/kl` alike."""
    kl_clamp: float | None = Field(None, gt=0)
    """Bound each action's KL estimate to [-kl_clamp, kl_clamp] wherever it is used: the reward or the loss, and
    `rl/kl` (verl clamps k3 at 10). k3 grows as exp(-log ratio): an action the policy has all but stopped taking,
    sampled anyway, weighs 1,033 at a log ratio of -6.9, one action can carry an iteration's KL and its KL
    gradient (`tokenmdp rollouts --kl` shows them), and a clamped estimate passes no gradient. None: unbounded."""
    kl_in: Literal["reward", "loss"] = "loss"
    """Put the per-token KL penalty in the reward (PPO-style) or in the loss (GRPO-style)."""
    clip_eps: float = Field(0.2, gt=0)
    """PPO's clip of the probability ratio to [1 - clip_eps, 1 + clip_eps]."""
    clip_eps_high: float | None = Field(None, gt=0)
    """Upper clip of the ratio, 1 + clip_eps_high (DAPO's clip-higher, e.g. 0.28); None = clip_eps, symmetric."""
    importance_ratio: Literal["token", "sequence"] = "token"
    """PPO's ratio per action (`token`), or one per response (`sequence`: GSPO, Zheng et al. 2025), the geometric
    mean of its actions' ratios, clipped as a whole; each action's gradient is that ratio times its own log-prob's.
    On an on-policy first step both ratios are 1 and the update is the same; they part where `epochs` or
    `minibatches` > 1 (or samples are stale).
    A response's ratio sits much nearer 1 than its tokens': GSPO clips at clip_eps=3e-4, clip_eps_high=4e-4, with
    loss_agg=seq-mean-token-mean."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual-clip constant c > 1 bounding the loss of negative-advantage actions; None = off."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses become one: the mean over all tokens, the mean of each response's mean, or each
    response's sum over a fixed length (Dr. GRPO); counted over the global batch across learners."""
    epochs: int = Field(1, ge=1)
    """Passes over each batch (> 1 makes later passes off-policy by one update: PPO's ratio handles it)."""
    minibatches: int = Field(1, ge=1)
    """Optimizer steps per pass: the batch's rows are shuffled into this many minibatches, each
    normalised over its own rows; > 1 makes later steps off-policy, which PPO's ratio clipping handles."""
    lr: float = Field(2e-5, gt=0)
    """The policy's learning rate: constant, so a longer run is the shorter one continued."""
    grad_clip: float = Field(1.0, gt=0)
    """Clip the policy's (and the critic's) global gradient norm to this."""
    entropy_coef: float = Field(0.0, ge=0)
    """An entropy bonus (PPO's, verl's `entropy_coeff`): each action's loss less this times the entropy of the
    policy in its state (at `temperature`, over every action), aggregated as the policy term is, so a higher
    value keeps sampling spread where the policy would settle on one answer. 0: off."""
    ptx_coef: float = Field(0.0, ge=0)
    """PPO-ptx (InstructGPT, Ouyang et al. 2022): each optimizer step's loss adds this times SFT's own loss
    (`sft.state_loss_weight` and all) on `ptx_batch` of SFT's questions with their answers, drawn afresh each
    step, so the policy keeps fitting the data SFT fitted while RL moves it. A supervised term on fixed data,
    not on the policy's samples: nothing of it is a positive or negative answer of RL's. 0: off."""
    ptx_batch: int = Field(64, ge=1)
    """SFT questions per optimizer step when `ptx_coef` > 0 (RLlib splits them across learners with the rest)."""
    critic_lr: float = Field(1e-4, gt=0)
    """The critic's learning rate (PPO with GAE)."""
    value_clip: float = Field(0.2, gt=0)
    """PPO's value clip: the critic's loss also counts the new value clipped to within this of the value the
    rollout was scored with, and takes the larger of the two."""
    max_staleness: int = Field(0, ge=0)
    """How many policy versions old a sample may be when the learner uses it; 0 = strictly on-policy."""
    drop_zero_advantage_groups: bool = False
    """Leave out of the learner's batch the groups none of whose actions has an advantage (with RLOO or group
    baselines: G responses with equal rewards), as DAPO does: the loss is then normalised over the groups
    that carry signal, and the dropped ones add no KL term either. Counted in `rl/zero_advantage_groups`."""
    dynamic_sampling_rounds: int = Field(0, ge=0)
    """DAPO's dynamic sampling: while fewer than `prompts_per_iteration` of the iteration's groups carry signal
    (answers with different rewards), sample up to this many more rounds of `prompts_per_iteration` prompts, and
    train on the first `prompts_per_iteration` groups with signal (fewer if the rounds run out); rewards and
    lengths are reported over everything sampled, `rl/sample_rounds` and `rl/signal_groups` per iteration. 0: off."""
    sync: Literal["collective", "object_store"] = "collective"
    """How new weights reach the samplers: a gloo/NCCL broadcast or through Ray's object store."""
    sync_every: int = Field(1, ge=1)
    """Push weights to the samplers after every `sync_every` updates: > 1 makes the samplers lag
    the learner as asynchronous samplers do, so samples are up to sync_every - 1 versions old."""
    eval_every: int = Field(10, ge=1)
    """Judge the policy on the held-out exam every this many iterations."""
    checkpoint_every: int = Field(5, ge=1)
    """Write a resumable checkpoint (and log the metrics and rollouts since the last) every this many."""
    snapshot_every: int = Field(0, ge=0)
    """Keep the policy of every this many iterations as rlhf/snapshots/iteration-NNNNN.pt (its weights, config and
    corpus statistics: what compare, exam, evaluate and serve take), where the checkpoint holds only the last;
    0 keeps none."""
    watch_drop: float | None = Field(0.1, gt=0, le=1)
    """The over-optimisation watch: warn (once, on stderr and as the MLflow tag `tokenmdp.overoptimised`) when the
    gold reward on the training samples, averaged over `watch_window` iterations, has fallen this far below its
    peak while the RM's reward, averaged alike, rose since: the policy is learning the RM's errors. None: off."""
    watch_window: int = Field(5, ge=1)
    """Iterations the over-optimisation watch averages each reward over: one iteration's is noisy."""
    watch_stop: bool = False
    """End RLHF where the over-optimisation watch warns instead of training on: the policy of that iteration is
    the run's final one (checkpointed and registered), and the warning names the kept snapshot nearest the gold
    peak. A stopped run stays stopped when run again; set false on it to train on to `iterations`."""
    threads: int = Field(1, ge=1)
    """torch threads of the controller (and the local learner in it) and of each actor kind that sets none of its
    own (`actors.<kind>.threads`)."""
    actor_restarts: int = Field(2, ge=0)
    """Times a run whose actor dies (killed, out of memory, its node lost) starts every actor again from the last
    checkpoint and trains on, before it stops with the error; the iterations since that checkpoint are redone,
    as a resumed run redoes them."""
    rm_refresh: RMRefreshConfig = RMRefreshConfig()
    actors: ActorsConfig = ActorsConfig()

    def threads_of(self, kind: str) -> int:
        """torch threads of each actor of `kind` ("sampler", "reward", ...): its own setting, else `threads`."""
        return getattr(self.actors, kind).threads or self.threads

    @model_validator(mode="after")
    def _baseline_needs_groups(self) -> RLConfig:
        if self.rm_refresh.every and self.reward_source != "rm":
            raise ValueError(
                f"rm_refresh.every={self.rm_refresh.every} refreshes the reward model, but reward_source="
                f"{self.reward_source!r} rewards with the grader: set rm_refresh.every=0 or reward_source=rm"
            )
        if self.dynamic_sampling_rounds and self.advantage not in ("rloo", "group"):
            raise ValueError(
                f"dynamic_sampling_rounds={self.dynamic_sampling_rounds} samples more prompts while groups of equal "
                f"rewards carry no advantage, which only a group baseline gives: advantage={self.advantage!r} is "
                "not one; set advantage=rloo or group, or dynamic_sampling_rounds=0"
            )
        if self.advantage in ("rloo", "group") and self.group_size < 2:
            raise ValueError(f"advantage={self.advantage!r} needs group_size >= 2 (got {self.group_size})")
        if self.minibatches > self.prompts_per_iteration * self.group_size:
            raise ValueError(
                f"minibatches={self.minibatches} is more than the {self.prompts_per_iteration * self.group_size} "
                "responses of an iteration (prompts_per_iteration x group_size)"
            )
        if self.watch_stop and self.watch_drop is None:
            raise ValueError(
                "watch_stop=true stops at the over-optimisation watch's warning, but watch_drop=null turns the watch "
                "off: set watch_drop (0.1 by default) or watch_stop=false"
            )
        if self.kl_estimator == "full" and self.sync_every > 1:
            raise ValueError(
                f"kl_estimator=full reads the policy's distributions on the controller, which holds the samplers' "
                f"policy only when they sync after every update: sync_every={self.sync_every} makes them lag; "
                "use sync_every=1 or a sampled estimator (k1, k2, k3)"
            )
        if self.old_logprobs == "learner" and self.sync_every > 1:
            raise ValueError(
                f"old_logprobs='learner' recomputes the sampling policy's log-probs from the learner's weights, "
                f"which are that policy only when the samplers sync after every update: sync_every={self.sync_every} "
                "makes them lag; use sync_every=1 or old_logprobs=sampler"
            )
        if self.sync_every - 1 > self.max_staleness:
            raise ValueError(
                f"sync_every={self.sync_every} makes samples up to {self.sync_every - 1} versions old, but "
                f"max_staleness={self.max_staleness} would refuse them: raise max_staleness or lower sync_every"
            )
        return self


class ServeConfig(Strict):
    """The Ray Serve endpoint of the final policy."""

    host: str = "127.0.0.1"
    """Address the HTTP proxy listens on (0.0.0.0: every interface)."""
    port: int = Field(8000, ge=1, le=65535)
    """Port of the HTTP proxy."""
    replicas: int = Field(1, ge=1)
    """Copies of the policy answering requests; Ray's router spreads requests between them."""
    num_cpus: float = Field(0.5, ge=0)
    """CPUs Ray reserves for each replica."""
    threads: int | None = Field(None, ge=1)
    """torch threads of each replica; unset, the whole CPUs it reserves (`num_cpus`), at least one."""
    max_batch_size: int = Field(16, ge=1)
    """Most requests a replica answers in one batched pass (`serve.batch`)."""
    batch_wait_timeout_s: float = Field(0.002, ge=0)
    """How long a replica waits for more requests to fill a batch."""
    max_ongoing_requests: int = Field(128, ge=1)
    """Requests a replica accepts at once (queued into its batches). Below the clients' concurrency, Ray's
    router holds the rest and retries with backoff: at 64 clients and 32 here, 20 requests/s instead of 183."""
    max_terms: int = Field(8, ge=1)
    """Most terms one request may ask for."""
    max_term_digits: int = Field(18, ge=1)
    """Longest term (in digits) a request may contain; the policy answers at most this long."""
    precision: Precision = "float32"
    """The replicas' weights and KV cache: `float32`, the policy as trained and judged, or `bfloat16` (faster
    batches on a CPU with AMX or AVX512-BF16, slower without), whose greedy answer may differ where two
    actions nearly tie: `tokenmdp evaluate --precision bfloat16` judges the policy as it would be served."""

    @property
    def replica_threads(self) -> int:
        """The torch threads a replica runs on: `threads`, else the whole CPUs it reserves, at least one."""
        return self.threads or max(1, int(self.num_cpus))

    @model_validator(mode="after")
    def _room_for_a_batch(self) -> ServeConfig:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests={self.max_ongoing_requests} is below max_batch_size={self.max_batch_size}: "
                "a replica could never fill a batch"
            )
        return self


class Config(Strict):
    """The whole run; one section per stage."""

    name: str = "tokenmdp"
    """The run's name: its directory (runs/<name>), MLflow experiment and registered model (tokenmdp-<name>)."""
    seed: int = 0
    """Seeds model initialisation and sampling."""
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    pretrain: LMConfig = LMConfig()
    sft: SFTConfig = SFTConfig(steps=200, lr=5e-4, warmup_steps=10)
    reward: RewardConfig = RewardConfig(steps=300, lr=3e-4, warmup_steps=20)
    rl: RLConfig = RLConfig()
    serve: ServeConfig = ServeConfig()
    evaluate: EvalConfig = EvalConfig()

    @property
    def rl_seed(self) -> int:
        """The seed RLHF draws from: `rl.seed`, or the run's."""
        return self.seed if self.rl.seed is None else self.rl.seed

    @model_validator(mode="after")
    def _documents_fit_the_context(self) -> Config:
        if self.world.max_tokens > self.model.max_len:
            raise ValueError(
                f"world.max_tokens={self.world.max_tokens} exceeds model.max_len={self.model.max_len}: "
                "a pretraining document must fit the policy's context (a packed row is that long too)"
            )
        return self
