"""rtd (ELECTRA): the loss against a float64 reimplementation of the paper's formulas on HF transformers' models,
the sampler against the generator's softmax, the gradient paths, the generator's shape, the metrics.

References no one here wrote: HF ``ElectraForMaskedLM`` / ``ElectraForPreTraining`` run the two networks
(converted from the lmforge ones), scipy's chi-square test judges the samples, sklearn scores the metrics.
The formulas follow google-research/electra run_pretraining.py (``_get_masked_lm_output``,
``_get_fake_data``, ``_get_discriminator_output``) and pretrain_helpers.py (``sample_from_softmax``).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError
from lmforge.objectives import OBJECTIVES, build_objective, canonical_name
from lmforge.objectives.rtd import (RTDConfig, ReplacedTokenDetection, generator_config, gumbel_noise_,
                                    sample_tokens)
from lmforge.tokenization import Tokenizer

V = 24  # a small vocabulary: the generator's samples often equal the original, so both labels occur
FREQUENT = 7  # a token the batches use a lot (and the biased generator favours)


def word_tokenizer(size: int = V) -> Tokenizer:
    """Word-level: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, then w0 .. w{size - 6}."""
    from tokenizers import Tokenizer as Engine
    from tokenizers import models, pre_tokenizers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials)} | {f"w{i}": i + 5 for i in range(size - 5)}
    backend = Engine(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return Tokenizer(backend, family="bert", special_tokens={"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]",
                                                             "sep": "[SEP]", "mask": "[MASK]"})


def discriminator(**overrides) -> Model:
    torch.manual_seed(0)
    fields = dict(vocab_size=V, hidden_size=32, embedding_size=16, num_layers=2, num_heads=4, intermediate_size=48,
                  max_positions=40, hidden_dropout=0.0, attention_dropout=0.0) | overrides
    model = Model.from_preset("electra-small", head="rtd", **fields)
    with torch.no_grad():  # init leaves biases 0 and norms 1: noise makes a wrong mapping visible
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def setup(rtd: RTDConfig | None = None, *, bias: float = 2.5):
    tok = word_tokenizer()
    objective = build_objective("electra", tokenizer=tok, seq_len=24, rtd=rtd or RTDConfig(generator_size=0.25))
    disc = discriminator()
    gen = objective.attach(disc)
    with torch.no_grad():
        for p in gen.parameters():
            if p is not disc.body.embeddings.word.weight and p.dim() > 0:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
        gen.head.mlm.bias[FREQUENT] += bias  # the generator often proposes FREQUENT: some samples equal the original
    return tok, objective, disc, gen


def padded_batch(objective: ReplacedTokenDetection, lengths=(20, 13, 9), seed: int = 0):
    """A batch of three sequences of different lengths (so with padding), masked by the objective's Masker."""
    rng = np.random.default_rng(seed)
    examples = []
    for i, n in enumerate(lengths):
        body = rng.integers(5, V, n - 2)
        body[rng.random(n - 2) < 0.4] = FREQUENT
        ids = np.concatenate([[2], body, [3]]).astype(np.int64)
        masked, labels = objective.masker(ids, np.random.default_rng([seed, i]))
        examples.append({"input_ids": masked, "labels": labels, "sample_seed": 1000 + 17 * i + seed})
    return objective.collate(examples)


def to_hf(model: Model, tmp, name: str, cls_name: str):
    transformers = pytest.importorskip("transformers")
    model.export_hf(tmp / name)
    return getattr(transformers, cls_name).from_pretrained(tmp / name).double().eval()


