"""Serve latency and throughput at concurrency 1, 16 and 64 over real HTTP on 127.0.0.1.

    python -m bench.serve [--model runs/demo] [--requests 200] [--url http://127.0.0.1:8000]

Without `--url` it starts the Serve app itself (an untrained demo-shape policy unless
`--model` is given). Requests are greedy one-term continuations of varied sequences, on
`/v1/continue` and then on the OpenAI-style `/v1/completions` (`--endpoints` picks). Prints one
JSON line: p50/p99 latency (ms) and requests/s per concurrency (`concurrency_N` for
`/v1/continue`, `completions_concurrency_N` for `/v1/completions`), and the precision and torch
threads the replica says it runs on (`--precision`, `--threads`: `serve.precision`, `serve.threads`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import get_args

import httpx

from conf.schema import Precision

ENDPOINTS = ("continue", "completions")


def endpoint_list(text: str) -> list[str]:
    """`--endpoints continue,completions` -> the names, refusing one the server does not have."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ENDPOINTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"endpoints are {', '.join(ENDPOINTS)}; got {text!r}")
    return names


def request(endpoint: str, i: int) -> tuple[str, dict]:
    """The i-th request of a load: the same varied sequences on either endpoint."""
    terms = [i % 50, i % 50 + 3, i % 50 + 6, i % 50 + 9]
    if endpoint == "completions":
        return "/v1/completions", {"prompt": ",".join(map(str, terms)) + ","}
    return "/v1/continue", {"sequence": terms}


async def load(url: str, concurrency: int, requests: int, endpoint: str = "continue") -> dict:
    latencies: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            path, body = request(endpoint, i)
            async with semaphore:
                start = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()

        await asyncio.gather(*(one(i) for i in range(min(8, requests))))  # warm-up
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "requests_per_s": round(requests / wall, 1),
    }


def untrained_checkpoint(folder: Path) -> Path:
    import torch

    from models.checkpoint import save_checkpoint
    from models.gpt import GPT, GPTConfig
    from world.actions import ActionSpace

    torch.manual_seed(0)
    space = ActionSpace()
    path = folder / "bench" / "sft" / "checkpoint.pt"
    save_checkpoint(path, model=GPT(GPTConfig(space.size, 4, 4, 128, 128)), space=space)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--model")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument(
        "--endpoints", type=endpoint_list, default=list(ENDPOINTS), help="comma-separated: continue, completions"
    )
    parser.add_argument("--precision", choices=get_args(Precision), default="float32", help="serve.precision")
    parser.add_argument("--threads", type=int, default=None, help="serve.threads (unset: the CPUs a replica reserves)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if url is None:
            from conf.schema import ServeConfig
            from serve.launch import start

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            settings = ServeConfig(port=port, precision=args.precision, threads=args.threads)
            url = start(args.model or str(untrained_checkpoint(Path(tmp))), settings)
        health = httpx.get(f"{url}/healthz").json()  # the endpoint's own, where --url names one
        result = {
            "bench": "serve", "url": url, "requests": args.requests, "precision": health["precision"],
            "threads": health.get("threads"),  # an endpoint of an older version does not say
        }  # fmt: skip
        for endpoint in args.endpoints:
            prefix = "" if endpoint == "continue" else f"{endpoint}_"
            for concurrency in (1, 16, 64):
                result[f"{prefix}concurrency_{concurrency}"] = asyncio.run(
                    load(url, concurrency, args.requests, endpoint)
                )
        if args.url is None:
            from ray import serve

            serve.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
