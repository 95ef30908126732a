import copy

import pytest
import torch

from models import fused_decode
from models.fused_decode import fused, wanted
from models.gpt import GPT, GPTConfig
from models.kernels import onednn
from models.sampling import generate, left_pad
from world.actions import ActionSpace

SPACE = ActionSpace()
PROMPTS = [SPACE.encode_prompt(terms) for terms in ([1, 2, 4, 8, 16], [3], [10, 20, 30], [-5, 5, -5, 5])]


@pytest.fixture(scope="module")
def model() -> GPT:
    if fused_decode.load() is None:
        pytest.fail("the fused decoding step did not build on this machine (see the warning)")
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=SPACE.size, n_layer=3, n_head=4, d_model=32, max_len=64)).eval()
    with torch.no_grad():  # a trained-looking policy: no near-ties for rounding to flip
        for p in m.parameters():
            p.mul_(4)
    return m


def one_step(m: GPT, use_fused: bool, copies: int = 1):
    """Read the prompts (`copies` times each) into a fresh cache, then take one decoding step from the same state."""
    tokens, mask = left_pad(PROMPTS * copies, SPACE.pad_id)
    B, width = tokens.shape
    cache = m.new_cache(B, width + 4)
    bias = torch.full((B, 1, 1, cache.capacity), float("-inf"), dtype=cache.keys.dtype)  # as sampling builds it
    bias[:, 0, 0, : width + 1] = torch.cat([mask, torch.ones(B, 1, dtype=torch.long)], 1).bool().float() - 1
    bias = bias.masked_fill(bias < 0, float("-inf"))
    positions = mask.sum(1, keepdim=True)
    actions = torch.tensor([[5], [6], [7], [SPACE.eor_id]] * copies)
    with torch.inference_mode(), fused(use_fused):
        m.hidden(tokens, mask, cache)
        h = m.decode(actions, positions, bias, cache)
    return h, cache


@pytest.fixture(params=["sgemm", "onednn"])
def kernel(request):
    """The linears' two kernels (models/kernels.py); oneDNN takes batches of 16 rows or more."""
    with onednn(request.param == "onednn"):
        yield request.param


def test_the_fused_step_computes_what_the_eager_step_computes(model, kernel):
    rows = 1 if kernel == "sgemm" else 5  # 4 prompts a row each: 20 rows reach oneDNN
    fused_h, fused_cache = one_step(model, True, rows)
    eager_h, eager_cache = one_step(model, False, rows)
    assert fused_cache.length == eager_cache.length
    assert torch.allclose(fused_h, eager_h, atol=1e-5)
    assert torch.allclose(fused_cache.keys, eager_cache.keys, atol=1e-5)
    assert torch.allclose(fused_cache.values, eager_cache.values, atol=1e-5)


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_the_attention_loop_splits_its_rows_across_torchs_threads_and_changes_no_bit(model, two_threads):
    # Built without OpenMP, ATen's parallel_for ran the loop on one thread at any thread count.
    assert fused_decode.load().parallel_threads(256) == 2
    at_two, _ = one_step(model, True, 8)
    torch.set_num_threads(1)
    assert fused_decode.load().parallel_threads(256) == 1
    at_one, _ = one_step(model, True, 8)
    assert torch.equal(at_two, at_one)  # each (row, head) is summed by one thread alone


@pytest.mark.parametrize("group", [1, 5])
def test_fused_sampling_draws_the_same_actions_with_the_same_log_probs(model, kernel, group):
    runs = {}
    for use_fused in (True, False):
        with fused(use_fused):
            runs[use_fused] = generate(
                model, PROMPTS, max_new_tokens=10, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id,
                generator=torch.Generator().manual_seed(1), samples_per_prompt=group,
            )  # fmt: skip
    assert torch.equal(runs[True].tokens, runs[False].tokens)
    assert torch.equal(runs[True].action_mask, runs[False].action_mask)
    assert torch.allclose(runs[True].logprobs, runs[False].logprobs, atol=1e-5)


