"""The action space: every token the policy can ever emit, frozen at pretraining.

A token is an action in the token-level MDP. Numbers are spelled in digits, so the set
is small and fixed and any integer can be written. The SFT/RL prompt format needs one
marker, `?` ("what comes next"), and it appears in the pretraining text too, so no
later stage opens a new action (WORLDVIEW rule 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

PAD, BOS, EOR = "<pad>", "<bos>", "<eor>"
SEP, QUERY, MINUS = ",", "?", "-"
DIGITS = tuple("0123456789")
DEFAULT_TOKENS: tuple[str, ...] = (PAD, BOS, EOR, *DIGITS, MINUS, SEP, QUERY)

DigitOrder = Literal["msb", "lsb"]


class ActionSpaceMismatch(ValueError):
    """A checkpoint or data set was made under a different action space."""


class MalformedText(ValueError):
    """Token ids that do not spell a list of integers."""


@dataclass(frozen=True)
class ActionSpace:
    """Token vocabulary plus the spelling of numbers; saved with every checkpoint.

    `digit_order="lsb"` spells digits least-significant first (123 -> "321"), which puts
    the carry before the digit it changes: easier for a left-to-right policy.
    """

    tokens: tuple[str, ...] = DEFAULT_TOKENS
    digit_order: DigitOrder = "msb"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("duplicate tokens in the action space")
        missing = set(DEFAULT_TOKENS) - set(self.tokens)
        if missing:
            raise ValueError(f"action space lacks required tokens: {sorted(missing)}")
        if self.digit_order not in ("msb", "lsb"):
            raise ValueError(f"digit_order must be 'msb' or 'lsb', not {self.digit_order!r}")
        object.__setattr__(self, "_index", {tok: i for i, tok in enumerate(self.tokens)})

    # --- ids of the special actions -------------------------------------------------
    @property
    def size(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise ActionSpaceMismatch(f"token {token!r} is not an action of this space") from None

    @property
    def pad_id(self) -> int:
        return self.id(PAD)

    @property
    def bos_id(self) -> int:
        return self.id(BOS)

    @property
    def eor_id(self) -> int:
        return self.id(EOR)

    @property
    def query_id(self) -> int:
        return self.id(QUERY)

    @property
    def sep_id(self) -> int:
        return self.id(SEP)

    # --- spelling -------------------------------------------------------------------
    def spell_number(self, value: int) -> list[str]:
        digits = list(str(abs(value)))
        if self.digit_order == "lsb":
            digits.reverse()
        return ([MINUS] if value < 0 else []) + digits

    def spell_terms(self, terms: Sequence[int]) -> list[str]:
        out: list[str] = []
        for i, value in enumerate(terms):
            if i:
                out.append(SEP)
            out.extend(self.spell_number(int(value)))
        return out

    def encode_tokens(self, tokens: Sequence[str]) -> list[int]:
        return [self.id(tok) for tok in tokens]

    def decode_tokens(self, ids: Sequence[int]) -> list[str]:
        if any(not 0 <= i < self.size for i in ids):
            raise MalformedText(f"token id out of range 0..{self.size - 1}")
        return [self.tokens[i] for i in ids]

    def encode_terms(self, terms: Sequence[int]) -> list[int]:
        """`[1, -20]` -> ids of `1,-20` (no framing tokens)."""
        return self.encode_tokens(self.spell_terms(terms))

    def decode_terms(self, ids: Sequence[int]) -> list[int]:
        """Inverse of `encode_terms`; raises MalformedText on anything else."""
        return self.parse_terms(self.decode_tokens(ids))

    def parse_terms(self, tokens: Sequence[str]) -> list[int]:
        if not tokens:
            return []
        terms: list[int] = []
        chunk: list[str] = []
        for tok in [*tokens, SEP]:
            if tok == SEP:
                terms.append(self._parse_number(chunk))
                chunk = []
            else:
                chunk.append(tok)
        return terms

    def _parse_number(self, chunk: list[str]) -> int:
        negative = bool(chunk) and chunk[0] == MINUS
        digits = chunk[1:] if negative else chunk
        if not digits or any(tok not in DIGITS for tok in digits):
            raise MalformedText(f"not a number: {''.join(chunk)!r}")
        if self.digit_order == "lsb":
            digits = digits[::-1]
        if len(digits) > 1 and digits[0] == "0":
            raise MalformedText(f"leading zero: {''.join(chunk)!r}")
        if negative and digits == ["0"]:
            raise MalformedText("negative zero")
        value = int("".join(digits))
        return -value if negative else value

    # --- the MDP's framing ------------------------------------------------------------
    def encode_prompt(self, prefix: Sequence[int]) -> list[int]:
        """The state the policy starts from: `<bos>1,2,4,8,16?`."""
        return [self.bos_id, *self.encode_terms(prefix), self.query_id]

    def encode_response(self, terms: Sequence[int]) -> list[int]:
        """The actions of a finished episode: `32<eor>`."""
        return [*self.encode_terms(terms), self.eor_id]

    def encode_sequence(self, terms: Sequence[int]) -> list[int]:
        """A pretraining document: `<bos>2,3,5,7,11<eor>`."""
        return [self.bos_id, *self.encode_terms(terms), self.eor_id]

    def parse_response(self, ids: Sequence[int]) -> ParsedResponse:
        """Read a sampled response: the terms up to `<eor>`, or why it is malformed."""
        tokens = self.decode_tokens([i for i in ids if i != self.pad_id])
        finished = EOR in tokens
        body = tokens[: tokens.index(EOR)] if finished else tokens
        try:
            terms = self.parse_terms(body)
        except MalformedText as err:
            return ParsedResponse(terms=None, finished=finished, error=str(err))
        if not terms:
            return ParsedResponse(terms=None, finished=finished, error="empty response")
        return ParsedResponse(terms=terms, finished=finished, error=None)

    # --- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"tokens": list(self.tokens), "digit_order": self.digit_order}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpace:
        return cls(tokens=tuple(data["tokens"]), digit_order=data["digit_order"])

    def require_same(self, other: ActionSpace, what: str = "checkpoint") -> None:
        """Loading under another action space would silently remap every action."""
        if self != other:
            raise ActionSpaceMismatch(
                f"{what} was made under action space {other.to_dict()}, "
                f"but the current one is {self.to_dict()}; the action space is frozen at pretraining"
            )


@dataclass(frozen=True)
class ParsedResponse:
    """A response read back into terms. `terms is None` means malformed."""

    terms: list[int] | None
    finished: bool
    error: str | None

    @property
    def well_formed(self) -> bool:
        """Parseable integers closed by `<eor>`: the format the exam accepts."""
        return self.terms is not None and self.finished

    @property
    def answer(self) -> list[int] | None:
        """The terms when well-formed, else None: what the exam grades."""
        return self.terms if self.well_formed else None
