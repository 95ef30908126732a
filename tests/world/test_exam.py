from collections import Counter

from world.exam import TEMPLATES, build_bank
from world.grader import grade


def test_bank_is_deterministic_by_seed():
    assert build_bank(seed=3, size=150) == build_bank(seed=3, size=150)
    assert build_bank(seed=3, size=150) != build_bank(seed=4, size=150)


def test_bank_questions_are_distinct_verified_and_cover_the_templates():
    bank = build_bank(seed=0, size=1100)
    assert len(TEMPLATES) >= 20
    assert len({q.prefix for q in bank}) == len(bank)
    assert set(Counter(q.template for q in bank)) == set(TEMPLATES)
    assert all(grade(q.prefix, list(q.answer)) == 1 for q in bank)


def test_eval_split_is_about_ten_percent_and_disjoint():
    bank = build_bank(seed=0, size=1100)
    evals = {q.prefix for q in bank if q.split == "eval"}
    train = {q.prefix for q in bank if q.split == "train"}
    assert not evals & train
    assert 0.05 < len(evals) / len(bank) < 0.15


def test_sft_and_feedback_pools_split_train_and_never_touch_eval():
    from world.exam import questions

    sft = set(questions(0, 1100, "sft", feedback_share=0.3))
    feedback = set(questions(0, 1100, "feedback", feedback_share=0.3))
    train, held_out = set(questions(0, 1100, "train")), set(questions(0, 1100, "eval"))
    assert sft | feedback == train and not sft & feedback and not train & held_out
    assert 0.2 < len(feedback) / len(train) < 0.4
    assert not questions(0, 1100, "feedback", feedback_share=0.0)
