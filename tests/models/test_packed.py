import pytest
import torch

from models.gpt import GPT, GPTConfig, attention_bias
from models.kernels import onednn
from models.sampling import left_pad
from world.actions import ActionSpace

SPACE = ActionSpace()
INF = float("-inf")


def prompts(n: int) -> list[list[int]]:
    """n prompts of unequal lengths, so left padding leaves holes for the prefill to skip."""
    return [SPACE.encode_prompt([i, 3 * i + 1, -i, 7 * i][: 1 + i % 4]) for i in range(1, n + 1)]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=SPACE.size, n_layer=3, n_head=4, d_model=32, max_len=64)).eval()


def read(m: GPT, batch: list[list[int]], group: int, use_prefill: bool):
    tokens, mask = left_pad(batch, SPACE.pad_id)
    cache = m.new_cache(len(batch), tokens.shape[1] + 2, group=group)
    with torch.inference_mode():
        h = m.prefill(tokens, mask, cache) if use_prefill else m.hidden(tokens, mask, cache)[:, -1]
    real = mask.bool().repeat_interleave(group, dim=0)  # (B * G, T): the cache positions a step attends to
    return h, cache, real


@pytest.mark.parametrize("kernel", ["sgemm", "onednn"])
@pytest.mark.parametrize("group", [1, 3])
def test_prefill_reads_prompts_as_hidden_does_to_the_bit(model, kernel, group):
    with onednn(kernel == "onednn"):
        fast, fast_cache, real = read(model, prompts(20), group, use_prefill=True)
        full, full_cache, _ = read(model, prompts(20), group, use_prefill=False)
    assert fast.shape == (20, 32) and torch.equal(fast, full)
    assert fast_cache.length == full_cache.length == real.shape[1]
    for store in ("keys", "values"):  # padding's keys are never attended to: only real positions must agree
        fast_kv, full_kv = (
            getattr(c, store)[:, :, :, : real.shape[1]].transpose(2, 3) for c in (fast_cache, full_cache)
        )
        assert torch.equal(fast_kv[:, real], full_kv[:, real])


def test_below_sixteen_rows_prefill_agrees_within_rounding(model):
    """The products' kernels sum a handful of rows in another order than many (models/kernels.py)."""
    fast, _, _ = read(model, prompts(3), 1, use_prefill=True)
    full, _, _ = read(model, prompts(3), 1, use_prefill=False)
    assert torch.allclose(fast, full, atol=1e-5)


def test_prefill_reads_into_an_empty_cache_only(model):
    tokens, mask = left_pad(prompts(2), SPACE.pad_id)
    cache = model.new_cache(2, 2 * tokens.shape[1])
    with torch.inference_mode():
        model.prefill(tokens, mask, cache)
        with pytest.raises(ValueError, match="empty cache"):
            model.prefill(tokens, mask, cache)


def test_prefill_refuses_a_prompt_longer_than_the_context(model):
    tokens = torch.full((1, 65), 3)
    with torch.inference_mode(), pytest.raises(ValueError, match="context of 64 tokens"):
        model.prefill(tokens, torch.ones_like(tokens), model.new_cache(1, 70))


def test_the_attention_bias_is_causal_over_real_tokens_and_a_pad_sees_itself():
    bias = attention_bias(torch.tensor([[0, 1, 1]]), 3, torch.float32)
    assert torch.equal(bias[0, 0], torch.tensor([[0.0, INF, INF], [INF, 0.0, INF], [INF, 0.0, 0.0]]))


def test_the_attention_bias_keeps_packed_documents_apart():
    documents = torch.tensor([[1, 1, 2]])
    bias = attention_bias(torch.ones(1, 3), 3, torch.bfloat16, documents)
    assert bias.dtype == torch.bfloat16
    assert torch.equal(bias[0, 0].float(), torch.tensor([[0.0, INF, INF], [0.0, 0.0, INF], [INF, INF, 0.0]]))


def test_the_attention_bias_of_new_tokens_after_a_past():
    """Two new tokens after two cached ones, the first cached one padding."""
    bias = attention_bias(torch.tensor([[0, 1, 1, 1]]), 2, torch.float32)
    assert torch.equal(bias[0, 0], torch.tensor([[INF, 0.0, 0.0, INF], [INF, 0.0, 0.0, 0.0]]))


def rollout_like(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts, then responses of unequal lengths right-padded: RL's rollouts' layout."""
    tokens, mask = left_pad(prompts(n), SPACE.pad_id)
    lengths = torch.arange(n) % 5 + 1
    response = torch.randint(3, SPACE.size, (n, 5)) * (torch.arange(5) < lengths[:, None])
    return torch.cat([tokens, response], 1), torch.cat([mask, (torch.arange(5) < lengths[:, None]).long()], 1)


@pytest.mark.parametrize("kernel", ["sgemm", "onednn"])
def test_an_inference_pass_over_a_padded_batch_packs_with_the_padded_pass_states_to_the_bit(model, kernel):
    tokens, mask = rollout_like(20)
    assert mask.float().mean() < 0.9  # padding enough to pack
    with onednn(kernel == "onednn"):
        with torch.no_grad():
            packed = model.hidden(tokens, mask)
        with torch.enable_grad():  # training's pass: padded products
            padded = model.hidden(tokens, mask).detach()
    real = mask.bool()
    assert torch.equal(packed[real], padded[real])
    assert torch.all(packed[~real] == 0) and torch.any(padded[~real] != 0)  # the packed pass ran: zeros at padding


def test_small_or_dense_batches_and_training_keep_the_padded_pass(model):
    for tokens, mask in (rollout_like(1), (torch.randint(3, SPACE.size, (20, 8)), torch.ones(20, 8, dtype=torch.long))):
        mask[0, 0] = 0  # one pad, whose state shows which pass ran
        with torch.no_grad():
            assert torch.any(model.hidden(tokens, mask)[0, 0] != 0)
    tokens, mask = rollout_like(20)
    model.train()
    try:
        with torch.no_grad():
            assert torch.any(model.hidden(tokens, mask)[~mask.bool()] != 0)
    finally:
        model.eval()
