import pytest
import torch

from models.fused_decode import fused
from models.gpt import GPT, GPTConfig, positions_from_mask
from models.kernels import onednn
from models.sampling import generate, left_pad
from world.actions import ActionSpace

SPACE = ActionSpace()


def model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=SPACE.size, n_layer=2, n_head=2, d_model=32, max_len=64)).eval()


PROMPTS = [SPACE.encode_prompt([1, 2, 4, 8, 16]), SPACE.encode_prompt([3]), SPACE.encode_prompt([10, 20, 30])]
KW = {"max_new_tokens": 12, "eor_id": SPACE.eor_id, "pad_id": SPACE.pad_id}
MANY = PROMPTS * 8  # 24 rows: enough for the linears' oneDNN kernels (models.kernels)


@pytest.fixture(params=["few rows", "rows on oneDNN", "eager step"])
def prompts(request):
    """Every path of a decoding step: few rows on sgemm (the fused step, models/fused_decode.py),
    many rows with oneDNN switched on (eager), and few rows with the fused step switched off."""
    if request.param == "few rows":
        yield PROMPTS
    elif request.param == "rows on oneDNN":
        with onednn(True):
            yield MANY
    else:
        with fused(False):
            yield PROMPTS


def test_positions_start_at_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_kv_cache_equals_uncached_greedy_decoding(prompts):
    m = model()
    cached = generate(m, prompts, temperature=0, use_cache=True, **KW)
    uncached = generate(m, prompts, temperature=0, use_cache=False, **KW)
    assert torch.equal(cached.tokens, uncached.tokens)
    assert torch.allclose(cached.logprobs, uncached.logprobs, atol=1e-5)


def test_left_padding_does_not_change_the_policy():
    m = model()
    batched = generate(m, PROMPTS, temperature=0, **KW)
    for row, prompt in enumerate(PROMPTS):
        alone = generate(m, [prompt], temperature=0, **KW)
        n = alone.tokens.shape[1]
        assert torch.equal(batched.tokens[row, :n], alone.tokens[0])
        assert torch.allclose(batched.logprobs[row, :n], alone.logprobs[0], atol=1e-5)


def test_sampled_logprobs_match_a_teacher_forced_forward(prompts):
    m = model()
    gen = generate(m, prompts, temperature=1.0, generator=torch.Generator().manual_seed(0), **KW)
    for row, prompt in enumerate(prompts):
        n = int(gen.action_mask[row].sum())
        full = torch.tensor([prompt + gen.tokens[row, :n].tolist()])
        logits = m(full, torch.ones_like(full))
        logp = torch.log_softmax(logits[0, len(prompt) - 1 : -1], -1)
        expected = logp.gather(-1, full[0, len(prompt) :, None]).squeeze(-1)
        assert torch.allclose(gen.logprobs[row, :n], expected, atol=1e-5)


def test_action_mask_covers_actions_through_eor_only():
    m = model()
    gen = generate(m, PROMPTS, temperature=1.0, generator=torch.Generator().manual_seed(1), **KW)
    for row in range(len(PROMPTS)):
        acts = gen.tokens[row][gen.action_mask[row] == 1].tolist()
        if gen.finished[row]:
            assert acts[-1] == SPACE.eor_id and SPACE.eor_id not in acts[:-1]
        assert (gen.logprobs[row][gen.action_mask[row] == 0] == 0).all()


def test_left_pad_shapes():
    tokens, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert tokens.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_a_group_read_once_samples_as_the_prompt_repeated():
    m = model()
    G = 3
    shared = generate(
        m, PROMPTS, temperature=1.0, generator=torch.Generator().manual_seed(2), samples_per_prompt=G, **KW
    )
    repeated = [p for p in PROMPTS for _ in range(G)]
    plain = generate(m, repeated, temperature=1.0, generator=torch.Generator().manual_seed(2), **KW)
    assert shared.tokens.shape[0] == len(PROMPTS) * G
    assert torch.equal(shared.tokens, plain.tokens)
    assert torch.allclose(shared.logprobs, plain.logprobs, atol=1e-5)
    uncached = generate(m, PROMPTS, temperature=0, use_cache=False, samples_per_prompt=G, **KW)
    assert torch.equal(uncached.tokens, generate(m, repeated, temperature=0, **KW).tokens)


def test_decoding_past_the_context_is_an_error_only_when_a_row_gets_there():
    import pytest

    m = model()  # context of 64 positions
    long_prompt = SPACE.encode_prompt([7] * 28)  # 57 tokens: positions 0-56
    with pytest.raises(ValueError, match="context of 64"):
        generate(m, [long_prompt], max_new_tokens=12, eor_id=-1, pad_id=SPACE.pad_id, temperature=0)
    fits = generate(m, [long_prompt], max_new_tokens=6, eor_id=-1, pad_id=SPACE.pad_id, temperature=0)
    assert fits.tokens.shape == (1, 6)


def test_new_weights_are_sampled_from_at_once():
    m, other = model(0), model(1)
    before = generate(m, MANY, temperature=0, **KW)
    m.load_state_dict(other.state_dict())  # what a sampler does at weight sync
    after = generate(m, MANY, temperature=0, **KW)
    assert torch.equal(after.logprobs, generate(other, MANY, temperature=0, **KW).logprobs)
    assert not torch.equal(after.logprobs, before.logprobs)


def test_samples_leave_inference_mode_as_ordinary_tensors_a_learner_can_train_on():
    m = model()
    gen = generate(m, PROMPTS, temperature=1.0, generator=torch.Generator().manual_seed(4), **KW)
    assert not any(t.is_inference() for t in (gen.tokens, gen.logprobs, gen.action_mask, gen.finished))
    full = torch.cat([torch.tensor([PROMPTS[0]]), gen.tokens[:1]], dim=1)
    m(full, torch.ones_like(full)).sum().backward()  # an inference tensor here would refuse to be saved
    assert m.tok_emb.weight.grad is not None


def test_a_policy_runs_in_float32_or_bfloat16_and_nothing_else():
    m = model()
    assert m.in_precision("bfloat16") is m and m.tok_emb.weight.dtype == torch.bfloat16
    assert m.in_precision("float32").blocks[0].attn.qkv.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="precision 'float16': expected one of float32, bfloat16"):
        m.in_precision("float16")
