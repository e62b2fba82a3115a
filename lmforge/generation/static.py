"""The fixed-shape decode step behind ``generate(..., compile=True | "graph")``: a static KV cache, a step
compiled once with ``torch.compile`` and, on CUDA, captured once as a CUDA graph and replayed per token.

Eager decoding runs each token through the body's general forward: input checks (host syncs), mask
building, a cache view one column longer every step, ~15 kernels per layer launched one by one from
Python. On a GPU that launch and Python time, not the weights, is what a batch-1 step costs (numbers in
docs/generation.md, "compile=").

Here a step has the same shapes and the same code at every position:
- the K / V buffers (``StaticKVCache``) have a fixed capacity C (the prompt plus the new tokens, rounded up
  to ``CAPACITY_STEP`` so that nearby lengths share one compiled step); the step writes the new token's
  K / V at column ``index`` (a (1,) tensor) with ``index_copy_`` and attends over all C columns under a
  key mask (B, C) that holds the filled columns; the step sets its own column itself;
- the token, its position and ``index`` live in fixed buffers, written in place before each step.
So ``torch.compile`` traces the step once (Inductor fuses LayerNorm, GELU, the residual adds and the
attention's elementwise work) and a CUDA graph of it stays valid for the whole call.

Modes: ``"compile"`` = torch.compile'd step, plus a CUDA graph on GPU (on CPU: the compiled step alone);
``"graph"`` = the eager step captured as a CUDA graph (GPU only; no compile time, fewer fusions). The
prefill runs eagerly through the body into the same buffers.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from lmforge.errors import InputError
from lmforge.generation.output import GenerationWarning
from lmforge.models.transformer import Transformer
from lmforge.nn.attention import AttentionMask
from lmforge.nn.attention.cache import StaticKVCache, StaticSlot, applied_heads

MODES = ("compile", "graph")
CAPACITY_STEP = 128  # cache capacities are rounded up to a multiple of this (fewer recompiles / captures)
WARMUP_STEPS = 2  # eager runs on a side stream before a CUDA graph capture (CUDA's and cuBLAS's lazy setup)


def decode_step(body: Transformer, lm_weight: torch.Tensor, token: torch.Tensor, position: torch.Tensor,
                keys_mask: torch.Tensor, index: torch.Tensor, slots: list[StaticSlot]) -> torch.Tensor:
    """One token (B, 1) at ``position`` (B, 1) written at cache column ``index`` (1,) -> next-token
    logits (B, V). Only tensor ops on fixed shapes: traceable by torch.compile and capturable by CUDA graphs."""
    keys_mask.index_fill_(1, index, True)  # the new token sees itself
    x = body.embeddings(token, position_ids=position)  # (B, 1, H)
    mask = AttentionMask(keys_mask[:, None, None, :], False)  # (B, 1, 1, C)
    x = body.run_layers(x, mask, slots).hidden
    if body.final_norm is not None:
        x = body.final_norm(x)
    return F.linear(x[:, -1], lm_weight)  # (B, V)


_compiled_step: Any = None  # torch.compile(decode_step), made on first use (one compile cache per process)
# Each new (batch, capacity, model shape, dtype, device) compiles the step once more; past torch's
# recompile limit (torch._dynamo.config.recompile_limit, 8 by default) a fullgraph compile raises
# instead of falling back. generate() then decodes with the uncompiled step (still a CUDA graph on GPU).


def _recompile_limit_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a fullgraph compile past the limit (evaluated only when something was raised:
    importing torch._dynamo at module import would slow every CLI start)."""
    exc = torch._dynamo.exc
    return tuple(e for e in (getattr(exc, "FailOnRecompileLimitHit", None), getattr(exc, "FailOnCacheLimitHit", None))
                 if e is not None)


def compiled_step() -> Any:
    global _compiled_step, _compiled_plain
    if not GEMV_REWRITE:  # Inductor alone (benchmarks/generation.py --modes compile-mm compares the two)
        if _compiled_plain is None:
            _compiled_plain = torch.compile(decode_step, fullgraph=True, dynamic=False)
        return _compiled_plain
    if _compiled_step is None:
        _compiled_step = torch.compile(decode_step, fullgraph=True, dynamic=False, backend=gemv_backend)
    return _compiled_step


