"""Your own exam: number-series questions read from a text file, every line checked first.

One question per line: its terms separated by spaces or commas, then optionally `->` and
the answer your key gives (one term or several). Without a key the gold grader answers;
a question it finds no rule for, or two rules for within 2 bits, needs a key. `#` starts
a comment.

    1 2 4 8 16            # the gold grader's answer: 32
    1, 3, 5, 7 -> 9       # your key's
    2 3 5 7 11 -> 13

The whole file is read before any policy runs and every problem is reported with its line,
so a bad file costs one reading, not a run. A key that differs from the gold grader is
kept (the exam is yours) and the difference is reported beside the results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from world.exam import Question
from world.grader import Verdict, analyze

KEY_MARK = "->"
TERM = re.compile(r"-?[0-9]+")
MIN_TERMS = 2  # one term is not a series
KEYED = "keyed"  # the template of a question whose rule the gold grader does not settle


class ExamFileError(ValueError):
    """The file cannot be posed as an exam; `problems` holds every line's, in order."""

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
    for part in parts:
        if not TERM.fullmatch(part):
            raise ValueError(
                f"{part!r} in the {what} is not an integer: the policy's actions are the digits, '-' and ',' "
                "(its action space was frozen at pretraining), so a question can hold only integers"
            )
    return [int(p) for p in parts]


def unsettled(verdict: Verdict) -> str:
    """Why the gold grader names no next term, in words."""
    if verdict.status == "ambiguous":
        rivals = "; ".join(f"{rule} -> {answer[0]}" for rule, answer in verdict.alternatives)
        return f"{verdict.rule} and, within 2 bits of it, {rivals}"
    return "it finds no rule"


def parse_line(number: int, line: str) -> ExamQuestion | None:
    """One line's question (None for a blank or comment line); ValueError names what is wrong with it."""
    content = line.split("#", 1)[0].strip()
    if not content:
        return None
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


def parse_exam(text: str, source: str = "exam") -> list[ExamQuestion]:
    """Every question of the file; raises ExamFileError listing every bad line if any is."""
    exam, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = parse_line(number, line)
        except ValueError as err:
            problems.append(f"line {number}: {err}")
            continue
        if parsed is not None:
            exam.append(parsed)
    if not exam and not problems:
        problems.append("no questions (one a line: terms, then optionally '-> answer')")
    if problems:
        raise ExamFileError(source, problems)
    return exam


def read_exam(path: Path) -> list[ExamQuestion]:
    """`parse_exam` of a file; a file that is missing or not text is an ExamFileError too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ExamFileError(str(path), [f"cannot read it: {err}"]) from None
    return parse_exam(text, str(path))