def draw(m: GPT, loop_in_cpp: bool, prompts=PROMPTS, **settings):
    """`generate`'s loop with the fused step, the loop after the prompt in C++ or in Python; and the cache's length."""
    lengths = []
    new_cache = m.new_cache

    def recorded(*args, **kwargs):
        cache = new_cache(*args, **kwargs)
        lengths.append(cache)
        return cache

    m.new_cache = recorded
    try:
        with fused(True):
            gen = generate(
                m, prompts, max_new_tokens=settings.pop("max_new_tokens", 10),
                eor_id=settings.pop("eor_id", SPACE.eor_id), pad_id=SPACE.pad_id,
                temperature=settings.pop("temperature", 1.0), top_k=settings.pop("top_k", None),
                generator=torch.Generator().manual_seed(1), samples_per_prompt=settings.pop("group", 1),
                loop_in_cpp=loop_in_cpp,
            )  # fmt: skip
        assert not settings, f"unknown settings {settings}"
    finally:
        del m.new_cache
    return gen, lengths[0].length


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"group": 5},
        {"temperature": 0},
        {"temperature": 0.7, "top_k": 3, "group": 3},
        {"max_new_tokens": 40, "eor_id": "common"},  # every row ends before the last column
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_loop_in_cpp_draws_what_the_python_loop_draws(model, kernel, dtype, settings):
    m = copy.deepcopy(model).to(dtype)
    if settings.get("eor_id") == "common":  # an action every row takes stands for <eor>: rows end early
        endless = draw(m, False, max_new_tokens=40, eor_id=-1)[0]  # the same draws up to each row's end
        taken_by_all = set.intersection(*(set(row.tolist()) for row in endless.tokens))
        settings = {**settings, "eor_id": min(taken_by_all)}
    (cpp, cpp_length), (python, python_length) = (draw(m, in_cpp, **dict(settings)) for in_cpp in (True, False))
    for field in ("tokens", "logprobs", "action_mask", "finished"):
        assert torch.equal(getattr(cpp, field), getattr(python, field)), field
    assert cpp_length == python_length
    if settings.get("max_new_tokens") == 40:
        assert cpp.tokens.shape[1] < 40 and bool(cpp.finished.all())  # the early end was taken
    else:
        assert cpp.tokens.shape[1] == 10


def test_the_loop_in_cpp_stops_a_row_at_the_context_as_the_python_loop_does(model):
    long_prompt = SPACE.encode_prompt([7] * 28)  # 57 tokens of a context of 64
    for in_cpp in (True, False):
        with pytest.raises(ValueError, match="context of 64"):
            draw(model, in_cpp, [long_prompt], max_new_tokens=12, temperature=0, eor_id=-1)
    assert draw(model, True, [long_prompt], max_new_tokens=6, eor_id=-1)[0].tokens.shape == (1, 6)


class CountedSteps:
    """The extension, counting its decoding steps and loops: proof the fused step ran, not the eager one."""

    def __init__(self, extension) -> None:
        self.extension, self.calls = extension, 0

    def decode_step(self, *args):
        self.calls += 1
        return self.extension.decode_step(*args)

    def sample(self, *args):
        self.calls += 1
        return self.extension.sample(*args)


def test_a_bfloat16_policy_fuses_its_step_with_float32_sums(model, monkeypatch):
    """A bfloat16 sampler (rl.sampler_precision) reads a cache of half the bytes; its sums stay float32, so
    it is as near the float32 policy as the eager bfloat16 step and within bfloat16's rounding of that step."""
    steps = CountedSteps(fused_decode.load())
    monkeypatch.setattr(fused_decode, "active", lambda: steps if fused_decode._enabled else None)
    low = copy.deepcopy(model).to(torch.bfloat16)
    fused_h, fused_cache = one_step(low, True)
    assert steps.calls == 1 and fused_h.dtype == fused_cache.keys.dtype == torch.bfloat16
    eager_h, eager_cache = one_step(low, False)
    assert steps.calls == 1
    exact, _ = one_step(model, False)
    scale = exact.abs().max().item()  # bfloat16 keeps 8 bits: a relative step of 2^-8 at the top
    assert (fused_h.float() - eager_h.float()).abs().max() <= 4 * scale / 2**8  # three layers of rounding
    assert (fused_h.float() - exact).abs().max() <= 8 * scale / 2**8
    assert (eager_h.float() - exact).abs().max() > 0  # bfloat16 rounds: the tolerance above is not idle
    written = fused_cache.length - 1  # the step's own keys and values: the first layer's from the same input
    for fused_kv, eager_kv in ((fused_cache.keys, eager_cache.keys), (fused_cache.values, eager_cache.values)):
        assert torch.equal(fused_kv[0, :, :, written], eager_kv[0, :, :, written])
        assert torch.equal(fused_kv[:, :, :, :written], eager_kv[:, :, :, :written])  # the prompt's, as read
        later = (fused_kv[1:, :, :, written].float() - eager_kv[1:, :, :, written].float()).abs().max()
        assert later <= 4 * eager_kv[1:, :, :, written].float().abs().max() / 2**8
    with fused(True):
        drawn = generate(
            low, PROMPTS, max_new_tokens=10, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id,
            generator=torch.Generator().manual_seed(1), samples_per_prompt=5,
        )  # fmt: skip
    with fused(False):
        eager = generate(
            low, PROMPTS, max_new_tokens=10, eor_id=SPACE.eor_id, pad_id=SPACE.pad_id,
            generator=torch.Generator().manual_seed(1), samples_per_prompt=5,
        )  # fmt: skip
    assert steps.calls > 1
    assert torch.equal(drawn.tokens, eager.tokens)  # the same actions; their log-probs within bfloat16's logits
    assert torch.allclose(drawn.logprobs, eager.logprobs, atol=0.1)


