"""The Learner: RLlib's new-API-stack LearnerGroup around the GPT policy.

`PolicyModule` (a TorchRLModule) wraps the GPT and computes the teacher-forced log-prob
of every action in the batch; `PolicyGradientLearner` (a TorchLearner) turns them into
the advantage-weighted PPO loss of `algos.policy_loss`, plus the KL to the reference when
it lives in the loss, an entropy bonus and SFT's loss on SFT's rows (PPO-ptx) when
configured. With `num_learners >= 2` RLlib wraps the module in DDP (gloo on CPU, NCCL on
GPU) and shards each batch; the loss denominators travel in the batch, counted over the
global batch, and the learner rescales by the world size so that DDP's gradient averaging
leaves exactly the global loss's gradient.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from algos.kl import categorical_kl, entropy, kl_per_state, kl_per_token
from algos.policy_loss import Denominators, aggregate, clipped_surrogate, sequence_level_logprobs
from conf.schema import RLConfig
from models.gpt import GPT, GPTConfig
from models.rollout import logprobs_of_logits, taken_logprobs

MODULE_ID = "default_policy"
RLLIBS_OWN_DEPRECATION = "RLModule(config=[RLModuleConfig object])"


class _WithoutRLlibsOwnDeprecation(logging.Filter):
    """RLlib 2.60's `RLModule.__init__` builds the deprecated `RLModuleConfig` itself whatever it is given, and
    logs a DeprecationWarning in every run; nothing here passes one (the module is built from an RLModuleSpec)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RLLIBS_OWN_DEPRECATION not in record.getMessage()


logging.getLogger("ray._common.deprecation").addFilter(_WithoutRLlibsOwnDeprecation())
# |log pi(a|s) - the sampler's log-prob of a| over a minibatch's actions (`pipelines.rl_batch.sampler_gap`).
LOGPROB_GAP_MAX, LOGPROB_GAP_MEAN = "rl/logprob_gap_max", "rl/logprob_gap_mean"
# Columns of a learner batch: the rollout layout plus what the controller computed.
COLUMNS = ("tokens", "mask", "action_mask", "old_logprobs", "ref_logprobs", "advantages")
# PPO-ptx's rows (`pipelines/rl_ptx.py`): SFT's questions, each token's weight in SFT's loss; 0 on the rollouts.
PTX_WEIGHT = "ptx_weight"


class PolicyModule(TorchRLModule):
    """The GPT as an RLlib module: forward = log pi(action | state) for every column."""

    def setup(self) -> None:
        self.gpt = GPT(GPTConfig(**self.model_config["gpt_config"]))

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        temperature = self.model_config.get("temperature", 1.0)  # the samplers': their log-probs are the old ones
        tokens = batch["tokens"].long()
        logits = self.gpt(tokens, batch["mask"].long())
        state_logp = logprobs_of_logits(logits, temperature)
        logp = taken_logprobs(state_logp, tokens)
        out = {"action_logprobs": logp, "entropy": entropy(state_logp), "state_logprobs": state_logp}
        if PTX_WEIGHT in batch:  # SFT's loss is the policy's own, at temperature 1
            out["ptx_logprobs"] = logp if temperature == 1.0 else taken_logprobs(logprobs_of_logits(logits), tokens)
        return out

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._forward(batch)


class PolicyGradientLearner(TorchLearner):
    """PPO clipped surrogate weighted by the batch's advantages; no contrastive term."""

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        rl: dict = config.learner_config_dict
        logp = fwd_out["action_logprobs"]
        mask = batch["action_mask"].float()
        den = Denominators(
            float(batch["den_actions"][0]), float(batch["den_sequences"][0]), float(batch["den_max_len"][0])
        )
        world = max(int(rl["world_size"]), 1)
        old, advantages = batch["old_logprobs"], batch["advantages"]
        ratio_logp = sequence_level_logprobs(logp, old, mask) if rl["importance_ratio"] == "sequence" else logp  # GSPO
        pg, clipped = clipped_surrogate(
            ratio_logp, old, advantages, rl["clip_eps"], rl["dual_clip"], rl["clip_eps_high"]
        )  # fmt: skip
        per_token = pg
        kl = kl_term(rl, fwd_out, batch)
        if rl["kl_in"] == "loss":
            per_token = pg + float(batch["kl_coef"][0]) * kl  # the batch's: an adaptive controller moves it
        if rl["entropy_coef"]:  # the bonus: spread kept where the policy would settle
            per_token = per_token - rl["entropy_coef"] * fwd_out["entropy"]
        loss = aggregate(per_token, mask, rl["loss_agg"], den) * world
        n = mask.sum().clamp(min=1)
        responses, ptx = len(mask), None
        if PTX_WEIGHT in batch:  # PPO-ptx: SFT's loss on SFT's questions, its weights counted over the whole batch
            ptx = -(fwd_out["ptx_logprobs"] * batch[PTX_WEIGHT]).sum() * world
            loss = loss + rl["ptx_coef"] * ptx
            responses -= int(batch[PTX_WEIGHT].any(dim=1).sum())
        reported = {
            "loss/policy": (aggregate(pg, mask, rl["loss_agg"], den) * world).detach(),
            "rl/clip_fraction": ((clipped * mask).sum() / n).detach(),
            "rl/kl_learner": ((kl * mask).sum() / n).detach(),
            "rl/ratio_max": (torch.exp(logp - batch["old_logprobs"]) * mask).max().detach(),
            "rl/entropy": ((fwd_out["entropy"] * mask).sum() / n).detach(),
        }
        gap = (logp.detach() - old).abs() * mask  # before its first step: the sampler's numbers against the learner's
        reported |= {LOGPROB_GAP_MAX: gap.max(), LOGPROB_GAP_MEAN: gap.sum() / n}
        if rl["kl_estimator"] == "full" and rl["kl_clamp"] is None:  # what the loss charges: not summed twice
            exact = kl.detach()
        else:
            exact = categorical_kl(fwd_out["state_logprobs"].detach(), batch["ref_dist"])  # every state passed
        reported["rl/kl_exact"] = (exact * mask).sum() / max(responses, 1)  # per response, like `rl/kl`
        if ptx is not None:
            reported["loss/ptx"] = ptx.detach()
        self.metrics.log_dict(reported, key=module_id, window=1)
        return loss


