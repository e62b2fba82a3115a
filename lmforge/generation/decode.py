"""``generate()``: one prefill forward over the prompt, then one token per step, feeding the cache back
(greedy or sampling here; beam search in ``beam.py``).

Batched prompts must be LEFT padded (``attention_mask`` zeros at the start of a row): position ids then come
from the mask, so a padded row sees the same positions as when it runs alone. When nothing is padded no mask
is passed at all, so the body's attention takes its fast causal path. The decoding rules follow HF
transformers' ``generate``, which the parity tests compare against token for token.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmforge.errors import InputError
from lmforge.generation.beam import beam_search
from lmforge.generation.inputs import positions, prepare_prompts, token_ids
from lmforge.generation.output import GenerationOutput, Streamer
from lmforge.generation.sampling import check_sampling_args, process_logits
from lmforge.generation.static import StaticDecoder, compile_mode
from lmforge.generation.step import EagerStep, can_pack, lm_field, lm_weight
from lmforge.generation.text import StopStrings


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

    ``eos_token_id``: the id(s) that end a row; None (default) = ``model.config.eos_token_id`` as HF does,
    ``[]`` = never stop early. Returns the prompt and the new tokens (B, L + N), as HF's ``generate`` — N is the longest row's count;
    shorter rows are filled with ``pad_token_id`` (default: the first eos id, else 0); ``return_prompt=False``:
    the new tokens only (B, N) — or a ``GenerationOutput`` (new tokens) with ``return_scores=True``. ``stop`` strings end a row once its decoded text contains one (needs
    ``tokenizer``; the tokens up to and including the one completing it are returned). ``seed`` makes
    sampling reproducible without touching the global RNG. ``use_cache=False`` recomputes the whole
    sequence every step (slow; a reference for tests). ``truncate_prompt`` keeps the last tokens of a
    prompt that does not fit the context instead of raising. ``pack_weights`` runs the linear layers through
    a packed GEMM during decoding (oneDNN for several rows, MKL's for one; None: whenever the model is a CPU
    float32 one; the packed copies of the weights are made on the first call and kept with the model's
    weights: ``lmforge.generation.release_packed(model)`` frees them). ``compile`` runs the decode steps as one fixed-shape
    step (``lmforge.generation.static``): True = torch.compile'd, and on CUDA captured as a CUDA graph and
    replayed per token (the first call of a shape pays the compile); "graph" = the eager step as a CUDA graph
    (GPU only, nothing to compile). Same tokens as the eager path up to float rounding.
    """
    field = lm_field(model)
    check_sampling_args(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                        num_beams=num_beams, repetition_penalty=repetition_penalty,
                        max_new_tokens=max_new_tokens)
    ids, mask, n_new, capped = prepare_prompts(model, input_ids, attention_mask, max_new_tokens, truncate_prompt)
    if eos_token_id is None:  # as HF's generation config: the model's own end-of-text id; [] never stops
        eos_token_id = getattr(getattr(model, "config", None), "eos_token_id", None)
    eos = token_ids(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    stopper = StopStrings(stop, tokenizer) if stop else None
    was_training = model.training
    model.eval()
    rows = ids.shape[0] * num_beams
    if pack_weights is None:  # a packed GEMM beats F.linear's kernel at decode row counts (docs/generation.md)
        pack_weights = use_cache and can_pack(model) and not compile
    elif pack_weights and not can_pack(model):
        raise InputError("pack_weights=True needs a float32 model on CPU and a torch built with oneDNN or MKL; "
                         "leave pack_weights=None to decide automatically.")
    mode = compile_mode(compile, use_cache=use_cache, pack_weights=pack_weights)
    if mode is not None:
        forward: EagerStep | StaticDecoder = StaticDecoder(model, lm_weight(model), mode=mode)
    else:
        forward = EagerStep(model, field, rows=rows, pack=pack_weights)
    try:
        if num_beams > 1:
            if stopper is not None or streamer is not None:
                raise InputError("stop strings and streaming work with greedy / sampling only (num_beams=1).")
            result = beam_search(forward, ids, mask, n_new=n_new, num_beams=num_beams, eos=eos, pad=pad,
                                 repetition_penalty=repetition_penalty, capped=capped)
        else:
            generator = None
            if do_sample:
                generator = torch.Generator(device=ids.device)
                generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
            result = decode_loop(forward, ids, mask, n_new=n_new, do_sample=do_sample, temperature=temperature,
                                 top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, eos=eos,
                                 pad=pad, stopper=stopper, generator=generator, streamer=streamer,
                                 use_cache=use_cache, capped=capped, want_scores=return_scores)
    finally:
        forward.close()
        model.train(was_training)
    if return_scores:
        return result
    # the prompt as the model read it (left-truncated when truncate_prompt cut it)
    return torch.cat([ids, result.tokens], dim=1) if return_prompt else result.tokens


def decode_loop(forward: EagerStep | StaticDecoder, ids: torch.Tensor, mask: torch.Tensor | None, *, n_new: int,
                do_sample: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
                eos: list[int], pad: int, stopper: StopStrings | None, generator: torch.Generator | None,
                streamer: Streamer | None, use_cache: bool, capped: bool, want_scores: bool = True) -> GenerationOutput:
    """Greedy or sampled decoding of ``ids`` (B, L) for up to ``n_new`` tokens; rows end at eos / a stop string."""
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
    pos = positions(mask) if mask is not None else None
    cache = forward.new_cache(batch=B, capacity=L + n_new) if use_cache else None
    logits, past = forward(ids, mask, pos, cache)
    made = 0
    can_finish = eos_t is not None or stopper is not None  # else every row runs to the end: no per-step checks
    for t in range(n_new):
        step = process_logits(logits.float(), seq[:, :L + t], do_sample=do_sample, temperature=temperature,
                              top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
        if do_sample:
            nxt = torch.multinomial(step.softmax(dim=-1), 1, generator=generator).squeeze(1)  # (B,)
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
        if can_finish:
            finished |= _newly_finished(nxt, tokens[:, :made], finished, eos_t, stopper, stopped)
        if t == n_new - 1 or (can_finish and bool(finished.all())):
            break
        if use_cache:
            step_mask = full_mask[:, :L + t + 1] if full_mask is not None else None
            step_pos = pos[:, -1:] + t + 1 if pos is not None else None
            logits, past = forward(nxt[:, None], step_mask, step_pos, past)
        else:  # reference path: the whole sequence again, no cache
            cur_mask = full_mask[:, :L + t + 1] if full_mask is not None else None
            cur_pos = positions(cur_mask) if cur_mask is not None else None
            logits, _ = forward(seq[:, :L + t + 1], cur_mask, cur_pos, None)
    if streamer is not None:
        streamer.end()
    return GenerationOutput(tokens[:, :made], scores[:, :made], stopped)


def _newly_finished(nxt: torch.Tensor, made: torch.Tensor, finished: torch.Tensor, eos: torch.Tensor | None,
                    stopper: StopStrings | None, stopped: list[str]) -> torch.Tensor:
    """(B,) bool: the rows that end with this step's token ``nxt`` (an eos, or text completing a stop string
    over ``made`` (B, t)); records why in ``stopped``."""
    newly = torch.zeros_like(finished)
    if eos is not None:
        newly = ~finished & torch.isin(nxt, eos)
        for row in torch.nonzero(newly).flatten().tolist():
            stopped[row] = "eos"
    if stopper is not None:
        hit = stopper.hits(made, ~finished & ~newly)
        for row in torch.nonzero(hit).flatten().tolist():
            stopped[row] = "stop"
        newly |= hit
    return newly


__all__ = ["decode_loop", "generate"]
