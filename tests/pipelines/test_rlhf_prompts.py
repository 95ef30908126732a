"""RL prompts: a pure function of (seed, iteration), and the practised set judged beside the held-out one."""

from pipelines.rl_prompts import practised_questions, prompts_at
from world.exam import Question, group_by_template


def bank() -> list[Question]:
    return [Question((i, i + 1, i + 2, i + 3), (i + 4,), "arithmetic" if i % 3 else "geometric", 1) for i in range(40)]


def test_practised_questions_are_the_first_distinct_prompts_of_the_first_iterations():
    questions = bank()
    drawn = [q.prefix for it in range(3) for q in prompts_at(questions, 7, it, 8)]
    practised = practised_questions(questions, 7, 3, 8, n=100)
    assert [q.prefix for q in practised] == list(dict.fromkeys(drawn))  # distinct, in draw order
    assert practised_questions(questions, 7, 3, 8, n=5) == practised[:5]


def test_practised_questions_follow_the_template_draw_when_asked():
    questions = bank()
    by_template = group_by_template(questions)
    practised = practised_questions(questions, 7, 2, 8, n=100, by_template=by_template)
    drawn = [q.prefix for it in range(2) for q in prompts_at(questions, 7, it, 8, by_template)]
    assert [q.prefix for q in practised] == list(dict.fromkeys(drawn))
