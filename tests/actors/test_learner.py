"""RLlib LearnerGroup around the GPT: weights in and out, and DDP over 2 learners equals one learner."""

import logging
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray._common.deprecation import deprecation_warning
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from actors.learner import (
    MODULE_ID,
    PTX_WEIGHT,
    RLLIBS_OWN_DEPRECATION,
    PolicyGradientLearner,
    PolicyModule,
    build_learner_group,
    gpt_state_dict,
    policy_weights,
)
from algos.kl import kl_per_token
from conf.load import load_config
from models.checkpoint import load_checkpoint
from models.gpt import GPTConfig
from models.rollout import sample_rollouts
from pipelines.rl_batch import learner_batch, learner_metrics
from world.actions import ActionSpace

pytestmark = pytest.mark.slow
SPACE = ActionSpace()


class SGDLearner(PolicyGradientLearner):
    """The library's loss under plain SGD: a step proportional to the gradient.

    Adam's first step is lr * sign(gradient), blind to a gradient scaled by the world size
    and flipped by float noise where a gradient is near 0; SGD shows any error in DDP's averaging."""

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(
            module_id=module_id, optimizer=torch.optim.SGD(params), params=params, lr_or_lr_schedule=config.lr
        )


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_building_the_module_logs_no_deprecation_of_rllibs_own_making():
    recorded, logger = Recorded(), logging.getLogger("ray._common.deprecation")
    logger.addHandler(recorded)
    try:
        RLModuleSpec(
            module_class=PolicyModule, observation_space=gym.spaces.Box(0, 15, shape=(8,), dtype=np.int64),
            action_space=gym.spaces.Discrete(16), model_config={"gpt_config": GPTConfig(16, 1, 1, 8, 8).to_dict()},
        ).build()  # fmt: skip
        deprecation_warning("something else")  # other deprecations still reach the log
    finally:
        logger.removeHandler(recorded)
    assert not any(RLLIBS_OWN_DEPRECATION in m for m in recorded.messages)
    assert any("something else" in m for m in recorded.messages)


def one_update(num_learners: int, policy, batch, cfg):
    rl = cfg.rl.model_copy(
        update={"actors": cfg.rl.actors.model_copy(update={"learner": cfg.rl.actors.learner.model_copy(
            update={"num_learners": num_learners, "num_cpus_per_learner": 0.25})})}
    )  # fmt: skip
    group = build_learner_group(rl, policy.cfg, SPACE.size, SGDLearner)
    try:
        group.set_weights(policy_weights(policy))
        assert all(torch.equal(v, policy.state_dict()[k]) for k, v in gpt_state_dict(group.get_weights()).items())
        metrics = learner_metrics(group.update(batch=batch, timesteps={"num_env_steps_sampled_lifetime": 1}))
        return gpt_state_dict(group.get_weights()), metrics
    finally:
        group.shutdown()


def test_two_ddp_learners_take_the_same_step_as_one(tiny_sft_run, ray_local):
    cfg = load_config("tiny", ["rl.lr=1e-1", "rl.grad_clip=1e6"])  # SGD; no clipping to hide a scaled gradient
    policy, _, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    prompts = [SPACE.encode_prompt([1, 2, 3, 4]), SPACE.encode_prompt([2, 4, 8, 16])]
    torch.manual_seed(0)  # the same rollouts whichever tests ran before
    rollouts = sample_rollouts(policy, SPACE, prompts, group_size=8, max_new_tokens=8, policy_version=0)
    advantages = torch.linspace(-1, 1, rollouts.size)[:, None] * rollouts.action_mask
    uniform = torch.full((*rollouts.tokens.shape, SPACE.size), -math.log(SPACE.size))  # a reference at 1/V
    batch = learner_batch(
        rollouts, advantages, rollouts.logprobs - 0.1 * rollouts.action_mask, uniform, 8, cfg.rl.kl_coef
    )
    local, local_metrics = one_update(0, policy, batch, cfg)
    ddp, _ = one_update(2, policy, batch, cfg)
    moved = max((local[k] - policy.state_dict()[k]).abs().max().item() for k in local)
    gap = max((local[k] - ddp[k]).abs().max().item() for k in local)
    assert moved > 1e-3  # the step is real
    assert gap < 1e-4 * moved, f"2 learners differ from 1 by {gap} (the step: {moved})"
    expected_kl = (kl_per_token(rollouts.logprobs, rollouts.logprobs - 0.1, "k3") * rollouts.action_mask).sum()
    assert abs(local_metrics["rl/kl_learner"] - expected_kl.item() / rollouts.action_mask.sum().item()) < 1e-4
    # the exact KL to a uniform reference is log V less the entropy in every state: per response, as rl/kl
    actions = rollouts.action_mask.sum().item()
    exact = actions * (math.log(SPACE.size) - local_metrics["rl/entropy"]) / rollouts.size
    assert local_metrics["rl/kl_exact"] == pytest.approx(exact, rel=1e-4)


