"""Text around generation (the CLI and prompts use these): left-padded encoding of prompt strings, stop
strings that end a row once its decoded text holds one, and a streamer that prints row 0 as it is made."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lmforge.errors import InputError


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


class StopStrings:
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


__all__ = ["StopStrings", "TextStreamer", "encode_prompts"]
