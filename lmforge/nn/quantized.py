"""Quantized weights for inference: how ``lmforge compress`` stores int8 weights and the kernels that
multiply them, behind one module so the rest of the code does not care which kernel runs.

Storage (safetensors, no pickle): an int8 layer keeps ``weight`` int8 (out, in), symmetric per output
channel, and ``weight_scale`` float32 (out,); the float weight it stands for is ``weight * weight_scale[:, None]``.
Linear layers keep their float ``bias``. The word embedding is stored the same way per row: its lookup
dequantizes the rows it reads, and where it is also the tied LM output layer a row is an output channel of
that product. The format does not depend on the kernel, so a model quantized with one kernel runs with any
other of its method.

Kernels (``KERNELS[method][name]``; measured speeds and the reasons: docs/compression.md):

* ``int8`` (weights and activations in int8, the activations quantized at run time):
  ``fbgemm`` / ``onednn`` = ``torch.ops.quantized.linear_dynamic`` with weights packed for that engine
  (activations uint8 per call, i.e. per tensor, in the 7-bit range PyTorch's own dynamic Linear uses
  (``reduce_range``) so CPUs without VNNI cannot saturate); ``int-mm`` = activations int8 per token +
  ``torch._int_mm``.
* ``int8-weight`` (int8 weights, float32 activations; the decode case, bound by reading weights):
  ``fused`` = one torch.compile'd multiply-reduce over the int8 weight for up to ``FUSED_MAX_ROWS`` rows
  (exact float32 arithmetic, the weight read once as int8), dequantize + ``F.linear`` above;
  ``int8pack-bf16`` = ``torch.ops.aten._weight_int8pack_mm`` (activations rounded to bfloat16).
* ``bf16``: every weight in bfloat16 (``quantize_modules`` casts the model; no kernel choice).

A kernel that the installed torch or machine lacks is never replaced by another: building a model with it
raises ``QuantizationError`` naming the kernels that do run here.
"""
from __future__ import annotations

import os
import shutil
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import ConfigError, InputError

FUSED_MAX_ROWS = 8  # above this many rows the fused multiply-reduce loses to dequantize + GEMM (docs/compression.md)


class QuantizationError(InputError):
    """A quantization method or kernel this machine / torch build cannot run."""


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a (out, in) float matrix: ``q = round(w / s)`` in [-127, 127] with
    ``s = max |w_row| / 127`` (an all-zero row gets s = 1). Returns (q int8, s float32 (out,))."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return q.to(dtype) * scale.to(dtype)[:, None]


# --------------------------------------------------------------------------- kernels
class Kernel:
    """One way to compute ``x @ dequantize(q, s).T + bias`` for x (M, K) float32."""

    name = ""
    method = ""
    about = ""  # one line for reports: what runs and what is approximated

    def missing(self) -> str | None:
        """Why this kernel cannot run here (None when it can)."""
        return None

    def prepare(self, q: torch.Tensor, scale: torch.Tensor) -> Any:
        """Per-layer state built once from the stored weight (packed weights); rebuilt when the weight changes."""
        return None

    def run(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, state: Any) -> torch.Tensor:
        raise NotImplementedError


def _check_cpu(kernel: Kernel, x: torch.Tensor) -> None:
    if x.device.type != "cpu":
        raise QuantizationError(f"the {kernel.method} kernel {kernel.name!r} runs on CPU only and the input is on "
                                f"{x.device.type}; run the quantized model on CPU, or compress with --method bf16 "
                                "for another device.")


class DynamicQLinear(Kernel):
    """``torch.ops.quantized.linear_dynamic`` over weights packed for one quantized engine."""

    method = "int8"

    def __init__(self, engine: str) -> None:
        self.name = self.engine = engine
        self.about = (f"torch.ops.quantized.linear_dynamic ({engine}): int8 weights per channel, activations "
                      "uint8 per call (per tensor, 7-bit range)")

    def missing(self) -> str | None:
        if self.engine not in torch.backends.quantized.supported_engines:
            return f"this torch build has no {self.engine} quantized engine"
        if not hasattr(torch.ops.quantized, "linear_dynamic"):
            return "this torch build has no torch.ops.quantized.linear_dynamic"
        return None

    def prepare(self, q: torch.Tensor, scale: torch.Tensor) -> Any:
        before = torch.backends.quantized.engine
        try:
            torch.backends.quantized.engine = self.engine  # the packed format belongs to the engine; the op follows it
            with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13 (docs/compression.md)
                warnings.simplefilter("ignore", UserWarning)
                zero = torch.zeros(q.size(0), dtype=torch.long)
                qw = torch._make_per_channel_quantized_tensor(q.cpu(), scale.cpu().double(), zero, 0)
                return torch.ops.quantized.linear_prepack(qw, None)
        finally:
            torch.backends.quantized.engine = before

    def run(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, state: Any) -> torch.Tensor:
        _check_cpu(self, x)
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), state, True)


