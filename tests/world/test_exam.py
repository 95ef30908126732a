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
