import math

import torch

from algos.bradley_terry import bradley_terry_loss


def test_loss_against_hand_computed_values():
    # diffs 0, ln 3, -ln 3: -log(1/2), -log(3/4), -log(1/4)
    chosen = torch.tensor([1.0, math.log(3.0), 0.0])
    rejected = torch.tensor([1.0, 0.0, math.log(3.0)])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    expected = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    assert math.isclose(metrics["rm/pair_accuracy"].item(), 1 / 3, rel_tol=1e-6)


def test_margin_shifts_the_difference():
    loss, _ = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), margin=2.0)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)


def test_gradient_pushes_chosen_up_and_rejected_down():
    chosen, rejected = torch.tensor([0.0], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, rejected)
    loss.backward()
    assert chosen.grad.item() == -0.5 and rejected.grad.item() == 0.5
