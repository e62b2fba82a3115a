"""Pruning removes exactly the chosen heads / neurons: the smaller model computes what the original computes
with those heads gated to 0 (HF's head_mask) / those neurons zeroed; importance is |d loss / d gate|."""
from __future__ import annotations

import pytest
import torch

from .conftest import tiny_bert, tiny_gpt
from lmforge.compression import prune as pruning
from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, InputError
from lmforge.models.model import Model

IDS = torch.randint(5, 1000, (3, 11), generator=torch.Generator().manual_seed(0))
MASK = torch.ones(3, 11, dtype=torch.long)
MASK[1, 8:] = 0  # padding goes through the masked attention path too


def masked_logits(model: Model, heads=None, neurons=None, **inputs) -> torch.Tensor:
    with pruning.Gates(model) as gates, torch.no_grad():
        for layer, keep in enumerate(heads or []):
            gates.heads[layer][[h for h in range(len(gates.heads[layer])) if h not in keep]] = 0.0
        for layer, keep in enumerate(neurons or []):
            gates.neurons[layer][[n for n in range(len(gates.neurons[layer])) if n not in keep]] = 0.0
        return model(IDS, **inputs).logits


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt], ids=["bert-seq-cls", "gpt-clm"])
def test_pruned_model_equals_masked_model(build):
    model = build()
    heads, neurons = [[0, 2], [3]], [[1, 5, 7, 40], list(range(0, 48, 3))]
    pruned = pruning.prune(model, heads=heads, neurons=neurons)
    assert pruned.config.layer_heads == [2, 1] and pruned.config.layer_ffn_sizes == [4, 16]
    assert pruned.body.layers[1].attn.qkv.weight.shape == (3 * 8, 32)  # 1 head of 8 for q, k and v
    assert pruned.body.layers[0].mlp.fc2.weight.shape == (32, 4)
    with torch.no_grad():
        got = pruned(IDS, attention_mask=MASK).logits
    want = masked_logits(model, heads, neurons, attention_mask=MASK)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, model(IDS, attention_mask=MASK).logits, atol=1e-3)  # the heads did matter


def test_pruned_decoder_generates_with_its_kv_cache():
    model = pruning.prune(tiny_gpt(), heads=[[1], [0, 3]])
    prompt = IDS[:1, :5]
    cached = model.generate(prompt, max_new_tokens=6)
    assert torch.equal(cached, model.generate(prompt, max_new_tokens=6, use_cache=False))
    assert torch.equal(cached, model.generate(prompt, max_new_tokens=6, compile=False, pack_weights=False))


def test_pruned_model_saves_and_loads(tmp_path):
    model = pruning.prune(tiny_bert(), heads=[[0], [1, 2, 3]], neurons=[[0, 1], list(range(30))])
    model.save_pretrained(tmp_path)
    again = Model.from_pretrained(tmp_path).eval()
    assert again.config.layer_heads == [1, 3] and again.config.layer_ffn_sizes == [2, 30]
    with torch.no_grad():
        assert torch.equal(again(IDS).logits, model(IDS).logits)


def test_importance_is_the_gate_gradient():
    """|d loss / d gate| by autograd equals a central finite difference of the loss in that gate."""
    model = tiny_bert().double()
    labels = torch.tensor([0, 1, 1])
    batch = {"input_ids": IDS, "attention_mask": MASK, "labels": labels}

    def loss_fn(m, b):  # in float64 throughout, for the finite difference
        logits = m(b["input_ids"], attention_mask=b["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, b["labels"])

    heads, neurons = pruning.importance(model, [batch], loss_fn)
    assert [len(h) for h in heads] == [4, 4] and [len(n) for n in neurons] == [48, 48]
    eps = 1e-6
    for layer, index, kind in ((0, 2, "heads"), (1, 0, "heads"), (1, 7, "neurons")):
        values, gate = [], []
        for sign in (1, -1):
            with pruning.Gates(model) as gates, torch.no_grad():
                getattr(gates, kind)[layer][index] = 1 + sign * eps
                gate.append(float(getattr(gates, kind)[layer][index]))  # float32: not exactly 1 +- eps
                values.append(float(loss_fn(model, batch)))
        fd = abs(values[0] - values[1]) / (gate[0] - gate[1])
        got = float((heads if kind == "heads" else neurons)[layer][index])
        assert got == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_head_selection_is_global_and_keeps_one_per_layer():
    scores = [torch.tensor([0.9, 0.1, 0.2, 0.3]), torch.tensor([0.05, 0.04, 0.8, 0.7])]
    assert pruning.heads_to_keep(scores, 0.5) == [[0, 3], [2, 3]]
    # 6 of 8 would remove both of layer 1's weakest and its next: each layer keeps its best one
    assert pruning.heads_to_keep([torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])], 0.5) == [[0], [1]]
    with pytest.raises(InputError, match="each of the 2 layers keeps at least one head"):
        pruning.heads_to_keep(scores, 0.9)
    normalized = pruning.normalize_head_scores([torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0])])
    assert torch.allclose(torch.cat(normalized), torch.tensor([0.6, 0.8, 1.0, 0.0]))  # L2 per layer, then min-max


