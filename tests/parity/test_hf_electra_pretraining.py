"""ELECTRA pre-training pairs against HF transformers, both ways: an rtd run's discriminator exports as
``ElectraForPreTraining`` and its generator (narrower than the shared embeddings: E > H) as
``ElectraForMaskedLM``, with HF's checkpoint key names and the same logits; an HF generator + discriminator
pair sharing its embeddings (the way community ports build ELECTRA) loads into lmforge and gives the same
rtd loss on the same batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmforge import Model
from lmforge.objectives import build_objective
from lmforge.objectives.rtd import RTDConfig

transformers = pytest.importorskip("transformers")

V, B, L = 99, 3, 11


class _Tok:
    """The few tokenizer facts the objective reads: 99 ids, [PAD] 0, [CLS] 1, [SEP] 2, [MASK] 3."""

    mask_token_id, pad_token_id, cls_token_id, sep_token_id, bos_token_id, eos_token_id = 3, 0, 1, 2, None, None
    all_special_ids = [0, 1, 2, 3]

    def __len__(self) -> int:
        return V


def _noisy(model: torch.nn.Module, seed: int) -> None:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _batch(objective) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    examples = []
    for i, n in enumerate((L, 8, 6)):
        ids = np.concatenate([[1], rng.integers(4, V, n - 2), [2]]).astype(np.int64)
        masked, labels = objective.masker(ids, np.random.default_rng([7, i]))
        examples.append({"input_ids": masked, "labels": labels, "sample_seed": 100 + i})
    return objective.collate(examples)


def _objective():
    return build_objective("rtd", tokenizer=_Tok(), seq_len=L, rtd=RTDConfig(generator_size=0.25))


def _load(path, cls_name: str):
    hf, info = getattr(transformers, cls_name).from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return hf.eval()


def test_an_rtd_pair_exports_as_hf_electra(tmp_path) -> None:
    torch.manual_seed(0)
    disc = Model.from_preset("electra-small", head="rtd", vocab_size=V, hidden_size=32, embedding_size=16,
                             num_layers=2, num_heads=4, intermediate_size=37, max_positions=32)
    objective = _objective()
    gen = objective.attach(disc)
    assert (gen.config.hidden_size, gen.config.embed_size, gen.config.num_heads) == (8, 16, 1)  # E > H
    _noisy(disc, 1)
    _noisy(gen, 2)  # the shared tensors move once more: still one tensor each
    disc.eval().export_hf(tmp_path / "disc")
    gen.eval().export_hf(tmp_path / "gen")
    hf_disc = _load(tmp_path / "disc", "AutoModelForPreTraining")
    hf_gen = _load(tmp_path / "gen", "AutoModelForMaskedLM")
    assert type(hf_disc).__name__ == "ElectraForPreTraining" and type(hf_gen).__name__ == "ElectraForMaskedLM"
    # the names of google's HF checkpoints (electra-*-discriminator / -generator)
    d_keys, g_keys = set(load_file(str(tmp_path / "disc" / "model.safetensors"))), set(
        load_file(str(tmp_path / "gen" / "model.safetensors")))
    assert {"electra.embeddings.word_embeddings.weight", "electra.embeddings_project.weight",
            "discriminator_predictions.dense.weight", "discriminator_predictions.dense_prediction.weight"} <= d_keys
    assert {"electra.embeddings.word_embeddings.weight", "electra.embeddings.LayerNorm.weight",
            "electra.embeddings_project.weight", "generator_predictions.dense.weight",
            "generator_predictions.LayerNorm.weight", "generator_lm_head.bias"} <= g_keys
    assert d_keys <= set(hf_disc.state_dict()) and g_keys <= set(hf_gen.state_dict())
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        a, b = getattr(hf_disc.electra.embeddings, name), getattr(hf_gen.electra.embeddings, name)
        assert torch.equal(a.weight, b.weight)  # the shared embeddings, once in each export
    batch = _batch(objective)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    real = mask.bool()
    with torch.no_grad():
        for ours, hf in ((disc, hf_disc), (gen, hf_gen)):
            a, b = ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
            assert a.shape == b.shape
            assert (a[real] - b[real]).abs().max() <= 1e-5


def _hf_pair(tmp_path):
    """ElectraForMaskedLM + ElectraForPreTraining sharing one embedding module (word, position, type, norm)
    and a generator head tied to that word embedding, as community ELECTRA ports set them up."""
    torch.manual_seed(0)
    common = dict(vocab_size=V, embedding_size=16, num_hidden_layers=2, max_position_embeddings=32,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=32, num_attention_heads=4, intermediate_size=128, **common))
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=8, num_attention_heads=1, intermediate_size=32, **common))
    _noisy(disc, 3)
    _noisy(gen, 4)
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    disc.save_pretrained(tmp_path / "hf-disc")
    gen.save_pretrained(tmp_path / "hf-gen")
    return gen.eval(), disc.eval()


def _port_loss(gen, disc, batch) -> torch.Tensor:
    """One ELECTRA loss the community-port way: HF logits at every position, then gathered at the masks."""
    from lmforge.objectives.rtd import sample_tokens

    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    keep = labels != -100
    out = gen(ids, attention_mask=mask, labels=labels)  # HF's MLM loss over labels != -100
    sampled = sample_tokens(out.logits[keep], keep.sum(1).tolist(), batch["sample_seed"].tolist())
    original = torch.where(keep, labels, ids)
    fake = original.clone()
    fake[keep] = sampled
    d = disc(fake, attention_mask=mask, labels=(fake != original).long())  # HF's loss over attention_mask
    return out.loss + 50.0 * d.loss


def test_an_hf_pair_loads_and_gives_the_same_rtd_loss(tmp_path) -> None:
    hf_gen, hf_disc = _hf_pair(tmp_path)
    disc = Model.from_pretrained(tmp_path / "hf-disc").eval()
    gen = Model.from_pretrained(tmp_path / "hf-gen").eval()
    assert disc.config.head == "rtd" and gen.config.head == "mlm" and gen.config.embed_size > gen.config.hidden_size
    objective = _objective()
    objective.attach(disc, generator=gen)
    batch = _batch(objective)
    with torch.no_grad():
        ours, _ = objective.loss(disc, batch)
        ref = _port_loss(hf_gen, hf_disc, batch)
    assert abs(float(ours) - float(ref)) <= 1e-4 * float(ref), (float(ours), float(ref))
    # and back: lmforge's export of the loaded pair has HF's weights, tensor for tensor
    disc.export_hf(tmp_path / "again-disc")
    gen.export_hf(tmp_path / "again-gen")
    for name, hf in (("again-disc", hf_disc), ("again-gen", hf_gen)):
        sd = hf.state_dict()
        for key, value in load_file(str(tmp_path / name / "model.safetensors")).items():
            assert torch.equal(value, sd[key]), key