def reference_loss(hf_gen, hf_disc, batch, *, gen_weight=1.0, disc_weight=50.0, temperature=1.0,
                   rule: str = "different", pads: bool = False):
    """The paper's ELECTRA loss in float64, written from the formulas (HF runs the two networks).
    ``rule="masked"`` / ``pads=True``: the two mistakes the test must be able to see."""
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    keep = labels != -100
    logits = hf_gen(ids, attention_mask=mask).logits[keep]  # (N, V) float64
    target = labels[keep]
    log_probs = logits - torch.logsumexp(logits, -1, keepdim=True)
    mlm = -log_probs[torch.arange(len(target)), target].mean()
    # sample_from_softmax: argmax(logits / T - log(-log(u + 1e-9) + 1e-9)), u ~ U[0, 1) per (position, id),
    # the uniforms of sequence b drawn from a generator seeded with its sample_seed
    rows = []
    for b in range(ids.size(0)):
        n = int(keep[b].sum())
        g = torch.Generator().manual_seed(int(batch["sample_seed"][b]))
        rows.append(torch.empty((n, logits.size(1)), dtype=torch.float32).uniform_(0.0, 1.0, generator=g))
    u = torch.cat(rows).double()
    sampled = (logits.float().double() / temperature - torch.log(-torch.log(u + 1e-9) + 1e-9)).argmax(-1)
    original = torch.where(keep, labels, ids)
    fake = original.clone()
    fake[keep] = sampled
    is_fake = (fake != original).double()  # labels = masked * (1 - equal)
    if rule == "masked":
        is_fake = keep.double()
    z = hf_disc(fake, attention_mask=mask).logits  # (B, L)
    w = mask.double() if not pads else torch.ones_like(mask, dtype=torch.float64)  # input_mask: real tokens
    bce = F.softplus(-z) * is_fake + F.softplus(z) * (1 - is_fake)  # sigmoid cross-entropy
    disc = (bce * w).sum() / w.sum()
    return gen_weight * mlm + disc_weight * disc, SimpleNamespace(mlm=mlm, disc=disc, fake=fake, is_fake=is_fake,
                                                                    keep=keep, original=original)


def test_the_registry_and_the_alias() -> None:
    assert OBJECTIVES["rtd"] is ReplacedTokenDetection and canonical_name("electra") == "rtd"
    obj = build_objective("electra", tokenizer=word_tokenizer(), seq_len=128)
    assert obj.name == "rtd" and obj.heads(None) == "rtd"
    m = obj.masking  # pretrain_helpers.mask: 85% [MASK], 15% unchanged, no random tokens; configure_pretraining cap
    assert (m.mask_prob, m.mask_replace_prob, m.random_replace_prob, m.max_predictions) == (0.15, 0.85, 0.0, 19)
    assert obj.rtd == RTDConfig(generator_size=0.25, gen_weight=1.0, disc_weight=50.0, temperature=1.0)


def test_loss_equals_the_float64_reference(tmp_path) -> None:
    tok, objective, disc, gen = setup()
    batch = padded_batch(objective)
    assert "attention_mask" in batch  # padded: the pad mask is part of what is checked
    hf_gen, hf_disc = to_hf(gen, tmp_path, "gen", "ElectraForMaskedLM"), to_hf(disc, tmp_path, "disc",
                                                                               "ElectraForPreTraining")
    disc.double().eval()
    gen.double()
    with torch.no_grad():
        loss, metrics = objective.loss(disc, batch)
        ref, parts = reference_loss(hf_gen, hf_disc, batch)
    # the rule is exercised: some masked positions were sampled back to the original (label 0), some not
    same = (parts.fake == parts.original) & parts.keep
    assert int(same.sum()) >= 2 and int((parts.is_fake > 0).sum()) >= 2
    # the networks run in float64; lmforge's loss functions reduce in float32 (nn/losses.py), hence 1e-6
    assert float(loss) == pytest.approx(float(ref), rel=1e-6, abs=0)
    assert float(metrics["mlm_loss"]) == pytest.approx(float(parts.mlm), rel=1e-6)
    assert float(metrics["disc_loss"]) == pytest.approx(float(parts.disc), rel=1e-6)
    # the check can tell: "every masked position is replaced" or scoring the pads give other losses
    with torch.no_grad():
        every_masked, _ = reference_loss(hf_gen, hf_disc, batch, rule="masked")
        with_pads, _ = reference_loss(hf_gen, hf_disc, batch, pads=True)
    assert abs(float(every_masked) - float(ref)) > 1e-3 and abs(float(with_pads) - float(ref)) > 1e-3
    real = batch["attention_mask"].bool()
    assert float(metrics["replaced_fraction"]) == pytest.approx(float(parts.is_fake[real].mean()))
    # the weights are the configurable ones
    objective.rtd = RTDConfig(generator_size=0.25, gen_weight=0.5, disc_weight=7.0)
    with torch.no_grad():
        loss2, _ = objective.loss(disc, batch)
    assert float(loss2) == pytest.approx(float(0.5 * parts.mlm + 7.0 * parts.disc), rel=1e-6)


