"""Every method saves (safetensors, int8 where it says so) and loads with Model.from_pretrained into the same
model: the same logits, the same generated tokens."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from .conftest import tiny_bert, tiny_gpt
from lmforge.compression import prune as pruning
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models.model import Model
from lmforge.nn.quantized import Int8Embedding, Int8Linear, available_kernels

IDS = torch.randint(5, 1000, (2, 9), generator=torch.Generator().manual_seed(0))
QUANT = [("int8", k) for k in ("fbgemm", "int-mm")] + [("int8-weight", "int8pack-bf16"), ("bf16", None)]


def _skip_unavailable(method: str, kernel: str | None) -> None:
    if kernel is not None and available_kernels(method)[kernel] is not None:
        pytest.skip(f"{kernel}: {available_kernels(method)[kernel]}")


@pytest.mark.parametrize("method, kernel", QUANT, ids=[f"{m}-{k}" for m, k in QUANT])
def test_quantized_gpt_round_trip(tmp_path, method, kernel):
    _skip_unavailable(method, kernel)
    model = tiny_gpt()
    with torch.no_grad():
        float_logits = model(IDS).logits
    model.quantize(method, kernel=kernel)
    with torch.no_grad():
        logits = model(IDS).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization"]
    assert saved == ({"method": "bf16"} if method == "bf16" else {"method": method, "kernel": kernel})
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        dtypes = {name: f.get_slice(name).get_dtype() for name in f.keys()}
    want = "BF16" if method == "bf16" else "I8"
    assert dtypes["body.layers.0.attn.qkv.weight"] == want and dtypes["body.embeddings.word.weight"] == want
    again = Model.from_pretrained(tmp_path).eval()
    if method != "bf16":
        assert isinstance(again.body.layers[1].mlp.fc2, Int8Linear)
        assert isinstance(again.body.embeddings.word, Int8Embedding)  # tied to the LM output: int8 too
    with torch.no_grad():
        assert torch.equal(again(IDS).logits, logits)
    assert (logits.float() - float_logits).abs().max() < 0.05 * float_logits.abs().max()
    prompt = IDS[:1, :4]
    assert torch.equal(again.generate(prompt, max_new_tokens=5), model.generate(prompt, max_new_tokens=5))


@pytest.mark.parametrize("method, kernel", [("int8", "fbgemm"), ("int8-weight", "fused"), ("bf16", None)])
def test_quantized_bert_round_trip(tmp_path, method, kernel):
    _skip_unavailable(method, kernel)
    model = tiny_bert(head="mlm").quantize(method, kernel=kernel)
    with torch.no_grad():
        logits = model(IDS).logits
    model.save_pretrained(tmp_path)
    again = Model.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(IDS).logits, logits)


def test_quantized_models_refuse_what_they_cannot_do(tmp_path):
    model = tiny_bert().quantize("int8", kernel="int-mm")
    with pytest.raises(CheckpointError, match="HF export of a int8 quantized model is not supported"):
        model.export_hf(tmp_path / "hf")
    with pytest.raises(ConfigError, match="resize the float model, then compress it"):
        model.resize_token_embeddings(1200)
    with pytest.raises(ConfigError, match="already quantized"):
        model.quantize("bf16")
    model.save_pretrained(tmp_path / "q")
    with pytest.raises(ConfigError, match="loads with its own head"):
        Model.from_pretrained(tmp_path / "q", head="token-cls")


def test_pruned_and_then_quantized(tmp_path):
    model = pruning.prune(tiny_gpt(), heads=[[0, 1], [2]], neurons=[list(range(20)), list(range(10))])
    model.quantize("int8", kernel="int-mm").save_pretrained(tmp_path)
    again = Model.from_pretrained(tmp_path).eval()
    assert again.config.layer_heads == [2, 1] and again.body.layers[1].attn.qkv.weight.dtype == torch.int8
    with torch.no_grad():
        assert torch.equal(again(IDS).logits, model(IDS).logits)


def test_an_int8_directory_is_refused_on_another_device_when_loaded(tmp_path, bert_mlm_dir):
    """The commands place the model on --device (cuda when available): an int8 one says so at load time."""
    import shutil

    from lmforge.nn.quantized import QuantizationError
    from lmforge.recipes.loading import load_model_and_tokenizer

    Model.from_pretrained(bert_mlm_dir).quantize("int8", kernel="int-mm").save_pretrained(tmp_path)
    shutil.copy(bert_mlm_dir / "vocab.txt", tmp_path / "vocab.txt")
    with pytest.raises(QuantizationError, match="kernels run on CPU only, and the device is meta; pass --device cpu"):
        load_model_and_tokenizer(tmp_path, torch.device("meta"))
    model, _ = load_model_and_tokenizer(tmp_path, torch.device("cpu"))
    assert model.body.layers[0].attn.qkv.weight.dtype == torch.int8
