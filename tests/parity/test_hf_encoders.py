"""Encoder families against HF transformers: load a random tiny HF checkpoint into lmforge and get
the same outputs and losses; export a random lmforge model and have transformers' Auto classes load it
and give the same outputs. Every head HF has for bert, roberta, albert, electra, distilbert."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lmforge.errors import ConfigError

from encoder_cases import (AUTO, HF_HEADS, HF_PREFIX, NUM_LABELS, VOCAB, assert_close, hf_config, hf_outputs,
                           make_batch, make_labels)

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

CASES = [(family, head) for family, heads in HF_HEADS.items() for head in heads]
IDS = [f"{family}-{head or 'base'}" for family, head in CASES]


def build_hf(family: str, head: str | None, tmp_path: Path, **extra: Any) -> Any:
    """A seeded random tiny HF model in eval mode, saved to ``tmp_path``."""
    torch.manual_seed(0)
    cfg = hf_config(transformers, family, head, **extra)
    hf = getattr(transformers, HF_PREFIX[family] + HF_HEADS[family][head])(cfg).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    return hf


@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    """Random init leaves biases at 0 and LayerNorms at 1; noise everywhere makes a wrong map visible."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)


def compare(family: str, head: str | None, ours: Any, hf: Any, batch: dict[str, torch.Tensor]) -> None:
    """Same outputs without labels; same loss (and same gathered MLM logits) with labels."""
    with torch.no_grad():
        ref = hf_outputs(head, hf(**batch))
        out = ours(**batch)
    for name, tensor in ref.items():
        assert_close(out[name], tensor, f"{family}/{head}: {name}")
    labels = make_labels(head, batch)
    if not labels:
        return
    hf_labels = dict(labels)
    if family == "albert" and "next_sentence_label" in labels:  # HF ALBERT names its SOP labels so
        hf_labels["sentence_order_label"] = hf_labels.pop("next_sentence_label")
    with torch.no_grad():
        ref_out = hf(**batch, **hf_labels)
        out = ours(**batch, **labels)
    assert_close(out.loss, ref_out.loss, f"{family}/{head}: loss")
    assert out[0] is out.loss  # HF tuple order: loss first when labels are given
    if head in ("mlm", "pretraining"):  # lmforge gathers the masked positions before the decoder
        full = ref_out.logits if head == "mlm" else ref_out.prediction_logits
        assert_close(out.logits, full[labels["labels"] != -100], f"{family}/{head}: masked logits")


@pytest.mark.parametrize(("family", "head"), CASES, ids=IDS)
def test_hf_to_lmforge(family: str, head: str | None, tmp_path: Path) -> None:
    hf = build_hf(family, head, tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()  # head detected from config.json "architectures"
    assert ours.config.family == family
    assert (ours.config.head or None) == head
    compare(family, head, ours, hf, make_batch(family, head, type_vocab_size=ours.config.type_vocab_size))


PRESETS = {"bert": "bert-tiny", "roberta": "roberta-base", "albert": "albert-base", "electra": "electra-small",
           "distilbert": "distilbert"}


def tiny_lmforge(family: str, head: str | None) -> Any:
    """A random tiny lmforge model of the family's preset (noise on every weight), in eval mode."""
    torch.manual_seed(0)
    overrides: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                                     intermediate_size=37, max_positions=64)
    if family == "roberta":
        # no classifier_token override: a RoBERTa choice model from the preset reads the pooler as
        # HF RobertaForMultipleChoice does (the seq-cls head reads <s> through dense + tanh)
        overrides.update(max_positions=66, type_vocab_size=1)
    if family in ("albert", "electra"):
        overrides["embedding_size"] = 16
    if head in NUM_LABELS:
        overrides["num_labels"] = NUM_LABELS[head]
    model = Model.from_preset(PRESETS[family], head=head, **overrides).eval()
    _perturb(model)
    return model


