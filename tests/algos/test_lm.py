import math

import torch

from algos.lm import masked_next_token_loss


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
