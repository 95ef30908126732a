"""The Ray Serve deployment of the final policy: FastAPI ingress, pydantic models, dynamic batching.

    POST /v1/continue      {"sequence": [1, 2, 4, 8, 16], "max_terms": 1} -> {"terms": [32], ...}
    POST /v1/completions   OpenAI-style: {"prompt": "1,2,4,8,16,"} -> {"choices": [{"text": "32"}]}
    GET  /healthz          liveness, which model is loaded and at which precision (`serve.precision`)
    GET  /docs             the OpenAPI docs

Bad input is a 4xx JSON error naming the problem; a failure inside the model is a 500
JSON error for that request only: the server keeps serving.
"""

import logging
import time
import uuid

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from conf.schema import ServeConfig
from serve.engine import BadRequest, Completion, Continuation, PolicyEngine, Sampling
from serve.schemas import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ContinueRequest,
    ContinueResponse,
    ModelInfo,
)

log = logging.getLogger("tokenmdp.serve")
app = FastAPI(title="TokenMDP policy", description="Continue integer sequences with the RLHF-trained policy.")


@app.exception_handler(BadRequest)
async def _bad_request(_: Request, err: BadRequest) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(err)})


@app.exception_handler(Exception)
async def _internal(_: Request, err: Exception) -> JSONResponse:  # pragma: no cover - last resort
    log.exception("request failed")
    return JSONResponse(status_code=500, content={"detail": f"internal error: {type(err).__name__}"})


@serve.deployment
@serve.ingress(app)
class PolicyServer:
    def __init__(self, model: str, tracking_uri: str, settings: dict) -> None:
        from pipelines.policy_source import resolve_model

        checkpoint, name, version = resolve_model(model, tracking_uri or None)  # in the replica: works on any node
        config = ServeConfig(**settings)  # the launcher's `serve:` section, read back in the replica
        self.engine = PolicyEngine(
            checkpoint, max_terms=config.max_terms, max_term_digits=config.max_term_digits,
            threads=config.replica_threads, precision=config.precision,
        )  # fmt: skip
        self.info = ModelInfo(name=name, version=version)
        for batched in (self._continue, self._complete):
            batched.set_max_batch_size(config.max_batch_size)
            batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @app.get("/healthz")
    async def healthz(self) -> dict:
        return {
            "status": "ok", "model": self.info.model_dump(), "precision": self.engine.precision,
            "threads": torch.get_num_threads(),
        }  # fmt: skip

    @app.post("/v1/continue", response_model=ContinueResponse, response_model_exclude_none=True)
    async def continue_sequence(self, request: ContinueRequest) -> ContinueResponse:
        self.engine.check_sequence(request.sequence, request.max_terms)
        sampling = Sampling(request.temperature, request.top_k, request.seed)
        result = await self._continue((request.sequence, request.max_terms, sampling))
        return ContinueResponse(
            terms=result.terms, text=",".join(map(str, result.terms)), finished=result.finished, model=self.info,
            logprobs=result.logprobs if request.logprobs else None,
        )  # fmt: skip

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _continue(self, items: list[tuple[list[int], int, Sampling]]) -> list[Continuation]:
        return self.engine.continue_batch(items)

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(self, request: CompletionRequest) -> CompletionResponse:
        sequence = self.engine.parse_prompt(request.prompt)
        self.engine.check_sequence(sequence, 1)
        self.engine.completion_budget(sequence, request.max_tokens)  # refused here, before it joins a batch
        sampling = Sampling(request.temperature, request.top_k, request.seed)
        results = await self._complete((sequence, request.max_tokens, sampling, request.n))
        prompt_tokens = len(self.engine.space.encode_prompt(sequence))
        completion_tokens = sum(r.tokens for r in results)
        choices = [CompletionChoice(index=k, text=r.text, finish_reason=r.finish_reason) for k, r in enumerate(results)]
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex[:12]}", created=int(time.time()), model=f"{self.info.name}/{self.info.version}",
            choices=choices,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens},
        )  # fmt: skip

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _complete(self, items: list[tuple[list[int], int, Sampling, int]]) -> list[list[Completion]]:
        return self.engine.complete_batch(items)
