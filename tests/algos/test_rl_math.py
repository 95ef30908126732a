"""Advantages, KL estimators and the policy loss against hand-computed values."""

import math

import pytest
import torch

from algos.advantages import (
    estimate,
    gae,
    group_baseline,
    normalize_within_groups,
    reinforce_pp,
    returns_to_go,
    rloo,
    token_rewards,
    whiten,
)
from algos.kl import adaptive_kl_coef, kl_per_state, kl_per_token, largest_responses, top_share
from algos.policy_loss import (
    aggregate,
    clipped_surrogate,
    clipped_value_loss,
    denominators,
    sequence_level_logprobs,
)


def close(a: torch.Tensor, b: list, tol: float = 1e-5) -> bool:
    return torch.allclose(a, torch.tensor(b, dtype=a.dtype), atol=tol)


def test_kl_estimators():
    logp, ref = torch.tensor([0.0, -1.0]), torch.tensor([-1.0, 0.0])  # log ratio +1, -1
    assert close(kl_per_token(logp, ref, "k1"), [1.0, -1.0])
    assert close(kl_per_token(logp, ref, "k2"), [0.5, 0.5])
    assert close(kl_per_token(logp, ref, "k3"), [math.exp(-1), math.e - 2])
    assert close(kl_per_token(ref, ref, "k3"), [0.0, 0.0])
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(logp, ref, "k4")


GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])
REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def test_rloo_leaves_one_out():
    assert close(rloo(REWARDS, GROUPS), [1.0, -0.5, -0.5, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least 2"):
        rloo(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]))


def test_group_baseline_with_and_without_std():
    assert close(group_baseline(REWARDS, GROUPS), [2 / 3, -1 / 3, -1 / 3, 0, 0, 0])
    std = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0)
    assert close(
        group_baseline(REWARDS, GROUPS, scale_by_std=True), [2 / 3 / std, -1 / 3 / std, -1 / 3 / std, 0, 0, 0], 1e-4
    )


def test_scores_normalised_within_their_prompt_only():
    scores = torch.tensor([1.0, 3.0, 100.0, 104.0])
    out = normalize_within_groups(scores, torch.tensor([0, 0, 1, 1]))
    s0, s1 = math.sqrt(2), math.sqrt(8)
    assert close(out, [-1 / s0, 1 / s0, -2 / s1, 2 / s1], 1e-4)


MASK = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])


def test_a_clamp_bounds_each_estimate_and_passes_no_gradient_past_it():
    logp = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    ref = torch.tensor([3.0, 0.5, -12.0])  # log ratios -3, -0.5, 12
    k3 = kl_per_token(logp, ref, "k3", clamp=10.0)
    assert close(k3, [10.0, math.exp(0.5) - 1.5, 10.0])  # e^3 - 4 = 16.09 and e^-12 + 11 = 11.0 clamped
    k3.sum().backward()
    assert close(logp.grad, [0.0, 1 - math.exp(0.5), 0.0])
    assert close(kl_per_token(logp, ref, "k1", clamp=10.0), [-3.0, -0.5, 10.0])  # k1 both ways: [-10, 10]
    assert close(kl_per_token(torch.zeros(1), torch.tensor([12.0]), "k1", clamp=10.0), [-10.0])
    assert close(kl_per_token(logp, ref, "k3"), [math.exp(3) - 4, math.exp(0.5) - 1.5, math.exp(-12) + 11])


def test_the_full_kl_of_each_state_by_hand_and_not_from_actions_alone():
    half, quarter = math.log(0.5), math.log(0.25)
    logp = torch.tensor([[[half, half], [quarter, math.log(0.75)]]])  # (1, 2, V=2): two states
    ref = torch.tensor([[[quarter, math.log(0.75)], [quarter, math.log(0.75)]]])
    exact = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)  # KL((1/2, 1/2) || (1/4, 3/4)); the second state: none
    assert close(kl_per_state(logp, ref), [[exact, 0.0]])
    assert close(kl_per_state(logp, ref, clamp=0.1), [[0.1, 0.0]])
    with pytest.raises(ValueError, match="kl_per_state"):
        kl_per_token(torch.zeros(2), torch.zeros(2), "full")


def test_where_a_batch_s_kl_comes_from_by_hand():
    per_response = torch.tensor([0.5, -3.0, 0.5, 1.0, 0.0])  # k1 can be negative: ranked by size
    assert largest_responses(per_response, 2).tolist() == [1, 3]
    assert largest_responses(per_response, 3).tolist() == [1, 3, 0]  # a tie: the earlier row
    assert largest_responses(per_response, 9).tolist() == [1, 3, 0, 2, 4]
    assert top_share(per_response, 2) == pytest.approx(4.0 / 5.0)  # |-3| + 1 of 0.5 + 3 + 0.5 + 1
    assert top_share(torch.ones(8), 2) == pytest.approx(0.25)  # moved alike everywhere: n / B
    assert top_share(torch.zeros(4), 2) == 0.0


