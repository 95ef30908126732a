"""Benchmarks end with one JSON line (what bench/README.md's figures come from)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_sampler_bench_prints_json_with_the_speedup():
    out = subprocess.run(
        [sys.executable, "-m", "bench.sampler", "--batch", "4", "--new-tokens", "4"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bench"] == "sampler" and result["tokens_per_s"] > 0 and result["kv_speedup"] > 0
    assert result["tokens_per_s"] == result[f"{result['linears']}_tokens_per_s"]  # the machine's default kernel
    for paired in (result["vs_hf_paired"], result["onednn_speedup_paired"], result["group"]["vs_hf_paired"]):
        assert paired["rounds"] == 3 and 0 < paired["q1"] <= paired["median"] <= paired["q3"]  # --repeats 3
    where = result["where_time_goes"]  # one call = prefill + the loop of steps and choices after it, in C++
    assert where["prefill_ms"] > 0 and where["after_prompt_ms"] > 0
    assert abs(where["prefill_ms"] + where["after_prompt_ms"] - where["call_ms"]) < 0.15  # rounded to 0.1 ms
    python = where["python_loop"]  # the same call, its loop in Python: prefill + 3 decoding steps + the loop
    assert python["prefill_ms"] > 0 and python["decode_ms_per_step"] > 0 and python["loop_ms"] >= 0
    parts = python["prefill_ms"] + 3 * python["decode_ms_per_step"] + python["loop_ms"]
    assert abs(parts - python["call_ms"]) < 0.5
    assert where["profiled_ops_ms"]["linears"] > 0
    assert 0 < where["products_floor_ms"] < where["call_ms"]  # the products alone: a floor under the call
    bf16 = result["bfloat16"]  # the samplers' other precision, beside ours in float32 in the same run
    assert bf16["tokens_per_s"] > 0
    assert abs(bf16["vs_float32"] - bf16["tokens_per_s"] / result["tokens_per_s"]) < 0.02  # rounded figures
    assert bf16["group"]["tokens_per_s"] > 0
    assert abs(bf16["fused_speedup"] - bf16["tokens_per_s"] / bf16["eager_tokens_per_s"]) < 0.02  # its step fused too
    assert bf16["group"]["fused_speedup"] > 0


def test_serve_bench_prints_json_with_latencies_at_each_concurrency_and_the_precision_served():
    out = subprocess.run(
        [sys.executable, "-m", "bench.serve", "--requests", "4", "--endpoints", "continue", "--precision", "bfloat16",
         "--threads", "2"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bench"] == "serve" and result["precision"] == "bfloat16" and result["requests"] == 4
    assert result["threads"] == 2
    for concurrency in (1, 16, 64):
        level = result[f"concurrency_{concurrency}"]
        assert 0 < level["p50_ms"] <= level["p99_ms"], level