def test_neurons_per_layer():
    keep = pruning.neurons_to_keep([torch.tensor([5.0, 1.0, 3.0, 2.0]), torch.tensor([0.0, 1.0, 2.0, 3.0])], 0.5)
    assert keep == [[0, 2], [2, 3]]


def test_magnitude_zeroes_the_smallest_weights_of_each_layer():
    model = tiny_gpt()
    before = {n: m.weight.detach().clone() for n, m in model.body.named_modules() if isinstance(m, torch.nn.Linear)}
    sparsity = pruning.magnitude_prune(model, 0.3)
    assert set(sparsity) == {f"body.{n}" for n in before}
    for name, w0 in before.items():
        w = model.body.get_submodule(name).weight
        assert sparsity[f"body.{name}"] == pytest.approx(0.3, abs=1 / w.numel())
        zeroed = w == 0
        assert w0[zeroed].abs().max() <= w0[~zeroed].abs().min()  # the smallest went, the rest is untouched
        assert torch.equal(w[~zeroed], w0[~zeroed])


def test_layer_heads_and_widths_are_validated():
    with pytest.raises(ConfigError, match=r"layer_heads must list 2 integer\(s\) in \[1, 2\]"):
        ModelConfig.from_preset("bert-tiny", layer_heads=[2, 3])
    with pytest.raises(ConfigError, match="layer_heads must list 2"):
        ModelConfig.from_preset("bert-tiny", layer_heads=[1])
    with pytest.raises(ConfigError, match="layer_ffn_sizes"):
        ModelConfig.from_preset("bert-tiny", layer_ffn_sizes=[0, 10])
    with pytest.raises(ConfigError, match="quantization.method"):
        ModelConfig.from_preset("bert-tiny", quantization={"method": "int4"})


def test_a_quantized_model_is_not_pruned():
    model = tiny_bert().quantize("bf16")
    with pytest.raises(InputError, match="prune the float model first"):
        pruning.prune(model, heads=[[0], [0]])


def test_pruned_banded_layers_without_qkv_bias_equal_the_masked_model():
    """Per-layer attention kinds (a dense and a banded layer, window 4 < 11 tokens: the block-sparse path),
    no q / k / v bias and unscaled scores, as GPT-Neo: pruning follows each layer's own kind."""
    model = tiny_gpt(attention_pattern=["dense", "banded"], attention_window=4, qkv_bias=False, attention_scale=1.0)
    assert "attn.qkv.bias" not in dict(model.body.layers[0].named_parameters())
    heads = [[0, 3], [2]]
    pruned = pruning.prune(model, heads=heads, neurons=[list(range(10)), list(range(0, 48, 2))])
    assert type(pruned.body.layers[1].attn).__name__ == "BandedAttention"
    assert pruned.body.layers[1].attn.qkv.weight.shape == (3 * 8, 32)
    with torch.no_grad():
        got = pruned(IDS, attention_mask=MASK).logits
    want = masked_logits(model, heads, [list(range(10)), list(range(0, 48, 2))], attention_mask=MASK)
    real = MASK.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5, rtol=1e-5)
    prompt = IDS[:1, :6]  # the banded layer's KV cache holds its one head
    assert torch.equal(pruned.generate(prompt, max_new_tokens=8), pruned.generate(prompt, max_new_tokens=8,
                                                                                   use_cache=False))


def test_bigbird_layers_refuse_head_pruning():
    with pytest.raises(ConfigError, match="does not work with attention_kind 'bigbird'"):
        ModelConfig.from_preset("bigbird-roberta-base", num_layers=2, layer_heads=[6, 6])
    # MLP pruning is fine there
    ModelConfig.from_preset("bigbird-roberta-base", num_layers=2, layer_ffn_sizes=[100, 200])


def test_compress_refuses_bigbird_head_pruning_before_scoring(tmp_path):
    from lmforge.recipes.compress import CompressConfig, apply_method

    model = Model.from_preset("bigbird-roberta-base", head="mlm", vocab_size=100, num_layers=2, hidden_size=32,
                              num_heads=4, intermediate_size=48, max_positions=256, block_size=8)
    config = CompressConfig(model="m", method="prune-heads", out=str(tmp_path))
    with pytest.raises(InputError, match="cannot prune BigBird attention"):
        apply_method(model, config, object(), tmp_path, print)  # no calibration data is touched
    config = CompressConfig(model="m", method="prune-heads", out=str(tmp_path), amount=0.9)
    with pytest.raises(InputError, match="each of the 2 layers keeps at least one head"):
        apply_method(tiny_bert(), config, object(), tmp_path, print)