def test_two_ddp_learners_take_the_same_step_as_one_with_ppo_ptx_rows_and_report_sft_s_loss(tiny_sft_run, ray_local):
    """SFT's rows split unevenly across two learners (16 rollouts + 5): their weights count the whole batch."""
    from algos.lm import sft_loss
    from pipelines.rl_ptx import ptx_data, with_ptx
    from pipelines.sft import batch_at
    from pipelines.train_loop import step_seed

    cfg = load_config("tiny", ["rl.lr=1e-1", "rl.grad_clip=1e6", "rl.ptx_coef=1", "rl.ptx_batch=5"])
    policy, _, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    prompts = [SPACE.encode_prompt([1, 2, 3, 4]), SPACE.encode_prompt([2, 4, 8, 16])]
    torch.manual_seed(0)
    rollouts = sample_rollouts(policy, SPACE, prompts, group_size=8, max_new_tokens=8, policy_version=0)
    advantages = torch.linspace(-1, 1, rollouts.size)[:, None] * rollouts.action_mask
    uniform = torch.full((*rollouts.tokens.shape, SPACE.size), -math.log(SPACE.size))
    batch = learner_batch(rollouts, advantages, rollouts.logprobs, uniform, 8, 0.0)
    ptx = ptx_data(cfg, SPACE, tiny_sft_run)
    batch = with_ptx(batch, ptx.columns(0, 0), SPACE.pad_id)
    local, local_metrics = one_update(0, policy, batch, cfg)
    ddp, ddp_metrics = one_update(2, policy, batch, cfg)
    moved = max((local[k] - policy.state_dict()[k]).abs().max().item() for k in local)
    gap = max((local[k] - ddp[k]).abs().max().item() for k in local)
    assert moved > 1e-3 and gap < 1e-4 * moved, f"2 learners differ from 1 by {gap} (the step: {moved})"
    sft = batch_at(SPACE, ptx.questions, step_seed("ptx", ptx.seed, 0), 0, 5, ptx.by_template)
    with torch.no_grad():
        expected, _ = sft_loss(
            policy(sft.tokens, sft.mask), sft.tokens, sft.mask, sft.action_mask, cfg.sft.state_loss_weight
        )
    assert local_metrics["loss/ptx"] == pytest.approx(expected.item(), rel=1e-4)
    assert ddp_metrics["loss/ptx"] == pytest.approx(expected.item(), rel=1e-4)


def test_tiny_rl_with_two_samplers_and_two_learners_stays_in_sync(tiny_sft_run, ray_local):
    from pipelines import rlhf
    from pipelines.rl_actors import start_actors
    from pipelines.rl_ptx import ptx_data
    from world.exam import questions as bank_questions

    cfg = load_config(
        "tiny",
        ["rl.reward_source=gold", "rl.actors.sampler.replicas=2", "rl.actors.sampler.num_cpus=0.25",
         "rl.actors.reference.num_cpus=0.1", "rl.actors.learner.num_learners=2",
         "rl.actors.learner.num_cpus_per_learner=0.25", "rl.lr=1e-3", "rl.ptx_coef=0.5", "rl.ptx_batch=8"],
    )  # fmt: skip
    policy, _, _ = load_checkpoint(tiny_sft_run / "sft" / "checkpoint.pt")
    prompts = bank_questions(0, 1000, "feedback", 1, cfg.world.feedback_share)
    ptx = ptx_data(cfg, SPACE, tiny_sft_run)  # PPO-ptx's SFT rows too, which DDP splits unevenly: a batch's last rows
    actors = start_actors(cfg, tiny_sft_run, SPACE, policy)
    try:
        version = 0
        for iteration in range(2):
            step = rlhf.iteration_step(cfg, actors, SPACE, policy, prompts, iteration, version, ptx=ptx)
            version = step.version
            assert step.metrics["rl/sample_staleness"] == 0
            assert 0 < step.metrics["loss/ptx"] < 10
        results = actors.learner.foreach_learner(
            lambda learner, **_: float(sum(p.detach().double().sum() for p in learner.module[MODULE_ID].parameters()))
        )
        learner_sums = [r.get() for r in results]
        expected = float(sum(p.double().sum() for p in policy.state_dict().values()))
        assert len(learner_sums) == 2 and learner_sums[0] == learner_sums[1]  # DDP keeps the learners identical
        assert abs(learner_sums[0] - expected) < 1e-6 * max(1.0, abs(expected))
        for sampler in actors.samplers:  # every sampler holds the learner's latest version
            assert ray_local.get(sampler.policy_version.remote()) == version == 2
            assert abs(ray_local.get(sampler.checksum.remote()) - expected) < 1e-6 * max(1.0, abs(expected))
    finally:
        actors.stop()
        for handle in [*actors.samplers, *actors.references, actors.buffer]:
            ray_local.kill(handle)


