"""Every family and every head HF has for it: a fresh tiny lmforge model exported with ``export_hf`` loads
with ``AutoConfig`` + the matching transformers Auto class (the DoubleHeads classes have none: the class
named in ``architectures``), gives the same outputs in eval mode, and its config.json holds no null (the
strict config classes of transformers 5 refuse a null where they want a number)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmforge.errors import ConfigError

from encoder_cases import AUTO, HF_HEADS, NUM_LABELS, VOCAB, assert_close

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

PRESETS = {"bert": "bert-tiny", "roberta": "roberta-base", "albert": "albert-base", "electra": "electra-small",
           "distilbert": "distilbert", "gpt2": "gpt-tiny", "openai-gpt": "gpt1"}
HEADS: dict[str, tuple[str | None, ...]] = {
    **{family: tuple(heads) for family, heads in HF_HEADS.items()},
    "gpt2": (None, "clm", "seq-cls", "token-cls", "qa", "extract"),
    "openai-gpt": (None, "clm", "seq-cls", "extract"),
}
AUTO_CLASSES = {**AUTO, "clm": "AutoModelForCausalLM"}
CASES = [(family, head) for family, heads in HEADS.items() for head in heads]
IDS = [f"{family}-{head or 'base'}" for family, head in CASES]
B, L, C = 2, 7, 2


def tiny(family: str, head: str | None) -> Any:
    torch.manual_seed(0)
    overrides: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                                     intermediate_size=128 if family == "openai-gpt" else 37, max_positions=66)
    if family in ("albert", "electra"):
        overrides["embedding_size"] = 16
    if family in ("gpt2", "openai-gpt"):
        overrides["pad_token_id"] = 0  # GPT*ForSequenceClassification needs one for a batch of 2
    if family == "roberta":
        overrides["type_vocab_size"] = 1
    if head in NUM_LABELS:
        overrides["num_labels"] = NUM_LABELS[head]
    if head == "extract":
        overrides["num_labels"] = 1  # HF DoubleHeads: one score per choice
    model = Model.from_preset(PRESETS[family], head=head, **overrides).eval()
    with torch.no_grad():  # init leaves biases at 0 and norms at 1: noise makes a wrong map visible
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def load_in_transformers(path: Path, head: str | None) -> Any:
    config = transformers.AutoConfig.from_pretrained(path)
    cls = (getattr(transformers, AUTO_CLASSES[head]) if head in AUTO_CLASSES
           else getattr(transformers, config.architectures[0]))
    hf, info = cls.from_pretrained(path, config=config, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(hf).__name__ == config.architectures[0]
    return hf.eval()


def outputs(head: str | None, ours: Any, hf: Any, family: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, lmforge tensor, HF tensor) for the head's outputs on an unpadded batch."""
    g = torch.Generator().manual_seed(0)
    shape = (B, C, L) if head in ("choice", "extract") else (B, L)
    ids = torch.randint(5, VOCAB, shape, generator=g)
    with torch.no_grad():
        if head == "extract":
            out = ours(ids)
            ref = hf(ids, mc_token_ids=torch.full((B, C), L - 1))
            return [("lm_logits", out.lm_logits, ref.logits), ("logits", out.logits.reshape(B, C), ref.mc_logits)]
        out, ref = ours(ids), hf(ids)
    if head is None:
        pairs = [("last_hidden_state", out.last_hidden_state, ref.last_hidden_state)]
        if getattr(ref, "pooler_output", None) is not None:
            pairs.append(("pooler_output", out.pooler_output, ref.pooler_output))
        return pairs
    if head == "pretraining":
        pair = ref.seq_relationship_logits if family == "bert" else ref.sop_logits
        return [("logits", out.logits, ref.prediction_logits), ("pair_logits", out.pair_logits, pair)]
    if head == "qa":
        return [("start_logits", out.start_logits, ref.start_logits), ("end_logits", out.end_logits, ref.end_logits)]
    return [("logits", out.logits, ref.logits)]


@pytest.mark.parametrize(("family", "head"), CASES, ids=IDS)
def test_export_loads_in_transformers(family: str, head: str | None, tmp_path: Path) -> None:
    ours = tiny(family, head)
    ours.export_hf(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert not [k for k, v in config.items() if v is None], config
    hf = load_in_transformers(tmp_path, head)
    for name, mine, theirs in outputs(head, ours, hf, family):
        assert_close(mine, theirs, f"{family}/{head}: {name}")


def test_gpt_tiny_preset_clm_loads_in_transformers(tmp_path: Path) -> None:
    """The issue's case: the gpt-tiny preset as is (no pad id, preset dropouts) -> AutoModelForCausalLM."""
    ours = Model.from_preset("gpt-tiny", head="clm").eval()
    ours.export_hf(tmp_path)
    assert None not in json.loads((tmp_path / "config.json").read_text()).values()
    hf = load_in_transformers(tmp_path, "clm")
    ids = torch.randint(0, ours.config.vocab_size, (B, L), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(ours(ids).logits, hf(ids).logits, "gpt-tiny: logits")


def test_extract_head_summing_choices_is_refused(tmp_path: Path) -> None:
    """A 2-label extract head (C extract states summed) has no DoubleHeads counterpart: refused, not re-initialised."""
    with pytest.raises(ConfigError, match="num_labels=1"):
        Model.from_preset("gpt-tiny", head="extract", vocab_size=VOCAB, num_labels=2).export_hf(tmp_path)
