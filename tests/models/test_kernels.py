import pytest
import torch
import torch.nn.functional as F

from models.gpt import GPT, GPTConfig
from models.kernels import (
    AVAILABLE,
    ONEDNN_MIN_ROWS,
    FeedForward,
    Linear,
    cpu_vendor,
    default_enabled,
    onednn,
    onednn_applies,
)

needs_onednn = pytest.mark.skipif(not AVAILABLE, reason="no oneDNN in this torch build")


@pytest.fixture
def layer() -> Linear:
    torch.manual_seed(0)
    return Linear(32, 48)


@pytest.fixture
def on_onednn():
    """The oneDNN path, whatever this machine's default (sgemm unless an AVX-512 AMD CPU)."""
    with onednn(True):
        yield


@needs_onednn
def test_the_default_is_onednn_only_on_avx512_amd_cpus_unless_overridden():
    assert default_enabled("AVX512", "AuthenticAMD", None)
    assert not default_enabled("AVX512", "GenuineIntel", None)  # MKL uses AVX-512 there
    assert not default_enabled("AVX2", "AuthenticAMD", None)
    assert not default_enabled("DEFAULT", "", None)
    assert default_enabled("AVX2", "GenuineIntel", "onednn")
    assert not default_enabled("AVX512", "AuthenticAMD", "sgemm")
    with pytest.raises(ValueError, match="TOKENMDP_LINEARS='mkl'"):
        default_enabled("AVX512", "AuthenticAMD", "mkl")


def test_the_vendor_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    assert cpu_vendor(str(tmp_path / "missing")) == ""


@needs_onednn
def test_large_float32_products_take_onednn_and_small_ones_do_not(layer, on_onednn):
    assert onednn_applies(torch.zeros(2, ONEDNN_MIN_ROWS // 2, 32), layer.weight)
    assert not onednn_applies(torch.zeros(ONEDNN_MIN_ROWS - 1, 32), layer.weight)
    assert not onednn_applies(torch.zeros(64, 32, dtype=torch.float64), layer.weight.double())
    with onednn(False):
        assert not onednn_applies(torch.zeros(64, 32), layer.weight)
    assert onednn_applies(torch.zeros(64, 32), layer.weight)


@needs_onednn
def test_bfloat16_products_take_onednn_at_any_size_where_it_is_on(layer, on_onednn):
    low = layer.weight.bfloat16()
    assert onednn_applies(torch.zeros(1, 32, dtype=torch.bfloat16), low)  # a served request's one row
    assert not onednn_applies(torch.zeros(1, 32, dtype=torch.bfloat16), layer.weight)  # mixed: ATen decides
    with onednn(False):
        assert not onednn_applies(torch.zeros(64, 32, dtype=torch.bfloat16), low)
    torch.manual_seed(0)
    mlp, x = FeedForward(32, 128).bfloat16(), torch.randn(3, 32).bfloat16()
    with torch.no_grad():
        fused = mlp(x)
        with onednn(False):
            plain = mlp(x)
    assert not torch.equal(fused, plain)  # another kernel: bfloat16 rounds in other places
    assert torch.allclose(fused.float(), plain.float(), atol=4 * plain.float().abs().max().item() / 2**8)


@needs_onednn
def test_forward_and_gradients_equal_nn_linear(layer, on_onednn):
    x = torch.randn(4, 10, 32, requires_grad=True)
    assert onednn_applies(x, layer.weight)
    out = layer(x)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad_out)
    reference = F.linear(x, layer.weight, layer.bias)
    expected = torch.autograd.grad(reference, (x, layer.weight, layer.bias), grad_out)
    assert torch.allclose(out, reference, atol=1e-5)
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, atol=1e-4)


@needs_onednn
def test_a_frozen_layer_passes_gradients_to_its_input_only(layer, on_onednn):
    layer.requires_grad_(False)
    x = torch.randn(64, 32, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(64, -1), atol=1e-5)
    assert layer.weight.grad is None


@needs_onednn
def test_the_fused_gelu_computes_what_the_modules_compute(on_onednn):
    torch.manual_seed(0)
    mlp, x = FeedForward(32, 128), torch.randn(3, 20, 32)
    with torch.no_grad():
        fused = mlp(x)
        with onednn(False):
            plain = mlp(x)
    assert torch.allclose(fused, plain, atol=1e-5)
    assert not torch.equal(fused, mlp[2](mlp[0](x)).detach())  # the GELU was applied


def test_checkpoints_keep_their_parameter_names():
    names = GPT(GPTConfig(vocab_size=16, n_layer=1)).state_dict().keys()
    assert {"blocks.0.mlp.0.weight", "blocks.0.mlp.2.bias", "blocks.0.attn.qkv.weight"} <= set(names)
