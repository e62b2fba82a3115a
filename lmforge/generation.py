"""Text generation from a causal decoder with a KV cache: greedy, sampling, beam search.

``generate(model, input_ids, ...)`` (also ``model.generate(...)``) runs one prefill forward over the
prompt and then one token per step, feeding the cache back. Batched prompts must be LEFT padded
(``attention_mask`` zeros at the start of a row): position ids then come from the mask, so a padded
row sees the same positions as when it runs alone. When nothing is padded no mask is passed at all,
so the body's attention takes its fast causal path.

The decoding rules follow the standard definitions (and HF transformers' ``generate``, which the parity
tests compare against token for token):
- repetition penalty (CTRL, Keskar et al. 2019): a logit of a token already in the sequence is divided
  by the penalty when positive and multiplied by it when negative;
- sampling: logits / temperature, then top-k (keep the k largest), then top-p (keep the smallest set of
  most likely tokens whose probability sums to >= p), then one draw from the softmax;
- beam search: HF's algorithm (length penalty 1, ``early_stopping=False``), see ``_beam_search``.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import InputError
from lmforge.models.transformer import Transformer
from lmforge.nn.attention import KVCache
from lmforge.static_decode import MODES, StaticDecoder

# lmforge heads that produce next-token logits, and the ModelOutput field holding them
LM_HEADS: dict[str, str] = {"clm": "logits", "extract": "lm_logits"}

FILTER = float("-inf")  # the value a filtered-out logit gets (probability 0 after softmax)


class GenerationWarning(UserWarning):
    """Generation went on but not as asked (e.g. it stopped at the model's position limit)."""


class Streamer(Protocol):
    """Receives each step's new tokens as they are made (the CLI prints them)."""

    def put(self, tokens: torch.Tensor) -> None:  # (B,) the tokens just chosen
        ...

    def end(self) -> None:
        ...


@dataclass
class GenerationOutput:
    """What ``generate(..., return_scores=True)`` returns.

    ``tokens``: (B, N) the new tokens; a row that finished early (eos / stop string) is filled with the
    pad id after it. ``scores``: greedy / sampling -> (B, N) log-probability of each chosen token under
    the processed distribution (0 on filler); beam search -> (B,) the final beam score (sum of
    log-probabilities / length, HF's ``sequences_scores``). ``stopped``: per row, why it ended:
    "eos", "stop", "length" or "position_limit".
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    stopped: list[str]


# --------------------------------------------------------------------------- logits processors
def check_sampling_args(*, do_sample: bool, temperature: float, top_k: int, top_p: float,
                        num_beams: int, repetition_penalty: float, max_new_tokens: int) -> None:
    """Raise InputError for decoding settings that have no meaning."""
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
    if do_sample and not temperature > 0:
        raise InputError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False "
                         "(greedy) for deterministic output.")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1], got {top_p} (1 disables nucleus filtering).")
    if top_k < 0:
        raise InputError(f"top_k must be >= 0, got {top_k} (0 disables top-k filtering).")
    if num_beams < 1:
        raise InputError(f"num_beams must be >= 1, got {num_beams}.")
    if do_sample and num_beams > 1:
        raise InputError("beam search with sampling is not supported; use either num_beams > 1 "
                         "(deterministic) or do_sample=True with num_beams=1.")
    if not repetition_penalty > 0:
        raise InputError(f"repetition_penalty must be > 0, got {repetition_penalty} (1 = no penalty).")


def apply_repetition_penalty(scores: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's rule on the tokens of ``seen`` (B, T): positive logits / penalty, negative ones * penalty."""
    if penalty == 1.0:
        return scores
    picked = scores.gather(1, seen)  # (B, T)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, seen, picked)


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th kept too); k = 0 keeps all."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = torch.topk(scores, k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, FILTER)


