"""The Serve app over real HTTP on 127.0.0.1: answers, batching, and clear 4xx errors that never kill it."""

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conf.schema import ServeConfig

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_sft_run, ray_local):
    from ray import serve

    from serve.launch import start

    settings = ServeConfig(port=free_port(), max_terms=3, max_batch_size=8)
    url = start(str(tiny_sft_run), settings)
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client
    serve.shutdown()


def test_health_and_docs(server):
    health = server.get("/healthz").json()
    assert health["status"] == "ok" and health["model"]["version"] == "sft" and health["precision"] == "float32"
    assert health["threads"] == 1  # the whole CPUs of the half a CPU a replica reserves by default, at least one
    assert server.get("/docs").status_code == 200
    assert "/v1/continue" in server.get("/openapi.json").json()["paths"]


def test_continue_returns_terms_text_and_model(server):
    body = server.post("/v1/continue", json={"sequence": [1, 2, 4, 8, 16], "max_terms": 2}).json()
    assert set(body) == {"terms", "text", "finished", "model"}
    assert body["text"] == ",".join(map(str, body["terms"]))
    assert len(body["terms"]) == 2 or not body["finished"]
    again = server.post("/v1/continue", json={"sequence": [1, 2, 4, 8, 16], "max_terms": 2}).json()
    assert again["terms"] == body["terms"]  # greedy is deterministic


def test_continue_returns_each_terms_log_probability_when_asked(server):
    body = server.post("/v1/continue", json={"sequence": [1, 2, 4, 8, 16], "max_terms": 2, "logprobs": True}).json()
    assert len(body["logprobs"]) == len(body["terms"]) and all(lp <= 0 for lp in body["logprobs"])
    plain = server.post("/v1/continue", json={"sequence": [1, 2, 4, 8, 16], "max_terms": 2}).json()
    assert plain["terms"] == body["terms"] and "logprobs" not in plain


def test_a_terms_log_probability_is_the_policys_own(tiny_sft_run):
    import torch

    from models.rollout import action_logprobs
    from serve.engine import PolicyEngine, Sampling

    engine = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt")
    prefix = [1, 2, 3, 4, 5]
    result = engine.continue_batch([(prefix, 1, Sampling())])[0]
    assert result.finished and len(result.logprobs) == 1
    prompt, response = engine.space.encode_prompt(prefix), engine.space.encode_response(result.terms)
    tokens = torch.tensor([prompt + response])
    with torch.no_grad():  # teacher-forced, independently of the sampler
        forced = action_logprobs(engine.model, tokens, torch.ones_like(tokens))[0, len(prompt) :].sum()
    assert result.logprobs[0] == pytest.approx(float(forced), abs=1e-4)


def test_seeded_sampling_is_reproducible_and_batching_does_not_change_answers(server):
    request = {"sequence": [3, 6, 9, 12], "temperature": 1.0, "seed": 7}
    first = server.post("/v1/continue", json=request).json()
    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(lambda _: server.post("/v1/continue", json=request).json(), range(16)))
    assert all(b["terms"] == first["terms"] for b in bodies)


def test_openai_style_completion(server, tiny_sft_run):
    body = server.post("/v1/completions", json={"prompt": "1,2,4,8,16,", "max_tokens": 8}).json()
    assert body["object"] == "text_completion" and body["choices"][0]["finish_reason"] in ("stop", "length")
    assert isinstance(body["choices"][0]["text"], str)
    usage = body["usage"]  # OpenAI's three counts; the prompt is <bos> 1 , 2 , 4 , 8 , 1 6 ?: 12 tokens
    assert usage["prompt_tokens"] == 12 and usage["total_tokens"] == 12 + usage["completion_tokens"]
    several = server.post("/v1/completions", json={"prompt": "1,2,4,8,16,", "n": 3, "temperature": 1.0, "seed": 5})
    from serve.engine import PolicyEngine, Sampling

    engine = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt")  # a seeded request's draws are reproducible
    expected = engine.complete_batch([([1, 2, 4, 8, 16], 16, Sampling(1.0, None, 5), 3)])[0]
    assert [(c["index"], c["text"], c["finish_reason"]) for c in several.json()["choices"]] == [
        (k, e.text, e.finish_reason) for k, e in enumerate(expected)
    ]
    assert several.json()["usage"]["completion_tokens"] == sum(e.tokens for e in expected)


