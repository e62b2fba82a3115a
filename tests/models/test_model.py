"""Model core: every head's shapes and losses, config errors, save/load, resize, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from lmforge import Model, ModelConfig
from lmforge.errors import CheckpointError, ConfigError, InputError

V, B, L = 50, 2, 7


def _ids(*shape: int) -> torch.Tensor:
    return torch.randint(3, V, shape, generator=torch.Generator().manual_seed(0))


def _mask() -> torch.Tensor:
    m = torch.ones(B, L, dtype=torch.long)
    m[1, 5:] = 0
    return m


ENCODER_HEADS = {
    "mlm": ({}, (B, L, V)),
    "pretraining": ({}, (B, L, V)),
    "rtd": ({}, (B, L)),
    "seq-cls": ({"num_labels": 3}, (B, 3)),
    "token-cls": ({"num_labels": 5}, (B, L, 5)),
    "qa": ({}, (B, L, 2)),
}


@pytest.mark.parametrize("preset", ["bert-tiny", "albert-base", "electra-small", "distilbert", "roberta-base"])
@pytest.mark.parametrize("head", list(ENCODER_HEADS))
def test_encoder_head_shapes(preset, head):
    extra, shape = ENCODER_HEADS[head]
    small = dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=V)
    if preset in ("albert-base", "electra-small"):
        small["embedding_size"] = 16
    config = ModelConfig.from_preset(preset, head=head, **small, **extra)
    if head == "pretraining" and not config.has_pooler:
        pytest.skip("pair head needs the pooler")
    model = Model(config).eval()
    out = model(_ids(B, L), attention_mask=_mask())
    assert out.logits.shape == shape
    # no labels: the logits come first (QA: start_logits, as HF)
    assert out[0] is (out.start_logits if head == "qa" else out.logits)


def test_base_model_tuple_order():
    model = Model.from_preset("bert-tiny", vocab_size=V).eval()
    out = model(_ids(B, L))
    assert out[0].shape == (B, L, 128) and out[1].shape == (B, 128)
    assert out[0] is out.last_hidden_state and out["pooler_output"] is out[1]


def test_losses_with_labels():
    model = Model.from_preset("bert-tiny", head="mlm", vocab_size=V).eval()
    ids = _ids(B, L)
    labels = torch.full((B, L), -100)
    labels[0, 2], labels[1, 4] = 7, 9
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, V)  # gathered at the masked positions
    full = model(ids).logits
    ref = F.cross_entropy(full[labels != -100], labels[labels != -100])
    torch.testing.assert_close(out[0], ref)
    assert out[1] is out.logits

    seq = Model.from_preset("bert-tiny", head="seq-cls", vocab_size=V, num_labels=1).eval()
    out = seq(ids, labels=torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, -1.0])))

    qa = Model.from_preset("bert-tiny", head="qa", vocab_size=V).eval()
    out = qa(ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 99]))
    ref = (F.cross_entropy(out.start_logits, torch.tensor([1, 2]))
           + F.cross_entropy(out.end_logits, torch.tensor([3, L]), ignore_index=L)) / 2
    torch.testing.assert_close(out.loss, ref)

    pre = Model.from_preset("bert-tiny", head="pretraining", vocab_size=V).eval()
    out = pre(ids, labels=labels, next_sentence_label=torch.tensor([0, 1]))
    assert out.pair_logits.shape == (B, 2) and out.loss.ndim == 0


def test_choice_and_extract():
    choice = Model.from_preset("bert-tiny", head="choice", vocab_size=V).eval()
    out = choice(_ids(B, 4, L), labels=torch.tensor([1, 3]))
    assert out.logits.shape == (B, 4)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([1, 3])))
    gpt = Model.from_preset("gpt-tiny", head="extract", vocab_size=V, num_labels=3).eval()
    out = gpt(_ids(B, L), extract_positions=torch.tensor([6, 4]), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (B, 3) and out.lm_logits.shape == (B, L, V)
    swag = Model.from_preset("gpt-tiny", head="extract", vocab_size=V, num_labels=1).eval()
    out = swag(_ids(B, 4, L), extract_positions=torch.full((B, 4), L - 1), labels=torch.tensor([0, 1]))
    assert out.logits.shape == (B, 4) and out.lm_logits.shape == (B, 4, L, V)


def test_gpt_heads_and_seq_cls_reads_last_real_token():
    model = Model.from_preset("gpt-tiny", head="seq-cls", vocab_size=V, pad_token_id=0).eval()
    ids = _ids(1, L)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, L), torch.zeros(1, 3)], dim=1).long()
    torch.testing.assert_close(model(ids).logits, model(padded, attention_mask=mask).logits, atol=1e-5, rtol=0)
    assert model.head.classifier.bias is None  # GPT2ForSequenceClassification's score has no bias
    clm = Model.from_preset("gpt-tiny", head="clm", vocab_size=V)
    ids = _ids(B, L)
    clm.train()
    fused = clm(ids, labels=ids, return_logits=False)  # the clm objective's call: fused loss, no logits
    assert fused.logits is None
    clm.eval()
    plain = clm(ids, labels=ids)
    ref = F.cross_entropy(plain.logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(plain.loss, ref)
    torch.testing.assert_close(Model.forward(clm, ids, labels=ids, return_logits=False).loss, ref)


def test_seed_shapes_on_meta():
    with torch.device("meta"):
        mlm = Model.from_preset("bert-base", head="mlm")
        cls = Model.from_preset("bert-base", head="seq-cls", num_labels=2)
    weight = mlm.body.embeddings.word.weight  # the tied decoder
    assert tuple(weight.shape) == (30522, 768) and mlm.head.mlm.bias.shape == (30522,)
    assert (cls.head.classifier.in_features, cls.head.classifier.out_features) == (768, 2)


def test_layer_sharing():
    albert = Model.from_preset("albert-base", num_layers=4, hidden_size=32, num_heads=2, intermediate_size=64,
                               vocab_size=V)
    assert len(albert.body.layers) == 1
    assert all(k.startswith(("body.layers.0.", "body.embeddings", "body.pooler")) for k in albert.state_dict())
    groups = ModelConfig.from_preset("albert-base", num_layers=4, num_layer_groups=2)
    assert [groups.layer_index(i) for i in range(4)] == [0, 0, 1, 1]


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize("fields, match", [
    ({"hidden_sizee": 3}, "hidden_sizee.*Did you mean: hidden_size"),
    ({"hidden_size": 100, "num_heads": 3}, "hidden_size=100 is not divisible by num_heads"),
    ({"num_layers": 6, "num_layer_groups": 4}, "num_layer_groups"),
    ({"hidden_dropout": 1.0}, "hidden_dropout"),
    ({"vocab_size": -3}, "vocab_size"),
    ({"norm_placement": "middle"}, "norm_placement"),
])
def test_config_errors_name_the_field(fields, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_dict(fields)


# registry names are checked by each registry when the Model is built (lmforge.config imports no torch)
@pytest.mark.parametrize("fields, match", [
    ({"activation": "gleu"}, r"ModelConfig\.activation='gleu'.*Did you mean: gelu"),
    ({"mlm_activation": "gelu_neww"}, r"ModelConfig\.mlm_activation='gelu_neww'.*Did you mean: gelu_new"),
    ({"classifier_activation": "tahn"}, r"ModelConfig\.classifier_activation='tahn'.*Did you mean: tanh"),
    ({"position_kind": "rotary"}, r"ModelConfig\.position_kind='rotary' is not one of: learned, sinusoidal"),
    ({"position_kind": "learnd"}, r"position_kind.*Did you mean: learned"),
    ({"attention_kind": "sparse"}, r"ModelConfig\.attention_kind='sparse' is not one of: dense"),
    ({"head": "classify"}, r"ModelConfig\.head='classify'"),
    ({"head": "seq_cls"}, r"ModelConfig\.head='seq_cls'.*Did you mean: seq-cls"),
])
def test_unknown_registry_names_fail_at_model_construction(fields, match):
    config = ModelConfig.from_dict({"vocab_size": V, "hidden_size": 8, "num_layers": 1, "num_heads": 2, **fields})
    with pytest.raises(ConfigError, match=match):
        Model(config)


def test_importing_config_does_not_import_torch():
    code = ("import sys, lmforge.config; lmforge.config.ModelConfig.from_preset('bert-tiny'); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr + out.stdout


def test_config_roundtrip(tmp_path):
    config = ModelConfig.from_preset("albert-base", head="seq-cls", num_labels=3)
    assert ModelConfig.load(config.save(tmp_path)) == config
    assert ModelConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == config


# ------------------------------------------------------------------ save / load / resize
def test_save_load_roundtrip(tmp_path):
    model = Model.from_preset("bert-tiny", head="mlm", vocab_size=V).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = Model.from_pretrained(tmp_path).eval()
    ids = _ids(B, L)
    torch.testing.assert_close(back(ids).logits, model(ids).logits)
    # a new head keeps the body
    cls = Model.from_pretrained(tmp_path, head="seq-cls", num_labels=4)
    assert cls.config.head == "seq-cls"
    torch.testing.assert_close(cls.body.embeddings.word.weight, model.body.embeddings.word.weight)


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["022", "077"])
def test_saved_files_respect_the_umask(tmp_path, umask):
    """model.safetensors and config.json get the mode any new file gets (safetensors alone writes 0600)."""
    import os

    model = Model.from_preset("bert-tiny", head="mlm", vocab_size=V, num_layers=1)
    previous = os.umask(umask)
    try:
        model.save_pretrained(tmp_path / "lm")
        model.export_hf(tmp_path / "hf")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    want = 0o666 & ~umask
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == want
    for d in ("lm", "hf"):
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / d).iterdir()} == \
            {"config.json": oct(want), "model.safetensors": oct(want)}


def test_new_head_keeps_shared_head_tensors(tmp_path):
    """As HF: an MLM model loaded from a pre-training checkpoint keeps the trained MLM head."""
    pre = Model.from_preset("bert-tiny", head="pretraining", vocab_size=V).eval()
    with torch.no_grad():
        for p in pre.head.parameters():
            p.normal_()  # far from any fresh init
    pre.save_pretrained(tmp_path)
    mlm = Model.from_pretrained(tmp_path, head="mlm").eval()
    for name, tensor in mlm.head.state_dict().items():
        torch.testing.assert_close(tensor, pre.head.state_dict()[name])
    ids = _ids(B, L)
    torch.testing.assert_close(mlm(ids).logits, pre(ids).logits)
    # another label count: a head tensor of another shape is dropped (fresh init), not a load error
    Model.from_pretrained(tmp_path, head="seq-cls", num_labels=3).save_pretrained(tmp_path / "c3")
    c3 = Model.from_pretrained(tmp_path / "c3")
    torch.testing.assert_close(Model.from_pretrained(tmp_path / "c3", num_labels=3).head.classifier.weight,
                               c3.head.classifier.weight)  # same head, same labels: kept
    c5 = Model.from_pretrained(tmp_path / "c3", num_labels=5)
    assert c5.head.classifier.weight.shape == (5, 128)


def test_resize_keeps_rows_and_tying():
    model = Model.from_preset("bert-tiny", head="mlm", vocab_size=V)
    old = model.body.embeddings.word.weight.detach().clone()
    bias = model.head.mlm.bias.detach().clone()
    model.resize_token_embeddings(V + 5)
    assert model.config.vocab_size == V + 5
    torch.testing.assert_close(model.body.embeddings.word.weight[:V], old)
    torch.testing.assert_close(model.head.mlm.bias[:V], bias)
    assert model(_ids(B, L)).logits.shape == (B, L, V + 5)
    model(torch.full((1, 3), V + 4))  # the new ids are usable
    gpt = Model.from_preset("gpt-tiny", head="clm", vocab_size=V, tie_word_embeddings=False)
    gpt.resize_token_embeddings(V + 3)
    assert gpt.head.decoder.weight.shape == (V + 3, 128)


# ------------------------------------------------------------------ bad input
def test_bad_input_errors():
    model = Model.from_preset("bert-tiny", vocab_size=V, max_positions=16)
    with pytest.raises(InputError, match="at most 16"):
        model(_ids(1, 17))
    with pytest.raises(InputError, match=f"token id {V} is outside the vocabulary"):
        model(torch.tensor([[1, V]]))
    with pytest.raises(InputError, match="unexpected input"):
        model(_ids(1, 3), start_positions=torch.tensor([0]))
    with pytest.raises(InputError, match="needs a head"):
        model(_ids(1, 3), labels=_ids(1, 3))


def test_checkpoint_errors(tmp_path):
    model = Model.from_preset("bert-tiny", vocab_size=V)
    model.save_pretrained(tmp_path / "m")
    # wrongly shaped + missing: the config says more layers / another size than the weights hold
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    (tmp_path / "m/config.json").write_text(json.dumps({**cfg, "num_layers": 3, "vocab_size": V + 1}))
    with pytest.raises(CheckpointError) as err:
        Model.from_pretrained(tmp_path / "m")
    assert "missing tensors: body.layers.2." in str(err.value)
    assert "body.embeddings.word.weight: checkpoint (50, 128), model (51, 128)" in str(err.value)
    (tmp_path / "m/config.json").write_text(json.dumps({**cfg, "num_layers": 1}))
    with pytest.raises(CheckpointError, match="unexpected tensors: body.layers.1."):
        Model.from_pretrained(tmp_path / "m")
    (tmp_path / "m/config.json").write_text(json.dumps(cfg))
    data = (tmp_path / "m/model.safetensors").read_bytes()
    (tmp_path / "m/model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        Model.from_pretrained(tmp_path / "m")
    (tmp_path / "m/model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        Model.from_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not a model directory"):
        Model.from_pretrained(tmp_path / "nowhere")
