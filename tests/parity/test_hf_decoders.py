"""Decoder families (gpt2, openai-gpt) against HF transformers, both ways, every head HF has for them:
a random tiny HF model (noise on every weight) saved, loaded into lmforge, same outputs and losses in
float32 on a right-padded batch; an lmforge model exported with export_hf loads in transformers' Auto
class with no missing / unexpected tensors and gives the same outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from encoder_cases import assert_close

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

VOCAB, B, L, C = 99, 3, 9, 2
PAD = 0
PREFIX = {"gpt2": "GPT2", "openai-gpt": "OpenAIGPT"}
HEADS: dict[str, dict[str | None, str]] = {
    "gpt2": {None: "Model", "clm": "LMHeadModel", "seq-cls": "ForSequenceClassification",
             "token-cls": "ForTokenClassification", "extract": "DoubleHeadsModel"},
    "openai-gpt": {None: "Model", "clm": "LMHeadModel", "seq-cls": "ForSequenceClassification",
                   "extract": "DoubleHeadsModel"},
}
AUTO = {None: "AutoModel", "clm": "AutoModelForCausalLM", "seq-cls": "AutoModelForSequenceClassification",
        "token-cls": "AutoModelForTokenClassification"}
NUM_LABELS = {"seq-cls": 3, "token-cls": 5}
CASES = [(family, head) for family, heads in HEADS.items() for head in heads]
IDS = [f"{family}-{head or 'base'}" for family, head in CASES]


def hf_config(family: str, head: str | None, **extra: Any) -> Any:
    kw: dict[str, Any] = dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4, pad_token_id=PAD)
    if family == "gpt2":
        kw.update(n_inner=37, bos_token_id=1, eos_token_id=2)
    if head in NUM_LABELS:
        kw["num_labels"] = NUM_LABELS[head]
    kw.update(extra)
    return getattr(transformers, f"{PREFIX[family]}Config")(**kw)


@torch.no_grad()
def perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)


def build_hf(family: str, head: str | None, path: Path, **extra: Any) -> Any:
    torch.manual_seed(0)
    hf = getattr(transformers, PREFIX[family] + HEADS[family][head])(hf_config(family, head, **extra)).eval()
    perturb(hf)
    hf.save_pretrained(path)
    return hf


def make_batch(head: str | None) -> dict[str, torch.Tensor]:
    """Right-padded rows (pads never predict anything a test reads); (B, C, L) for the extract head."""
    g = torch.Generator().manual_seed(0)
    shape = (B, C, L) if head == "extract" else (B, L)
    ids = torch.randint(5, VOCAB, shape, generator=g)
    mask = torch.ones(shape, dtype=torch.long)
    mask[1, ..., 6:] = 0
    mask[2, ..., 3:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, PAD), "attention_mask": mask}


def real(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-level outputs at the real (unpadded) positions only."""
    return t[mask.bool()]


def compare(family: str, head: str | None, ours: Any, hf: Any, batch: dict[str, torch.Tensor]) -> None:
    mask = batch["attention_mask"]
    tag = f"{family}/{head}"
    if head == "extract":  # GPT-1 fine-tuning model: LM logits + one score per choice at the last real token
        last = mask.sum(-1) - 1  # (B, C)
        # HF OpenAIGPTDoubleHeadsModel cannot take a (B, C, L) mask (it does not flatten it); with right
        # padding in a causal model no real token sees a pad, so the unmasked reference is the same there
        hf_batch = {"input_ids": batch["input_ids"]} if family == "openai-gpt" else batch
        with torch.no_grad():
            ref = hf(**hf_batch, mc_token_ids=last)
            out = ours(**batch)
        assert_close(real(out.lm_logits, mask), real(ref.logits, mask), f"{tag}: lm logits")
        assert_close(out.logits.reshape(B, C), ref.mc_logits, f"{tag}: choice logits")
        labels = torch.tensor([1, 0, 1])
        with torch.no_grad():
            ref = hf(**hf_batch, mc_token_ids=last, mc_labels=labels)
            out = ours(**batch, labels=labels)
        assert_close(out.loss, ref.mc_loss, f"{tag}: choice loss")
        return
    with torch.no_grad():
        ref = hf(**batch)
        out = ours(**batch)
    if head is None:
        assert_close(real(out.last_hidden_state, mask), real(ref.last_hidden_state, mask), f"{tag}: hidden")
        return
    if head == "seq-cls":
        assert_close(out.logits, ref.logits, f"{tag}: logits")
        labels = torch.tensor([0, 2, 1])
    else:
        assert_close(real(out.logits, mask), real(ref.logits, mask), f"{tag}: logits")
        labels = batch["input_ids"].masked_fill(mask == 0, -100)
        if head == "token-cls":
            labels = torch.randint(0, NUM_LABELS[head], (B, L), generator=torch.Generator().manual_seed(3))
            labels = labels.masked_fill(mask == 0, -100)
    with torch.no_grad():
        ref_loss = hf(**batch, labels=labels).loss
        out = ours(**batch, labels=labels)
    assert_close(out.loss, ref_loss, f"{tag}: loss")
    assert out[0] is out.loss