def test_concurrent_completions_each_get_the_budget_they_asked_for(server):
    def ask(i: int) -> dict:
        return server.post("/v1/completions", json={"prompt": "1,2,4,8,16,", "max_tokens": 1 + 15 * (i % 2)}).json()

    alone = {budget: ask(budget - 1) for budget in (1, 16)}
    with ThreadPoolExecutor(16) as pool:  # they meet in the replica's batches
        bodies = list(pool.map(ask, range(32)))
    for i, body in enumerate(bodies):
        expected = alone[1 + 15 * (i % 2)]
        assert body["choices"][0] == expected["choices"][0] and body["usage"] == expected["usage"]
    assert alone[1]["usage"]["completion_tokens"] == 1 and alone[1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "payload", "named"),
    [
        ("/v1/continue", {"sequence": "1,2,3"}, "sequence"),
        ("/v1/continue", {"sequence": []}, "sequence"),
        ("/v1/continue", {"sequence": [1, 2.5]}, "sequence"),
        ("/v1/continue", {"sequence": [1, 2], "max_terms": 0}, "max_terms"),
        ("/v1/continue", {"sequence": [1, 2], "max_terms": 4}, "max_terms"),
        ("/v1/continue", {"sequence": [10**30, 1]}, "digits"),
        ("/v1/continue", {"sequence": list(range(1000, 1100))}, "context"),
        ("/v1/continue", {"sequence": [1, 2], "temperature": "hot"}, "temperature"),
        ("/v1/continue", {"sequence": [1, 2], "colour": "red"}, "colour"),
        ("/v1/completions", {"prompt": "one, two"}, "integers"),
        ("/v1/completions", {"prompt": ",".join(map(str, range(1000, 1100)))}, "context"),
        ("/v1/completions", {"prompt": "1,2,", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "1,2,", "n": 17}, "n"),
    ],
)
def test_bad_input_is_a_4xx_that_names_the_problem(server, path, payload, named):
    response = server.post(path, json=payload)
    assert 400 <= response.status_code < 500
    assert named in response.text
    assert server.get("/healthz").status_code == 200


def test_malformed_json_is_a_4xx(server):
    response = server.post("/v1/continue", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "json" in response.text.lower()


def test_two_hundred_concurrent_requests_all_succeed(server):
    def ask(i: int) -> int:
        return server.post("/v1/continue", json={"sequence": [i, i + 2, i + 4, i + 6]}).status_code

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(ask, range(200)))
    assert codes == [200] * 200


def test_the_endpoint_gives_the_exam_answer_where_the_trained_policy_knows_it(server, tiny_sft_run):
    from serve.engine import PolicyEngine, Sampling
    from world.exam import build_bank

    engine = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt")
    bank = build_bank(0, 1000, 1)
    answers = engine.continue_batch([(list(q.prefix), 1, Sampling()) for q in bank])
    known = [q for q, a in zip(bank, answers, strict=True) if tuple(a.terms) == q.answer]
    assert known, "the tiny policy answers no exam question: nothing to check"
    body = server.post("/v1/continue", json={"sequence": list(known[0].prefix)}).json()
    assert tuple(body["terms"]) == known[0].answer and body["finished"]


def test_a_bfloat16_deployment_answers_as_its_bfloat16_engine_does(server, tiny_sft_run):
    """`serve.precision: bfloat16` (and `serve.threads`) reach the replicas: they say so and answer what a bfloat16
    engine answers, log-probs included (a float32 replica's differ in their low bits). Redeployed in place, then
    put back."""
    from serve.engine import PolicyEngine, Sampling
    from serve.launch import start

    port = server.base_url.port
    request = {"sequence": [1, 2, 4, 8, 16], "max_terms": 2, "logprobs": True}
    as_float32 = server.post("/v1/continue", json=request).json()
    try:
        bf16 = ServeConfig(port=port, max_terms=3, max_batch_size=8, precision="bfloat16", threads=2)
        start(str(tiny_sft_run), bf16)
        health = server.get("/healthz").json()
        assert health["precision"] == "bfloat16" and health["threads"] == 2  # `serve.threads` reaches the replica
        body = server.post("/v1/continue", json=request).json()
        local = PolicyEngine(tiny_sft_run / "sft" / "checkpoint.pt", precision="bfloat16")
        expected = local.continue_batch([(request["sequence"], 2, Sampling())])[0]
        assert body["terms"] == expected.terms and body["logprobs"] == pytest.approx(expected.logprobs, abs=1e-6)
        assert body["logprobs"] != as_float32["logprobs"]
    finally:
        start(str(tiny_sft_run), ServeConfig(port=port, max_terms=3, max_batch_size=8))
    assert server.get("/healthz").json()["precision"] == "float32"
