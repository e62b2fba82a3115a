"""The HF habits a user brings, against transformers on the same weights: get / set_input_embeddings,
get_output_embeddings, resize_token_embeddings' return value, a CLM given labels returning loss AND
logits (while the clm objective keeps its fused, logits-free loss), generate returning prompt + new tokens."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from encoder_cases import assert_close
from test_hf_decoders import PAD, VOCAB, build_hf

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model
NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture()
def gpt2(tmp_path: Path) -> tuple[object, Model]:
    hf = build_hf("gpt2", "clm", tmp_path, **NO_DROPOUT)
    return hf, Model.from_pretrained(tmp_path).eval()


def ids_and_mask() -> tuple[torch.Tensor, torch.Tensor]:
    """2 left-padded prompts (lengths 6 and 3)."""
    ids = torch.randint(5, VOCAB, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def test_embedding_accessors_match_hf(gpt2: tuple[object, Model]) -> None:
    hf, ours = gpt2
    emb = ours.get_input_embeddings()
    assert isinstance(emb, nn.Embedding) and torch.equal(emb.weight, hf.get_input_embeddings().weight)
    head = ours.get_output_embeddings()
    assert isinstance(head, nn.Linear) and head.bias is None and hf.get_output_embeddings().bias is None
    assert head.weight is emb.weight  # tied, as hf.get_output_embeddings().weight is its wte weight
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    ids, _ = ids_and_mask()
    with torch.no_grad():
        out = ours(ids)
        assert_close(head(out.last_hidden_state), out.logits, "output embeddings x hidden = logits")
    new = nn.Embedding(VOCAB, 32)
    ours.set_input_embeddings(new)
    assert ours.get_input_embeddings() is new and ours.get_output_embeddings().weight is new.weight  # still tied
    with torch.no_grad():
        out = ours(ids)
        assert_close(out.logits, out.last_hidden_state @ new.weight.T, "logits read the new embedding")
    with pytest.raises(ValueError, match="resize_token_embeddings"):
        ours.set_input_embeddings(nn.Embedding(VOCAB + 1, 32))


def test_resize_returns_the_embedding_as_hf(gpt2: tuple[object, Model]) -> None:
    hf, ours = gpt2
    got, ref = ours.resize_token_embeddings(VOCAB + 5), hf.resize_token_embeddings(VOCAB + 5)
    assert isinstance(got, nn.Embedding) and repr(got) == repr(ref) == f"Embedding({VOCAB + 5}, 32)"
    assert got is ours.get_input_embeddings() and ours.get_output_embeddings().weight is got.weight
    assert ours.resize_token_embeddings() is got and ours.resize_token_embeddings(VOCAB + 5) is got


def test_output_embeddings_of_encoder_heads_match_hf(tmp_path: Path) -> None:
    """MLM: the decoder as a Linear with the prediction bias (HF cls.predictions.decoder); no LM: None."""
    mlm = Model.from_preset("bert-tiny", head="mlm", vocab_size=VOCAB, max_positions=32)
    with torch.no_grad():
        mlm.head.mlm.bias.normal_()
    mlm.export_hf(tmp_path / "mlm")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")
    ours, ref = mlm.get_output_embeddings(), hf.get_output_embeddings()
    assert ours.weight is mlm.get_input_embeddings().weight and ours.bias is mlm.head.mlm.bias
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)
    cls = Model.from_preset("bert-tiny", head="seq-cls", vocab_size=VOCAB, max_positions=32, num_labels=2)
    cls.export_hf(tmp_path / "cls")
    assert cls.get_output_embeddings() is None
    assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls").get_output_embeddings() is None
    assert Model.from_preset("bert-tiny", vocab_size=VOCAB).get_output_embeddings() is None  # no head
    untied = Model.from_preset("gpt2", head="clm", vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=4,
                               tie_word_embeddings=False)
    assert untied.get_output_embeddings() is untied.head.decoder


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_clm_with_labels_returns_loss_and_logits_as_hf(gpt2: tuple[object, Model], mode: str) -> None:
    hf, ours = gpt2
    getattr(hf, mode)(), getattr(ours, mode)()  # dropout is 0: train mode computes the same function
    ids, mask = ids_and_mask()
    mask = mask.flip(1)  # right padding: with left padding a pad position would predict the first real token
    ids = ids.masked_fill(mask == 0, PAD)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out, ref = ours(ids, attention_mask=mask, labels=labels), hf(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits is not None and out.logits.shape == ref.logits.shape == (2, 6, VOCAB)
    assert_close(out.logits[mask.bool()], ref.logits[mask.bool()], "logits with labels")
    assert_close(out.loss, ref.loss, "loss")
    assert out[0] is out.loss and out[1] is out.logits  # HF tuple order


def test_clm_objective_keeps_the_fused_loss(gpt2: tuple[object, Model]) -> None:
    """The trainer's call (CausalLM.loss) never materialises the (B, L, V) logits; same loss as with them."""
    from types import SimpleNamespace

    from lmforge.objectives.clm import CausalLM

    _, ours = gpt2
    ours.train()
    seen = []

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(ours(*args, **kwargs))
        return seen[-1]

    objective = CausalLM(tokenizer=SimpleNamespace(eos_token_id=2), seq_len=6)
    batch = objective.collate([{"input_ids": row.numpy()} for row in ids_and_mask()[0]])
    loss, _ = objective.loss(spy, batch)
    assert seen[0].logits is None
    assert_close(loss, ours(batch["input_ids"], labels=batch["labels"]).loss, "fused loss = plain loss")


def test_generate_returns_what_hf_generate_returns(gpt2: tuple[object, Model]) -> None:
    """Greedy on a left-padded batch: the same (B, prompt + new) tensor as HF, eos and pad filling included."""
    hf, ours = gpt2
    ids, mask = ids_and_mask()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=PAD, return_prompt=False)
    eos = int(free[0, 3])  # a token the model really produces, so one row ends early
    for kw in (dict(eos_token_id=None), dict(eos_token_id=eos), dict(eos_token_id=eos, num_beams=2)):
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD, **kw)
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=PAD, **kw)
        assert torch.equal(got, ref), f"{kw}\nlmforge {got}\nHF      {ref}"
        new = ours.generate(ids, attention_mask=mask, max_new_tokens=8, pad_token_id=PAD, return_prompt=False, **kw)
        assert torch.equal(new, ref[:, ids.shape[1]:])