_compiled_plain: Any = None


_LINEARS = (torch._C._nn.linear, F.linear)


def one_row_linears_as_reductions(gm: torch.fx.GraphModule) -> int:
    """Rewrite, in dynamo's graph, each ``linear(x, W, b)`` whose input is one float32 CPU row into
    ``(x[..., None, :] * W).sum(-1) + b``: Inductor fuses that into one vectorised reduction per output
    (a GEMV reading W's rows once, as they lie), where ``linear`` would call MKL's GEMV, which reads the
    weights here at about half the core's streaming rate (docs/generation.md, "Where a step's time goes").
    Returns how many were rewritten. Shapes that are symbolic (a batch of any size) keep ``linear``."""
    done = 0
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _LINEARS:
            continue
        args = list(node.args) + [None] * (3 - len(node.args))
        x, weight, bias = args[0], args[1], node.kwargs.get("bias", args[2])
        value = x.meta.get("example_value") if isinstance(x, torch.fx.Node) else None
        if value is None or value.device.type != "cpu" or value.dtype != torch.float32:
            continue
        lead = value.shape[:-1]
        if not all(isinstance(d, int) for d in lead) or math.prod(lead) != 1:
            continue
        with graph.inserting_before(node):
            out = graph.call_function(torch.sum, (graph.call_function(torch.mul, (
                graph.call_function(torch.unsqueeze, (x, -2)), weight)), -1))
            if bias is not None:
                out = graph.call_function(torch.add, (out, bias))
        out.meta = dict(node.meta)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        done += 1
    if done:
        graph.lint()
        gm.recompile()
    return done


def gemv_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    """Inductor, after ``one_row_linears_as_reductions`` (a one-row CPU step: 1.x the MKL-GEMV step; other
    steps are unchanged)."""
    from torch._inductor.compile_fx import compile_fx

    if one_row_linears_as_reductions(gm):
        # Inductor would inline each product's producer (LayerNorm, GELU, residual adds: cheap on the 768-wide
        # row) into the reduction's inner loop, recomputing it for every weight it multiplies; realizing
        # every pointwise result into its (tiny) buffer keeps the GEMV loops to a load and an FMA
        # (GPT-2 small, one row: 38 against 55 ms/step interleaved, docs/generation.md)
        with torch._inductor.config.patch(realize_opcount_threshold=0):
            return compile_fx(gm, example_inputs)
    return compile_fx(gm, example_inputs)


GEMV_REWRITE = True  # False: generate's compiled step is Inductor's alone (linear kept; benchmarks compare)


