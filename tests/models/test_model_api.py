"""Model API details: resize_token_embeddings keeps the tie (and survives save/load),
num_parameters counts a tied matrix once, HF tuple semantics for every head with labels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge import Model
from lmforge.presets import PRESETS

V, B, L = 60, 2, 6


def _ids(*shape: int, high: int = V) -> torch.Tensor:
    return torch.randint(3, high, shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset,head", [("bert-tiny", "mlm"), ("gpt-tiny", "clm"), ("albert-base", "mlm")])
def test_resize_keeps_the_tie_and_survives_save_load(tmp_path, preset, head):
    small = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64) if preset == "albert-base" else {}
    model = Model.from_preset(preset, head=head, vocab_size=V, **small).eval()
    e = model.config.embed_size
    before = model.num_parameters()
    model.resize_token_embeddings(V + 5)
    # tied: only the new embedding rows (+ the MLM bias) are new parameters, no second (V + 5, E) matrix
    assert model.num_parameters() == before + 5 * e + (5 if head == "mlm" else 0)
    model(_ids(B, L, high=V + 5))  # the new ids are usable
    ids = _ids(B, L)  # old ids only: the hidden states do not change below, only the output layer
    logits = model(ids).logits
    with torch.no_grad():  # the output layer reads the (new) embedding matrix: moving a new row moves its logit
        model.body.embeddings.word.weight[V + 4] += 1.0
    moved = model(ids).logits
    assert not torch.allclose(moved[..., V + 4], logits[..., V + 4])
    torch.testing.assert_close(moved[..., :V + 4], logits[..., :V + 4], atol=0, rtol=0)
    model.save_pretrained(tmp_path)
    back = Model.from_pretrained(tmp_path).eval()
    assert back.config.vocab_size == V + 5 and back.num_parameters() == model.num_parameters()
    torch.testing.assert_close(back(ids).logits, moved)


def test_num_parameters_base_and_with_a_tied_head():
    model = Model.from_preset("bert-tiny", head="mlm")
    base = model.num_parameters(exclude_head=True)
    assert base == PRESETS["bert-tiny"].params == 4_385_920
    h, v = 128, 30522
    # MLM head: dense H x H + bias, LayerNorm, the decoder bias; the decoder matrix is the tied embedding
    assert model.num_parameters() == base + (h * h + h) + 2 * h + v
    untied = Model.from_preset("gpt-tiny", head="clm", tie_word_embeddings=False)
    assert untied.num_parameters() == PRESETS["gpt-tiny"].params + 50257 * 128


def test_hf_tuple_order_with_labels_for_every_head():
    ids = _ids(B, L)
    cases = {
        ("bert-tiny", "seq-cls"): dict(labels=torch.tensor([0, 1])),
        ("bert-tiny", "token-cls"): dict(labels=torch.zeros(B, L, dtype=torch.long)),
        ("bert-tiny", "mlm"): dict(labels=ids),
        ("bert-tiny", "rtd"): dict(labels=torch.zeros(B, L, dtype=torch.long)),
        ("gpt-tiny", "clm"): dict(labels=ids),
        ("gpt-tiny", "seq-cls"): dict(labels=torch.tensor([1, 0])),
    }
    for (preset, head), kw in cases.items():
        model = Model.from_preset(preset, head=head, vocab_size=V).eval()
        out = model(ids, **kw)
        assert out[0] is out.loss and out.loss.ndim == 0, head
        assert out[1] is out.logits, head
        plain = model(ids)
        assert plain[0] is plain.logits and "loss" not in plain, head
    seq = Model.from_preset("bert-tiny", head="seq-cls", vocab_size=V).eval()
    out = seq(ids, labels=torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], F.cross_entropy(out[1], torch.tensor([0, 1])))


def test_padding_never_reaches_the_loss_so_the_pad_row_gets_no_lookup_gradient():
    """Why lmforge's embeddings need no padding_idx: HF's nn.Embedding(padding_idx=pad) zeroes that row at
    init and masks its lookup gradient; with the attention mask, pad positions reach no loss anyway, so
    the pad row's gradient is exactly zero (only the init of one row differs from HF)."""
    for preset, pad in (("bert-tiny", 0), ("roberta-base", 1)):
        model = Model.from_preset(preset, head="seq-cls", vocab_size=V, num_layers=2, hidden_size=32, num_heads=2,
                                  intermediate_size=64, pad_token_id=pad, hidden_dropout=0.0, attention_dropout=0.0)
        ids = _ids(B, L)
        ids[1, 4:] = pad
        mask = (ids != pad).long()
        model(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
        grad = model.body.embeddings.word.weight.grad
        assert float(grad[pad].abs().max()) == 0.0 and float(grad[ids[0, 0]].abs().max()) > 0, preset


def test_more_bad_input_says_the_limit():
    from lmforge.errors import InputError

    roberta = Model.from_preset("roberta-base", vocab_size=V, num_layers=1, hidden_size=32, num_heads=2,
                                intermediate_size=64)
    with pytest.raises(InputError, match=r"513 tokens but .* at most 512 \(max_positions=514\)"):
        roberta(_ids(1, 513))
    gpt = Model.from_preset("gpt-tiny", head="clm", vocab_size=V, max_positions=8).eval()
    past = gpt(_ids(1, 6), use_cache=True).past_key_values
    with pytest.raises(InputError, match=r"9 tokens \(with the cache\) .* at most 8"):
        gpt(_ids(1, 3), past_key_values=past)
    with pytest.raises(InputError, match="token id -1 is outside the vocabulary"):
        gpt(torch.tensor([[1, -1]]))


def _std(t: torch.Tensor) -> float:
    return float(t.detach().std())


def test_init_normal_std_and_gpt2_scaled_residual_projections():
    """HF's init: normal(0, initializer_range) for Linear / Embedding, zero biases, LayerNorm (1, 0); GPT-2's
    residual projections (attn c_proj, mlp c_proj) get initializer_range / sqrt(2 * n_layers)."""
    torch.manual_seed(0)
    gpt = Model.from_preset("gpt-mini")  # 4 layers, H 256
    bert = Model.from_preset("bert-mini")
    scaled = 0.02 / (2 * 4) ** 0.5
    for layer in gpt.body.layers:
        for w in (layer.attn.out.weight, layer.mlp.fc2.weight):
            assert abs(_std(w) / scaled - 1) < 0.05
        assert abs(_std(layer.mlp.fc1.weight) / 0.02 - 1) < 0.05
    for layer in bert.body.layers:  # no scaling outside GPT-2 / GPT-3
        assert abs(_std(layer.attn.out.weight) / 0.02 - 1) < 0.05
        assert float(layer.attn.out.bias.detach().abs().max()) == 0.0
    assert abs(_std(bert.body.embeddings.word.weight) / 0.02 - 1) < 0.05
    norms = [m for m in bert.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(bool((m.weight == 1).all()) and bool((m.bias == 0).all()) for m in norms)


def test_loading_skips_the_random_init_and_initialises_only_what_the_checkpoint_lacks(tmp_path):
    """from_pretrained builds on the meta device (HF's way: no 110M normal draws for bert-base that the load
    overwrites): the loaded tensors equal the checkpoint's, and the tensors a new head adds get the init a fresh
    model gives them (normal(0, 0.02) weights, zero biases), not allocator garbage; through an HF directory too,
    whose BertForMaskedLM checkpoint has neither the seq-cls classifier nor the pooler."""
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    mlm = Model.from_preset("bert-mini", head="mlm", vocab_size=V)
    mlm.save_pretrained(tmp_path / "lm")
    again = Model.from_pretrained(tmp_path / "lm")
    for (name, a), b in zip(mlm.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    hf = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=512))
    hf.save_pretrained(tmp_path / "hf")
    for path in (tmp_path / "lm", tmp_path / "hf"):
        for _ in range(3):  # fresh allocations each time: garbage would show in one of them
            cls = Model.from_pretrained(path, head="seq-cls", num_labels=3)
            weight, bias = cls.head.classifier.weight.detach(), cls.head.classifier.bias.detach()
            assert torch.isfinite(weight).all() and abs(_std(weight) / 0.02 - 1) < 0.35  # 768 numbers
            assert float(bias.abs().max()) == 0.0
            if path.name == "hf":  # BertForMaskedLM is built without the pooler
                pooler = cls.body.pooler.dense
                assert abs(_std(pooler.weight) / 0.02 - 1) < 0.05 and float(pooler.bias.detach().abs().max()) == 0.0
