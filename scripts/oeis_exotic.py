"""How often does a policy write an OEIS continuation that is not the exam's answer?

Indexes every window of 4-8 consecutive terms of the committed OEIS extract by the term
that follows it, finds the held-out exam questions whose prefix some OEIS sequence
continues differently, and asks a checkpoint (greedy, one term) for each.

    python scripts/oeis_exotic.py runs/demo/sft/checkpoint.pt runs/demo/rlhf/checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from serve.engine import PolicyEngine, Sampling
from world.corpus import load_oeis
from world.exam import questions


def continuations(min_len: int = 4, max_len: int = 8) -> dict[tuple[int, ...], set[int]]:
    index: dict[tuple[int, ...], set[int]] = defaultdict(set)
    for series in load_oeis():
        t = series.terms
        for length in range(min_len, max_len + 1):
            for i in range(len(t) - length):
                index[t[i : i + length]].add(t[i + length])
    return index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--bank-size", type=int, default=20000)
    args = parser.parse_args()
    index = continuations()
    asked = questions(0, args.bank_size, "eval")
    exotic = [q for q in asked if index.get(q.prefix, set()) - {q.answer[0]}]
    result: dict = {"eval_questions": len(asked), "with_other_oeis_continuation": len(exotic)}
    for path in args.checkpoints:
        answers = PolicyEngine(path).continue_batch([(list(q.prefix), 1, Sampling()) for q in exotic])
        firsts = [a.terms[0] if a.terms else None for a in answers]
        result[path] = {
            "oeis_not_exam": sum(
                a is not None and a != q.answer[0] and a in index[q.prefix] for q, a in zip(exotic, firsts, strict=True)
            ),
            "exam_answer": sum(a == q.answer[0] for q, a in zip(exotic, firsts, strict=True)),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
