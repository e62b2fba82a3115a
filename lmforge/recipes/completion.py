"""Completing prompts for `lmforge generate` / `lmforge prompt`: batch, decode, cut at stop strings, and
stream the text to stdout or print one JSON record per prompt."""
from __future__ import annotations

import json
import sys
import warnings
from typing import Any


def complete(model: Any, tokenizer: Any, prompts: list[str], options: dict[str, Any], *,
             stop: list[str], stream: bool, json_out: bool, echo_prompt: bool = True) -> list[dict[str, Any]]:
    """Generate for every prompt; stream to stdout or print JSON lines. Returns the records."""
    from lmforge.generation import (TextStreamer, check_prompt_length, check_sampling_args, encode_prompts, generate,
                                    lm_field)
    from lmforge.prompting.templates import cut_at_stop

    # fail before anything is printed (the prompt is echoed when streaming)
    lm_field(model)
    check_sampling_args(**{k: options[k] for k in ("do_sample", "temperature", "top_k", "top_p", "num_beams",
                                                    "repetition_penalty", "max_new_tokens")})

    eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    records = []
    # streaming shows one prompt at a time; --json batches every prompt (left padding)
    batches = [[p] for p in prompts] if stream and not json_out else [prompts]
    for batch in batches:
        ids, mask = encode_prompts(tokenizer, batch, pad_id=pad)
        if not options["truncate_prompt"]:
            check_prompt_length(ids.shape[1], int(model.config.max_positions))
        streamer = None
        if stream and not json_out and options["num_beams"] == 1:
            if echo_prompt:
                sys.stdout.write(batch[0])
            streamer = TextStreamer(tokenizer, _write, stop=stop)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = generate(model, ids, attention_mask=mask, eos_token_id=eos, pad_token_id=pad,
                           stop=stop or None, tokenizer=tokenizer, streamer=streamer, return_scores=True,
                           **options)
        for w in caught:
            print(f"lmforge: note: {w.message}", file=sys.stderr)
        for row, prompt in enumerate(batch):
            tokens = out.tokens[row].tolist()
            n = len(tokens)
            while n and out.stopped[row] in ("eos", "stop") and tokens[n - 1] == pad and pad != eos:
                n -= 1
            tokens = tokens[:n]
            if out.stopped[row] == "eos" and tokens and tokens[-1] == eos:
                tokens = tokens[:-1]  # the eos token ends the text; it is not part of it
            completion = cut_at_stop(tokenizer.decode(tokens), stop)
            record = {"prompt": prompt, "completion": completion, "tokens": tokens, "stopped": out.stopped[row]}
            records.append(record)
            if json_out:
                print(json.dumps(record, ensure_ascii=False), flush=True)
            elif streamer is not None:
                sys.stdout.write("\n")
                sys.stdout.flush()
            else:
                print((prompt if echo_prompt else "") + completion, flush=True)
    return records


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


__all__ = ["complete"]