class IntMM(Kernel):
    name, method = "int-mm", "int8"
    about = "torch._int_mm: int8 weights per channel, activations int8 per token"

    def missing(self) -> str | None:
        return None if hasattr(torch, "_int_mm") else "this torch build has no torch._int_mm"

    def prepare(self, q: torch.Tensor, scale: torch.Tensor) -> Any:
        return q.t()  # (K, N) view, as _int_mm wants

    def run(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, state: Any) -> torch.Tensor:
        _check_cpu(self, x)
        x = x.float()
        xs = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # (M, 1): one scale per token
        xq = torch.round(x / xs).to(torch.int8)
        return torch._int_mm(xq, state).float() * xs * scale


def _gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(M, K) x int8 (N, K) -> (M, N): compiled into one loop that reads each int8 weight once."""
    return (x[:, None, :] * q.to(x.dtype)).sum(-1) * scale


_compiled_gemv: Any = None


class FusedWeightOnly(Kernel):
    name, method = "fused", "int8-weight"
    about = (f"torch.compile'd int8 multiply-reduce in float32 for <= {FUSED_MAX_ROWS} rows, "
             "dequantize + F.linear above (exact float32 arithmetic)")

    def missing(self) -> str | None:
        compiler = os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
        if compiler is None or not shutil.which(compiler):
            return "torch.compile on CPU needs a C++ compiler (g++ / clang++) and none was found"
        return None

    def run(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, state: Any) -> torch.Tensor:
        global _compiled_gemv
        x = x.float()
        if x.size(0) > FUSED_MAX_ROWS or x.device.type != "cpu":
            return F.linear(x, dequantize(q, scale))
        if _compiled_gemv is None:
            _compiled_gemv = torch.compile(_gemv, dynamic=True)
        return _compiled_gemv(x, q, scale)


class Int8PackBF16(Kernel):
    name, method = "int8pack-bf16", "int8-weight"
    about = "torch.ops.aten._weight_int8pack_mm: int8 weights per channel, activations rounded to bfloat16"

    def missing(self) -> str | None:
        return None if hasattr(torch.ops.aten, "_weight_int8pack_mm") else \
            "this torch build has no torch.ops.aten._weight_int8pack_mm"

    def prepare(self, q: torch.Tensor, scale: torch.Tensor) -> Any:
        return scale.to(torch.bfloat16)

    def run(self, x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, state: Any) -> torch.Tensor:
        _check_cpu(self, x)
        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), q, state).float()


# method -> kernel name -> kernel, fastest first on the development machine (docs/compression.md)
KERNELS: dict[str, dict[str, Kernel]] = {
    "int8": {k.name: k for k in (DynamicQLinear("fbgemm"), DynamicQLinear("onednn"), IntMM())},
    "int8-weight": {k.name: k for k in (FusedWeightOnly(), Int8PackBF16())},
}


def available_kernels(method: str) -> dict[str, str | None]:
    """Kernel name -> None when it runs here, else the reason it does not."""
    return {name: k.missing() for name, k in KERNELS.get(method, {}).items()}


def get_kernel(method: str, name: str | None) -> Kernel:
    """The kernel ``name`` of ``method`` (None: the first that runs here); QuantizationError when it cannot run."""
    kernels = KERNELS.get(method)
    if kernels is None:
        raise ConfigError(f"ModelConfig.quantization.method={method!r} has no kernels; one of: {', '.join(KERNELS)}.")
    if name is None:
        usable = [n for n, why in available_kernels(method).items() if why is None]
        if not usable:
            raise QuantizationError(f"no {method} kernel runs on this machine: " + "; ".join(
                f"{n}: {why}" for n, why in available_kernels(method).items()) + ". Use --method bf16.")
        name = usable[0]
    if name not in kernels:
        raise ConfigError(f"kernel {name!r} (ModelConfig.quantization.kernel, lmforge compress --kernel) is not one "
                          f"of the {method} kernels: {', '.join(kernels)}.")
    why = kernels[name].missing()
    if why is not None:
        ok = [n for n, w in available_kernels(method).items() if w is None]
        raise QuantizationError(f"the {method} kernel {name!r} cannot run here ({why}); "
                                + (f"kernels that run here: {', '.join(ok)} (set quantization.kernel, or "
                                   "lmforge compress --kernel)." if ok else "use --method bf16."))
    return kernels[name]


# --------------------------------------------------------------------------- modules
class _Int8Weights(nn.Module):
    """Shared by the int8 Linear and the int8 embedding: the stored weight, its scale and the kernel state."""

    def _setup(self, rows: int, cols: int, kernel: Kernel, device: Any) -> None:
        self.kernel = kernel
        self.register_buffer("weight", torch.zeros(rows, cols, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(rows, device=device))
        self._state: Any = None
        self._state_key: tuple[Any, ...] | None = None

    def set_weight(self, weight: torch.Tensor) -> None:
        q, scale = quantize_rows(weight)
        with torch.no_grad():
            self.weight.copy_(q)
            self.weight_scale.copy_(scale)

    def kernel_state(self) -> Any:
        # rebuilt after load_state_dict (in-place copies bump _version) or .to() (new storage)
        key = (self.weight.data_ptr(), self.weight._version, self.weight_scale.data_ptr(), self.weight_scale._version)
        if key != self._state_key:
            self._state = self.kernel.prepare(self.weight, self.weight_scale)
            self._state_key = key
        return self._state

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x (..., K) @ W.T + bias`` through the kernel -> (..., N), in x's dtype."""
        shape = x.shape
        y = self.kernel.run(x.reshape(-1, shape[-1]), self.weight, self.weight_scale, self.kernel_state())
        if bias is not None:
            y = y + bias
        return y.view(*shape[:-1], y.size(-1)).to(x.dtype)


