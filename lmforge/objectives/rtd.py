"""Replaced-token detection (ELECTRA, Clark et al. 2020): a small MLM generator fills masked positions with
sampled tokens and the discriminator (the model of the run) says, for every token, whether it was replaced.

Follows google-research/electra (TensorFlow 1); the file each detail comes from is named where it is used:

* generator (``run_pretraining.py`` ``get_generator_config``): the discriminator's config with hidden size
  ``round(H x generator_size)``, ``max(1, hidden // 64)`` heads, intermediate 4 x hidden, the same depth;
* shared (``model/modeling.py``, the ``electra/embeddings`` scope reused by the generator): word, position
  and segment embeddings and the embedding LayerNorm. The generator keeps its own E -> H projection
  (``embeddings_project``) and its MLM head (dense H -> E, activation, LayerNorm, output bias) reads the
  shared word embedding as its decoder (``_get_masked_lm_output``);
* masking (``pretrain/pretrain_helpers.py`` ``mask``): 15% of the tokens (25% for large), of those 85%
  become [MASK] and 15% stay as they are, no random replacement, at most
  ``int((mask_prob + 0.005) * seq_len)`` per sequence (``configure_pretraining.py``);
* sampling (``_get_fake_data`` + ``pretrain_helpers.sample_from_softmax``): at every masked position a token
  drawn from the generator's softmax by Gumbel-argmax (temperature 1), without gradient; a token is
  "replaced" only where the sample differs from the original (``labels = masked * (1 - equal)``);
* loss (``run_pretraining.py``): ``gen_weight x`` generator MLM loss ``+ disc_weight x`` (50) the
  discriminator's sigmoid cross-entropy averaged over every real (non-pad) token
  (``_get_discriminator_output``).

Differences, on purpose: sequences are the ``mlm`` objective's FULL-SENTENCES packing (one segment; the
reference packs two segments with token types 0 / 1 and no pair task), masked positions are drawn without
replacement among non-special tokens with unbiased rounding (lmforge's ``Masker``; the reference samples
positions with replacement and rounds), and the Gumbel noise of a sequence comes from a generator seeded by
the example (``sample_seed``), so the sample is a pure function of ``(seed, epoch, example)`` like the rest
of the batch: a resumed run, N processes and a validation pass all see the same replacements.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.objectives.base import Batch, Example, Metrics, example_rng
from lmforge.objectives.mlm import MaskedObjectiveBase, MaskingConfig, _PackedSequences

_SALT_MASK = 0x3A5C  # the mlm objective's: the same sequences get the same masks under mlm and rtd
_GUMBEL_EPS = 1e-9  # pretrain_helpers.sample_from_softmax: -log(-log(u + 1e-9) + 1e-9)
HEAD_SIZE = 64  # get_generator_config: num_attention_heads = max(1, hidden_size // 64)

# google-research/electra configure_pretraining.py and the paper's Table 6, per discriminator preset:
# peak lr, global batch, generator size, mask rate, sequence length; every size: 10k warmup steps, linear
# decay, weight decay 0.01, Adam eps 1e-6, clipping at 1.0
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "electra-small": dict(lr=5e-4, global_batch_size=128, generator_size=0.25, mask_prob=0.15, seq_len=128),
    "electra-base": dict(lr=2e-4, global_batch_size=256, generator_size=1 / 3, mask_prob=0.15, seq_len=512),
    "electra-large": dict(lr=2e-4, global_batch_size=2048, generator_size=0.25, mask_prob=0.25, seq_len=512),
}
COMMON_DEFAULTS: dict[str, Any] = dict(warmup_steps=10_000, schedule="linear", weight_decay=0.01, adam_eps=1e-6)
DEFAULT_GENERATOR_SIZE = 0.25  # models that are not one of the presets above


@dataclass(frozen=True)
class RTDConfig:
    """ELECTRA's knobs besides masking (configure_pretraining.py names in brackets)."""

    generator_size: float = DEFAULT_GENERATOR_SIZE  # generator hidden = round(H x this) [generator_hidden_size]
    gen_weight: float = 1.0  # weight of the generator's MLM loss [gen_weight]
    disc_weight: float = 50.0  # weight of the discriminator's loss [disc_weight]
    temperature: float = 1.0  # the generator's logits are divided by this before sampling [temperature]

    def __post_init__(self) -> None:
        if not self.generator_size > 0:
            raise ConfigError(f"--generator-size must be > 0 (a fraction of the discriminator's hidden size: "
                              f"0.25 for electra-small / large, 1/3 for base), got {self.generator_size}")
        if self.gen_weight < 0 or self.disc_weight < 0 or self.gen_weight + self.disc_weight == 0:
            raise ConfigError(f"gen_weight and disc_weight must be >= 0 and not both 0, got {self.gen_weight} "
                              f"and {self.disc_weight}")
        if not self.temperature > 0:
            raise ConfigError(f"the sampling temperature must be > 0, got {self.temperature}")


