"""GPT2ForQuestionAnswering <-> lmforge gpt2 + "qa" head, both ways (the one HF head of the seed decoders that
tests/parity/test_hf_decoders.py does not cover): max |difference| <= 1e-5 in float32 on a right-padded batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge import Model

transformers = pytest.importorskip("transformers")

VOCAB, B, L = 99, 3, 9


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _compare(ours: Model, hf, batch) -> None:
    real = batch["attention_mask"].bool()  # right padding: pads are never read
    with torch.no_grad():
        ref, out = hf(**batch), ours(**batch)
    for name in ("start_logits", "end_logits"):
        assert float((getattr(out, name)[real] - getattr(ref, name)[real]).abs().max()) <= 1e-5, name
    starts, ends = torch.tensor([1, 2, 0]), torch.tensor([3, 5, 2])
    with torch.no_grad():
        ref_loss = hf(**batch, start_positions=starts, end_positions=ends).loss
        out = ours(**batch, start_positions=starts, end_positions=ends)
    assert out[0] is out.loss and abs(float(out.loss - ref_loss)) <= 1e-5


def _hf_model(path: Path):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=37,
                                     pad_token_id=0, bos_token_id=1, eos_token_id=2)
    hf = transformers.GPT2ForQuestionAnswering(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    hf.save_pretrained(path)
    return hf


def test_hf_to_lmforge_and_back(tmp_path: Path) -> None:
    hf = _hf_model(tmp_path / "ref")
    ours = Model.from_pretrained(tmp_path / "ref").eval()
    assert ours.config.head == "qa" and ours.config.causal
    _compare(ours, hf, _batch())
    with torch.no_grad():  # the export must carry lmforge's own weights
        ours.head.qa.weight.add_(0.1)
    ours.export_hf(tmp_path / "out")
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert type(back).__name__ == "GPT2ForQuestionAnswering"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    _compare(ours, back.eval(), _batch())