def test_the_adaptive_kl_controller_by_hand():
    # KL 0.11 against a target of 0.1: error +0.1; 256 responses over a horizon of 10,000 -> x (1 + 0.1 * 0.0256)
    assert adaptive_kl_coef(0.2, 0.11, 0.1, 10_000, 256) == pytest.approx(0.2 * 1.00256)
    # far above the target: the error is clipped to +0.2; far below, to -0.2
    assert adaptive_kl_coef(0.2, 5.0, 0.1, 1000, 500) == pytest.approx(0.2 * 1.1)
    assert adaptive_kl_coef(0.2, 0.0, 0.1, 1000, 500) == pytest.approx(0.2 * 0.9)
    assert adaptive_kl_coef(0.2, 0.1, 0.1, 1000, 500) == 0.2  # on target: unchanged


def test_token_rewards_put_the_score_on_the_last_action_and_kl_on_every_action():
    out = token_rewards(torch.tensor([2.0, 3.0]), MASK, kl=torch.full((2, 4), 0.5), kl_coef=0.2)
    assert close(out, [[0, -0.1, 1.9, 0], [0, 0, -0.1, 2.9]])
    assert close(returns_to_go(out, MASK), [[0, 1.8, 1.9, 0], [0, 0, 2.8, 2.9]])


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.3, 0.5, 0.6, 0.7]])  # column 0 is the prompt, column 3 a pad after <eor>
    mask = torch.tensor([[0, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=2: delta = 1 - 0.6 = 0.4; t=1: delta = 0.9 * 0.6 - 0.5 = 0.04, A = 0.04 + 0.45 * 0.4 = 0.22
    assert close(adv, [[0.0, 0.22, 0.4, 0.0]])
    assert close(ret, [[0.0, 0.72, 1.0, 0.0]])


def test_whiten_and_reinforce_pp():
    mask = torch.tensor([[1, 1, 1, 0]])
    assert close(whiten(torch.tensor([[1.0, 2.0, 3.0, 9.0]]), mask), [[-1, 0, 1, 0]])
    rewards = torch.tensor([[0.0, 0.0, 3.0, 0.0]])  # returns-to-go 3, 3, 3: no spread, all zero
    assert close(reinforce_pp(rewards, mask), [[0, 0, 0, 0]])


def test_clipped_surrogate_and_dual_clip():
    logp = torch.tensor([0.0, math.log(1.5), math.log(0.5)])
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = clipped_surrogate(logp, torch.zeros(3), adv, clip_eps=0.2)
    assert close(loss, [-1.0, -1.2, 0.8])
    assert clipped.tolist() == [0.0, 1.0, 1.0]
    big = torch.tensor([math.log(5.0)])
    plain, _ = clipped_surrogate(big, torch.zeros(1), torch.tensor([-1.0]), clip_eps=0.2)
    dual, _ = clipped_surrogate(big, torch.zeros(1), torch.tensor([-1.0]), clip_eps=0.2, dual_clip=3.0)
    assert close(plain, [5.0]) and close(dual, [3.0])


def test_clip_higher_widens_only_the_upper_bound():
    logp = torch.tensor([math.log(1.5), math.log(1.25), math.log(0.5)])  # ratios 1.5, 1.25, 0.5
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, clipped = clipped_surrogate(logp, torch.zeros(3), adv, clip_eps=0.2, clip_eps_high=0.28)
    # 1.5 clips at 1.28 instead of 1.2; 1.25 is inside [0.8, 1.28]; the lower bound 0.8 is unchanged
    assert close(loss, [-1.28, -1.25, 0.8])
    assert clipped.tolist() == [1.0, 0.0, 1.0]


def test_policy_gradient_moves_each_action_by_its_advantage():
    logp = torch.zeros(2, requires_grad=True)
    loss, _ = clipped_surrogate(logp, torch.zeros(2), torch.tensor([2.0, -1.0]), clip_eps=0.2)
    loss.sum().backward()
    assert close(logp.grad, [-2.0, 1.0])  # descent raises the good action, lowers the bad one


def test_gspo_ratio_is_the_responses_geometric_mean_clipped_as_a_whole():
    old = torch.zeros(3, 3)
    logp = torch.tensor([[0.1, 0.3, 9.0], [-0.1, 0.1, 0.0], [-0.5, -0.3, 7.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]])  # 9.0 and 7.0 sit off the actions
    adv = torch.tensor([[1.0] * 3, [1.0] * 3, [-1.0] * 3])
    seq = sequence_level_logprobs(logp, old, mask)
    # mean log-ratios 0.2, 0 and -0.4: every action of a response carries its response's ratio
    e2, e4 = math.exp(0.2), math.exp(-0.4)
    assert close(torch.exp(seq - old), [[e2, e2, 1.0], [1.0, 1.0, 1.0], [e4, e4, 1.0]])
    loss, clipped = clipped_surrogate(seq, old, adv, clip_eps=0.2)
    # 1.221 clips at 1.2 (A > 0), 0.670 at 0.8 (A < 0); the middle response's tokens (0.905 and 1.105 each
    # alone) are not clipped: its ratio is 1
    assert close(loss * mask, [[-1.2, -1.2, 0.0], [-1.0, -1.0, -1.0], [0.8, 0.8, 0.0]])
    assert (clipped * mask).tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    (loss * mask).sum().backward()
    assert close(logp.grad, [[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])  # s_i * A on its own log-prob


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
AGG_MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"), [("token-mean", 7 / 3), ("seq-mean-token-mean", 2.75), ("seq-mean-token-sum-norm", 7 / 8)]
)
def test_aggregation_modes_and_split_invariance(mode, expected):
    den = denominators(AGG_MASK, max_len=4)
    assert math.isclose(aggregate(PER_TOKEN, AGG_MASK, mode, den).item(), expected, rel_tol=1e-6)
    parts = sum(aggregate(PER_TOKEN[i : i + 1], AGG_MASK[i : i + 1], mode, den) for i in range(2))
    assert math.isclose(parts.item(), expected, rel_tol=1e-6)


def test_clipped_value_loss():
    out = clipped_value_loss(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([2.0]), clip=0.2)
    assert close(out, [0.845])  # the clipped value 0.7 is further from the return: 0.5 * 1.3^2


def test_estimate_dispatches_and_puts_kl_in_the_reward():
    mask = torch.tensor([[0, 1, 1], [0, 1, 0], [0, 1, 1], [0, 1, 0]])
    rewards, group = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 1, 1])
    adv, returns = estimate("rloo", rewards, group, mask)
    assert close(adv, [[0, 1, 1], [0, -1, 0], [0, 0, 0], [0, 0, 0]]) and returns is None
    kl = torch.full((4, 3), 0.5)  # row sums over actions: 1.0, 0.5, 1.0, 0.5
    adv, _ = estimate("rloo", rewards, group, mask, kl=kl, kl_coef=1.0)
    # sequence rewards 0, -0.5, -1, -0.5 -> leave-one-out 0.5, -0.5, -0.5, 0.5
    assert close(adv, [[0, 0.5, 0.5], [0, -0.5, 0], [0, -0.5, -0.5], [0, 0.5, 0]])
    with pytest.raises(ValueError, match="critic"):
        estimate("gae", rewards, group, mask)


def test_last_real_index_for_left_right_and_empty_rows():
    from algos.masks import last_real_index

    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    assert last_real_index(mask).tolist() == [2, 3, -1]


def test_categorical_kl_and_entropy_by_hand():
    from algos.kl import categorical_kl, entropy

    p, q = torch.tensor([0.5, 0.5]).log(), torch.tensor([0.25, 0.75]).log()
    # 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
    assert close(categorical_kl(p, q), [0.5 * math.log(2) + 0.5 * math.log(2 / 3)])
    assert close(categorical_kl(q, p), [0.25 * math.log(0.5) + 0.75 * math.log(1.5)])
    assert close(categorical_kl(p, p), [0.0])
    assert close(entropy(p), [math.log(2)])
    certain = torch.tensor([0.0, float("-inf")])  # an action never taken adds nothing, not nan
    assert close(entropy(certain), [0.0])
    assert close(categorical_kl(certain, q), [-math.log(0.25)])


def test_the_first_groups_with_signal_by_hand():
    from algos.advantages import rows_of_first_signal_groups

    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 2.0, 0.0, 3.0])
    group = torch.tensor([0, 0, 1, 1, 2, 2, 5, 5, 7])  # 0 and 2 equal, 7 alone: 1 and 5 carry signal
    assert rows_of_first_signal_groups(rewards, group, 3).tolist() == [2, 3, 6, 7]
    assert rows_of_first_signal_groups(rewards, group, 1).tolist() == [2, 3]
    assert rows_of_first_signal_groups(torch.zeros(4), torch.tensor([0, 0, 1, 1]), 2).tolist() == []


def test_zero_advantage_groups_by_hand():
    from algos.advantages import zero_advantage_groups

    group = torch.tensor([0, 0, 1, 1, 2, 2])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1], [1, 1], [0, 0]])
    advantages = torch.tensor([[0.0, 0.0], [0.0, 5.0], [0.5, 0.5], [-0.5, -0.5], [0.0, 0.0], [3.0, 3.0]])
    # group 0: zero on every action (5.0 sits off the mask); group 1 carries signal; group 2: one row's
    # actions are all zero and the other has no actions, so nothing to learn either
    assert zero_advantage_groups(advantages, mask, group).tolist() == [True, True, False, False, True, True]