def loss_on_one_response(overrides: list[str], fwd_out: dict, advantage: float, kl_coef: float, **columns):
    """The library's loss on one response of two actions (old log-probs 0), configured as `tiny` with `overrides`
    through `learner_config_dict`, on a stub learner: the loss and the metrics it logged."""
    from types import SimpleNamespace

    from actors.learner import learner_config_dict

    rl = load_config("tiny", [*overrides, "rl.loss_agg=token-mean"]).rl
    uniform = torch.full((1, 2, 2), math.log(0.5))  # unless a test says otherwise, both distributions: no exact KL
    batch = {
        "action_mask": torch.ones(1, 2), "old_logprobs": torch.zeros(1, 2), "advantages": torch.full((1, 2), advantage),
        "kl_coef": torch.tensor([kl_coef]), "den_actions": torch.tensor([2.0]), "den_sequences": torch.tensor([1.0]),
        "den_max_len": torch.tensor([2.0]), "ref_dist": uniform,
    } | columns  # fmt: skip
    logged = {}
    learner = SimpleNamespace(metrics=SimpleNamespace(log_dict=lambda d, **kwargs: logged.update(d)))
    loss = PolicyGradientLearner.compute_loss_for_module(
        learner, module_id=MODULE_ID, config=SimpleNamespace(learner_config_dict=learner_config_dict(rl, 1)),
        batch=batch, fwd_out={"entropy": torch.zeros(1, 2), "state_logprobs": uniform} | fwd_out,
    )  # fmt: skip
    return loss, logged


@pytest.mark.parametrize(("importance", "expected"), [("token", -1.0050), ("sequence", -1.0)])
def test_the_learners_loss_takes_the_ratio_per_action_or_per_response_as_configured(importance, expected):
    logp = torch.tensor([[-0.1, 0.1]])  # ratios 0.905 and 1.105 to old log-probs of 0: their response's is 1
    loss, _ = loss_on_one_response(
        [f"rl.importance_ratio={importance}"], {"action_logprobs": logp}, 1.0, 0.0, ref_logprobs=logp.clone()
    )
    # token: -(0.905 + 1.105) / 2 = -cosh(0.1); sequence: -(1 + 1) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("clamp", "loss_value", "first_gradient"),
    [
        ("null", 0.2 * (math.e**3 - 4 + math.e**0.5 - 1.5) / 2, 0.2 * (1 - math.e**3) / 2),
        ("10", 0.2 * (10 + math.e**0.5 - 1.5) / 2, 0.0),
    ],
)
def test_a_clamped_kl_bounds_the_loss_s_kl_term_and_its_gradient(clamp, loss_value, first_gradient):
    logp = torch.zeros(1, 2, requires_grad=True)  # log ratios to the reference -3 and -0.5: k3 16.09 and 0.149
    loss, _ = loss_on_one_response(
        [f"rl.kl_clamp={clamp}", "rl.kl_in=loss"], {"action_logprobs": logp}, 0.0, 0.2,
        ref_logprobs=torch.tensor([[3.0, 0.5]]),
    )  # fmt: skip
    loss.backward()
    assert loss.item() == pytest.approx(loss_value, rel=1e-5)
    # d k3 / d log pi = 1 - exp(-log ratio): -19.1 unclamped; past the clamp, none
    assert logp.grad[0, 0].item() == pytest.approx(first_gradient, abs=1e-6)
    assert logp.grad[0, 1].item() == pytest.approx(0.2 * (1 - math.e**0.5) / 2, rel=1e-5)


def test_the_full_kl_in_the_loss_is_each_state_s_exact_kl_with_its_gradient():
    state = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]])).requires_grad_()  # two states over V=2
    loss, logged = loss_on_one_response(
        ["rl.kl_estimator=full", "rl.kl_in=loss"], {"action_logprobs": torch.zeros(1, 2), "state_logprobs": state},
        0.0, 0.2, ref_logprobs=torch.zeros(1, 2), ref_dist=torch.log(torch.tensor([[[0.25, 0.75], [0.25, 0.75]]])),
    )  # fmt: skip
    exact = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)  # the first state's KL; the second is the reference's own
    assert loss.item() == pytest.approx(0.2 * exact / 2, rel=1e-5)  # token mean of kl_coef x KL
    assert logged["rl/kl_learner"].item() == pytest.approx(exact / 2, rel=1e-5)
    assert logged["rl/kl_exact"].item() == pytest.approx(exact, rel=1e-5)  # per response: the states summed
    loss.backward()
    # d/d log p_a of sum_a p_a (log p_a - log q_a) is p_a (1 + log p_a - log q_a): 0.5 (1 + log 2) and 0.5 (1 + log 2/3)
    expected = [0.5 * (1 + math.log(2)), 0.5 * (1 + math.log(2 / 3))]
    assert state.grad[0, 0].tolist() == pytest.approx([0.2 / 2 * g for g in expected], rel=1e-5)


