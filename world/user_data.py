"""Your own data from text files, every line checked first: exam questions and pretraining sequences.

Both hold one series a line, its terms separated by spaces or commas; `#` starts a comment.

An **exam** question may end in `->` and the answer your key gives (one term or several).
Without a key the gold grader answers; a question it finds no rule for, or two rules for
within 2 bits, needs a key. A key that differs from the gold grader is kept (the exam is
yours) and the difference is reported beside the results.

    1 2 4 8 16            # the gold grader's answer: 32
    1, 3, 5, 7 -> 9       # your key's
    2 3 5 7 11 -> 13

A **sequences** file (`world.extra_sequences`) adds series to the pretraining corpus: where
the action-space audit sends data that needs actions or patterns pretraining never took.

    2 5 11 17 29 37 53 67 83 101     # A007491: the smallest prime above n^2

A **pairs** file (`reward.extra_pairs`) adds preferences to the reward model's training: a
prompt, `->`, the better answer, `>`, the worse one. Your label is the preference (the gold
grader's view of it is only reported).

    -4 4 8 8 4 -4 -> -16 > -10       # the RM had put -10 above the right -16

The whole file is read before anything runs and every problem is reported with its line,
so a bad file costs one reading, not a run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from world.corpus import MAX_DIGITS, Series
from world.exam import Question
from world.grader import Verdict, analyze

KEY_MARK = "->"
TERM = re.compile(r"-?[0-9]+")
MIN_TERMS = 2  # one term is not a series
KEYED = "keyed"  # the template of a question whose rule the gold grader does not settle
T = TypeVar("T")


class DataFileError(ValueError):
    """The file cannot be read as asked; `problems` holds every bad line's problem, in order."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


@dataclass(frozen=True)
class ExamQuestion:
    """A question of the file: where it stands, the question as the evaluation grades it, who answered it."""

    line: int
    question: Question  # its answer is the key's when given, else the gold grader's
    keyed: bool  # the answer is the file's key
    grader_answer: tuple[int, ...] | None  # the gold grader's next term, None where it settles none
    rule: str | None  # the gold grader's rule, in words

    @property
    def disagrees(self) -> bool:
        """The key and the gold grader name different next terms."""
        return self.keyed and self.grader_answer is not None and self.question.answer[:1] != self.grader_answer


def parse_terms(text: str, what: str) -> list[int]:
    """Integers separated by spaces or commas; anything else is named, since the policy has no action for it."""
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not parts:
        raise ValueError(f"no {what}")
    longest = sys.get_int_max_str_digits() or None  # Python's own limit on reading an integer from text
    for part in parts:
        if not TERM.fullmatch(part):
            raise ValueError(
                f"{part!r} in the {what} is not an integer: the policy's actions are the digits, '-' and ',' "
                "(its action space is fixed from pretraining on), so a series holds only integers"
            )
        if longest and len(part.lstrip("-")) > longest:
            raise ValueError(f"a term of {len(part.lstrip('-')):,} digits in the {what}: more than {longest:,}")
    return [int(p) for p in parts]


def unsettled(verdict: Verdict) -> str:
    """Why the gold grader names no next term, in words."""
    if verdict.status == "ambiguous":
        rivals = "; ".join(f"{rule} -> {answer[0]}" for rule, answer in verdict.alternatives)
        return f"{verdict.rule} and, within 2 bits of it, {rivals}"
    return "it finds no rule"


def parse_line(number: int, content: str) -> ExamQuestion:
    """One line's question (its comment stripped); ValueError names what is wrong with it."""
    question_text, mark, key_text = content.partition(KEY_MARK)
    prefix = parse_terms(question_text, "question")
    if len(prefix) < MIN_TERMS:
        raise ValueError(f"a question needs at least {MIN_TERMS} terms, this one has {len(prefix)}")
    key = parse_terms(key_text, "answer after '->'") if mark else None
    verdict = analyze(prefix)
    grader_answer = tuple(verdict.answer[:1]) if verdict.status == "ok" and verdict.answer else None
    if key is not None:
        answer = tuple(key)
    elif grader_answer is not None:
        answer = grader_answer
    else:
        raise ValueError(
            f"no answer given and the gold grader cannot settle one ({unsettled(verdict)}): add yours as '-> N'"
        )
    template = verdict.template if verdict.status == "ok" and verdict.template else KEYED
    question = Question(prefix=tuple(prefix), answer=answer, template=template, difficulty=0)
    return ExamQuestion(number, question, key is not None, grader_answer, verdict.rule if grader_answer else None)


