import math

import pytest
import torch

from algos.lm import masked_next_token_loss, sft_loss, sft_token_weights


def test_loss_counts_only_actions():
    # Vocabulary of 2; uniform logits except the last state, which is sure of token 1.
    logits = torch.zeros(1, 3, 2)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0)])  # p(1) = 3/4 in state tokens[:2]
    tokens = torch.tensor([[0, 1, 1]])
    prompt_is_state = torch.tensor([[0, 0, 1]])  # only the last token is an action
    loss, metrics = masked_next_token_loss(logits, tokens, prompt_is_state)
    assert math.isclose(loss.item(), -math.log(0.75), rel_tol=1e-6)
    assert metrics["lm/actions"].item() == 1
    all_actions = torch.tensor([[0, 1, 1]])
    loss, _ = masked_next_token_loss(logits, tokens, all_actions)
    assert math.isclose(loss.item(), (math.log(2) - math.log(0.75)) / 2, rel_tol=1e-6)


def test_prompt_tokens_get_no_gradient():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 4))
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]])
    loss, _ = masked_next_token_loss(logits, tokens, mask)
    loss.backward()
    assert logits.grad[0, :1].abs().sum() == 0 and logits.grad[1, :2].abs().sum() == 0
    assert logits.grad[0, 1:3].abs().sum() > 0 and logits.grad[1, 2].abs().sum() > 0


def test_sft_loss_adds_the_weighted_state_loss():
    # Vocabulary of 2, uniform logits except state tokens[:2], sure of token 1 with p = 3/4.
    logits = torch.zeros(1, 4, 2)
    logits[0, 1] = torch.tensor([0.0, math.log(3.0)])
    tokens = torch.tensor([[0, 1, 1, 0]])  # <bos>, a state token, an action, padding
    mask = torch.tensor([[1, 1, 1, 0]])
    actions = torch.tensor([[0, 0, 1, 0]])
    loss, metrics = sft_loss(logits, tokens, mask, actions, state_weight=0.5)
    # action tokens[2] from state tokens[:2]: -log 3/4; state token tokens[1] from <bos>: log 2
    assert math.isclose(loss.item(), -math.log(0.75) + 0.5 * math.log(2), rel_tol=1e-6)
    assert math.isclose(metrics["loss/lm"].item(), -math.log(0.75), rel_tol=1e-6)
    assert math.isclose(metrics["loss/state"].item(), math.log(2), rel_tol=1e-6)
    plain, plain_metrics = sft_loss(logits, tokens, mask, actions, state_weight=0.0)
    assert math.isclose(plain.item(), -math.log(0.75), rel_tol=1e-6) and "loss/state" not in plain_metrics


def test_sft_token_weights_by_hand():
    # two rows: <bos> s s a a | <bos> s a pad; 3 actions, 3 state targets (column 0 never a target)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    actions = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]])
    weights = sft_token_weights(mask, actions, state_weight=2.0)
    expected = torch.tensor([[0, 2 / 3, 2 / 3, 1 / 3, 1 / 3], [0, 2 / 3, 1 / 3, 0, 0]])
    assert torch.allclose(weights, expected)
    assert torch.allclose(sft_token_weights(mask, actions, 0.0), expected.clamp(max=1 / 3) * actions)


def test_sft_token_weights_give_sft_loss_from_the_taken_log_probs():
    """PPO-ptx's term is SFT's own loss: the same number from log-probs as `sft_loss` from logits."""
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 5)
    tokens = torch.randint(0, 5, (3, 6))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    actions = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 0, 1, 0, 0, 0]])
    expected, _ = sft_loss(logits, tokens, mask, actions, 2.0)
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    taken = torch.cat([torch.zeros(3, 1), logp], dim=1)  # column t: log pi(token t | tokens before it)
    got = -(taken * sft_token_weights(mask, actions, 2.0)).sum()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