def test_pads_are_not_scored(tmp_path) -> None:
    """Moving the pad tokens' discriminator logits changes nothing: they are outside the loss."""
    tok, objective, disc, gen = setup()
    batch = padded_batch(objective)
    disc.eval()
    with torch.no_grad():
        before, _ = objective.loss(disc, batch)
        hook = disc.head.classifier.register_forward_hook(
            lambda m, i, out: out + 100.0 * (1 - batch["attention_mask"]).unsqueeze(-1))
        after, _ = objective.loss(disc, batch)
        hook.remove()
    assert float(before) == float(after)


def test_the_sampler_draws_from_the_softmax() -> None:
    from scipy.stats import chisquare

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    n_seq, per = 400, 50
    rows = logits.expand(n_seq * per, -1)
    for temperature in (1.0, 2.0):
        drawn = sample_tokens(rows, [per] * n_seq, range(n_seq), temperature=temperature)
        counts = np.bincount(drawn.numpy(), minlength=len(logits))
        expected = torch.softmax(logits.double() / temperature, -1).numpy() * len(drawn)
        assert chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
        # the test has power: the same counts are far from another temperature's distribution
        wrong = torch.softmax(logits.double() / (3.0 - temperature), -1).numpy() * len(drawn)
        assert chisquare(counts, wrong).pvalue < 1e-6