@pytest.mark.parametrize(("family", "head"), CASES, ids=IDS)
def test_lmforge_to_hf(family: str, head: str | None, tmp_path: Path) -> None:
    """lmforge tiny model (random, perturbed) -> export_hf -> transformers Auto class -> same outputs."""
    ours = tiny_lmforge(family, head)
    ours.export_hf(tmp_path)
    auto = getattr(transformers, AUTO[head])
    hf, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    hf.eval()
    assert type(hf).__name__ == HF_PREFIX[family] + HF_HEADS[family][head]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    compare(family, head, ours, hf, make_batch(family, head, type_vocab_size=ours.config.type_vocab_size))
    back = Model.from_pretrained(tmp_path).eval()  # and the exported directory loads back unchanged
    assert back.config.head == ours.config.head
    hf_has_pooler = getattr(hf.base_model, "pooler", None) is not None
    for name, tensor in ours.state_dict().items():
        if name.startswith("body.pooler") and not hf_has_pooler:
            continue  # e.g. BertForMaskedLM has no pooler: not exported, freshly initialised on the way back
        assert torch.equal(back.state_dict()[name], tensor), name


VARIANTS = {
    # ALBERT: E == H still has the E->H mapping; several layer groups; tanh-GELU vs exact GELU
    "albert-E=H": ("albert", None, dict(embedding_size=32)),
    "albert-groups": ("albert", "mlm", dict(num_hidden_layers=4, num_hidden_groups=2)),
    "electra-E=H": ("electra", "rtd", dict(embedding_size=32)),
    "electra-untied-mlm": ("electra", "mlm", dict(tie_word_embeddings=False)),
    "albert-untied-pretraining": ("albert", "pretraining", dict(tie_word_embeddings=False)),
    "distilbert-untied-mlm": ("distilbert", "mlm", dict(tie_word_embeddings=False)),
    "bert-relu": ("bert", "seq-cls", dict(hidden_act="relu")),
    "bert-gelu-new-untied": ("bert", "mlm", dict(hidden_act="gelu_new", tie_word_embeddings=False)),
    "bert-regression": ("bert", "seq-cls", dict(num_labels=1)),
    "distilbert-sinusoidal": ("distilbert", "mlm", dict(sinusoidal_pos_embds=True)),
    "distilbert-relu": ("distilbert", "seq-cls", dict(activation="relu")),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_both_ways(name: str, tmp_path: Path) -> None:
    family, head, extra = VARIANTS[name]
    hf = build_hf(family, head, tmp_path / "hf", **extra)
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    batch = make_batch(family, head, type_vocab_size=hf.config.to_dict().get("type_vocab_size", 0))
    if name == "bert-regression":
        with torch.no_grad():
            labels = torch.tensor([0.5, -1.0, 2.0])
            assert_close(ours(**batch, labels=labels).loss, hf(**batch, labels=labels).loss, "regression loss")
    compare(family, head, ours, hf, batch)
    ours.export_hf(tmp_path / "out")
    back = getattr(transformers, AUTO[head]).from_pretrained(tmp_path / "out").eval()
    compare(family, head, ours, back, batch)


def test_albert_inner_groups_are_refused(tmp_path: Path) -> None:
    """inner_group_num > 1 (no released ALBERT has it) is refused, not loaded as a different network."""
    build_hf("albert", None, tmp_path, num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2)
    with pytest.raises(ConfigError, match="inner_group_num=2 is not supported"):
        Model.from_pretrained(tmp_path)


def test_explicit_head_over_a_checkpoint_with_another(tmp_path: Path) -> None:
    """A pre-training checkpoint fine-tuned as a classifier: body loaded, the classifier fresh."""
    hf = build_hf("bert", "pretraining", tmp_path)
    ours = Model.from_pretrained(tmp_path, head="seq-cls", num_labels=4).eval()
    assert ours.config.head == "seq-cls" and ours.config.num_labels == 4
    batch = make_batch("bert", None, type_vocab_size=2)
    with torch.no_grad():
        ref = hf.bert(**batch)
        out = ours(**batch)
    assert out.logits.shape == (3, 4)
    assert_close(out.pooler_output, ref.pooler_output, "pooler of the pre-training checkpoint")


def test_base_model_loads_a_headed_checkpoint(tmp_path: Path) -> None:
    """head=None on an HF dir keeps the saved head; the bare body of a MLM checkpoint matches HF's."""
    hf = build_hf("roberta", "mlm", tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.head == "mlm"
    assert ours.config.vocab_size == VOCAB
    batch = make_batch("roberta", None, type_vocab_size=1)
    with torch.no_grad():
        assert_close(ours(**batch).logits, hf(**batch).logits, "roberta mlm")


def test_roberta_left_padding_positions(tmp_path: Path) -> None:
    """RoBERTa numbers positions by counting real tokens (pads sit at pad_token_id): left padding too."""
    hf = build_hf("roberta", "token-cls", tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    batch = make_batch("roberta", "token-cls", type_vocab_size=1, left_padding=True)
    assert batch["attention_mask"][1, 0] == 0
    compare("roberta", "token-cls", ours, hf, batch)


def test_new_number_of_labels_starts_a_fresh_classifier(tmp_path: Path) -> None:
    """seq-cls (3 labels) -> token-cls / seq-cls with 5: body kept, classifier fresh (not an error)."""
    hf = build_hf("bert", "seq-cls", tmp_path)
    batch = make_batch("bert", None, type_vocab_size=2)
    for head in ("token-cls", "seq-cls"):
        ours = Model.from_pretrained(tmp_path, head=head, num_labels=5).eval()
        assert ours.head.classifier.out_features == 5
        with torch.no_grad():
            assert_close(ours(**batch).last_hidden_state, hf.bert(**batch).last_hidden_state, f"{head} body")
    same = Model.from_pretrained(tmp_path, head="token-cls").eval()  # same shape: HF reuses "classifier" too
    assert torch.equal(same.head.classifier.weight, hf.classifier.weight)


def test_label_names_survive_the_round_trip(tmp_path: Path) -> None:
    build_hf("electra", "seq-cls", tmp_path / "hf", id2label={0: "negative", 1: "neutral", 2: "positive"})
    ours = Model.from_pretrained(tmp_path / "hf")
    ours.export_hf(tmp_path / "out")
    back = transformers.AutoConfig.from_pretrained(tmp_path / "out")
    assert back.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert back.label2id["positive"] == 2


@pytest.mark.parametrize("family", list(HF_HEADS))
def test_hidden_states_and_attentions(family: str, tmp_path: Path) -> None:
    """output_hidden_states / output_attentions (what distillation reads) layer by layer, as HF (eager)."""
    hf = build_hf(family, None, tmp_path, attn_implementation="eager")
    ours = Model.from_pretrained(tmp_path).eval()
    batch = make_batch(family, None, type_vocab_size=ours.config.type_vocab_size)
    with torch.no_grad():
        ref = hf(**batch, output_hidden_states=True, output_attentions=True)
        out = ours(**batch, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3  # embeddings + 2 layers
    assert len(out.attentions) == len(ref.attentions) == 2
    for i, (a, b) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        assert_close(a, b, f"{family} hidden_states[{i}]")
    for i, (a, b) in enumerate(zip(out.attentions, ref.attentions, strict=True)):
        assert_close(a, b, f"{family} attentions[{i}]")


@pytest.mark.parametrize("family", ["roberta", "albert", "electra"])
def test_converted_model_saves_as_lmforge_and_back(family: str, tmp_path: Path) -> None:
    """HF dir -> lmforge -> save_pretrained (lmforge format) -> from_pretrained: same outputs as HF."""
    head = "seq-cls"
    hf = build_hf(family, head, tmp_path / "hf", id2label={0: "a", 1: "b", 2: "c"})
    Model.from_pretrained(tmp_path / "hf").save_pretrained(tmp_path / "lm")
    again = Model.from_pretrained(tmp_path / "lm").eval()
    assert again.config.family == family and again.config.extra["id2label"]["2"] == "c"
    compare(family, head, again, hf, make_batch(family, head, type_vocab_size=again.config.type_vocab_size))
