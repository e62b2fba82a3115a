"""One model call of generation: which output holds the next-token logits, the KV cache it runs with, and
``EagerStep``, the default (eager) call, optionally through a packed GEMM (oneDNN / MKL).

``static.StaticDecoder`` is the fixed-shape alternative with the same interface (``new_cache``,
``__call__(ids, mask, positions, past) -> (logits (B, V), cache)``, ``close``).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from lmforge.errors import InputError
from lmforge.models.transformer import Transformer
from lmforge.nn.attention import KVCache

# lmforge heads that produce next-token logits, and the ModelOutput field holding them
LM_HEADS: dict[str, str] = {"clm": "logits", "extract": "lm_logits"}

Cache = Any  # the body's past_key_values: a KVCache, or per layer (k, v), each (B, nh, T_past, hs)

# Linear layers with fewer weights than this keep the plain kernel even when packing: on small matrices the
# packed GEMM gains nothing (measurements: docs/generation.md, "What the eager decode step does")
PACK_MIN_WEIGHTS = 2**18


def lm_field(model: Any) -> str:
    """The output field with next-token logits; InputError naming the model's head otherwise."""
    config = model.config
    head = getattr(config, "head", None)
    if not getattr(config, "causal", True):
        what = (f"generate needs a causal decoder; this model is a bidirectional encoder "
                f"({getattr(config, 'family', '?')}, head {head!r})")
        raise InputError(f"{what}: use lmforge.fill_mask for masked language models.",
                         cli=f"{what}: use `lmforge fill-mask` for masked language models.")
    if head not in LM_HEADS:
        what = (f"generate needs a model with a language-modeling head (one of {', '.join(LM_HEADS)}); this "
                f"model has head {head!r}")
        raise InputError(
            f"{what}. Load it with Model.from_pretrained(DIR, head='clm') (the body weights are kept; an untied "
            "LM head would be newly initialised).",
            cli=f"{what} (a fine-tuned model?): give the directory of a model pre-trained with `lmforge pretrain "
                "--objective clm` (or an HF gpt2 / openai-gpt checkpoint).")
    return LM_HEADS[head]


def lm_weight(model: Any) -> torch.Tensor | None:
    """The (V, H) matrix of a lmforge model's LM head (the tied embedding or the untied decoder; both heads,
    clm and GPT-1's extract, compute ``F.linear(hidden, W)``); None for other models and for int8 weights
    (the model's own head then runs the quantized product)."""
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    if isinstance(body, Transformer) and hasattr(head, "decoder"):
        weight = body.embeddings.word.weight if head.decoder is None else head.decoder.weight
        return weight if weight.is_floating_point() else None
    return None


def new_cache(model: Any, *, batch: int, capacity: int) -> Cache:
    """A preallocated KV cache for lmforge models (written in place: no per-step concatenation of the
    whole cache); None for other models, which then grow their own tuple cache."""
    body = getattr(model, "body", None)
    if isinstance(body, Transformer):
        return KVCache.for_model(body, batch=batch, capacity=capacity)
    return None


def reorder_cache(past: Cache, index: torch.Tensor) -> Cache:
    """Rows of every layer's cache picked by ``index`` (beam search follows its surviving beams)."""
    if hasattr(past, "reorder"):
        past.reorder(index)
        return past
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in past)


def can_pack(model: Any) -> bool:
    """A packed GEMM applies: a CPU float32 model and a torch built with oneDNN or MKL."""
    weight = next(model.parameters(), None)
    return (weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            and (_onednn_ok() or _mkl_ok()))


@functools.cache
def _onednn_ok() -> bool:  # a function: torch.ops resolves its namespaces lazily
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def _mkl_ok() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


# weight -> its packed copies {"stamp": (version, data_ptr), "mkl": ..., "onednn": ...}, kept while the
# weight lives (a weak key: nothing here keeps a model alive) and remade when the weight changes in place
_PACKS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def packed_copy(weight: torch.Tensor, kind: str, rows: int) -> torch.Tensor:
    """The ``kind`` ("mkl" / "onednn") packed copy of ``weight``, made once per weight and reused by every
    later decode step and ``generate`` call (packing GPT-2 small takes a few tenths of a second)."""
    stamp = (weight._version, weight.data_ptr())
    entry = _PACKS.get(weight)
    if entry is None or entry["stamp"] != stamp:
        entry = {"stamp": stamp}
        _PACKS[weight] = entry
    if kind not in entry:
        with torch.no_grad():
            if kind == "mkl":
                entry[kind] = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows)
            else:
                entry[kind] = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    return entry[kind]


