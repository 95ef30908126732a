from collections import Counter

from world.actions import ActionSpace
from world.grader import SimulatedLabeler
from world.preferences import PreferencePair, pairs_for_prompt

SPACE = ActionSpace()
PREFIX = (1, 2, 4, 8, 16)


def response(text: str) -> list[int]:
    return SPACE.encode_tokens([*text, "<eor>"]) if text else [SPACE.eor_id]


def test_pairs_share_one_prompt_and_the_labeler_prefers_the_exam_answer():
    responses = [response("32"), response("31"), response("32"), response("-"), response("114514")]
    counts: Counter = Counter()
    pairs = pairs_for_prompt(SPACE, PREFIX, responses, SimulatedLabeler(noise=0.0), counts)
    assert {p.prompt for p in pairs} == {tuple(SPACE.encode_prompt(PREFIX))}
    assert all(p.chosen == tuple(response("32")) and p.gold_agrees for p in pairs)
    # 10 candidates: (32, 32) identical; 31 / - / 114514 among themselves tie at grade 0
    assert counts == Counter(
        candidates=10, dropped_identical=1, dropped_no_preference=3, kept_correctness=4, kept_format=2
    )
    assert sorted(p.kind for p in pairs) == ["correctness"] * 4 + ["format"] * 2


def test_noisy_labels_are_marked_against_gold():
    responses = [response("32"), response("31")] * 1
    flipped = [
        p
        for seed in range(40)
        for p in pairs_for_prompt(SPACE, PREFIX, responses, SimulatedLabeler(0.5, seed), Counter())
    ]
    assert any(not p.gold_agrees for p in flipped) and any(p.gold_agrees for p in flipped)
    assert all((p.chosen == tuple(response("32"))) == p.gold_agrees for p in flipped)


def test_a_pair_round_trips_through_json_dicts():
    pair = PreferencePair((1, 2), (3,), (4,), "correctness", True)
    assert PreferencePair.from_dict(pair.to_dict()) == pair


def test_the_type_has_room_for_one_prompt_only():
    from dataclasses import fields

    assert [f.name for f in fields(PreferencePair)] == ["prompt", "chosen", "rejected", "kind", "gold_agrees"]