def top_p_filter(scores: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probabilities sum to >= p; the most likely token is always kept."""
    if p >= 1.0:
        return scores
    sorted_logits, order = torch.sort(scores, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # ascending order: a token goes when the mass strictly below-and-including it is <= 1 - p, i.e. the
    # tokens above it already reach p
    remove = cumulative <= (1 - p)
    remove[..., -1] = False
    return scores.masked_fill(remove.scatter(-1, order, remove), FILTER)


def process_logits(scores: torch.Tensor, seen: torch.Tensor, *, do_sample: bool, temperature: float,
                   top_k: int, top_p: float, repetition_penalty: float) -> torch.Tensor:
    """One step's processors in HF's order: repetition penalty, then (sampling) temperature, top-k, top-p."""
    scores = apply_repetition_penalty(scores, seen, repetition_penalty)
    if do_sample:
        if temperature != 1.0:
            scores = scores / temperature
        scores = top_p_filter(top_k_filter(scores, top_k), top_p)
    return scores


# --------------------------------------------------------------------------- model access
def lm_field(model: Any) -> str:
    """The output field with next-token logits; InputError naming the model's head otherwise."""
    config = model.config
    head = getattr(config, "head", None)
    if not getattr(config, "causal", True):
        raise InputError(f"generate needs a causal decoder; this model is a bidirectional encoder "
                         f"({getattr(config, 'family', '?')}, head {head!r}): use `lmforge fill-mask` / "
                         "lmforge.fill_mask for masked language models.")
    if head not in LM_HEADS:
        raise InputError(
            f"generate needs a model with a language-modeling head (one of {', '.join(LM_HEADS)}); this "
            f"model has head {head!r}. Load it with Model.from_pretrained(DIR, head='clm') (the body "
            "weights are kept; an untied LM head would be newly initialised).")
    return LM_HEADS[head]


Cache = Any  # the body's past_key_values: a KVCache, or per layer (k, v), each (B, nh, T_past, hs)


def new_cache(model: Any, *, batch: int, capacity: int) -> Cache:
    """A preallocated KV cache for lmforge models (written in place: no per-step concatenation of the
    whole cache); None for other models, which then grow their own tuple cache."""
    body = getattr(model, "body", None)
    if isinstance(body, Transformer):
        return KVCache.for_model(body, batch=batch, capacity=capacity)
    return None


# Linear layers with fewer weights than this keep the plain kernel even when packing: on small matrices
# the packed GEMM gains nothing on one thread and lost ~35% on two under load (tiny shape, H=128, batch 8)
PACK_MIN_WEIGHTS = 2**18


def lm_weight(model: Any) -> torch.Tensor | None:
    """The (V, H) matrix of a lmforge model's LM head (the tied embedding or the untied decoder; both heads,
    clm and GPT-1's extract, compute ``F.linear(hidden, W)``); None for other models."""
    body, head = getattr(model, "body", None), getattr(model, "head", None)
    if isinstance(body, Transformer) and hasattr(head, "decoder"):
        return body.embeddings.word.weight if head.decoder is None else head.decoder.weight
    return None


class _Forward:
    """One model call of generation: next-token logits (B, V) at the last position, and the cache.

    A lmforge model runs its body and then the LM product on the last position only (both LM heads, clm and
    GPT-1's extract, compute exactly ``F.linear(hidden, W)``, W the tied embedding or the untied decoder,
    no bias), so no head work is spent on positions or outputs generation does not read. Any other model
    is called with its own forward (``logits_to_keep=1`` when it says it supports it).

    ``pack=True`` (lmforge models on CPU in float32 with MKL) runs every linear layer of the body and the
    LM product through MKL's packed GEMM (``cblas_sgemm_pack``, what Inductor's CPU freezing pass uses) at
    the decode step's row count. For a few rows (batched decoding) that kernel is 1.5-2.5x faster than
    the plain one, whose weight-transposed small-M GEMM reaches only a fraction of the core's FLOP rate;
    the packed copies live for one ``generate`` call. Calls with another row count (the prefill) fall
    back to the plain product inside the same op. The packed result equals ``addmm(b, x, W.T.contiguous())``
    bit for bit (HF GPT-2's Conv1D order), not ``F.linear``'s, an fp32 rounding-order difference.
    """

    def __init__(self, model: Any, field: str, *, rows: int, pack: bool) -> None:
        self.model = model
        self.field = field
        self.lm_packed: torch.Tensor | None = None
        self.rows = rows
        self.patched: list[tuple[nn.Linear, Any]] = []
        self.lm_weight = lm_weight(model)
        if self.lm_weight is not None and pack:
            self._pack(model.body)

    def _pack(self, body: nn.Module) -> None:
        rows = self.rows
        for module in body.modules():
            if isinstance(module, nn.Linear) and module.weight.numel() >= PACK_MIN_WEIGHTS:
                packed = torch.ops.mkl._mkl_reorder_linear_weight(module.weight, rows)

                def forward(x: torch.Tensor, _w: torch.Tensor = module.weight, _b: torch.Tensor | None = module.bias,
                            _p: torch.Tensor = packed) -> torch.Tensor:
                    return torch.ops.mkl._mkl_linear(x, _p, _w, _b, rows)

                self.patched.append((module, module.__dict__.get("forward")))
                module.forward = forward  # an instance attribute: nn.Module.__call__ runs it
        if self.lm_weight.numel() >= PACK_MIN_WEIGHTS:
            self.lm_packed = torch.ops.mkl._mkl_reorder_linear_weight(self.lm_weight, rows)

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
            logits = torch.ops.mkl._mkl_linear(hidden, self.lm_packed, self.lm_weight, None, self.rows)
        else:
            logits = F.linear(hidden, self.lm_weight)
        return logits, out.past_key_values  # (B, V)


def can_pack(model: Any) -> bool:
    """MKL's packed GEMM applies: a CPU float32 model and a torch built with MKL."""
    weight = next(model.parameters(), None)
    return (weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"))


def _last_only(model: Any) -> dict[str, Any]:
    """Ask for logits of the last position only when the model supports it (saves the V x H product
    over the whole prompt at prefill)."""
    return {"logits_to_keep": 1} if getattr(type(model), "supports_logits_to_keep", False) else {}


def reorder_cache(past: Cache, index: torch.Tensor) -> Cache:
    """Rows of every layer's cache picked by ``index`` (beam search follows its surviving beams)."""
    if hasattr(past, "reorder"):
        past.reorder(index)
        return past
    return tuple(tuple(t.index_select(0, index) for t in layer) for layer in past)


# --------------------------------------------------------------------------- input checks
def _prepare(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             max_new_tokens: int, truncate_prompt: bool) -> tuple[torch.Tensor, torch.Tensor | None, int, bool]:
    """Validate the prompt batch; returns (ids, mask or None, max_new_tokens capped, capped?)."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = attention_mask.unsqueeze(0) if attention_mask is not None else None
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be a (batch, length) tensor with length >= 1, got shape "
                         f"{tuple(input_ids.shape)}.")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise InputError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape "
                             f"{tuple(input_ids.shape)}.")
        attention_mask = attention_mask.to(device)
        if bool(attention_mask.all()):
            attention_mask = None  # no padding: skip mask building entirely
        elif not bool(attention_mask[:, -1].all()):
            raise InputError("generation needs LEFT-padded prompts (padding at the start of each row, the "
                             "last column all real tokens); tokenize with padding_side='left'.")
    limit = int(model.config.max_positions)
    length = input_ids.shape[1]
    if length >= limit:
        if not truncate_prompt:
            check_prompt_length(length, limit)
        keep = max(1, limit - max(1, min(max_new_tokens, limit // 2)))
        input_ids = input_ids[:, -keep:]
        attention_mask = attention_mask[:, -keep:] if attention_mask is not None else None
        warnings.warn(f"the prompt was left-truncated from {length} to {keep} tokens to fit the "
                      f"{limit}-position context.", GenerationWarning, stacklevel=3)
        length = keep
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
    capped = length + max_new_tokens > limit
    if capped:
        warnings.warn(f"max_new_tokens={max_new_tokens} goes past the model's {limit} positions "
                      f"(prompt {length} tokens): generation stops after {limit - length} new tokens.",
                      GenerationWarning, stacklevel=3)
        max_new_tokens = limit - length
    return input_ids, attention_mask, max_new_tokens, capped


def check_prompt_length(length: int, limit: int) -> None:
    """InputError when a prompt of ``length`` tokens leaves no room in a ``limit``-position context."""
    if length >= limit:
        raise InputError(f"the prompt has {length} tokens but the model's context is {limit} positions, "
                         "leaving no room to generate; shorten it or pass truncate_prompt=True "
                         "(CLI: --truncate-prompt) to keep its last tokens.")


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: 0 at each row's first real token (pads get 0 too)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class _StopStrings:
    """Finds rows whose decoded continuation contains one of the stop strings."""

    def __init__(self, stop: Sequence[str], tokenizer: Any) -> None:
        if tokenizer is None:
            raise InputError("stop strings need the tokenizer to decode the tokens: pass tokenizer=...")
        if any(not s for s in stop):
            raise InputError("stop strings must be non-empty.")
        self.stop = list(stop)
        self.tokenizer = tokenizer

    def hits(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """(B,) bool: rows (among ``active``) whose text so far contains a stop string."""
        hit = torch.zeros_like(active)
        for row in torch.nonzero(active).flatten().tolist():
            text = self.tokenizer.decode(tokens[row].tolist())
            hit[row] = any(s in text for s in self.stop)
        return hit


# --------------------------------------------------------------------------- entry point
@torch.no_grad()
def generate(model: Any, input_ids: torch.Tensor, *, attention_mask: torch.Tensor | None = None,
             max_new_tokens: int, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, num_beams: int = 1, repetition_penalty: float = 1.0,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             stop: Sequence[str] | None = None, tokenizer: Any = None, seed: int | None = None,
             return_scores: bool = False, streamer: Streamer | None = None, use_cache: bool = True,
             truncate_prompt: bool = False, pack_weights: bool | None = None,
             compile: bool | str = False, return_prompt: bool = True) -> torch.Tensor | GenerationOutput:
    """Continue each prompt row of ``input_ids`` (B, L) by up to ``max_new_tokens`` tokens.

    Returns the prompt and the new tokens (B, L + N), as HF's ``generate`` — N is the longest row's count;
    shorter rows are filled with ``pad_token_id`` (default: the first eos id, else 0); ``return_prompt=False``:
    the new tokens only (B, N) — or a ``GenerationOutput`` (new tokens) with ``return_scores=True``.
    ``stop`` strings end a row once its decoded text contains one (needs
    ``tokenizer``; the tokens up to and including the one completing it are returned). ``seed`` makes
    sampling reproducible without touching the global RNG. ``use_cache=False`` recomputes the whole
    sequence every step (slow; a reference for tests). ``truncate_prompt`` keeps the last tokens of a
    prompt that does not fit the context instead of raising. ``pack_weights`` runs the linear layers through
    MKL's packed GEMM during decoding (None: when it helps, i.e. a CPU float32 model decoding several rows;
    it holds a packed copy of the weights for the call). ``compile`` runs the decode steps as one fixed-shape
    step (``lmforge.static_decode``): True = torch.compile'd, and on CUDA captured as a CUDA graph and
    replayed per token (the first call of a shape pays the compile); "graph" = the eager step as a CUDA graph
    (GPU only, nothing to compile). Same tokens as the eager path up to float rounding.
    """
    field = lm_field(model)
    check_sampling_args(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                        num_beams=num_beams, repetition_penalty=repetition_penalty,
                        max_new_tokens=max_new_tokens)
    ids, mask, n_new, capped = _prepare(model, input_ids, attention_mask, max_new_tokens, truncate_prompt)
    eos = _as_list(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    stopper = _StopStrings(stop, tokenizer) if stop else None
    was_training = model.training
    model.eval()
    rows = ids.shape[0] * num_beams
    if pack_weights is None:  # MKL's packed GEMM wins for a few rows; one row is a memory-bound GEMV anyway
        pack_weights = use_cache and rows > 1 and can_pack(model) and not compile
    elif pack_weights and not can_pack(model):
        raise InputError("pack_weights=True needs a float32 model on CPU and a torch built with MKL; "
                         "leave pack_weights=None to decide automatically.")
    mode = _compile_mode(compile, use_cache=use_cache, pack_weights=pack_weights)
    if mode is not None:
        forward: _Forward | StaticDecoder = StaticDecoder(model, lm_weight(model), mode=mode)
    else:
        forward = _Forward(model, field, rows=rows, pack=pack_weights)
    try:
        if num_beams > 1:
            if stopper is not None or streamer is not None:
                raise InputError("stop strings and streaming work with greedy / sampling only (num_beams=1).")
            result = _beam_search(model, forward, ids, mask, n_new=n_new, num_beams=num_beams, eos=eos,
                                  pad=pad, repetition_penalty=repetition_penalty, capped=capped)
        else:
            generator = None
            if do_sample:
                generator = torch.Generator(device=ids.device)
                generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
            result = _decode(model, forward, ids, mask, n_new=n_new, do_sample=do_sample,
                             temperature=temperature, top_k=top_k, top_p=top_p,
                             repetition_penalty=repetition_penalty, eos=eos, pad=pad, stopper=stopper,
                             generator=generator, streamer=streamer, use_cache=use_cache, capped=capped,
                             want_scores=return_scores)
    finally:
        forward.close()
        model.train(was_training)
    if return_scores:
        return result
    # the prompt as the model read it (left-truncated when truncate_prompt cut it)
    return torch.cat([ids, result.tokens], dim=1) if return_prompt else result.tokens


def _compile_mode(compile: bool | str, *, use_cache: bool, pack_weights: bool) -> str | None:
    """None (eager decoding) or one of static_decode.MODES; InputError for settings that do not combine."""
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


def _as_list(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


# --------------------------------------------------------------------------- greedy / sampling
def _decode(model: Any, forward: _Forward | StaticDecoder, ids: torch.Tensor, mask: torch.Tensor | None, *,
            n_new: int, do_sample: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
            eos: list[int], pad: int, stopper: _StopStrings | None, generator: torch.Generator | None,
            streamer: Streamer | None, use_cache: bool, capped: bool, want_scores: bool = True) -> GenerationOutput:
    B, L = ids.shape
    device = ids.device
    tokens = torch.full((B, n_new), pad, dtype=torch.long, device=device)
    scores = torch.zeros((B, n_new), dtype=torch.float32, device=device)
    stopped = ["position_limit" if capped else "length"] * B
    if n_new == 0:
        return GenerationOutput(tokens, scores, stopped)
    # the whole sequence so far (prompt + new): the repetition penalty and the no-cache path read it
    seq = torch.cat([ids, tokens], dim=1)  # (B, L + N)
    full_mask = torch.cat([mask, torch.ones_like(tokens)], dim=1) if mask is not None else None
    eos_t = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    positions = _positions(mask) if mask is not None else None
    cache = forward.new_cache(batch=B, capacity=L + n_new) if use_cache else None
    logits, past = forward(ids, mask, positions, cache)
    made = 0
    can_finish = eos_t is not None or stopper is not None  # else every row runs to the end: no per-step checks
    for t in range(n_new):
        step = process_logits(logits.float(), seq[:, :L + t], do_sample=do_sample, temperature=temperature,
                              top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
        if do_sample:
            probs = step.softmax(dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            nxt = step.argmax(dim=-1)
        if can_finish:
            nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
        if want_scores:
            logp = step.log_softmax(dim=-1).gather(1, nxt[:, None]).squeeze(1)
            scores[:, t] = torch.where(finished, torch.zeros_like(logp), logp)
        tokens[:, t] = nxt
        seq[:, L + t] = nxt
        made = t + 1
        if streamer is not None:
            streamer.put(nxt)
        newly = torch.zeros_like(finished)
        if eos_t is not None:
            newly = ~finished & torch.isin(nxt, eos_t)
            for row in torch.nonzero(newly).flatten().tolist():
                stopped[row] = "eos"
        if stopper is not None:
            hit = stopper.hits(tokens[:, :made], ~finished & ~newly)
            for row in torch.nonzero(hit).flatten().tolist():
                stopped[row] = "stop"
            newly |= hit
        finished |= newly
        if t == n_new - 1 or (can_finish and bool(finished.all())):
            break
        if use_cache:
            step_mask = full_mask[:, :L + t + 1] if full_mask is not None else None
            step_pos = positions[:, -1:] + t + 1 if positions is not None else None
            logits, past = forward(nxt[:, None], step_mask, step_pos, past)
        else:  # reference path: the whole sequence again, no cache
            cur_mask = full_mask[:, :L + t + 1] if full_mask is not None else None
            cur_pos = _positions(cur_mask) if cur_mask is not None else None
            logits, _ = forward(seq[:, :L + t + 1], cur_mask, cur_pos, None)
    if streamer is not None:
        streamer.end()
    return GenerationOutput(tokens[:, :made], scores[:, :made], stopped)


# --------------------------------------------------------------------------- beam search
def _beam_search(model: Any, forward: _Forward | StaticDecoder, ids: torch.Tensor, mask: torch.Tensor | None, *,
                 n_new: int, num_beams: int, eos: list[int], pad: int, repetition_penalty: float,
                 capped: bool) -> GenerationOutput:
    """HF transformers' beam search (length_penalty=1, early_stopping=False), batched and vectorised.

    Each step keeps the top 2 * num_beams continuations of every prompt (so that num_beams survive when
    some end with eos); continuations that end (eos, or the last step) become finished hypotheses
    scored sum(log p) / new_length when they rank among the top num_beams; the search stops for a prompt
    when no running beam can still beat its worst finished hypothesis.
    """
    B, L = ids.shape
    K = num_beams
    device = ids.device
    if n_new == 0:
        return GenerationOutput(torch.empty((B, 0), dtype=torch.long, device=device),
                                torch.zeros(B, device=device), ["length"] * B)
    keep = max(2, 1 + len(eos)) * K
    top_mask = torch.arange(keep, device=device) < K  # (keep,) only the top K may finish
    eos_t = torch.tensor(eos, dtype=torch.long, device=device) if eos else None
    max_len = L + n_new
    running = torch.full((B, K, max_len), pad, dtype=torch.long, device=device)
    running[:, :, :L] = ids[:, None, :]
    sequences = running.clone()
    running_scores = torch.zeros((B, K), device=device)
    running_scores[:, 1:] = -1e9  # only the first beam expands at step 0 (all beams are equal then)
    beam_scores = torch.full((B, K), -1e9, device=device)
    finished = torch.zeros((B, K), dtype=torch.bool, device=device)
    improvable = torch.ones((B, 1), dtype=torch.bool, device=device)
    lengths = torch.zeros((B, K), dtype=torch.long, device=device)  # new tokens of each finished hypothesis

    flat_ids = ids.repeat_interleave(K, dim=0)  # (B*K, L)
    flat_mask = mask.repeat_interleave(K, dim=0) if mask is not None else None
    positions = _positions(flat_mask) if flat_mask is not None else None
    cache = forward.new_cache(batch=B * K, capacity=max_len)
    logits, past = forward(flat_ids, flat_mask, positions, cache)
    offsets = torch.arange(B, device=device)[:, None] * K
    cur = L
    while True:
        logp = logits.float().log_softmax(dim=-1)  # (B*K, V); HF applies processors after log_softmax
        logp = apply_repetition_penalty(logp, running[:, :, :cur].reshape(B * K, cur), repetition_penalty)
        V = logp.shape[-1]
        total = (logp.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_scores, top_index = torch.topk(total, keep, dim=1)  # (B, keep)
        src_beam = top_index // V
        token = top_index % V
        cand = running.gather(1, src_beam[:, :, None].expand(-1, -1, max_len)).clone()  # (B, keep, max_len)
        cand[:, :, cur] = token
        ends = torch.full_like(token, cur + 1 >= max_len, dtype=torch.bool)
        if eos_t is not None:
            ends |= torch.isin(token, eos_t)
        # running beams for the next step: the best K candidates that did not end
        live_scores = top_scores + ends.float() * -1e9
        next_index = torch.topk(live_scores, K, dim=1).indices  # (B, K)
        running = cand.gather(1, next_index[:, :, None].expand(-1, -1, max_len))
        running_scores = live_scores.gather(1, next_index)
        parent = (src_beam.gather(1, next_index) + offsets).flatten()  # (B*K,) cache rows to keep
        # finished hypotheses: merge the candidates that ended among the top K with the ones kept so far
        new_len = cur + 1 - L
        done_scores = top_scores / new_len
        done_scores = done_scores + (~improvable).float() * -1e9
        done_scores = done_scores + (~(ends & top_mask[None, :])).float() * -1e9
        merged_seq = torch.cat([sequences, cand], dim=1)
        merged_scores = torch.cat([beam_scores, done_scores], dim=1)
        merged_finished = torch.cat([finished, ends & top_mask[None, :]], dim=1)
        merged_len = torch.cat([lengths, torch.full_like(token, new_len)], dim=1)
        best = torch.topk(merged_scores, K, dim=1).indices
        sequences = merged_seq.gather(1, best[:, :, None].expand(-1, -1, max_len))
        beam_scores = merged_scores.gather(1, best)
        finished = merged_finished.gather(1, best)
        lengths = merged_len.gather(1, best)
        cur += 1
        # HF's early-stop heuristic (early_stopping=False): the best running beam, scored at the current
        # length, cannot beat the worst finished hypothesis any more
        best_running = running_scores[:, :1] / (cur - L)
        worst_done = torch.where(finished, beam_scores.min(dim=1, keepdim=True).values,
                                 torch.full_like(beam_scores, -1e9))
        improvable = improvable & (best_running > worst_done).any(dim=-1, keepdim=True)
        if not bool(improvable.any()) or bool(ends.all()) or cur >= max_len:
            break
        past = reorder_cache(past, parent)
        flat_tokens = running[:, :, cur - 1].reshape(B * K, 1)
        if flat_mask is not None:
            flat_mask = torch.cat([flat_mask.index_select(0, parent), torch.ones_like(flat_tokens)], dim=1)
            positions = _positions(flat_mask)[:, -1:]
        logits, past = forward(flat_tokens, flat_mask, positions, past)
    n = int(lengths[:, 0].max().item())
    out = sequences[:, 0, L:L + n]
    stopped = []
    for row in range(B):
        last = int(lengths[row, 0].item())
        ended_eos = eos_t is not None and last > 0 and bool(torch.isin(sequences[row, 0, L + last - 1], eos_t))
        stopped.append("eos" if ended_eos else ("position_limit" if capped else "length"))
    return GenerationOutput(out, beam_scores[:, 0], stopped)


# --------------------------------------------------------------------------- Model.generate
class GenerationMixin:
    """Adds ``model.generate(input_ids, ...)``; the same keyword arguments as ``generate``."""

    def generate(self, input_ids: torch.Tensor, **options: Any) -> torch.Tensor | GenerationOutput:
        # options are generate()'s keyword-only parameters: a typo fails there with a TypeError
        return generate(self, input_ids, **options)





# --------------------------------------------------------------------------- text helpers (CLI, prompts)
def encode_prompts(tokenizer: Any, prompts: Sequence[str], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, mask), each (B, L), for a batch of prompt strings (no special tokens added;
    an empty prompt starts from the tokenizer's bos, else eos, token as GPT-2 does)."""
    rows: list[list[int]] = []
    for text in prompts:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
        if not ids:
            start = getattr(tokenizer, "bos_token_id", None)
            start = start if start is not None else getattr(tokenizer, "eos_token_id", None)
            if start is None:
                raise InputError("the prompt is empty and the tokenizer has no bos / eos token to start from; "
                                 "give a non-empty prompt.")
            ids = [int(start)]
        rows.append(ids)
    width = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids_t[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids_t, mask


class TextStreamer:
    """Prints the text of row 0 as tokens arrive. Byte-level BPE can split one character over several
    tokens, so text ending in an incomplete character (U+FFFD) is held back until it completes."""

    def __init__(self, tokenizer: Any, write: Any, *, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.write = write
        self.stop = list(stop)
        self.tokens: list[int] = []
        self.shown = 0  # characters of the decoded text already written
        self.done = False

    def put(self, tokens: torch.Tensor) -> None:
        if self.done:
            return
        self.tokens.append(int(tokens.reshape(-1)[0]))
        text = self.tokenizer.decode(self.tokens)
        for s in self.stop:  # never print a stop string or what follows it
            cut = text.find(s)
            if cut != -1:
                text = text[:cut]
                self.done = True
        if text.endswith("\ufffd") and not self.done:
            return
        if len(text) > self.shown:
            self.write(text[self.shown:])
            self.shown = len(text)

    def end(self) -> None:
        self.done = True


__all__ = ["LM_HEADS", "GenerationMixin", "GenerationOutput", "GenerationWarning", "Streamer", "TextStreamer",
           "apply_repetition_penalty", "check_sampling_args", "encode_prompts", "generate", "lm_weight",
           "process_logits", "reorder_cache", "top_k_filter", "top_p_filter"]
