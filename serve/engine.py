"""The served policy without Ray or HTTP: validate, batch by sampling settings, generate.

Requests with the same sampling settings (and, for completions, the same token budget and n)
run as one batch through the KV-cache sampler; a request with its own seed gets its own
generator, so its answer does not depend on what it was batched with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.sampling import Generation, generate


class BadRequest(ValueError):
    """A request the model cannot answer as asked; the message says why."""


@dataclass(frozen=True)
class Continuation:
    """The new terms of one request, whether every one was well-formed, and each episode's log-probability."""

    terms: list[int]
    finished: bool
    logprobs: list[float]  # per term: log pi of the whole response it came from, <eor> included


@dataclass(frozen=True)
class Completion:
    """An OpenAI-style completion: the text (without `<eor>`), why it ended and how many actions it took."""

    text: str
    finish_reason: str  # "stop" at <eor>, "length" when the token budget ran out first
    tokens: int


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None


class PolicyEngine:
    def __init__(
        self, checkpoint: Path, max_terms: int = 8, max_term_digits: int = 18, threads: int = 1,
        precision: str = "float32",
    ) -> None:  # fmt: skip
        """`precision`: the weights' and KV cache's dtype (`serve.precision`); log-probs are float32 either way."""
        torch.set_num_threads(threads)
        self.model, self.space, _ = load_checkpoint(Path(checkpoint))
        self.model.eval().in_precision(precision)
        self.precision = precision
        self.max_terms, self.max_term_digits = max_terms, max_term_digits
        self.context = self.model.cfg.max_len

    # --- validation -----------------------------------------------------------------------
    def check_sequence(self, sequence: list[int], max_terms: int) -> None:
        if max_terms > self.max_terms:
            raise BadRequest(f"max_terms={max_terms} is over this server's limit of {self.max_terms}")
        for i, term in enumerate(sequence):
            if len(str(abs(term))) > self.max_term_digits:
                raise BadRequest(f"sequence[{i}] has {len(str(abs(term)))} digits; the limit is {self.max_term_digits}")
        needed = len(self.space.encode_prompt(sequence)) + max_terms * (self.max_term_digits + 2)
        if needed > self.context:
            raise BadRequest(
                f"sequence plus {max_terms} answer term(s) needs up to {needed} tokens; the context is {self.context}"
            )

    def parse_prompt(self, text: str) -> list[int]:
        parts = [p.strip() for p in text.strip().rstrip(",").split(",")]
        try:
            terms = [int(p) for p in parts]
        except ValueError:
            raise BadRequest(f"prompt {text[:40]!r} is not comma-separated integers like '1,2,4,8,16,'") from None
        return terms

    # --- generation -----------------------------------------------------------------------
    def _generate(self, prompts: list[list[int]], sampling: Sampling, max_new_tokens: int, samples_per_prompt: int = 1):
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        return generate(
            self.model, prompts, max_new_tokens=max_new_tokens, eor_id=self.space.eor_id, pad_id=self.space.pad_id,
            temperature=sampling.temperature, top_k=sampling.top_k, generator=generator,
            samples_per_prompt=samples_per_prompt,
        )  # fmt: skip

    def continue_batch(self, requests: list[tuple[list[int], int, Sampling]]) -> list[Continuation]:
        """(sequence, max_terms, sampling) -> its continuation; each term is one episode of the policy.

        A term's log-probability is that of the response it was read from (its actions through
        `<eor>`) under the distribution sampled: the policy's own at temperature 0 or 1.
        """
        results: dict[int, Continuation] = {}
        for rows in sampling_groups([s for _, _, s in requests]).values():
            results |= self._continue_group(requests, rows)
        return [results[i] for i in range(len(requests))]

    def _continue_group(self, requests, rows: list[int]) -> dict[int, Continuation]:
        sampling = requests[rows[0]][2]
        sequences = {i: list(requests[i][0]) for i in rows}
        new_terms: dict[int, list[int]] = {i: [] for i in rows}
        logprobs: dict[int, list[float]] = {i: [] for i in rows}
        finished = dict.fromkeys(rows, True)
        while active := [i for i in rows if finished[i] and len(new_terms[i]) < requests[i][1]]:
            prompts = [self.space.encode_prompt(sequences[i]) for i in active]
            gen = self._generate(prompts, sampling, self.max_term_digits + 2)
            episode_logprobs = (gen.logprobs * gen.action_mask).sum(dim=1).tolist()
            for row, i in enumerate(active):
                parsed = self.space.parse_response(gen.tokens[row].tolist())
                if not parsed.well_formed or not parsed.terms:
                    finished[i] = False
                    continue
                new_terms[i].append(parsed.terms[0])
                logprobs[i].append(episode_logprobs[row])
                sequences[i].append(parsed.terms[0])
        return {i: Continuation(new_terms[i], finished[i], logprobs[i]) for i in rows}

    def completion_budget(self, sequence: list[int], max_tokens: int) -> int:
        """How many actions a completion of `sequence` may take: `max_tokens`, or what the context leaves."""
        budget = self.context - len(self.space.encode_prompt(sequence))
        if budget < 1:
            raise BadRequest(f"the prompt fills the model's context of {self.context} tokens")
        return min(max_tokens, budget)

    def complete_batch(self, requests: list[tuple[list[int], int, Sampling, int]]) -> list[list[Completion]]:
        """(sequence, max_tokens, sampling, n) -> its n completions: episodes of the policy, cut at the budget.

        Requests that share sampling settings, a budget and n run as one batch, so each row gets
        exactly the budget it asked for (a longer one would let a long prompt overrun the context);
        a request's n episodes read its prompt once, as an RL group does.
        """
        shapes = [(self.completion_budget(sequence, max_tokens), n) for sequence, max_tokens, _, n in requests]
        results: dict[int, list[Completion]] = {}
        for rows in sampling_groups([s for _, _, s, _ in requests], shapes).values():
            (budget, n), prompts = shapes[rows[0]], [self.space.encode_prompt(requests[i][0]) for i in rows]
            gen = self._generate(prompts, requests[rows[0]][2], budget, samples_per_prompt=n)
            for position, i in enumerate(rows):
                results[i] = [self._completion(gen, row) for row in range(position * n, (position + 1) * n)]
        return [results[i] for i in range(len(requests))]

    def _completion(self, gen: Generation, row: int) -> Completion:
        ids, finished = gen.tokens[row][gen.action_mask[row].bool()].tolist(), bool(gen.finished[row])
        parsed = self.space.parse_response(ids)
        if parsed.well_formed:  # numbers in the usual spelling, whatever the model's digit order
            text = ",".join(map(str, parsed.terms))
        else:
            text = "".join(self.space.decode_tokens(ids[:-1] if finished else ids))
        return Completion(text, "stop" if finished else "length", len(ids))


def sampling_groups(settings: list[Sampling], shapes: list[Hashable] | None = None) -> dict[tuple, list[int]]:
    """Request indices grouped into what may share one `generate` call: the same temperature, top-k and
    shape (for completions, the token budget and n); a seeded request alone, since its answer must not
    depend on its batch-mates."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(settings):
        seeded = None if s.seed is None else ("seeded", i)
        groups[(s.temperature, s.top_k, seeded, None if shapes is None else shapes[i])].append(i)
    return groups
