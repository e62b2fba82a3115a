"""Shared pieces of the encoder HF parity tests: tiny reference configs, padded batches, labels.

HF transformers is the reference no one here wrote; it is a test-only dependency (the test modules
call ``pytest.importorskip("transformers")`` and pass the module in).
"""
from __future__ import annotations

from typing import Any

import torch

VOCAB = 99
B, L, C = 3, 9, 2  # batch, length, choices

# family -> HF base class prefix
HF_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra",
             "distilbert": "DistilBert"}

# lmforge head -> HF class suffix, per family (every head HF has for the family)
HF_HEADS: dict[str, dict[str | None, str]] = {
    "bert": {None: "Model", "mlm": "ForMaskedLM", "pretraining": "ForPreTraining",
             "seq-cls": "ForSequenceClassification", "token-cls": "ForTokenClassification",
             "qa": "ForQuestionAnswering", "choice": "ForMultipleChoice"},
    "roberta": {None: "Model", "mlm": "ForMaskedLM", "seq-cls": "ForSequenceClassification",
                "token-cls": "ForTokenClassification", "qa": "ForQuestionAnswering",
                "choice": "ForMultipleChoice"},
    "albert": {None: "Model", "mlm": "ForMaskedLM", "pretraining": "ForPreTraining",
               "seq-cls": "ForSequenceClassification", "token-cls": "ForTokenClassification",
               "qa": "ForQuestionAnswering", "choice": "ForMultipleChoice"},
    "electra": {None: "Model", "rtd": "ForPreTraining", "mlm": "ForMaskedLM",
                "seq-cls": "ForSequenceClassification", "token-cls": "ForTokenClassification",
                "qa": "ForQuestionAnswering", "choice": "ForMultipleChoice"},
    "distilbert": {None: "Model", "mlm": "ForMaskedLM", "seq-cls": "ForSequenceClassification",
                   "token-cls": "ForTokenClassification", "qa": "ForQuestionAnswering",
                   "choice": "ForMultipleChoice"},
}

# lmforge head -> the transformers Auto class an exported directory must load with
AUTO = {None: "AutoModel", "mlm": "AutoModelForMaskedLM", "pretraining": "AutoModelForPreTraining",
        "rtd": "AutoModelForPreTraining", "seq-cls": "AutoModelForSequenceClassification",
        "token-cls": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering",
        "choice": "AutoModelForMultipleChoice"}

NUM_LABELS = {"seq-cls": 3, "token-cls": 5}


def hf_config(transformers: Any, family: str, head: str | None, **extra: Any) -> Any:
    """A tiny HF config (H=32, L=2, 4 heads, vocab 99) for one family; ``extra`` overrides."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=64)
    if family == "distilbert":
        kw: dict[str, Any] = dict(common, dim=32, n_layers=2, n_heads=4, hidden_dim=37)
    else:
        kw = dict(common, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    if family == "roberta":  # as roberta-base: pad 1, positions offset by pad + 1, one segment
        kw.update(max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
    if family == "albert":
        kw.update(embedding_size=16)
    if family == "electra":
        kw.update(embedding_size=16)
    if head in NUM_LABELS:
        kw["num_labels"] = NUM_LABELS[head]
    kw.update(extra)
    return getattr(transformers, f"{HF_PREFIX[family]}Config")(**kw)


def pad_id(family: str) -> int:
    return 1 if family == "roberta" else 0


def make_batch(family: str, head: str | None, *, type_vocab_size: int, seed: int = 0,
               left_padding: bool = False) -> dict[str, torch.Tensor]:
    """input_ids / attention_mask (rows 1 and 2 padded) / token_type_ids; (B, C, L) for choice."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, C, L) if head == "choice" else (B, L)
    ids = torch.randint(5, VOCAB, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[1, ..., 6:] = 0
    mask[2, ..., 3:] = 0
    if left_padding:
        mask = mask.flip(-1)
    ids = ids.masked_fill(mask == 0, pad_id(family))
    batch = {"input_ids": ids, "attention_mask": mask}
    if family != "distilbert":
        tt = torch.zeros(shape, dtype=torch.long)
        if type_vocab_size > 1:
            tt[..., 4:] = 1
        batch["token_type_ids"] = tt.masked_fill(mask == 0, 0)
    return batch


def make_labels(head: str | None, batch: dict[str, torch.Tensor], *, seed: int = 1) -> dict[str, torch.Tensor]:
    """Labels of every kind each head's loss takes, as HF names them."""
    g = torch.Generator().manual_seed(seed)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if head in ("mlm", "pretraining"):
        chosen = (torch.rand(ids.shape, generator=g) < 0.3) & (mask == 1)
        chosen[0, 0] = True
        labels = {"labels": ids.masked_fill(~chosen, -100)}
        if head == "pretraining":
            labels["next_sentence_label"] = torch.tensor([0, 1, 1])
        return labels
    if head == "seq-cls":
        return {"labels": torch.tensor([0, 2, 1])}
    if head == "token-cls":
        tags = torch.randint(0, NUM_LABELS["token-cls"], ids.shape, generator=g)
        return {"labels": tags.masked_fill(mask == 0, -100)}
    if head == "qa":
        return {"start_positions": torch.tensor([1, 4, 0]), "end_positions": torch.tensor([3, 5, 20])}
    if head == "choice":
        return {"labels": torch.tensor([1, 0, 1])}
    if head == "rtd":
        return {"labels": torch.randint(0, 2, ids.shape, generator=g)}
    return {}


def hf_outputs(head: str | None, out: Any) -> dict[str, torch.Tensor]:
    """The reference tensors of one HF output, under the lmforge ModelOutput field names."""
    if head is None:
        got = {"last_hidden_state": out.last_hidden_state}
        if getattr(out, "pooler_output", None) is not None:
            got["pooler_output"] = out.pooler_output
        return got
    if head == "pretraining":
        pair = out.seq_relationship_logits if hasattr(out, "seq_relationship_logits") else out.sop_logits
        return {"logits": out.prediction_logits, "pair_logits": pair}
    if head == "qa":
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"logits": out.logits}


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != HF {tuple(ref.shape)}"
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= atol, f"{what}: max |diff| {diff:.3g} > {atol}"
