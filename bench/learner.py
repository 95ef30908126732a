"""How fast the learner learns: tokens/s and GFLOP/s for SFT and for the RL loss, against the machine's matmul peak.

    python -m bench.learner [--steps 10] [--threads 1] [--batch 128]

The peak is a 1024x1024 float32 matmul measured in the same run and thread count, on
both kernels PyTorch has on the CPU (MKL's sgemm and oneDNN: on an AVX-512 AMD CPU sgemm
does not use AVX-512, see models/kernels.py); the higher one is the machine's peak. A
training step costs ~6 x params x tokens FLOPs (forward + backward); SFT is timed with
the policy's linears on oneDNN and on sgemm, one after the other; `sft_tokens_per_s` is
the kernel this machine uses by default (`linears`). The RL loss runs
through RLlib's LearnerGroup with `num_learners` 0 (local) and 2 (DDP over gloo, each
learner half the batch). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from models.gpt import GPT, GPTConfig
from models.kernels import Linear, current_kernel, onednn
from world.actions import ActionSpace


def matmul_gflops(threads: int, on_onednn: bool, n: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of an n x n float32 product on oneDNN (through `models.kernels.Linear`) or on sgemm."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    layer = Linear(n, n, bias=False)
    layer.weight.data = b
    multiply = (lambda: layer(a)) if on_onednn else (lambda: a @ b)
    with torch.no_grad(), onednn(on_onednn):
        multiply()
        start = time.perf_counter()
        for _ in range(repeats):
            multiply()
        return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def sft_tokens_per_s(model: GPT, batch: int, steps: int) -> tuple[float, int]:
    from algos.lm import masked_next_token_loss

    tokens = torch.randint(3, 16, (batch, 32))
    mask, actions = torch.ones_like(tokens), torch.ones_like(tokens)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss, _ = masked_next_token_loss(model(tokens, mask), tokens, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tokens.numel() * steps / (time.perf_counter() - start), tokens.numel()


def rl_tokens_per_s(model: GPT, batch: int, steps: int, num_learners: int) -> float:
    from actors.learner import build_learner_group, policy_weights
    from conf.load import load_config
    from models.rollout import sample_rollouts
    from pipelines.rlhf import learner_batch

    space = ActionSpace()
    overrides = [f"rl.actors.learner.num_learners={num_learners}", "rl.actors.learner.num_cpus_per_learner=0.5"]
    rl = load_config("demo", overrides).rl
    prompts = [space.encode_prompt([i, 2 * i, 3 * i, 4 * i, 5 * i]) for i in range(1, batch // 4 + 1)]
    rollouts = sample_rollouts(model, space, prompts, group_size=4, max_new_tokens=8, policy_version=0)
    advantages = torch.randn(rollouts.size)[:, None] * rollouts.action_mask
    data = learner_batch(rollouts, advantages, rollouts.logprobs, 8)
    group = build_learner_group(rl, model.cfg, space.size)
    try:
        group.set_weights(policy_weights(model))
        for i in range(steps + 1):
            if i == 1:
                start = time.perf_counter()
            group.update(batch=data, timesteps={"num_env_steps_sampled_lifetime": i})
        return rollouts.tokens.numel() * steps / (time.perf_counter() - start)
    finally:
        group.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    sgemm_peak, onednn_peak = matmul_gflops(args.threads, False), matmul_gflops(args.threads, True)
    peak = max(sgemm_peak, onednn_peak)
    torch.manual_seed(0)
    space = ActionSpace()
    model = GPT(GPTConfig(space.size, 4, 4, 128, 128))
    params = model.num_params()
    default = current_kernel()
    with onednn(False):
        sft_sgemm, _ = sft_tokens_per_s(model, args.batch, args.steps)
    with onednn(True):
        sft_onednn, _ = sft_tokens_per_s(model, args.batch, args.steps)
    sft = sft_onednn if default == "onednn" else sft_sgemm
    from actors.cluster import init_ray

    init_ray()
    rl_local = rl_tokens_per_s(model, args.batch, args.steps, 0)
    rl_ddp = rl_tokens_per_s(model, args.batch, args.steps, 2)
    gflops = 6 * params * sft / 1e9
    print(json.dumps({
        "bench": "learner", "params": params, "threads": args.threads, "batch": args.batch,
        "matmul_peak_gflops": round(peak, 1), "sgemm_peak_gflops": round(sgemm_peak, 1),
        "onednn_peak_gflops": round(onednn_peak, 1), "linears": default, "sft_tokens_per_s": round(sft),
        "sft_tokens_per_s_onednn": round(sft_onednn), "sft_tokens_per_s_sgemm": round(sft_sgemm),
        "sft_gflops": round(gflops, 2), "sft_share_of_peak": round(gflops / peak, 3),
        "rl_tokens_per_s_local": round(rl_local), "rl_tokens_per_s_2_learners": round(rl_ddp),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
