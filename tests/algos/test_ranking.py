"""The RM's agreement with the gold grader within groups, against hand-counted pairs."""

import math

import pytest
import torch

from algos.ranking import pooled, within_group_agreement


def test_pairs_are_counted_within_groups_only_and_a_tie_is_half():
    group = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    gold = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    proxy = torch.tensor([0.5, 0.2, 0.7, 0.3, 0.3, 0.9, 0.1])
    # group 0: (row 0 over 1) agrees, (row 0 over 2) does not; group 1: (row 4 over 3) a tie, half;
    # group 2: gold ties, no pair; row 0 against row 3 (gold 1 against 0) is across prompts: not a pair
    assert within_group_agreement(proxy, gold, group) == (1.5, 3)


def test_an_rm_that_inverts_gold_agrees_on_nothing():
    group = torch.tensor([0, 0, 0])
    agree, pairs = within_group_agreement(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([2.0, 1.0, 0.0]), group)
    assert (agree, pairs) == (0.0, 3)
    assert within_group_agreement(torch.tensor([2.0, 1.0, 0.0]), torch.tensor([2.0, 1.0, 0.0]), group) == (3.0, 3)


def test_a_batch_where_gold_tells_nothing_apart_has_no_pairs():
    assert within_group_agreement(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.0]), torch.tensor([0, 0])) == (0.0, 0)


def test_pooled_weights_each_batch_by_its_pairs():
    assert pooled([0.5, math.nan, 1.0], [2, 0, 2]) == pytest.approx(0.75)  # (0.5*2 + 1.0*2) / 4
    assert pooled([0.25, 1.0], [4, 1]) == pytest.approx(0.4)
    assert pooled([math.nan], [0]) is None
    assert pooled([], []) is None