def release_packed(model: Any) -> None:
    """Drop the packed copies of ``model``'s weights (they otherwise live as long as the weights)."""
    for parameter in model.parameters():
        _PACKS.pop(parameter, None)


class PackedLinear:
    """``F.linear(x, weight, bias)`` for decode steps through a packed GEMM (``packed_copy``): MKL's packed
    GEMV (``cblas_sgemm_pack``) for one row, whose result equals ``addmm(b, x, W.T.contiguous())`` bit for
    bit (HF GPT-2's Conv1D order); oneDNN's blocked weights (``mkldnn._linear_pointwise``, the kernel
    Inductor's CPU freezing uses) for several rows, at any row count, so one copy serves a server's
    changing batch, and the prompts too (a prefill of B x T rows). The same call gives the same numbers
    whoever makes it (``generate`` or the server)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.weight, self.bias = weight, bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[:-1].numel()
        if rows == 1 and _mkl_ok():
            return torch.ops.mkl._mkl_linear(x, packed_copy(self.weight, "mkl", 1), self.weight, self.bias, 1)
        if _onednn_ok():
            return torch.ops.mkldnn._linear_pointwise(x, packed_copy(self.weight, "onednn", rows), self.bias,
                                                      "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _last_only(model: Any) -> dict[str, Any]:
    """Ask for logits of the last position only when the model supports it (saves the V x H product
    over the whole prompt at prefill)."""
    return {"logits_to_keep": 1} if getattr(type(model), "supports_logits_to_keep", False) else {}


class EagerStep:
    """One eager model call of generation: next-token logits (B, V) at the last position, and the cache.

    A lmforge model runs its body and then the LM product on the last position only (both LM heads, clm and
    GPT-1's extract, compute exactly ``F.linear(hidden, W)``, W the tied embedding or the untied decoder,
    no bias), so no head work is spent on positions or outputs generation does not read. Any other model
    is called with its own forward (``logits_to_keep=1`` when it says it supports it).

    ``pack=True`` (lmforge models on CPU in float32) runs every large linear layer of the body and the LM
    product through ``PackedLinear`` (oneDNN's packed GEMM for several rows, MKL's for one): F.linear's
    kernel (weight transposed, a few rows) reaches only a fraction of what these do at decode shapes
    (numbers in docs/generation.md). The layers get their own forward back at ``close()``; the packed
    weights stay cached with the model's weights for the next call (``packed_copy``; ``release_packed(model)``
    frees them). Results differ from ``F.linear``'s by fp32 rounding only. ``rows`` is the decode row count
    (kept for callers; each call's row count picks the kernel).
    """

    def __init__(self, model: Any, field: str, *, rows: int, pack: bool) -> None:
        self.model = model
        self.field = field
        self.lm_packed: PackedLinear | None = None  # the LM product through a packed GEMM, when packing
        self.rows = rows
        self.patched: list[tuple[nn.Linear, Any]] = []
        self.lm_weight = lm_weight(model)
        if self.lm_weight is not None and pack:
            self._pack(model.body)

    def _pack(self, body: nn.Module) -> None:
        for module in body.modules():
            if isinstance(module, nn.Linear) and module.weight.numel() >= PACK_MIN_WEIGHTS:
                self.patched.append((module, module.__dict__.get("forward")))
                module.forward = PackedLinear(module.weight, module.bias)  # nn.Module.__call__ runs it
        if self.lm_weight.numel() >= PACK_MIN_WEIGHTS:
            self.lm_packed = PackedLinear(self.lm_weight, None)

    def new_cache(self, *, batch: int, capacity: int) -> Cache:
        return new_cache(self.model, batch=batch, capacity=capacity)

    def close(self) -> None:
        """Give the layers their own forward back (and drop the packed copies)."""
        for module, before in self.patched:
            del module.forward
            if before is not None:
                module.forward = before
        self.patched.clear()
        self.lm_packed = None

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None,
                 past: Cache) -> tuple[torch.Tensor, Cache]:
        model = self.model
        if self.lm_weight is None:
            out = model(ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True,
                        **_last_only(model))
            return out[self.field][:, -1, :], out["past_key_values"]
        out = model.body(ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True)
        hidden = out.last_hidden_state[:, -1, :]  # (B, H)
        if self.lm_packed is not None:
            logits = self.lm_packed(hidden)
        else:
            logits = F.linear(hidden, self.lm_weight)
        return logits, out.past_key_values  # (B, V)


__all__ = ["LM_HEADS", "PACK_MIN_WEIGHTS", "Cache", "EagerStep", "can_pack", "lm_field", "lm_weight", "new_cache",
           "PackedLinear", "packed_copy", "release_packed", "reorder_cache"]