def _heads(hidden: int) -> int:
    return max(1, hidden // HEAD_SIZE)


def generator_config(discriminator: ModelConfig, size: float) -> ModelConfig:
    """The generator's ModelConfig for a discriminator (run_pretraining.py ``get_generator_config``)."""
    hidden = int(round(discriminator.hidden_size * size))
    if hidden < 1 or hidden % _heads(hidden):
        near = [h for h in range(max(1, hidden - HEAD_SIZE), hidden + HEAD_SIZE + 1) if h % _heads(h) == 0]
        below, above = max((h for h in near if h < hidden), default=None), min(h for h in near if h > hidden)
        hint = " or ".join(f"{h / discriminator.hidden_size:.4g} (hidden {h})" for h in (below, above) if h)
        raise ConfigError(f"--generator-size {size:g} gives the generator a hidden size of {hidden} "
                          f"({discriminator.hidden_size} x {size:g}), which ELECTRA's max(1, hidden // {HEAD_SIZE}) = "
                          f"{_heads(hidden)} attention heads cannot split evenly; use e.g. {hint}")
    heads = _heads(hidden)
    return discriminator.replace(hidden_size=hidden, num_heads=heads, intermediate_size=4 * hidden,
                                 embedding_size=discriminator.embed_size, embedding_project=None, head="mlm",
                                 tie_word_embeddings=True, pooler=False)


def share_embeddings(generator: torch.nn.Module, discriminator: torch.nn.Module) -> None:
    """Make the generator use the discriminator's word / position / segment embeddings and embedding
    LayerNorm (the same modules: one tensor each, trained by both losses); its projection stays its own."""
    g, d = generator.body.embeddings, discriminator.body.embeddings
    for name in ("word", "position", "segment", "norm"):
        mine, theirs = getattr(g, name), getattr(d, name)
        if (mine is None) != (theirs is None):
            raise ConfigError(f"the generator and the discriminator differ in their embedding {name!r} (one has "
                              "none); build the generator with objectives.rtd.generator_config")
        if theirs is not None:
            if isinstance(theirs, torch.nn.Embedding) and mine.weight.shape != theirs.weight.shape:
                raise ConfigError(f"the generator's {name} embedding is {tuple(mine.weight.shape)}, the "
                                  f"discriminator's {tuple(theirs.weight.shape)}; they must match to be shared")
            setattr(g, name, theirs)


def gumbel_noise_(uniform: torch.Tensor) -> torch.Tensor:
    """In place: U[0, 1) -> Gumbel(0, 1) as pretrain_helpers.sample_from_softmax, -log(-log(u + eps) + eps)."""
    return uniform.add_(_GUMBEL_EPS).log_().neg_().add_(_GUMBEL_EPS).log_().neg_()


def sample_tokens(logits: torch.Tensor, counts: Sequence[int], seeds: Sequence[int], *,
                  temperature: float = 1.0) -> torch.Tensor:
    """One token per row of ``logits`` (N, V) drawn from softmax(logits / temperature) by Gumbel-argmax.

    Rows are grouped by sequence: the first ``counts[0]`` rows belong to sequence 0, and so on; the
    uniforms of sequence b come from a ``torch.Generator`` seeded with ``seeds[b]``, drawn as one
    (counts[b], V) float32 tensor.
    """
    noise = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    gen = torch.Generator(device=logits.device)
    start = 0
    for n, seed in zip(counts, seeds):
        if n:
            gen.manual_seed(int(seed))
            noise[start:start + n].uniform_(0.0, 1.0, generator=gen)
        start += n
    gumbel_noise_(noise)
    scores = logits.float() / temperature if temperature != 1.0 else logits.float()
    return noise.add_(scores).argmax(-1)  # argmax(softmax(l + g)) = argmax(l + g)


class _RTDSequences(_PackedSequences):
    """The mlm objective's sequences and masks, plus the seed of the example's sampling noise."""

    def example(self, index: int, *, seed: int, epoch: int) -> Example:
        copy, seq = divmod(index, len(self.ranges))
        rng = example_rng(seed, self.objective.masking.stream(epoch, copy), seq, _SALT_MASK)
        input_ids, labels = self.objective.masker(self.sequence(seq), rng)
        return {"input_ids": input_ids, "labels": labels, "sample_seed": int(rng.integers(0, 2 ** 62))}


class ReplacedTokenDetection(MaskedObjectiveBase):
    """ELECTRA pre-training: generator (owned here) + discriminator (the model, head ``rtd``).
    ``OBJECTIVES["rtd"]`` (CLI alias ``electra``).

    Build, then ``attach(discriminator)`` once before training: it makes the generator and shares the
    embeddings. ``extra_modules()`` gives the Trainer the generator, which it optimizes and checkpoints.
    """

    name = "rtd"
    head = "rtd"
    # pretrain_helpers.mask: 85% [MASK], 15% unchanged, no random tokens; dynamic (drawn in the graph)
    default_masking = MaskingConfig(mask_prob=0.15, mask_replace_prob=0.85, random_replace_prob=0.0, mode="dynamic")

    def __init__(self, *, tokenizer: Any, seq_len: int, masking: MaskingConfig | None = None,
                 rtd: RTDConfig | None = None) -> None:
        if tokenizer.mask_token_id is None:
            raise ConfigError("rtd (ELECTRA) needs a mask token for its generator's input, and this tokenizer has "
                              "none; use a tokenizer with [MASK] / <mask> (`lmforge tokenizer train --kind wordpiece`)")
        masking = masking or self.default_masking
        if masking.max_predictions is None:  # configure_pretraining.py: max_predictions_per_seq
            masking = dataclasses.replace(masking, max_predictions=max(1, int((masking.mask_prob + 0.005) * seq_len)))
        super().__init__(tokenizer=tokenizer, seq_len=seq_len, masking=masking)
        self.rtd = rtd or RTDConfig()
        self.vocab_size = len(tokenizer)
        self.generator: torch.nn.Module | None = None

    # ------------------------------------------------------------------ the generator
    def attach(self, discriminator: torch.nn.Module, generator: torch.nn.Module | None = None) -> torch.nn.Module:
        """Build (or take) the generator for ``discriminator`` and share the embeddings; returns it."""
        from lmforge.models.model import Model

        config = discriminator.config
        if config.causal:
            raise ConfigError(f"rtd trains a bidirectional encoder, and this model is a decoder (causal, family "
                              f"{config.family!r}); use an encoder such as --model electra-small")
        if config.head != "rtd":
            raise ConfigError(f"the discriminator needs the 'rtd' head, this model has {config.head!r}; build it with "
                              "head='rtd' (objective.heads(config))")
        if config.vocab_size < self.vocab_size or self.masker.mask_token_id >= config.vocab_size:
            raise ConfigError(f"the model's vocabulary ({config.vocab_size}) does not hold the tokenizer's "
                              f"{self.vocab_size} ids and its mask token; the generator predicts tokens over it, so "
                              "build the model with the tokenizer's vocabulary size")
        if generator is None:
            generator = Model(generator_config(config, self.rtd.generator_size))
        elif generator.config.head != "mlm" or generator.config.vocab_size != config.vocab_size:
            raise ConfigError(f"the generator must be an 'mlm' model over the discriminator's {config.vocab_size} ids, "
                              f"got head {generator.config.head!r} and {generator.config.vocab_size} ids")
        p = next(discriminator.parameters())
        generator.to(device=p.device, dtype=p.dtype)
        share_embeddings(generator, discriminator)
        self.generator = generator
        return generator

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        if self.generator is None:
            raise ConfigError("the rtd objective has no generator yet; call objective.attach(model) before training")
        return {"generator": self.generator}

    def save_generator(self, directory: str | Path, tokenizer: Any = None) -> None:
        """The generator as a standalone model directory (its own copy of the shared embeddings)."""
        if self.generator is None:
            return
        self.generator.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

    # ------------------------------------------------------------------ data
    def examples(self, dataset: Any) -> _RTDSequences:
        return _RTDSequences(dataset, self)

    def collate(self, examples: Sequence[Example]) -> Batch:
        batch = super().collate(examples)
        batch["sample_seed"] = torch.tensor([int(e["sample_seed"]) for e in examples], dtype=torch.int64)
        return batch

    # ------------------------------------------------------------------ loss
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Generator MLM on the masked batch, sampled replacements, discriminator on the corrupted batch."""
        generator = self.generator
        if generator is None:
            raise ConfigError("the rtd objective has no generator yet; call objective.attach(model) before training")
        generator.train(model.training)  # evaluation runs both networks without dropout
        ids, labels = batch["input_ids"], batch["labels"]
        mask, types = batch.get("attention_mask"), batch.get("token_type_ids")
        gen = generator(ids, attention_mask=mask, token_type_ids=types, labels=labels)
        keep = labels != -100  # (B, L) masked positions
        with torch.no_grad():
            original = torch.where(keep, labels, ids)  # pretrain_helpers.unmask
            target = labels[keep]  # (N,)
            counts = keep.sum(1).tolist()
            sampled = sample_tokens(gen.logits.detach(), counts, batch["sample_seed"].tolist(),
                                    temperature=self.rtd.temperature)  # (N,), no gradient through the sample
            fake = original.clone()
            fake[keep] = sampled
            replaced = fake != original  # (B, L): "replaced" only where the sample differs
            real = mask.bool() if mask is not None else torch.ones_like(keep)
            disc_labels = torch.where(real, replaced.long(), -100)
        disc = model(fake, attention_mask=mask, token_type_ids=types, labels=disc_labels)
        loss = self.rtd.gen_weight * gen.loss + self.rtd.disc_weight * disc.loss
        with torch.no_grad():
            metrics = self._metrics(gen, disc, target, sampled, replaced, real, loss)
        return loss, metrics

    @staticmethod
    def _metrics(gen: Any, disc: Any, target: torch.Tensor, sampled: torch.Tensor, replaced: torch.Tensor,
                 real: torch.Tensor, loss: torch.Tensor) -> Metrics:
        masked = torch.tensor(len(target), device=target.device)
        tokens = real.sum()
        predicted = (disc.logits > 0) & real  # (B, L) called "replaced" by the discriminator
        truth = replaced & real
        hits = predicted & truth
        n_pred, n_true = predicted.sum(), truth.sum()
        zero = torch.zeros((), device=target.device)
        return {
            "loss": loss.detach(), "weight": tokens, "tokens": tokens, "masked_tokens": masked,
            "mlm_loss": gen.loss.detach(),
            "mlm_accuracy": (gen.logits.argmax(-1) == target).float().mean() if len(target) else zero,
            "disc_loss": disc.loss.detach(),
            "disc_accuracy": ((predicted == truth) & real).sum() / tokens.clamp(min=1),
            "disc_precision": hits.sum() / n_pred.clamp(min=1), "disc_recall": hits.sum() / n_true.clamp(min=1),
            "replaced_fraction": n_true / tokens.clamp(min=1),
            "replaced": n_true, "predicted_replaced": n_pred,
        }


def preset_defaults(model: str | None) -> dict[str, Any]:
    """The paper's settings for an ``electra-*`` preset name ({} for anything else)."""
    if model not in PRESET_DEFAULTS:
        return {}
    return {**COMMON_DEFAULTS, **PRESET_DEFAULTS[model]}


__all__ = ["COMMON_DEFAULTS", "PRESET_DEFAULTS", "RTDConfig", "ReplacedTokenDetection", "generator_config",
           "gumbel_noise_", "preset_defaults", "sample_tokens", "share_embeddings"]