def test_gumbel_noise_is_the_reference_formula() -> None:
    u = torch.rand(1000, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    u[0] = 0.0  # the eps keeps the smallest uniform finite
    ref = -np.log(-np.log(u.double().numpy() + 1e-9) + 1e-9)
    got = gumbel_noise_(u.clone()).double().numpy()
    assert np.isfinite(got).all() and np.allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_the_same_seed_gives_the_same_sample_and_rows_keep_their_own_noise() -> None:
    logits = torch.randn(7, V, generator=torch.Generator().manual_seed(3))
    a = sample_tokens(logits, [3, 0, 4], [11, 12, 13])
    b = sample_tokens(logits, [3, 0, 4], [11, 99, 13])  # a sequence without masked rows uses no noise
    assert torch.equal(a, b)
    c = sample_tokens(logits[3:], [4], [13])  # sequence 2 alone: the same draws
    assert torch.equal(a[3:], c)


def test_a_generator_that_predicts_the_original_replaces_nothing() -> None:
    tok, objective, disc, gen = setup()
    batch = padded_batch(objective)

    class Oracle(torch.nn.Module):
        def forward(self, ids, attention_mask=None, token_type_ids=None, labels=None):
            target = labels[labels != -100]
            logits = F.one_hot(target, V).float() * 30.0  # p(original) ~ 1 - 1e-12
            return SimpleNamespace(loss=F.cross_entropy(logits, target), logits=logits)

    objective.generator = Oracle()
    seen = {}
    hook = disc.register_forward_pre_hook(lambda m, args, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        _, metrics = objective.loss(disc.eval(), batch)
    hook.remove()
    assert float(metrics["replaced_fraction"]) == 0.0 and int(metrics["replaced"]) == 0
    labels = seen["labels"]
    assert set(labels[batch["attention_mask"].bool()].tolist()) == {0}
    assert (labels[~batch["attention_mask"].bool()] == -100).all()


def test_gradients_reach_the_right_networks() -> None:
    """The discriminator's loss sends nothing into the generator through the sample; the shared embeddings
    receive both losses' gradients, and the total is their weighted sum."""
    tok, objective, disc, gen = setup()
    batch = padded_batch(objective)
    disc.train()
    own = [p for n, p in gen.named_parameters() if not any(p is q for q in disc.parameters())]
    assert own and all(p is q for p, q in zip(gen.body.embeddings.word.parameters(),
                                              disc.body.embeddings.word.parameters()))
    shared = disc.body.embeddings.word.weight

    def grads(gen_weight: float, disc_weight: float) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        objective.rtd = RTDConfig(generator_size=0.25, gen_weight=gen_weight, disc_weight=disc_weight)
        for p in [*disc.parameters(), *gen.parameters()]:
            p.grad = None
        torch.manual_seed(0)
        loss, _ = objective.loss(disc, batch)
        loss.backward()
        return [p.grad for p in own], shared.grad.clone()

    own_d, shared_d = grads(0.0, 1.0)
    assert all(g is None or not g.any() for g in own_d)  # no path from the sample back into the generator
    assert shared_d.abs().sum() > 0
    own_g, shared_g = grads(1.0, 0.0)
    assert all(g is not None for g in own_g) and shared_g.abs().sum() > 0
    _, shared_both = grads(1.0, 50.0)
    torch.testing.assert_close(shared_both, shared_g + 50.0 * shared_d, rtol=1e-5, atol=1e-7)
    # the two losses touch different rows: the generator's masked targets and the discriminator's inputs
    assert not torch.allclose(shared_g, shared_d)


def test_the_metrics_against_sklearn() -> None:
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    tok, objective, disc, gen = setup()
    batch = padded_batch(objective, lengths=(24, 24, 20, 16, 11), seed=3)
    seen = {}
    disc.head.register_forward_hook(lambda m, i, out: seen.update(logits=out.logits))
    hook = disc.register_forward_pre_hook(lambda m, args, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        _, metrics = objective.loss(disc.eval(), batch)
    hook.remove()
    real = batch["attention_mask"].bool()
    y = seen["labels"][real].numpy()
    pred = (seen["logits"][real] > 0).long().numpy()
    assert float(metrics["disc_accuracy"]) == pytest.approx(accuracy_score(y, pred))
    if pred.sum():
        assert float(metrics["disc_precision"]) == pytest.approx(precision_score(y, pred))
    assert float(metrics["disc_recall"]) == pytest.approx(recall_score(y, pred))
    assert int(metrics["tokens"]) == int(real.sum()) and int(metrics["replaced"]) == int(y.sum())


def test_generator_shape_follows_the_reference() -> None:
    # get_generator_config: hidden x size, max(1, hidden // 64) heads, 4 x hidden, same depth; the released
    # google/electra-base-generator and -large-generator are 256 wide, 4 heads, 1024 inner
    base = ModelConfig.from_preset("electra-base", head="rtd")
    g = generator_config(base, 1 / 3)
    assert (g.hidden_size, g.num_heads, g.ffn_size, g.embed_size, g.num_layers, g.head) == (256, 4, 1024, 768, 12, "mlm")
    assert g.has_embedding_project and g.tie_word_embeddings and not g.has_pooler
    large = generator_config(ModelConfig.from_preset("electra-large", head="rtd"), 0.25)
    assert (large.hidden_size, large.num_heads, large.ffn_size, large.embed_size) == (256, 4, 1024, 1024)
    small = generator_config(ModelConfig.from_preset("electra-small", head="rtd"), 0.25)
    assert (small.hidden_size, small.num_heads, small.ffn_size, small.embed_size) == (64, 1, 256, 128)


@pytest.mark.parametrize("size, message", [(0.0, "must be > 0"), (-0.5, "must be > 0")])
def test_bad_generator_sizes(size, message) -> None:
    with pytest.raises(ConfigError, match=message):
        RTDConfig(generator_size=size)


def test_a_generator_size_the_heads_cannot_split() -> None:
    config = ModelConfig.from_preset("electra-small", head="rtd")  # H 256: 0.5078 -> 130 -> 2 heads: fine
    assert generator_config(config, 130 / 256).num_heads == 2
    with pytest.raises(ConfigError) as err:
        generator_config(config, 129 / 256)  # 129 is odd: 2 heads cannot split it
    assert "hidden size of 129" in str(err.value) and "hidden 128" in str(err.value) and "hidden 130" in str(err.value)
    with pytest.raises(ConfigError, match="hidden size of 0"):
        generator_config(config, 0.001)


def test_bad_models_and_tokenizers(refdata) -> None:
    objective = build_objective("rtd", tokenizer=word_tokenizer(), seq_len=24)
    decoder = Model.from_preset("gpt-tiny", head="rtd", vocab_size=V, num_layers=1)
    with pytest.raises(ConfigError, match="decoder"):
        objective.attach(decoder)
    with pytest.raises(ConfigError, match="'rtd' head"):
        objective.attach(Model.from_preset("electra-small", head="mlm", vocab_size=V, num_layers=1))
    with pytest.raises(ConfigError, match="vocabulary"):
        objective.attach(Model.from_preset("electra-small", head="rtd", vocab_size=4, num_layers=1))
    gpt2 = Tokenizer.from_pretrained(refdata / "tokenizers" / "gpt2")
    with pytest.raises(ConfigError, match="needs a mask token"):
        build_objective("rtd", tokenizer=gpt2, seq_len=24)
    with pytest.raises(ConfigError, match="apply to the rtd objective"):
        build_objective("mlm", tokenizer=word_tokenizer(), seq_len=24, rtd=RTDConfig())
    with pytest.raises(ConfigError, match="attach"):
        objective.extra_modules()
