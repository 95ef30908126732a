"""The action-space audit: later stages may not need actions pretraining never took.

WORLDVIEW rule 3. The vocabulary is frozen at pretraining; SFT, preference and RL data
are checked against what the pretraining corpus actually contains, token by token and
pattern by pattern (a pattern is a bigram of token classes: every digit is one class, so
"?" then "9" is the pattern "?" then a digit). A miss is an error that says where the
data belongs: pretraining.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from world.actions import DIGITS, ActionSpace

DIGIT_CLASS = "<digit>"


def token_class(token: str) -> str:
    return DIGIT_CLASS if token in DIGITS else token


QUERY = "?"


def move_it(unseen: tuple[str, ...]) -> str:
    """Where the data needing `unseen` (an action, or a pattern of two token classes) belongs, and the setting
    that puts it there: the question marker comes with the question form, everything else with your sequences."""
    if QUERY in unseen:
        return "Move this data into pretraining (world.query_rate > 0 writes documents in the question form)."
    return "Move this data into pretraining (world.extra_sequences: a file of your own sequences)."


def describe(unseen: tuple[str, ...]) -> str:
    """`('x',)` -> the action 'x'; `('a', 'b')` -> the pattern 'a' then 'b'."""
    return f"the action {unseen[0]!r}" if len(unseen) == 1 else f"the pattern {unseen[0]!r} then {unseen[1]!r}"


class ActionSpaceAuditError(ValueError):
    """Later-stage data needs an action (or action pattern) pretraining never saw."""


@dataclass
class CorpusStats:
    """Which tokens and patterns (bigrams of token classes) the pretraining corpus contains."""

    tokens: Counter[str] = field(default_factory=Counter)
    bigrams: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, tokens: Sequence[str]) -> None:
        self.tokens.update(tokens)
        self.bigrams.update(itertools.pairwise(token_class(t) for t in tokens))

    @classmethod
    def from_documents(cls, space: ActionSpace, documents: Iterable[Sequence[int]]) -> CorpusStats:
        stats = cls()
        for ids in documents:
            stats.add(space.decode_tokens(ids))
        return stats

    def rare_tokens(self, space: ActionSpace, below: float = 0.01) -> list[str]:
        """The actions whose share of the corpus's tokens is under `below` (never seen ones too).

        RL tracks how much of its sampled actions fall on these: mass moving to actions
        pretraining hardly took is the shift WORLDVIEW rule 3 warns of.
        """
        total = max(sum(self.tokens.values()), 1)
        return [tok for tok in space.tokens if self.tokens[tok] / total < below]

    def to_dict(self) -> dict:
        return {
            "tokens": dict(self.tokens),
            "bigrams": [[a, b, n] for (a, b), n in self.bigrams.items()],
        }

    @classmethod
    def from_dict(cls, data: dict) -> CorpusStats:
        return cls(Counter(data["tokens"]), Counter({(a, b): n for a, b, n in data["bigrams"]}))


def first_unseen(tokens: Sequence[str], stats: CorpusStats) -> tuple[str, ...] | None:
    """What in one example pretraining never saw: an action `(token,)`, else a pattern `(class, class)`."""
    for tok in tokens:
        if stats.tokens[tok] == 0:
            return (tok,)
    for pair in itertools.pairwise(token_class(t) for t in tokens):
        if stats.bigrams[pair] == 0:
            return pair
    return None


def episode_problems(shown: str, tokens: Sequence[str], stats: CorpusStats, max_len: int) -> list[str]:
    """What keeps one episode of your data file (a question with its answer, a prompt with one of two answers) from
    the policy, each problem led by `shown` (its line): an action or pattern pretraining never took, or more
    actions than the policy's context holds. Exams and preference files say it alike."""
    problems = []
    unseen = first_unseen(tokens, stats)
    if unseen is not None:
        problems.append(f"{shown} needs {describe(unseen)}, which the run's pretraining never took. {move_it(unseen)}")
    if len(tokens) > max_len:
        problems.append(f"{shown} takes {len(tokens)} actions; the policy reads at most {max_len}")
    return problems


def audit(stage: str, examples: Iterable[Sequence[str]], stats: CorpusStats) -> int:
    """Check every example (as token strings) against pretraining; returns how many passed.

    Raises on the first token or bigram that pretraining never saw, naming it and the
    example, because opening a new action after pretraining degrades or breaks the policy.
    """
    count = 0
    for count, tokens in enumerate(examples, start=1):
        unseen = first_unseen(tokens, stats)
        if unseen is not None:
            raise ActionSpaceAuditError(
                f"{stage} data needs {describe(unseen)}, which the pretraining corpus never contains "
                f"(example {count}: {''.join(tokens)!r}). {move_it(unseen)}"
            )
    return count
