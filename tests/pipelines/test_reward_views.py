"""Reward-model training through prompt views: a pair is read through one view, the same for both answers."""

import random

from pipelines.reward import pair_batch
from world.actions import ActionSpace
from world.preferences import PreferencePair

SPACE = ActionSpace()


def test_both_answers_of_a_pair_are_read_through_the_same_view():
    pairs = [
        PreferencePair(
            tuple(SPACE.encode_prompt([1, 2, 4, 8, 16, 32])),
            tuple(SPACE.encode_response([64])),
            tuple(SPACE.encode_response([63])),
            "correctness",
            True,
        )
    ] * 40
    batch = pair_batch(SPACE, pairs, random.Random(0), views=3, min_terms=3)
    rows = [
        [t for t, real in zip(r, m, strict=True) if real]
        for r, m in zip(batch.tokens.tolist(), batch.mask.tolist(), strict=True)
    ]
    chosen, rejected = rows[:40], rows[40:]
    prompts = set()
    for good, bad in zip(chosen, rejected, strict=True):
        assert good[:-3] == bad[:-3] and good[-3:] != bad[-3:]  # one prompt, two answers: 64 and 63
        prompts.add(tuple(good[:-3]))
    assert len(prompts) == 3  # all three views were drawn
    plain = pair_batch(SPACE, pairs[:1])
    assert plain.tokens[0].tolist() == list(pairs[0].prompt + pairs[0].chosen)


def test_training_reads_one_view_when_told_not_to_train_on_views():
    from conf.load import load_config
    from pipelines.reward import training_views

    assert training_views(load_config("tiny", ["reward.views=2"])) == (2, 3)
    assert training_views(load_config("tiny", ["reward.views=2", "reward.train_views=false"])) == (1, 3)
    pair = PreferencePair(
        tuple(SPACE.encode_prompt([1, 2, 4, 8, 16])), tuple(SPACE.encode_response([32])),
        tuple(SPACE.encode_response([31])), "correctness", True,
    )  # fmt: skip
    one_view = pair_batch(SPACE, [pair] * 8, random.Random(0), *training_views(load_config("tiny")))
    assert all(row[: len(pair.prompt)] == list(pair.prompt) for row in one_view.tokens.tolist()[:8])