class Int8Linear(_Int8Weights):
    """``nn.Linear`` with an int8 weight (per output channel) and a float bias; state-dict names ``weight``
    (int8), ``weight_scale``, ``bias``."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool, kernel: Kernel, device: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._setup(out_features, in_features, kernel, device)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: Kernel) -> Int8Linear:
        module = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, kernel=kernel,
                     device=linear.weight.device)
        if linear.weight.device.type != "meta":  # (a model built on meta is about to be loaded)
            module.set_weight(linear.weight)
            if linear.bias is not None:
                module.bias.data.copy_(linear.bias.detach().float())
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel.name}"


class Int8Embedding(_Int8Weights):
    """A word embedding int8 per row: the lookup dequantizes the rows it reads (exactly); ``linear`` multiplies
    through the kernel when it is also the tied LM output layer. State-dict names ``weight`` (int8), ``weight_scale``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, kernel: Kernel, device: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self._setup(num_embeddings, embedding_dim, kernel, device)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, kernel: Kernel) -> Int8Embedding:
        module = cls(embedding.num_embeddings, embedding.embedding_dim, kernel=kernel, device=embedding.weight.device)
        if embedding.weight.device.type != "meta":
            module.set_weight(embedding.weight)
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids].float() * self.weight_scale[ids].unsqueeze(-1)  # (..., E)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, kernel={self.kernel.name}"


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, _Int8Weights)


def output_linear(x: torch.Tensor, module: nn.Module, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` for an LM output layer: ``module`` is the word embedding (tied) or a decoder Linear,
    float or int8."""
    if isinstance(module, _Int8Weights):
        return module.linear(x, bias)
    return F.linear(x, module.weight, bias)


def check_device(config: Any, device: Any) -> None:
    """QuantizationError when a model of ``config`` (a ModelConfig) has CPU-only int8 kernels and is asked to run
    on another ``device``: said when the model is placed, not at its first product."""
    q = getattr(config, "quantization", None)
    if device is None or q is None or q.get("method") not in KERNELS or torch.device(device).type == "cpu":
        return
    raise QuantizationError(f"this model holds {q['method']} weights, whose kernels run on CPU only, and the device is "
                            f"{device}; pass --device cpu (or compress the float model with --method bf16 for this "
                            "device).")


def quantize_modules(root: nn.Module, spec: dict[str, Any], *, embedding: str | None = None) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` under ``root`` (and the ``nn.Embedding`` named ``embedding``, the
    word embedding) by its int8 form with the kernel of ``spec``; ``bf16`` casts everything to bfloat16.
    Returns ``root``."""
    method = spec.get("method")
    if method == "bf16":
        return root.to(torch.bfloat16)
    kernel = get_kernel(method, spec.get("kernel"))
    for parent in list(root.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, child_name, Int8Linear.from_linear(child, kernel))
    if embedding is not None:
        parent_name, _, child_name = embedding.rpartition(".")
        parent = root.get_submodule(parent_name)
        setattr(parent, child_name, Int8Embedding.from_embedding(getattr(parent, child_name), kernel))
    return root


__all__ = ["FUSED_MAX_ROWS", "Int8Embedding", "Int8Linear", "KERNELS", "Kernel", "QuantizationError",
           "available_kernels", "check_device", "dequantize", "get_kernel", "is_quantized", "output_linear", "quantize_modules",
           "quantize_rows"]