@dataclass(frozen=True)
class OwnPair:
    """A line of a pairs file: two answers to one prompt (WORLDVIEW rule 4), the first preferred."""

    line: int
    prefix: tuple[int, ...]
    better: tuple[int, ...]
    worse: tuple[int, ...]


def parse_pair_line(number: int, content: str) -> OwnPair:
    """`PROMPT -> BETTER > WORSE`; ValueError names what is wrong with the line."""
    question_text, mark, answers = content.partition(KEY_MARK)
    better_text, than, worse_text = answers.partition(">")
    if not mark or not than:
        raise ValueError("a pair reads PROMPT -> BETTER > WORSE, e.g. '1 2 4 8 16 -> 32 > 31'")
    prefix = parse_terms(question_text, "prompt")
    if len(prefix) < MIN_TERMS:
        raise ValueError(f"a prompt needs at least {MIN_TERMS} terms, this one has {len(prefix)}")
    better, worse = parse_terms(better_text, "better answer"), parse_terms(worse_text, "worse answer")
    if better == worse:
        raise ValueError("the two answers are the same: a pair needs two answers to prefer one of")
    return OwnPair(number, tuple(prefix), tuple(better), tuple(worse))


def lines_and_problems(text: str, parse: Callable[[int, str], T]) -> tuple[list[T], list[str]]:
    """`parse(number, content)` of every line that is not blank or a comment, and a problem for each line it
    refuses (its ValueError), so later checks can add theirs before the file is refused whole."""
    parsed, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        try:
            parsed.append(parse(number, content))
        except ValueError as err:
            problems.append(f"line {number}: {err}")
    return parsed, problems


def refuse_problems(source: str, problems: list[str]) -> None:
    """A DataFileError listing `problems` in the order of their lines, if there are any."""
    if problems:
        raise DataFileError(
            source, sorted(problems, key=lambda p: int(p.split()[1].rstrip(":")) if p[:5] == "line " else 0)
        )


def parse_lines(text: str, source: str, parse: Callable[[int, str], T], what: str) -> list[T]:
    """`lines_and_problems`, refused whole if any line is bad or the file holds no `what`."""
    parsed, problems = lines_and_problems(text, parse)
    refuse_problems(source, problems if parsed or problems else [f"no {what}"])
    return parsed


def read_text(path: Path) -> str:
    """A file's text; one that is missing or not UTF-8 text is a DataFileError too."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(str(path), [f"cannot read it: {err}"]) from None


def parse_exam(text: str, source: str = "exam") -> list[ExamQuestion]:
    """Every question of the file; raises DataFileError listing every bad line if any is."""
    return parse_lines(text, source, parse_line, "questions (one a line: terms, then optionally '-> answer')")


def read_exam(path: Path) -> list[ExamQuestion]:
    """`parse_exam` of a file."""
    return parse_exam(read_text(path), str(path))


def parse_sequence(number: int, content: str, source: str = "sequences") -> Series:
    """One line of a sequences file as a pretraining series, named by file and line."""
    terms = parse_terms(content, "sequence")
    if len(terms) < MIN_TERMS:
        raise ValueError(f"a sequence needs at least {MIN_TERMS} terms, this one has {len(terms)}")
    longest = max(len(str(abs(t))) for t in terms)
    if longest > MAX_DIGITS:
        raise ValueError(
            f"a term of {longest} digits; pretraining reads terms of at most {MAX_DIGITS} (the OEIS extract and "
            "the generated families are cut there)"
        )
    return Series(f"extra:{source}:{number}", tuple(terms))


def parse_sequences(text: str, source: str = "sequences", name: str | None = None) -> tuple[Series, ...]:
    """Every sequence of the file (each named `extra:<name>:<line>`); raises DataFileError listing every bad
    line if any is."""
    named = name or source
    return tuple(parse_lines(text, source, lambda n, c: parse_sequence(n, c, named), "sequences (one a line)"))


def read_sequences(path: Path) -> tuple[Series, ...]:
    """`parse_sequences` of a file, its series named after the file."""
    return parse_sequences(read_text(path), str(path), path.name)
