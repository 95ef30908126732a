"""Views of one exam state: the same series read from a later term.

`1,2,4,8,16?` and `2,4,8,16?` ask the same question: a number series keeps its rule when
its first term is dropped. A reward model's score of (prompt, response) is one noisy
estimate; averaging it over a few such views of the prompt (the response unchanged)
gives a steadier one, and it still compares responses within one prompt (WORLDVIEW
rule 4). Pure token manipulation: nothing is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence

from world.actions import ActionSpace


def prompt_views(space: ActionSpace, sequence: Sequence[int], count: int, min_terms: int) -> list[list[int]]:
    """`<bos>terms?response` -> itself, then with its first 1 .. count-1 terms dropped,
    as long as `min_terms` terms are left. A sequence without a prompt is its only view."""
    sequence = list(sequence)
    if count <= 1 or not sequence or sequence[0] != space.bos_id or space.query_id not in sequence:
        return [sequence]
    query = sequence.index(space.query_id)
    prompt, rest = sequence[1:query], sequence[query:]
    separators = [i for i, token in enumerate(prompt) if token == space.sep_id]
    views = [sequence]
    for dropped in range(1, count):
        if len(separators) + 1 - dropped < min_terms:
            break
        views.append([space.bos_id, *prompt[separators[dropped - 1] + 1 :], *rest])
    return views
