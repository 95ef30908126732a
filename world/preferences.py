"""Preference pairs: two responses to one prompt, one preferred (WORLDVIEW rule 4).

A pair has exactly one `prompt` field, so a pair of answers to two different prompts
cannot be built with this type: the reward model only ever learns which of two actions
is better *in the same state*. Pairs are formed within each prompt's group of sampled
responses and labelled by the simulated labeler (the gold grader plus noise).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Literal

from world.actions import ActionSpace
from world.grader import SimulatedLabeler, grade

PairKind = Literal["format", "correctness"]


@dataclass(frozen=True)
class PreferencePair:
    """`chosen` and `rejected` are token ids of two responses to the same `prompt`."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    kind: PairKind  # "format": one response is malformed; "correctness": both are well-formed
    gold_agrees: bool  # the noise-free grader prefers `chosen` too (False = a flipped label)

    def sequences(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(prompt + chosen, prompt + rejected): what the reward model scores."""
        return self.prompt + self.chosen, self.prompt + self.rejected

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreferencePair:
        return cls(
            tuple(data["prompt"]), tuple(data["chosen"]), tuple(data["rejected"]), data["kind"], data["gold_agrees"]
        )


def pairs_for_prompt(
    space: ActionSpace,
    prefix: Sequence[int],
    responses: Sequence[Sequence[int]],
    labeler: SimulatedLabeler,
    counts: Counter,
    n_terms: int | None = 1,
) -> list[PreferencePair]:
    """Every labelled pair among the responses to one prompt; drops are tallied in `counts`.

    Dropped: identical responses (`dropped_identical`) and pairs the labeler has no
    preference on, i.e. equal gold grades or a question without an exam answer
    (`dropped_no_preference`). `n_terms` is how many terms the exam asks for.
    """
    prompt = tuple(space.encode_prompt(prefix))
    terms = [space.parse_response(list(r)).answer for r in responses]
    grades = [grade(prefix, t, n_terms=n_terms) for t in terms]  # once per response, not per pair
    pairs = []
    for i, j in combinations(range(len(responses)), 2):
        counts["candidates"] += 1
        if tuple(responses[i]) == tuple(responses[j]):
            counts["dropped_identical"] += 1
            continue
        choice = labeler.prefer_grades(grades[i], grades[j])
        if choice is None:
            counts["dropped_no_preference"] += 1
            continue
        gold_choice = 0 if grades[i] > grades[j] else 1
        chosen, rejected = (i, j) if choice == 0 else (j, i)
        kind: PairKind = "correctness" if terms[i] is not None and terms[j] is not None else "format"
        pair = PreferencePair(prompt, tuple(responses[chosen]), tuple(responses[rejected]), kind, choice == gold_choice)
        counts[f"kept_{kind}"] += 1
        pairs.append(pair)
    return pairs
