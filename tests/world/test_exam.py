import random
from collections import Counter

from world.exam import TEMPLATES, Question, build_bank, draw_questions, group_by_template
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


def test_balanced_draws_give_every_template_an_equal_share():
    qs = [Question((i, i + 1, i + 2), (i + 3,), "arithmetic", 1) for i in range(90)]
    qs += [Question((1, 2, 4 * i), (8 * i,), "geometric", 1) for i in range(1, 11)]
    groups = group_by_template(qs)
    plain = draw_questions(qs, random.Random(0), 2000, None)
    balanced = draw_questions(qs, random.Random(0), 2000, groups)
    assert 0.07 < sum(q.template == "geometric" for q in plain) / 2000 < 0.13
    assert 0.45 < sum(q.template == "geometric" for q in balanced) / 2000 < 0.55
    assert draw_questions(qs, random.Random(3), 50, groups) == draw_questions(qs, random.Random(3), 50, groups)


def test_rl_prompts_are_fixed_by_seed_and_iteration_and_balanced_on_request():
    from pipelines.rl_prompts import prompts_at

    qs = [Question((i, i + 1, i + 2), (i + 3,), "arithmetic", 1) for i in range(90)]
    qs += [Question((1, 2, 4 * i), (8 * i,), "geometric", 1) for i in range(1, 11)]
    groups = group_by_template(qs)
    plain = prompts_at(qs, seed=0, iteration=5, n=40)
    assert plain == prompts_at(qs, seed=0, iteration=5, n=40) != prompts_at(qs, seed=0, iteration=6, n=40)
    assert len(set(plain)) == 40  # distinct questions
    drawn = [q for it in range(50) for q in prompts_at(qs, 0, it, 40, groups)]
    assert prompts_at(qs, 0, 5, 40, groups) == prompts_at(qs, 0, 5, 40, groups)
    assert 0.45 < sum(q.template == "geometric" for q in drawn) / len(drawn) < 0.55
