"""The body's linear layers: ``F.linear``, except for large float32 products on CPU, which run on oneDNN.

PyTorch's CPU ``addmm`` / ``mm`` call MKL, whose sgemm on the AMD EPYC (Zen 4) this project is measured on
reaches ~92-98 GFLOP/s a core; oneDNN's inner product, which PyTorch ships beside it (the op inductor's CPU
linear fusions call, ``torch.ops.mkldnn._linear_pointwise``), reaches 100-110 on the same shapes. oneDNN builds
(JITs) a kernel for every new input shape, ~0.3-2 ms, which only a large product repays: the rows of a
padding-free batch change with every step. So the forward product and the input gradient take oneDNN from
``ONEDNN_MIN_ROWS`` rows; the weight gradient stays ``mm`` (oneDNN is no faster on that shape); everything else
(small batches, autocast, other dtypes or devices, tensor subclasses such as FSDP's DTensor, ``torch.compile``)
takes ``F.linear``. The result is the same product in another summation order (float rounding only).
Measurements: docs/finetuning.md, "oneDNN for the large products".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Rows (product of the leading dims) from which a product takes oneDNN: a SQuAD step's 3,000-6,000 padding-free
# tokens and evaluation chunks do; SST-2 / CoLA batches (~400-500 tokens) stay on MKL, where the per-shape JIT
# cost more than it saved (CoLA, two threads: 3.18 -> 3.31 s a run without the threshold).
ONEDNN_MIN_ROWS = 2048

_available: bool | None = None


def _probe() -> bool:
    """Whether this torch build has the op, with the signature and result this module relies on."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        # fixed numbers: drawing them would move the seeded RNG stream of the run that first gets here
        x = torch.linspace(-1, 1, 128).reshape(8, 16)
        w, b = torch.linspace(-0.5, 0.7, 64).reshape(4, 16), torch.linspace(0.1, 0.4, 4)
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
        dx = torch.ops.mkldnn._linear_pointwise(y, w.t(), None, "none", [], "")
        return bool(torch.allclose(y, F.linear(x, w, b), atol=1e-5) and torch.allclose(dx, y @ w, atol=1e-5))
    except (AttributeError, RuntimeError, TypeError, NotImplementedError):
        return False


def onednn_available() -> bool:
    global _available
    if _available is None:
        _available = _probe()
    return _available


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = _onednn(grad, weight.t(), None)  # grad @ W as oneDNN's x @ W'^T with W' = W^T (a view)
        g2 = grad.reshape(-1, grad.size(-1))
        if ctx.needs_input_grad[1]:
            dw = g2.t().mm(x.reshape(-1, x.size(-1)))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db


def _takes_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() >= 2 and weight.dim() == 2 and x.size(-1) > 0 and x.numel() >= ONEDNN_MIN_ROWS * x.size(-1)
            and type(x) is torch.Tensor and type(weight) in (torch.Tensor, nn.Parameter)
            and (bias is None or (type(bias) in (torch.Tensor, nn.Parameter) and bias.dtype == torch.float32))
            and torch._C._get_mkldnn_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and onednn_available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; large float32 products on CPU on oneDNN (module docstring)."""
    if not _takes_onednn(x, weight, bias):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDnnLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state-dict names, hooks) whose forward is ``linear`` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