@pytest.mark.parametrize(("family", "head"), CASES, ids=IDS)
def test_hf_to_lmforge(family: str, head: str | None, tmp_path: Path) -> None:
    hf = build_hf(family, head, tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.family == family and ours.config.causal
    assert (ours.config.head or None) == head
    compare(family, head, ours, hf, make_batch(head))


@pytest.mark.parametrize(("family", "head"), CASES, ids=IDS)
def test_lmforge_to_hf(family: str, head: str | None, tmp_path: Path) -> None:
    build_hf(family, head, tmp_path / "ref")
    ours = Model.from_pretrained(tmp_path / "ref").eval()
    perturb(ours)  # now differs from the reference: the export must carry lmforge's own weights
    ours.export_hf(tmp_path / "out")
    if head in AUTO:
        hf, info = getattr(transformers, AUTO[head]).from_pretrained(tmp_path / "out", output_loading_info=True)
    else:
        cls = getattr(transformers, PREFIX[family] + HEADS[family][head])
        hf, info = cls.from_pretrained(tmp_path / "out", output_loading_info=True)
    hf.eval()
    assert type(hf).__name__ == PREFIX[family] + HEADS[family][head]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    compare(family, head, ours, hf, make_batch(head))


@pytest.mark.parametrize(("family", "extra"), [
    ("gpt2", dict(activation_function="relu")),
    ("gpt2", dict(activation_function="gelu", tie_word_embeddings=False)),
    ("openai-gpt", dict(afn="relu")),
], ids=["gpt2-relu", "gpt2-gelu-untied", "openai-gpt-relu"])
def test_variants_both_ways(family: str, extra: dict[str, Any], tmp_path: Path) -> None:
    hf = build_hf(family, "clm", tmp_path / "hf", **extra)
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    compare(family, "clm", ours, hf, make_batch("clm"))
    ours.export_hf(tmp_path / "out")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    compare(family, "clm", ours, back, make_batch("clm"))


def test_openai_gpt_gelu_is_the_tanh_approximation(tmp_path: Path) -> None:
    """HF openai-gpt's afn="gelu" is gelu_new (modeling_openai.ACT_FNS), and it exports back as "gelu"."""
    build_hf("openai-gpt", "clm", tmp_path / "hf")
    ours = Model.from_pretrained(tmp_path / "hf")
    assert ours.config.activation == "gelu_new" and ours.config.norm_placement == "post"
    ours.export_hf(tmp_path / "out")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "out").afn == "gelu"


def test_gpt2_kv_cache_matches_hf(tmp_path: Path) -> None:
    """Prefill + one cached step (left-padded batch, explicit positions) equals HF's cached forward."""
    hf = build_hf("gpt2", "clm", tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(5, VOCAB, (B, L), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    nxt = torch.randint(5, VOCAB, (B, 1), generator=torch.Generator().manual_seed(6))
    mask2 = torch.cat([mask, torch.ones_like(nxt)], dim=1)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos, use_cache=True)
        b = ours(nxt, attention_mask=mask2, position_ids=pos[:, -1:] + 1, past_key_values=a.past_key_values,
                 use_cache=True)
        ra = hf(ids, attention_mask=mask, position_ids=pos, use_cache=True)
        rb = hf(nxt, attention_mask=mask2, position_ids=pos[:, -1:] + 1, past_key_values=ra.past_key_values)
    assert_close(b.logits, rb.logits, "cached step logits")
    assert len(b.past_key_values) == 2 and b.past_key_values[0][0].shape == (B, 4, L + 1, 8)


@pytest.mark.parametrize("padding_free", [False, True])
def test_gpt2_hidden_states_match_hf(padding_free: bool, tmp_path: Path) -> None:
    """output_hidden_states layer by layer, the last entry the final-norm output as HF GPT-2's (a merge once
    left it un-normed), with the fine-tuning padding-free switch on or off (it steps aside for this call)."""
    hf = build_hf("gpt2", None, tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    ours.body.padding_free = padding_free
    batch = make_batch(None)
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True)
        out = ours(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        assert_close(real(a, batch["attention_mask"]), real(b, batch["attention_mask"]), f"hidden state {i}")
