"""Your own exam file: every line read, every problem reported by line, keys kept beside the gold grader."""

from __future__ import annotations

import pytest

from world.user_data import (
    KEYED,
    DataFileError,
    OwnPair,
    parse_exam,
    parse_pair_line,
    parse_sequences,
    read_exam,
    read_sequences,
)

GOOD = """\
# classics
1 2 4 8 16

1, 3, 5, 7 -> 9
1,2,4,8,16->31   # the OEIS's A000127, not the exam's
-10 -8 -6 -4 -> -2, 0
2 4 6 10 -> 16   # the grader finds two rules here: the key settles it
"""


def test_a_good_file_becomes_questions_graded_by_the_key_else_the_grader():
    exam = parse_exam(GOOD)
    assert [q.line for q in exam] == [2, 4, 5, 6, 7]
    assert [q.question.prefix for q in exam] == [
        (1, 2, 4, 8, 16), (1, 3, 5, 7), (1, 2, 4, 8, 16), (-10, -8, -6, -4), (2, 4, 6, 10),
    ]  # fmt: skip
    assert [q.question.answer for q in exam] == [(32,), (9,), (31,), (-2, 0), (16,)]
    assert [q.keyed for q in exam] == [False, True, True, True, True]
    assert [q.grader_answer for q in exam] == [(32,), (9,), (32,), (-2,), None]
    assert [q.disagrees for q in exam] == [False, False, True, False, False]
    assert exam[0].question.template == "geometric" and exam[0].rule == "multiply by 2 each time"
    assert exam[4].question.template == KEYED and exam[4].rule is None  # ambiguous: no rule of the grader's shown


def test_every_bad_line_is_reported_at_once_with_its_number():
    text = "1 2 4 8 16\n1.5 2 2.5\n1 2 4 7\n2 4 6 10\n5\n1 2 3 ->\n1 2 3 -> x\n+1 2 3 -> 4\n"
    with pytest.raises(DataFileError) as caught:
        parse_exam(text, "mine.txt")
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [f"line {n}" for n in range(2, 9)]
    assert "'1.5' in the question is not an integer" in problems[0] and "fixed from pretraining on" in problems[0]
    assert "the gold grader cannot settle one (it finds no rule): add yours as '-> N'" in problems[1]
    assert "within 2 bits of it, the primes from 3, - 1 -> 12" in problems[2]
    assert "at least 2 terms, this one has 1" in problems[3]
    assert problems[4] == "line 6: no answer after '->'"
    assert "'x' in the answer after '->' is not an integer" in problems[5]
    assert "'+1'" in problems[6]  # only digits and '-' are actions
    assert str(caught.value).startswith("mine.txt: 7 problem(s)\nline 2:")


def test_a_file_without_questions_or_unreadable_is_refused(tmp_path):
    with pytest.raises(DataFileError, match="no questions"):
        parse_exam("# nothing yet\n\n")
    with pytest.raises(DataFileError, match="cannot read it"):
        read_exam(tmp_path / "missing.txt")
    binary = tmp_path / "exam.bin"
    binary.write_bytes(b"\xff\xfe1 2 3")
    with pytest.raises(DataFileError, match="cannot read it"):
        read_exam(binary)
    text = tmp_path / "exam.txt"
    text.write_text("3 4 5 6 7\n")
    assert read_exam(text)[0].question.answer == (8,)


def test_a_sequences_file_becomes_named_pretraining_series_or_every_bad_line(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("# A007491\n2 5 11 17 29 37 53\n\n-1, 0, 1, 8   # a comment\n")
    series = read_sequences(good)
    assert [(s.source, s.terms) for s in series] == [
        ("extra:mine.txt:2", (2, 5, 11, 17, 29, 37, 53)), ("extra:mine.txt:4", (-1, 0, 1, 8)),
    ]  # fmt: skip
    with pytest.raises(DataFileError) as caught:
        parse_sequences("1 2 x\n5\n1 2 123456789012\n1 2 1234567890123\n", "bad.txt")
    assert caught.value.problems == [
        "line 1: 'x' in the sequence is not an integer: the policy's actions are the digits, '-' and ',' "
        "(its action space is fixed from pretraining on), so a series holds only integers",
        "line 2: a sequence needs at least 2 terms, this one has 1",
        "line 4: a term of 13 digits; pretraining reads terms of at most 12 (the OEIS extract and the generated "
        "families are cut there)",
    ]
    with pytest.raises(DataFileError, match="no sequences"):
        parse_sequences("# only a comment\n")


def test_a_pairs_line_reads_prompt_better_and_worse_or_says_what_is_wrong():
    assert parse_pair_line(3, "-4 4 8 8 4 -4 -> -16 > -10") == OwnPair(3, (-4, 4, 8, 8, 4, -4), (-16,), (-10,))
    assert parse_pair_line(1, "1, 2, 4 -> 8, 16 > 7") == OwnPair(1, (1, 2, 4), (8, 16), (7,))
    for line, message in [
        ("1 2 4 8 -> 16", "PROMPT -> BETTER > WORSE"),
        ("1 2 4 8 16 > 31", "PROMPT -> BETTER > WORSE"),
        ("1 2 4 -> 8 > 8", "the two answers are the same"),
        ("1 -> 2 > 3", "at least 2 terms, this one has 1"),
        ("1 2 x -> 3 > 4", "'x' in the prompt is not an integer"),
        ("1 2 3 -> 4 > 4.5", "'4.5' in the worse answer is not an integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_pair_line(1, line)
