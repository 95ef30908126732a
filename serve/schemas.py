"""Request and response models of the HTTP API; a bad request fails here with a message naming the field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(BaseModel):
    name: str
    version: str


class ContinueRequest(Strict):
    sequence: list[StrictInt] = Field(min_length=1, description="The terms shown, e.g. [1, 2, 4, 8, 16].")
    max_terms: StrictInt = Field(1, ge=1, description="How many next terms to produce.")
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 = greedy.")
    top_k: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = Field(None, description="Makes sampling (temperature > 0) reproducible.")
    logprobs: bool = Field(False, description="Also return each term's log-probability under the policy.")


class ContinueResponse(BaseModel):
    terms: list[int]
    text: str
    finished: bool = Field(description="Every term was well-formed and closed by <eor>.")
    model: ModelInfo
    logprobs: list[float] | None = Field(
        None,
        description="With logprobs: per term, the log-probability of the response it was read from (its actions "
        "through <eor>), under the distribution sampled (the policy's own at temperature 0 or 1).",
    )


class CompletionRequest(Strict):
    """OpenAI-style completion: the prompt is sequence text such as "1,2,4,8,16,"."""

    prompt: str = Field(min_length=1)
    model: str | None = None
    max_tokens: StrictInt = Field(16, ge=1)
    n: StrictInt = Field(1, ge=1, le=16, description="Completions of the prompt, sampled independently.")
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    top_k: StrictInt | None = Field(None, ge=1)
    seed: StrictInt | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str


class CompletionResponse(BaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: dict[str, int]
