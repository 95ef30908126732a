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


def test_label_smoothing_counts_each_label_as_right_with_probability_one_minus_eps():
    # d = ln 3: sigma(d) = 3/4, sigma(-d) = 1/4; eps = 0.1: -(0.9 ln 3/4 + 0.1 ln 1/4)
    loss, _ = bradley_terry_loss(torch.tensor([math.log(3.0)]), torch.tensor([0.0]), label_smoothing=0.1)
    assert math.isclose(loss.item(), -(0.9 * math.log(0.75) + 0.1 * math.log(0.25)), rel_tol=1e-6)


def test_label_smoothing_bounds_the_pull_of_a_confident_pair():
    # d/dd loss = sigma(d) - (1 - eps): -0.4 at d = 0, and +0.1 (not 0) once d is large
    for diff, expected in ((0.0, -0.4), (30.0, 0.1)):
        chosen = torch.tensor([diff], requires_grad=True)
        loss, _ = bradley_terry_loss(chosen, torch.tensor([0.0]), label_smoothing=0.1)
        loss.backward()
        assert math.isclose(chosen.grad.item(), expected, abs_tol=1e-6)
