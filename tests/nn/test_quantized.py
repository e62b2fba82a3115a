"""lmforge.nn.quantized: every int8 kernel against references computed here in float64.

* int8 (activations quantized at run time): within the error bound that follows from the two scales,
  |y' - y| <= sum_k |x_k| s_w / 2 + |w_k| s_x / 2 + s_x s_w / 4 per output; ``int-mm`` (per-token
  activations, exact int32 accumulation) equals its own dequantized float64 product to float32 rounding.
* int8-weight ``fused``: equal to dequantize-then-matmul in float64 to float32 rounding, on both of its paths
  (the compiled one for few rows, dequantize + GEMM for many). ``int8pack-bf16``: the same with the input
  rounded to bfloat16, within bfloat16 output rounding.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.nn.quantized import (FUSED_MAX_ROWS, KERNELS, Int8Linear, QuantizationError, available_kernels,
                                  dequantize, get_kernel, quantize_rows)

K, N = 96, 40
F32 = 2.0 ** -24


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def linear(seed: int = 0) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(K, N)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(N, K, generator=g) * 0.1)
        layer.weight[3] = 0.0  # an all-zero row gets scale 1, not a division by zero
        layer.bias.copy_(torch.randn(N, generator=g))
    return layer


def inputs(rows: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(rows, K, generator=torch.Generator().manual_seed(seed)) * 2


def runs(method: str, name: str) -> bool:
    return available_kernels(method)[name] is None


def test_quantize_rows_is_symmetric_per_row_and_within_half_a_step():
    w = linear().weight.detach()
    q, s = quantize_rows(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127 and int(q.min()) >= -127
    assert s[3] == 1.0 and (q[3] == 0).all()
    assert torch.allclose(s, torch.where(w.abs().amax(1) > 0, w.abs().amax(1) / 127, torch.ones(N)))
    assert ((dequantize(q, s) - w).abs() <= s[:, None] / 2 + 1e-7).all()


@pytest.mark.parametrize("name", list(KERNELS["int8"]))
@pytest.mark.parametrize("rows", [1, 37])
def test_int8_dynamic_kernels_within_the_scale_bound(name: str, rows: int):
    if not runs("int8", name):
        pytest.skip(f"{name}: {available_kernels('int8')[name]}")
    layer = linear()
    q8 = Int8Linear.from_linear(layer, KERNELS["int8"][name])
    x = inputs(rows)
    with torch.no_grad():
        got, exact = q8(x).double(), layer(x).double()
    w, s_w = layer.weight.detach().double(), q8.weight_scale.double()
    if name == "int-mm":  # one activation scale per row (token), symmetric
        s_x = x.double().abs().amax(1, keepdim=True) / 127  # (M, 1)
        ref = (torch.round(x.double() / s_x) * s_x) @ dequantize(q8.weight, q8.weight_scale, torch.float64).T
        ref = ref + layer.bias.double()
        assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()  # the int8 product itself is exact
    else:  # uint8 per call over the whole input, 7-bit range (reduce_range), zero point inside
        s_x = torch.full((rows, 1), float(x.max().clamp(min=0) - x.min().clamp(max=0)) / 127, dtype=torch.float64)
    bound = (x.double().abs() @ (s_w[None, :] / 2).expand(K, N) + s_x * w.abs().sum(1)[None, :] / 2
             + K * s_x * s_w[None, :] / 4)
    err = (got - exact).abs()
    assert (err <= bound + 1e-5).all(), float((err - bound).max())
    assert err.max() > 0  # it really is quantized


@pytest.mark.parametrize("rows", [1, 3, FUSED_MAX_ROWS + 9])
def test_weight_only_fused_equals_dequantize_then_matmul_in_float64(rows: int):
    if not runs("int8-weight", "fused"):
        pytest.skip(available_kernels("int8-weight")["fused"])
    layer = linear()
    q8 = Int8Linear.from_linear(layer, KERNELS["int8-weight"]["fused"])
    x = inputs(rows)
    with torch.no_grad():
        got = q8(x).double()
    deq = dequantize(q8.weight, q8.weight_scale, torch.float64)
    ref = x.double() @ deq.T + layer.bias.double()
    rounding = K * F32 * (x.double().abs() @ deq.abs().T + layer.bias.double().abs())  # float32 accumulation
    assert ((got - ref).abs() <= rounding).all()


def test_weight_only_int8pack_is_the_bf16_rounded_product():
    if not runs("int8-weight", "int8pack-bf16"):
        pytest.skip(available_kernels("int8-weight")["int8pack-bf16"])
    layer = linear()
    q8 = Int8Linear.from_linear(layer, KERNELS["int8-weight"]["int8pack-bf16"])
    x = inputs(5)
    with torch.no_grad():
        got = q8(x).double() - layer.bias.double()
    scale = q8.weight_scale.to(torch.bfloat16).double()  # the kernel takes its scales in bfloat16
    ref = x.to(torch.bfloat16).double() @ (q8.weight.double() * scale[:, None]).T
    assert ((got - ref).abs() <= 2.0 ** -8 * ref.abs() + K * F32 * ref.abs().max()).all()


def test_a_kernel_that_cannot_run_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch):
    from lmforge.nn.quantized import DynamicQLinear

    assert DynamicQLinear("no-such-engine").missing() == "this torch build has no no-such-engine quantized engine"
    monkeypatch.setattr(KERNELS["int8"]["fbgemm"], "missing", lambda: "this torch build has no fbgemm engine")
    monkeypatch.setattr(KERNELS["int8"]["onednn"], "missing", lambda: "this torch build has no onednn engine")
    with pytest.raises(QuantizationError, match=r"'fbgemm' cannot run here \(this torch build has no fbgemm"):
        get_kernel("int8", "fbgemm")
    with pytest.raises(ConfigError, match="is not one of the int8 kernels"):
        get_kernel("int8", "nope")
    from lmforge.config import ModelConfig
    from lmforge.models.model import Model

    config = ModelConfig.from_preset("bert-tiny", vocab_size=100, quantization={"method": "int8", "kernel": "fbgemm"})
    with pytest.raises(QuantizationError, match="kernels that run here: int-mm"):
        Model(config)


def test_int8_kernels_refuse_other_devices():
    name = next(n for n in ("fbgemm", "int-mm") if runs("int8", n))
    q8 = Int8Linear.from_linear(linear(), KERNELS["int8"][name])
    with pytest.raises(QuantizationError, match="runs on CPU only"):
        q8(torch.zeros(2, K, device="meta"))
