"""The encoder-side work of the server, on a batch of already tokenized inputs: embeddings (mean / CLS / last
pooling over the body's last hidden state), fill-mask (``lmforge.prompting.fill_mask.fill_masks``) and the
fine-tuned heads behind ``/v1/classify`` (seq-cls labels with scores, token-cls tags, qa spans).

Each function takes right-padded rows (the body masks the pads) and returns one result per row; the
batcher calls them from its worker thread with the requests that arrived in one batching window.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import InputError

POOLINGS = ("mean", "cls", "last")
CLASSIFY_HEADS = ("seq-cls", "token-cls", "qa")
QA_MAX_ANSWER_TOKENS = 30  # the longest span /v1/classify returns for a qa head (SQuAD's usual limit)


def pad_rows(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask), each (B, L), of token-id rows."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def embed(model: Any, rows: Sequence[Sequence[int]], *, pooling: str, pad_id: int,
          normalize: bool = False) -> torch.Tensor:
    """(B, H) float32 sentence vectors: the body's last hidden state pooled over each row's real tokens
    ("mean"), the first token ("cls") or the last real token ("last", the usual choice for a decoder)."""
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}.")
    ids, mask = pad_rows(rows, pad_id)
    device = _device(model)
    ids, mask = ids.to(device), mask.to(device)
    body = getattr(model, "body", model)
    hidden = body(ids, attention_mask=mask).last_hidden_state.float()  # (B, L, H)
    if pooling == "mean":
        weights = mask[:, :, None].to(hidden.dtype)
        vectors = (hidden * weights).sum(1) / weights.sum(1)
    elif pooling == "cls":
        vectors = hidden[:, 0]
    else:
        last = mask.sum(1) - 1  # (B,) right padding: the last real token
        vectors = hidden[torch.arange(hidden.shape[0], device=device), last]
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors.cpu()


def label_names(model_dir: str | Path | None, config: Any) -> list[str]:
    """The class names of a fine-tuned head: ``task.json``'s labels (written by `lmforge finetune`), an HF
    config's ``id2label``, else LABEL_0, LABEL_1, ..."""
    n = int(getattr(config, "num_labels", 0) or 0)
    if model_dir is not None:
        directory = Path(model_dir)
        task = directory / "task.json"
        if task.is_file():
            labels = json.loads(task.read_text()).get("labels")
            if labels and len(labels) == n:
                return [str(x) for x in labels]
        hf_config = directory / "config.json"
        if hf_config.is_file():
            id2label = json.loads(hf_config.read_text()).get("id2label")
            if isinstance(id2label, dict) and len(id2label) == n:
                return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    return [f"LABEL_{i}" for i in range(n)]


@torch.no_grad()
def classify(model: Any, encodings: Sequence[dict[str, Any]], *, labels: Sequence[str], pad_id: int,
             top_k: int | None = None) -> list[dict[str, Any]]:
    """One result per encoding (``input_ids``, ``token_type_ids``, ``offsets``, ``sequence_ids``, ``text``,
    ``pair``) from the model's fine-tuned head:

    - seq-cls: ``{"labels": [{"label", "score"}, ...]}`` sorted by softmax probability (``top_k`` kept),
      or ``{"value": float}`` for a regression head (num_labels == 1);
    - token-cls: ``{"tokens": [{"token", "start", "end", "label", "score"}, ...]}`` for every non-special
      token, with character offsets into the text;
    - qa (text = question, pair = context): ``{"answer", "start", "end", "score"}``, the best span of the
      context (start <= end, at most ``QA_MAX_ANSWER_TOKENS`` tokens) by start + end logit, offsets into
      the context; score = p(start) * p(end) over the context tokens.
    """
    head = model.config.head
    ids, mask = pad_rows([e["input_ids"] for e in encodings], pad_id)
    types, _ = pad_rows([e["token_type_ids"] for e in encodings], 0)
    device = _device(model)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if model.config.type_vocab_size > 0:
        inputs["token_type_ids"] = types.to(device)
    out = model(**inputs)
    results = []
    for row, enc in enumerate(encodings):
        n = len(enc["input_ids"])
        if head == "seq-cls":
            logits = out["logits"][row].float().cpu()
            if logits.numel() == 1:
                results.append({"value": float(logits.reshape(()))})
                continue
            probs = logits.softmax(-1)
            order = torch.argsort(probs, descending=True).tolist()[:top_k]
            results.append({"labels": [{"label": labels[i], "score": float(probs[i])} for i in order]})
        elif head == "token-cls":
            probs = out["logits"][row, :n].float().softmax(-1).cpu()  # (L, C)
            score, best = probs.max(-1)
            tokens = []
            for i in range(n):
                if enc["sequence_ids"][i] is None:
                    continue
                start, end = enc["offsets"][i]
                tokens.append({"token": enc["text"][start:end], "start": int(start), "end": int(end),
                               "label": labels[int(best[i])], "score": float(score[i])})
            results.append({"tokens": tokens})
        else:  # qa
            start, end = out["start_logits"][row, :n].float().cpu(), out["end_logits"][row, :n].float().cpu()
            results.append(_best_span(start, end, enc))
    return results


def _best_span(start: torch.Tensor, end: torch.Tensor, enc: dict[str, Any]) -> dict[str, Any]:
    context = torch.tensor([s == 1 for s in enc["sequence_ids"]])
    if not bool(context.any()):
        raise InputError("the context is empty after tokenization; give a non-empty context.")
    p_start = start.masked_fill(~context, float("-inf")).softmax(-1)
    p_end = end.masked_fill(~context, float("-inf")).softmax(-1)
    n = start.shape[0]
    i = torch.arange(n)
    allowed = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < QA_MAX_ANSWER_TOKENS)  # (start, end)
    allowed &= context[:, None] & context[None, :]
    scores = (start[:, None] + end[None, :]).masked_fill(~allowed, float("-inf"))
    flat = int(scores.argmax())
    s, e = divmod(flat, n)
    lo, hi = enc["offsets"][s][0], enc["offsets"][e][1]
    while lo < hi and enc["pair"][lo].isspace():  # byte-level BPE offsets start at the space before a word
        lo += 1
    return {"answer": enc["pair"][lo:hi], "start": int(lo), "end": int(hi),
            "score": float(p_start[s] * p_end[e])}


__all__ = ["CLASSIFY_HEADS", "POOLINGS", "QA_MAX_ANSWER_TOKENS", "classify", "embed", "label_names", "pad_rows"]
