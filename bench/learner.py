"""How fast the learner learns: tokens/s and GFLOP/s for SFT and for the RL loss, against the machine's matmul peak.

    python -m bench.learner [--steps 10] [--threads 1] [--batch 128]

The peak is a 1024x1024 float32 matmul measured in the same run and thread count, on
both kernels PyTorch has on the CPU (MKL's sgemm and oneDNN: on an AVX-512 AMD CPU sgemm
does not use AVX-512, see models/kernels.py); the higher one is the machine's peak. A
training step costs ~6 x params x tokens FLOPs (forward + backward); SFT is timed with
the policy's linears on oneDNN and on sgemm, one after the other; `sft_tokens_per_s` is
the kernel this machine uses by default (`linears`). The RL loss runs
through RLlib's LearnerGroup with `num_learners` 0 (local) and 2 (DDP over gloo, each
learner half the batch). `packing` times the demo's own batches (SFT: 128 exam questions,
templates drawn evenly; pretraining: 64 corpus documents) one document per row padded to
the longest, and packed into rows of 128 (`pipelines.train_loop.pack`): real (non-padding)
tokens/s and the share of real tokens in each layout. Prints one JSON line.
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


def demo_batches(stage: str, batch: int, count: int, packed: bool) -> list:
    """`count` batches of the demo's own, built by its stages' batch functions (packed or padded)."""
    from conf.load import load_config
    from pipelines import sft, train_loop

    cfg = load_config("demo")
    space = ActionSpace(digit_order=cfg.world.digit_order)
    width = cfg.model.max_len if packed else None
    if stage == "pretrain":
        from pipelines.pretrain import documents_at

        docs = (documents_at(cfg.world, space, "train", step, batch) for step in range(count))
        return [train_loop.lay_out(d, space.pad_id, width) for d in docs]
    from world.exam import group_by_template

    questions = sft.train_questions(cfg)
    by_template = group_by_template(questions)
    return [sft.batch_at(space, questions, cfg.world.seed, step, batch, by_template, width) for step in range(count)]


def layout_tokens_per_s(model: GPT, laid: list, steps: int) -> tuple[float, float]:
    """Real tokens/s of next-token training steps on laid-out batches; and the share of real tokens."""
    from algos.lm import masked_next_token_loss

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    real = 0
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        b = laid[i % len(laid)]
        loss, _ = masked_next_token_loss(model(b.tokens, b.mask, b.documents), b.tokens, b.action_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        real += int(b.mask.sum()) if i else 0
    fill = sum(float(b.mask.float().mean()) for b in laid) / len(laid)
    return real / (time.perf_counter() - start), fill


def packing(model: GPT, steps: int) -> dict[str, float]:
    """The demo's SFT and pretraining batches, padded vs packed, in turn."""
    out: dict[str, float] = {}
    for stage, batch in (("sft", 128), ("pretrain", 64)):
        padded, padded_fill = layout_tokens_per_s(model, demo_batches(stage, batch, 4, packed=False), steps)
        packed, packed_fill = layout_tokens_per_s(model, demo_batches(stage, batch, 4, packed=True), steps)
        out |= {
            f"{stage}_real_tokens_per_s_padded": round(padded), f"{stage}_real_tokens_per_s_packed": round(packed),
            f"{stage}_packing_speedup": round(packed / padded, 2),
            f"{stage}_fill_padded": round(padded_fill, 3), f"{stage}_fill_packed": round(packed_fill, 3),
        }  # fmt: skip
    return out


def rl_tokens_per_s(model: GPT, batch: int, steps: int, num_learners: int) -> float:
    from actors.learner import build_learner_group, policy_weights
    from conf.load import load_config
    from models.rollout import sample_rollouts, state_logprobs
    from pipelines.rl_batch import learner_batch

    space = ActionSpace()
    overrides = [f"rl.actors.learner.num_learners={num_learners}", "rl.actors.learner.num_cpus_per_learner=0.5"]
    rl = load_config("demo", overrides).rl
    prompts = [space.encode_prompt([i, 2 * i, 3 * i, 4 * i, 5 * i]) for i in range(1, batch // 4 + 1)]
    rollouts = sample_rollouts(model, space, prompts, group_size=4, max_new_tokens=8, policy_version=0)
    advantages = torch.randn(rollouts.size)[:, None] * rollouts.action_mask
    with torch.no_grad():  # the reference's distributions, as RLHF's batch carries them for the exact KL
        ref_dist = state_logprobs(model, rollouts.tokens, rollouts.mask) * rollouts.action_mask[:, :, None]
    data = learner_batch(rollouts, advantages, rollouts.logprobs, ref_dist, 8, rl.kl_coef)
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
    layouts = packing(model, args.steps)
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
        "rl_tokens_per_s_local": round(rl_local), "rl_tokens_per_s_2_learners": round(rl_ddp), **layouts,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
