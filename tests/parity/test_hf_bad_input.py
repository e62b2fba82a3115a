"""Bad HF checkpoint directories fail with a CheckpointError / LmforgeError that says what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.errors import CheckpointError, LmforgeError
from lmforge.models.hf import FAMILIES, read_hf_config

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model


def tiny_bert_dir(path: Path) -> Path:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    transformers.BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def test_unsupported_model_type_lists_the_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(LmforgeError) as err:
        Model.from_pretrained(tmp_path)
    message = str(err.value)
    assert "'t5' is not supported" in message
    for model_type in FAMILIES:
        assert model_type in message


def test_missing_config_and_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        read_hf_config(tmp_path)
    d = tiny_bert_dir(tmp_path / "ckpt")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights file: expected one of model\.safetensors"):
        Model.from_pretrained(d)


def test_truncated_safetensors(tmp_path: Path) -> None:
    d = tiny_bert_dir(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        Model.from_pretrained(d)


def test_garbage_pytorch_bin_is_not_unpickled(tmp_path: Path) -> None:
    d = tiny_bert_dir(tmp_path)
    (d / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):  # would run code if unpickled without weights_only
            return (print, ("pwned",))

    torch.save({"x": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        Model.from_pretrained(d)


def test_pytorch_bin_is_loaded(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    d = tiny_bert_dir(tmp_path)
    from safetensors.torch import load_file
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    model = Model.from_pretrained(d)
    assert model.config.head == "seq-cls"


def test_wrong_shape_and_missing_and_unexpected_are_named(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    from safetensors.torch import load_file, save_file
    d = tiny_bert_dir(tmp_path)
    state = load_file(d / "model.safetensors")
    state["bert.encoder.layer.1.attention.self.key.weight"] = torch.zeros(32, 31)
    del state["bert.encoder.layer.0.output.dense.bias"]
    state["bert.encoder.layer.7.output.dense.bias"] = torch.zeros(32)
    save_file(state, d / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        Model.from_pretrained(d)
    message = str(err.value)
    assert "encoder.layer.1.attention.self.key.weight: checkpoint (32, 31), model needs (32, 32)" in message
    assert "missing tensors: encoder.layer.0.output.dense.bias" in message
    assert "unexpected tensors: encoder.layer.7.output.dense.bias" in message


def test_config_that_does_not_match_the_weights(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    d = tiny_bert_dir(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] = 120
    (d / "config.json").write_text(json.dumps(config))
    shape = r"word_embeddings.weight: checkpoint \(99, 32\), model needs \(120, 32\)"
    with pytest.raises(CheckpointError, match=shape):
        Model.from_pretrained(d)


def test_unknown_activation_is_a_config_error(tmp_path: Path) -> None:
    d = tiny_bert_dir(tmp_path)
    config = json.loads((d / "config.json").read_text())
    config["hidden_act"] = "swish"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError, match="hidden_act='swish'"):
        Model.from_pretrained(d)


def test_legacy_names_tied_copies_and_buffers_load(tmp_path: Path) -> None:
    """Older checkpoints: LayerNorm gamma/beta, the tied decoder stored again, position_ids buffers."""
    pytest.importorskip("lmforge.models.model")
    from safetensors.torch import load_file, save_file
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    hf = transformers.BertForPreTraining(cfg).eval()
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in state.items()}
    legacy["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].clone()
    legacy["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].clone()
    legacy["bert.embeddings.position_ids"] = torch.arange(64)[None]
    save_file(legacy, tmp_path / "model.safetensors")
    ours = Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 99, (2, 7))
    with torch.no_grad():
        ref, out = hf(ids), ours(ids)
    assert (out.logits - ref.prediction_logits).abs().max() < 1e-5
    assert (out.pair_logits - ref.seq_relationship_logits).abs().max() < 1e-5


def test_sharded_safetensors_index(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    from safetensors.torch import load_file, save_file
    d = tiny_bert_dir(tmp_path)
    state = load_file(d / "model.safetensors")
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, d / shard)
    (d / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert Model.from_pretrained(d).config.head == "seq-cls"
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="names the shard model-00002-of-00002.safetensors, which is missing"):
        Model.from_pretrained(d)


def test_hf_class_without_lmforge_head_loads_the_body_with_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    hf = transformers.BertForNextSentencePrediction(cfg).eval()
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="BertForNextSentencePrediction has no lmforge head"):
        ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.head is None
    ids = torch.randint(1, 99, (2, 7))
    with torch.no_grad():
        assert (ours(ids).pooler_output - hf.bert(ids).pooler_output).abs().max() < 1e-5
    classifier = Model.from_pretrained(tmp_path, head="seq-cls")  # an explicit head drops the unknown head's tensors
    assert classifier.config.head == "seq-cls"


def test_unknown_head_for_the_family(tmp_path: Path) -> None:
    pytest.importorskip("lmforge.models.model")
    d = tiny_bert_dir(tmp_path)
    with pytest.raises(LmforgeError, match="HF bert has no counterpart of the lmforge head 'clm'"):
        Model.from_pretrained(d, head="clm")


def test_tensors_of_another_head_are_unused_with_a_warning(tmp_path: Path) -> None:
    """As bert-base-uncased: config says BertForMaskedLM, the file also holds the NSP classifier."""
    pytest.importorskip("lmforge.models.model")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64)
    hf = transformers.BertForPreTraining(cfg).eval()
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["BertForMaskedLM"]}))
    with pytest.warns(UserWarning, match="cls.seq_relationship.bias, cls.seq_relationship.weight"):
        ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.head == "mlm"
    ids = torch.randint(1, 99, (2, 7))
    with torch.no_grad():
        assert (ours(ids).logits - hf(ids).prediction_logits).abs().max() < 1e-5


def test_config_json_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert", ')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        read_hf_config(tmp_path)


@pytest.mark.parametrize(("key", "value"), [("position_embedding_type", "relative_key"), ("is_decoder", True)])
def test_hf_switches_lmforge_does_not_build_are_refused(key: str, value: object, tmp_path: Path) -> None:
    d = tiny_bert_dir(tmp_path)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(LmforgeError, match=key):
        Model.from_pretrained(d)
