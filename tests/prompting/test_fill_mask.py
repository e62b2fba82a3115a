"""fill_mask: each mask's top-k from its own softmax (the other masks left in place), and a text with no mask."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.errors import InputError

Model = pytest.importorskip("lmforge.models.model").Model
Tokenizer = pytest.importorskip("lmforge.tokenization.tokenizer").Tokenizer


def test_top_k_per_mask_from_the_model_softmax(bert_dir: Path) -> None:
    from lmforge import fill_mask

    model, tok = Model.from_pretrained(bert_dir).eval(), Tokenizer.from_pretrained(bert_dir)
    text = "the man went to the [MASK] and bought a [MASK]."
    result = fill_mask(model, tok, text, top_k=3)
    assert len(result) == 2 and all(len(r) == 3 for r in result)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits[0].softmax(-1)
    positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    for m, pos in enumerate(positions):  # each mask from its own distribution, the other mask in place
        top = probs[pos].topk(3)
        assert [c["token_id"] for c in result[m]] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([c["score"] for c in result[m]]), top.values)
    assert result[0][0]["sequence"].count("[MASK]") == 1
    with pytest.raises(InputError, match="no mask token"):
        fill_mask(model, tok, "no mask here", top_k=3)
    # the old keyword still works, with a DeprecationWarning; the CLI's --top-k is the same top_k
    with pytest.warns(DeprecationWarning, match=r"fill_mask\(k=\) is deprecated; use top_k="):
        assert fill_mask(model, tok, text, k=3) == result
    assert fill_mask(model, tok, text, 3) == result