def kl_term(rl: dict, fwd_out: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
    """(B, T) the KL the loss charges each action at the policy being trained, with its gradient: the run's sampled
    estimator from the actions' log-probs, or (`full`) the exact KL of each state from both whole distributions."""
    if rl["kl_estimator"] == "full":
        return kl_per_state(fwd_out["state_logprobs"], batch["ref_dist"], rl["kl_clamp"])
    return kl_per_token(fwd_out["action_logprobs"], batch["ref_logprobs"], rl["kl_estimator"], rl["kl_clamp"])


def learner_config_dict(rl: RLConfig, world_size: int) -> dict:
    return {
        "clip_eps": rl.clip_eps, "clip_eps_high": rl.clip_eps_high, "dual_clip": rl.dual_clip, "kl_coef": rl.kl_coef,
        "kl_estimator": rl.kl_estimator, "kl_clamp": rl.kl_clamp, "kl_in": rl.kl_in, "loss_agg": rl.loss_agg,
        "world_size": world_size, "importance_ratio": rl.importance_ratio, "ptx_coef": rl.ptx_coef,
        "entropy_coef": rl.entropy_coef,
    }  # fmt: skip


def build_learner_group(rl: RLConfig, gpt_config: GPTConfig, vocab_size: int, learner_class: type | None = None):
    """An RLlib LearnerGroup holding the policy; `num_learners` and resources from config.

    `learner_class` defaults to `PolicyGradientLearner`; only experiments swap it.
    """
    import gymnasium as gym
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    res = rl.actors.learner
    spec = RLModuleSpec(
        module_class=PolicyModule,
        observation_space=gym.spaces.Box(0, vocab_size - 1, shape=(gpt_config.max_len,), dtype=np.int64),
        action_space=gym.spaces.Discrete(vocab_size),
        model_config={"gpt_config": gpt_config.to_dict(), "temperature": rl.temperature},
    )
    config = (
        AlgorithmConfig()
        .framework("torch")
        .environment(observation_space=spec.observation_space, action_space=spec.action_space)
        .training(lr=rl.lr, grad_clip=rl.grad_clip, grad_clip_by="global_norm")
        .learners(
            learner_class=learner_class or PolicyGradientLearner,
            num_learners=res.num_learners,
            num_cpus_per_learner=res.num_cpus_per_learner,
            num_gpus_per_learner=res.num_gpus_per_learner,
            learner_config_dict=learner_config_dict(rl, max(res.num_learners, 1)),
        )
        .rl_module(rl_module_spec=spec)
    )
    return config.build_learner_group(rl_module_spec=spec)


def policy_weights(gpt: GPT) -> dict[str, np.ndarray]:
    """A GPT's weights in the module's naming, for `LearnerGroup.set_weights`."""
    return {MODULE_ID: {f"gpt.{k}": v.detach().cpu().numpy() for k, v in gpt.state_dict().items()}}


def gpt_state_dict(weights: dict) -> dict[str, torch.Tensor]:
    """`LearnerGroup.get_weights()` -> a GPT state dict."""
    module = weights[MODULE_ID]
    return {k.removeprefix("gpt."): torch.tensor(np.array(v)) for k, v in module.items()}


def learner_update(group, **kwargs) -> Any:
    """`group.update(**kwargs)`; if it fails because a learner actor died, the error is that actor's death.

    In DDP the surviving learners' allreduce breaks first (gloo's "connection closed by peer"), and
    RLlib raises whichever result comes first: the controller restarts on an actor's death, so it
    must see the death, not its echo."""
    try:
        return group.update(**kwargs)
    except Exception as err:
        died = None if group.is_local else dead_learner_error(group)
        if died is None:
            raise
        raise died from err


def dead_learner_error(group) -> Exception | None:
    """The RayActorError of a learner actor that died, if one did (every actor asked, healthy or not)."""
    import ray

    for result in group.foreach_learner(lambda _learner: None, healthy_only=False, timeout_seconds=10):
        if not result.ok and isinstance(result.get(), ray.exceptions.RayActorError):
            return result.get()
    return None
