"""Fill-mask with a masked language model: the top-k tokens (with probabilities) for each mask.

Several masks in one text are filled independently: one forward pass over the text with every mask in
place, then each mask position's own distribution (as BERT was trained: the other masks stay masked).
"""
from __future__ import annotations

from typing import Any

import torch

from lmforge.errors import InputError

MLM_HEADS = ("mlm", "pretraining")  # heads whose `logits` are vocabulary logits at every position


def mask_token_of(tokenizer: Any) -> tuple[str, int]:
    """The tokenizer's mask token string and id; InputError when it has none (a GPT tokenizer)."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise InputError("this tokenizer has no mask token, so fill-mask cannot be used with it; use a "
                         "masked language model's tokenizer (BERT-style, with [MASK] / <mask>).")
    token = getattr(tokenizer, "mask_token", None)
    if not token:
        vocab = tokenizer.get_vocab()
        token = next(t for t, i in vocab.items() if i == mask_id)
    return str(token), int(mask_id)


@torch.no_grad()
def fill_mask(model: Any, tokenizer: Any, text: str, top_k: int = 5, *,
              k: int | None = None) -> list[list[dict[str, Any]]]:
    """For each mask token in ``text`` (left to right), its ``top_k`` most likely tokens (``k=``: the old
    name of ``top_k``, deprecated).

    Each candidate is ``{"token": str, "token_id": int, "score": probability, "sequence": text with this
    mask filled}``. Raises InputError when the text has no mask token or the model has no MLM head.
    """
    if k is not None:
        import warnings

        warnings.warn("fill_mask(k=) is deprecated; use top_k= (the CLI's --top-k)", DeprecationWarning, stacklevel=3)
        top_k = k
    check_mlm(model)
    if top_k < 1:
        raise InputError(f"top_k must be >= 1, got {top_k}.", cli=f"--top-k must be >= 1, got {top_k}.")
    mask_str, mask_id = mask_token_of(tokenizer)
    enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"]  # (1, L)
    positions = torch.nonzero(ids[0] == mask_id).flatten().tolist()
    if not positions:
        raise InputError(f"the text has no mask token {mask_str}: write {mask_str} where a word should be "
                         f"predicted, e.g. \"the man went to the {mask_str}.\"")
    limit = int(model.config.max_positions)
    if ids.shape[1] > limit:
        raise InputError(f"the text is {ids.shape[1]} tokens long; the model reads at most {limit}.")
    return fill_mask_ids(model, tokenizer, [ids[0].tolist()], top_k=top_k)[0]


@torch.no_grad()
def fill_mask_ids(model: Any, tokenizer: Any, rows: list[list[int]], *, top_k: int = 5) -> list[list[list[dict[str, Any]]]]:
    """``fill_mask`` for already encoded texts (token-id rows with the tokenizer's specials, each with at
    least one mask token, none longer than the model's positions), run as one right-padded batch; one
    result per row. Only decodes with the tokenizer (the server calls it from its worker thread)."""
    mask_id = int(tokenizer.mask_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, :len(r)] = 1
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    inputs = {"input_ids": ids.to(device), "attention_mask": attention.to(device)}
    if getattr(model.config, "type_vocab_size", 0) > 0:
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    logits = model(**inputs)["logits"]  # (B, L, V)
    model.train(was_training)
    out = []
    for row, r in enumerate(rows):
        positions = [i for i, t in enumerate(r) if t == mask_id]
        probs = logits[row, positions].float().softmax(dim=-1)  # (M, V)
        top = torch.topk(probs, min(top_k, probs.shape[-1]), dim=-1)
        per_mask = []
        for m, pos in enumerate(positions):
            candidates = []
            for score, token_id in zip(top.values[m].tolist(), top.indices[m].tolist(), strict=True):
                filled = list(r)
                filled[pos] = token_id
                candidates.append({
                    "token": tokenizer.decode([token_id]).strip(),
                    "token_id": int(token_id),
                    "score": float(score),
                    "sequence": tokenizer.decode(_without_specials(filled, tokenizer, keep=mask_id)),
                })
            per_mask.append(candidates)
        out.append(per_mask)
    return out


def check_mlm(model: Any) -> None:
    """InputError unless the model predicts tokens at every position (an MLM head): the Python fix, and
    the command-line one (``cli=``), which is another checkpoint, never another head."""
    config = model.config
    head = getattr(config, "head", None)
    if head in MLM_HEADS:
        return
    what = f"this model ({getattr(config, 'family', None) or 'model'}, head {head!r})"
    need = "fill-mask needs a masked language model"
    cli = (f"{need}, a checkpoint with an MLM head such as a BERT pre-trained with `lmforge pretrain --objective "
           f"mlm` (or mlm+nsp / mlm+sop); {what} is not one")
    if getattr(config, "causal", False):
        raise InputError(f"{need}; {what} is a causal decoder: continue text with lmforge.generate instead.",
                         cli=f"{cli}: it is a causal decoder, continue text with `lmforge generate` instead.")
    raise InputError(f"{need} head ({' or '.join(MLM_HEADS)}); {what} has none. Load a checkpoint that has "
                     "one with Model.from_pretrained(DIR, head='mlm') (a fresh, untrained MLM head predicts noise).",
                     cli=f"{cli}: give the pre-trained model's directory, not a fine-tuned one.")


def _without_specials(ids: list[int], tokenizer: Any, *, keep: int) -> list[int]:
    """Drop [CLS] / [SEP] / padding but keep the other masks visible in the shown sequence."""
    special = set(getattr(tokenizer, "all_special_ids", []) or []) - {keep}
    return [i for i in ids if i not in special]


__all__ = ["check_mlm", "fill_mask", "fill_mask_ids", "mask_token_of"]
