"""The reward head's likelihood feature: the response's log-probability under the trunk, in any padding layout."""

import torch

from models.checkpoint import load_checkpoint, save_checkpoint
from models.gpt import GPT, GPTConfig
from models.heads import ScalarModel, score_sequences
from models.rollout import action_logprobs
from world.actions import ActionSpace

SPACE = ActionSpace()


def trunk() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=SPACE.size, n_layer=1, n_head=2, d_model=16, max_len=32)).eval()


def test_a_fresh_likelihood_rm_scores_exactly_the_response_logprob():
    model = trunk()
    prompt, response = SPACE.encode_prompt([1, 2, 4]), SPACE.encode_response([8])
    tokens = torch.tensor([prompt + response])
    mask = torch.ones_like(tokens)
    expected = action_logprobs(model, tokens, mask)[0, len(prompt) :].sum()  # the actions only: 8, <eor>
    rm = ScalarModel(model, SPACE.query_id)
    with torch.no_grad():
        assert torch.allclose(rm.score(tokens, mask), expected[None], atol=1e-5)


def test_padding_on_either_side_leaves_the_score_unchanged():
    rm = ScalarModel(trunk(), SPACE.query_id)
    torch.nn.init.normal_(rm.head.weight)
    prompt, response = SPACE.encode_prompt([3, 5, 7]), SPACE.encode_response([9])
    plain = torch.tensor([prompt + response])
    pad = SPACE.pad_id
    right = torch.tensor([prompt + response + [pad, pad]])
    left = torch.tensor([[pad, pad, *prompt, *response]])
    with torch.no_grad():
        a = rm.score(plain, torch.ones_like(plain))
        b = rm.score(right, (right != pad).long())
        c = rm.score(left, (left != pad).long())
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_the_feature_survives_a_checkpoint(tmp_path):
    rm = ScalarModel(trunk(), SPACE.query_id)
    save_checkpoint(tmp_path / "rm.pt", model=rm, space=SPACE)
    loaded, _, _ = load_checkpoint(tmp_path / "rm.pt", SPACE)
    assert loaded.query_id == SPACE.query_id and loaded.likelihood_weight.item() == 1.0
    plain = ScalarModel(trunk())
    save_checkpoint(tmp_path / "plain.pt", model=plain, space=SPACE)
    assert load_checkpoint(tmp_path / "plain.pt", SPACE)[0].query_id is None


def test_a_score_over_views_is_the_mean_of_each_views_own_score():
    rm = ScalarModel(trunk(), SPACE.query_id)
    torch.nn.init.normal_(rm.head.weight)
    response = SPACE.encode_response([32])
    full, shorter = SPACE.encode_prompt([1, 2, 4, 8, 16]), SPACE.encode_prompt([2, 4, 8, 16])
    short = SPACE.encode_prompt([5, 7, 9])  # three terms: its only view at min_terms=3

    def alone(sequence):
        tokens = torch.tensor([sequence])
        with torch.no_grad():
            return rm.score(tokens, torch.ones_like(tokens)).item()

    scores = score_sequences(rm, SPACE, [full + response, short + response], views=2, min_terms=3)
    expected = [(alone(full + response) + alone(shorter + response)) / 2, alone(short + response)]
    assert torch.allclose(scores, torch.tensor(expected), atol=1e-5)
    assert not torch.allclose(scores[:1], torch.tensor([alone(full + response)]), atol=1e-4)  # the views count