def test_the_fused_step_serves_inference_only(model):
    x = torch.zeros(2, 1, 32)
    with torch.no_grad():
        assert model._fusable(x)
        assert not model._fusable(x.double())
        assert model._fusable(x.bfloat16())
    assert not model._fusable(x)  # autograd records: a learner's pass stays eager
    model.train()
    try:
        with torch.no_grad():
            assert not model._fusable(x)
    finally:
        model.eval()


def test_each_source_text_cpu_class_and_torch_install_builds_apart():
    a = fused_decode.extension_name("int x;", "AVX512", "/venv/torch")
    assert a == fused_decode.extension_name("int x;", "AVX512", "/venv/torch")
    assert a.startswith("tokenmdp_decode_step_avx512_")
    assert a != fused_decode.extension_name("int y;", "AVX512", "/venv/torch")
    assert a != fused_decode.extension_name("int x;", "AVX512", "/other/venv/torch")  # another checkout's venv
    assert a.split("_")[-1] == fused_decode.extension_name("int x;", "AVX2", "/venv/torch").split("_")[-1]
    assert fused_decode.extension_name("int x;", "AVX2", "/venv/torch").startswith("tokenmdp_decode_step_avx2_")


def test_switched_off_there_is_no_fused_step():
    with fused(False):
        assert fused_decode.active() is None
    assert not wanted({"TOKENMDP_FUSED_DECODE": "0"})
    assert not wanted({"TOKENMDP_FUSED_DECODE": " Off "})
    assert wanted({"TOKENMDP_FUSED_DECODE": "1"})
    assert wanted({})


def test_a_step_that_cannot_be_built_warns_and_leaves_sampling_eager(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(fused_decode, "SOURCE", broken)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    with pytest.warns(UserWarning, match="fused decoding step unavailable"):
        assert fused_decode.load.__wrapped__() is None


TINY_EXTENSION = """#include <pybind11/pybind11.h>
int answer() { return 42; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
"""


@pytest.mark.timeout(240)
def test_a_build_killed_midway_does_not_block_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    name = "tokenmdp_test_killed_build"
    (tmp_path / name).mkdir()
    (tmp_path / name / "lock").touch()  # what PyTorch's build lock leaves when its builder dies
    assert fused_decode.build(name, TINY_EXTENSION).answer() == 42  # PyTorch alone would wait on it forever
    assert not (tmp_path / name / "lock").exists()


@pytest.mark.timeout(240)
def test_a_compiler_without_openmp_still_builds_the_step_with_its_loop_on_one_thread(tmp_path, monkeypatch):
    source = tmp_path / "tiny.cpp"
    source.write_text(TINY_EXTENSION)
    monkeypatch.setattr(fused_decode, "SOURCE", source)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "build"))
    no_openmp = fused_decode.Flags(
        ("-O3", "-fno-such-flag-as-openmp"), ()
    )  # what a compiler refuses, as Apple's -fopenmp
    monkeypatch.setattr(fused_decode, "BUILDS", (no_openmp, fused_decode.ONE_THREAD))
    with pytest.warns(UserWarning, match="built without OpenMP, its attention on one thread"):
        assert fused_decode.load.__wrapped__().answer() == 42
