"""Text generation from a causal decoder with a KV cache: greedy, sampling, beam search.

``generate(model, input_ids, ...)`` (also ``model.generate(...)``) lives in ``decode``; the modules follow
one call's data flow:
  inputs    prompt batch checks, position ids from the left-padding mask
  step      the model call per step (``EagerStep``: body + LM product, packed GEMMs), its cache
  static    the fixed-shape step of ``compile=`` (torch.compile / CUDA graph)
  sampling  logits processors: repetition penalty, temperature, top-k, top-p
  decode    ``generate()`` and the greedy / sampling loop
  beam      beam search
  text      prompt encoding, stop strings, the streaming printer
  output    GenerationOutput, the Streamer protocol, GenerationWarning
"""
from __future__ import annotations

from lmforge.generation.beam import beam_search
from lmforge.generation.decode import decode_loop, generate
from lmforge.generation.inputs import check_prompt_length
from lmforge.generation.output import GenerationOutput, GenerationWarning, Streamer
from lmforge.generation.sampling import (apply_repetition_penalty, check_sampling_args, process_logits, top_k_filter,
                                         top_p_filter)
from lmforge.generation.static import CAPACITY_STEP, MODES, StaticDecoder, decode_step
from lmforge.generation.step import (LM_HEADS, EagerStep, PackedLinear, can_pack, lm_field, lm_weight,
                                     release_packed, reorder_cache)
from lmforge.generation.text import StopStrings, TextStreamer, encode_prompts
from lmforge.nn.attention.cache import StaticKVCache

__all__ = ["CAPACITY_STEP", "LM_HEADS", "MODES", "EagerStep", "GenerationOutput", "GenerationWarning", "PackedLinear",
           "StaticDecoder", "StaticKVCache", "StopStrings", "Streamer", "TextStreamer", "apply_repetition_penalty",
           "beam_search", "can_pack", "check_prompt_length", "check_sampling_args", "decode_loop", "decode_step",
           "encode_prompts", "generate", "lm_field", "lm_weight", "process_logits", "release_packed", "reorder_cache",
           "top_k_filter", "top_p_filter"]