def test_ppo_ptx_adds_sft_s_loss_of_its_rows_and_leaves_the_rollouts_counts_alone():
    """Row 0 a rollout, row 1 an SFT question (PPO-ptx): the loss is the policy term over the rollout's actions
    plus ptx_coef times SFT's loss of row 1, and the exact KL is per rollout, not per row."""
    half = math.log(0.5)
    uniform = torch.full((2, 2, 2), half)
    policy = uniform.clone()
    policy[0, 1] = torch.log(torch.tensor([0.9, 0.1]))  # the rollout's second state: KL 0.9 ln 1.8 + 0.1 ln 0.2
    loss, logged = loss_on_one_response(
        ["rl.ptx_coef=0.5"],
        {"action_logprobs": torch.tensor([[-0.1, 0.1], [0.0, -3.0]]), "entropy": torch.zeros(2, 2),
         "state_logprobs": policy, "ptx_logprobs": torch.tensor([[-5.0, -5.0], [0.0, -2.0]])},
        1.0, 0.0,
        action_mask=torch.tensor([[1.0, 1.0], [0.0, 0.0]]), old_logprobs=torch.zeros(2, 2),
        advantages=torch.tensor([[1.0, 1.0], [0.0, 0.0]]), ref_logprobs=torch.zeros(2, 2), ref_dist=uniform,
        ptx_weight=torch.tensor([[0.0, 0.0], [0.0, 1.0]]),
    )  # fmt: skip
    # the rollout: -(e^-0.1 + e^0.1) / 2 = -1.0050; SFT's row: -(1 * -2.0) = 2.0, weighted 0.5
    assert loss.item() == pytest.approx(-1.0050 + 0.5 * 2.0, abs=1e-4)
    assert logged["loss/ptx"].item() == pytest.approx(2.0)
    assert logged["rl/kl_exact"].item() == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2), rel=1e-5)
    logp = torch.tensor([[-0.1, 0.1]])
    _, without = loss_on_one_response([], {"action_logprobs": logp}, 1.0, 0.0, ref_logprobs=logp.clone())
    assert "loss/ptx" not in without


def test_the_module_reads_sft_s_rows_at_temperature_1_whatever_the_samplers_temperature():
    """PPO-ptx's loss is the policy's own likelihood, not the tempered one PPO's ratio compares."""
    module = RLModuleSpec(
        module_class=PolicyModule, observation_space=gym.spaces.Box(0, 15, shape=(8,), dtype=np.int64),
        action_space=gym.spaces.Discrete(16),
        model_config={"gpt_config": GPTConfig(16, 1, 1, 8, 8).to_dict(), "temperature": 0.5},
    ).build()  # fmt: skip
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0, 0, 0]])
    mask = (tokens != 0).long()
    batch = {"tokens": tokens, "mask": mask, PTX_WEIGHT: torch.ones(1, 8)}
    with torch.no_grad():
        out = module._forward(batch)
        logits = module.gpt(tokens, mask)[:, :-1]
    untempered = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    tempered = torch.log_softmax(logits / 0.5, -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    assert torch.allclose(out["ptx_logprobs"][:, 1:], untempered)
    assert torch.allclose(out["action_logprobs"][:, 1:], tempered)
    assert not torch.allclose(untempered, tempered)
    assert "ptx_logprobs" not in module._forward({"tokens": tokens, "mask": mask})


def test_the_entropy_bonus_takes_its_coefficient_times_each_action_s_entropy_off_the_loss():
    logp = torch.tensor([[-0.1, 0.1]])
    spread = torch.tensor([[0.5, 1.5]], requires_grad=True)  # each state's entropy
    loss, _ = loss_on_one_response(
        ["rl.entropy_coef=0.1"], {"action_logprobs": logp, "entropy": spread}, 1.0, 0.0, ref_logprobs=logp.clone()
    )
    loss.backward()
    # the policy term -cosh(0.1) = -1.0050, less 0.1 times the token mean of the entropies (1.0)
    assert loss.item() == pytest.approx(-1.0050 - 0.1, abs=1e-4)
    assert torch.allclose(spread.grad, torch.tensor([[-0.05, -0.05]]))
    off, _ = loss_on_one_response([], {"action_logprobs": logp, "entropy": spread}, 1.0, 0.0, ref_logprobs=logp.clone())
    assert off.item() == pytest.approx(-1.0050, abs=1e-4)