class StaticDecoder:
    """``generate``'s model call for ``compile=`` modes: ``new_cache`` makes the static buffers, the first
    call (the prompt) runs the body eagerly into them, every later call (one token per row) runs the
    fixed-shape step. Same interface as ``step.EagerStep``."""

    def __init__(self, model: Any, lm_weight: torch.Tensor, *, mode: str) -> None:
        body = getattr(model, "body", None)
        if isinstance(body, Transformer) and lm_weight is None and getattr(model.config, "quantization", None):
            raise InputError("compile= decodes float models; an int8 model decodes with compile=False (its "
                             "int8-weight kernel compiles its own product).")
        if not isinstance(body, Transformer) or lm_weight is None:
            raise InputError("compile= works with lmforge decoder models (Model with a clm / extract head); "
                             "leave compile=False for other models.")
        device = lm_weight.device
        if mode == "graph" and device.type != "cuda":
            raise InputError(f"compile='graph' captures a CUDA graph and needs the model on a CUDA device "
                             f"(it is on {device.type}); use compile=True, which also works on CPU.",
                             cli=f"--compile graph captures a CUDA graph and needs a CUDA device (the model is on "
                                 f"{device.type}); use plain --compile, which also works on CPU.")
        self.body = body
        self.lm_weight = lm_weight
        self.mode = mode
        self.cache: StaticKVCache | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_logits: torch.Tensor | None = None

    def new_cache(self, *, batch: int, capacity: int) -> StaticKVCache:
        c = self.body.config
        capacity = min(-(-capacity // CAPACITY_STEP) * CAPACITY_STEP, max(c.max_length, capacity))
        w = self.lm_weight
        self.cache = StaticKVCache(num_layers=c.num_layers, batch=batch, num_heads=applied_heads(c),
                                   head_size=c.reformer_head_size, capacity=capacity, dtype=w.dtype, device=w.device)
        self.graph = self.graph_logits = None
        cache = self.cache
        self.token = torch.zeros((batch, 1), dtype=torch.long, device=w.device)
        self.position = torch.zeros((batch, 1), dtype=torch.long, device=w.device)
        self.index = torch.zeros(1, dtype=torch.long, device=w.device)
        self.slots = [StaticSlot(cache, i, self.index) for i in range(c.num_layers)]
        return cache

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None,
                 past: Any) -> tuple[torch.Tensor, StaticKVCache]:
        cache = self.cache
        if past is not cache or cache is None:
            raise InputError("the static decoder runs with the cache its new_cache() made.")
        if cache.length == 0:  # the prompt: eager body into the static buffers
            out = self.body(ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            cache.keys_mask[:, :ids.shape[1]] = mask.bool() if mask is not None else True
            return F.linear(out.last_hidden_state[:, -1], self.lm_weight), cache
        cache.check_room(ids.shape[1])
        if ids.shape[1] != 1:
            raise InputError("the static decode step takes one token per row.")
        n = cache.length
        self.token.copy_(ids)
        if positions is None:
            self.position.fill_(n + self.body.config.position_offset)
        else:
            self.position.copy_(positions[:, -1:])
        self.index.fill_(n)
        logits = self._run()
        cache.advance(1)
        return logits, cache

    def _step(self) -> torch.Tensor:
        args = (self.body, self.lm_weight, self.token, self.position, self.cache.keys_mask, self.index, self.slots)
        if self.mode == "compile":
            try:
                return compiled_step()(*args)
            except _recompile_limit_errors() as err:  # raised while compiling: nothing has run yet
                limit = torch._dynamo.config.recompile_limit
                warnings.warn(f"torch.compile has compiled the decode step for {limit} shape(s) already "
                              f"(torch._dynamo.config.recompile_limit; each new batch size / length bucket / "
                              f"model shape compiles once): this call decodes with the uncompiled fixed-shape "
                              f"step{', still as a CUDA graph' if self.lm_weight.is_cuda else ''}. Raise the "
                              f"limit, or keep batch sizes steady, to keep the compiled speed ({type(err).__name__})",
                              GenerationWarning, stacklevel=2)
                self.mode = "graph"  # for the rest of this call: the eager step (a CUDA graph on GPU)
        return decode_step(*args)

    def _run(self) -> torch.Tensor:
        if self.lm_weight.device.type != "cuda":
            return self._step()
        if self.graph is None:
            # Running the step again with the same inputs writes the same column: warm-up and capture are
            # idempotent, so they may use the real first step's inputs.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.graph_logits = self._step()
        self.graph.replay()
        return self.graph_logits.clone()  # the graph's output buffer is rewritten by the next replay

    def close(self) -> None:
        self.graph = self.graph_logits = self.cache = None


def _batch_decode_step(*args: Any) -> torch.Tensor:
    """``decode_step`` under its own code object: the batch step's compiles are counted apart from
    ``generate``'s (dynamo keeps its cache and its recompile limit per code object)."""
    return decode_step(*args)


_batch_compiled: Any = None


class BatchStep:
    """The compiled fixed-shape step for a batch whose rows and cache width change every few steps (the
    server's continuous batching, ``lmforge.serving.batcher``).

    Rather than one compile per (rows, width) pair, the row count and the cache width are marked dynamic
    (``torch._dynamo.maybe_mark_dynamic``): one graph serves every batch of 2 or more rows at any width,
    and one more, specialised, the single row (torch specialises sizes 0 / 1), which also gets the
    one-row GEMV rewrite (``one_row_linears_as_reductions``). ``warm_up`` compiles both before the first
    request. The caller keeps the cache (``KVCache``, zeroed, rows right-aligned at column ``index``) and
    the key mask (rows, width); ``__call__`` returns the logits (rows, V), or None once torch refused to
    compile (past its recompile limit): the caller then decodes eagerly, after one log line."""

    def __init__(self, model: Any, lm_weight: torch.Tensor | None) -> None:
        StaticDecoder(model, lm_weight, mode="compile")  # the same checks (lmforge decoder, float weights)
        self.body = model.body
        self.lm_weight = lm_weight
        self.active = True
        self.index = torch.zeros(1, dtype=torch.long, device=lm_weight.device)
        self._slots: tuple[Any, list[StaticSlot]] | None = None

    def _step_fn(self) -> Any:
        global _batch_compiled
        if _batch_compiled is None:
            _batch_compiled = torch.compile(_batch_decode_step, fullgraph=True, dynamic=False, backend=gemv_backend)
        return _batch_compiled

    def slots(self, cache: Any) -> list[StaticSlot]:
        if self._slots is None or self._slots[0] is not cache:
            self._slots = (cache, [StaticSlot(cache, i, self.index) for i in range(len(cache.keys))])
        return self._slots[1]

    def __call__(self, token: torch.Tensor, position: torch.Tensor, keys_mask: torch.Tensor, index: int,
                 cache: Any) -> torch.Tensor | None:
        """token / position (B, 1), keys_mask (B, C) bool, the new column ``index``; None after a fallback."""
        if not self.active:
            return None
        mark = torch._dynamo.maybe_mark_dynamic
        for t in (*cache.keys, *cache.values):
            mark(t, 0)
            mark(t, 2)
        for t in (token, position, keys_mask):
            mark(t, 0)
        mark(keys_mask, 1)
        self.index.fill_(index)
        try:
            return self._step_fn()(self.body, self.lm_weight, token, position, keys_mask, self.index,
                                   self.slots(cache))
        except _recompile_limit_errors() as err:  # raised while compiling: nothing has run yet
            self.active = False
            logging.getLogger("lmforge.serve").warning(
                "torch.compile refused another compile of the batch decode step (torch._dynamo.config."
                "recompile_limit = %s; %s): decoding eagerly from now on", torch._dynamo.config.recompile_limit,
                type(err).__name__)
            return None

    def warm_up(self, cache_factory: Any, capacity: int = CAPACITY_STEP, *, several: bool = True) -> float:
        """Compile the one-row step (and with ``several`` the several-row one) on zeroed inputs; returns the
        seconds it took. ``cache_factory(batch, capacity)`` makes a zeroed KVCache shaped like the caller's."""
        start = time.perf_counter()
        device = self.lm_weight.device
        with torch.no_grad():
            for batch in (1, 2, 3) if several else (1,):  # 3: the several-row graph is reused, not re-specialised
                cache = cache_factory(batch, capacity)
                zeros = torch.zeros((batch, 1), dtype=torch.long, device=device)
                mask = torch.zeros((batch, capacity), dtype=torch.bool, device=device)
                self(zeros, zeros.clone(), mask, 0, cache)
        self._slots = None
        return time.perf_counter() - start


def compile_mode(compile: bool | str, *, use_cache: bool, pack_weights: bool) -> str | None:
    """None (eager decoding) or one of ``MODES``; InputError for settings that do not combine."""
    if compile is False or compile is None:
        return None
    mode = "compile" if compile is True else compile
    if mode not in MODES:
        raise InputError(f"compile must be False, True or 'graph', got {compile!r}.")
    if not use_cache:
        raise InputError("compile= needs the KV cache (use_cache=True): the compiled step writes into it.")
    if pack_weights:
        raise InputError("pack_weights=True and compile= do not combine (Inductor picks its own GEMM "
                         "kernels); leave pack_weights unset.")
    return mode


__all__ = ["BatchStep", "CAPACITY_STEP", "MODES", "StaticDecoder", "compile_mode", "compiled_step", "decode_step"]
