"""Named architectures: ``PRESETS[name]`` = a family's defaults + a few overrides, with a source and the
parameter count of the base model (no head) that a test re-derives on the meta device and, for families
HF transformers has, checks against HF's own count of the same architecture.

GPT-3 (Brown et al. 2020, table 2.1) is the GPT-2 body with 2048 positions. Two rows of the paper's table
cannot be built as printed, and we choose:
- GPT-3 XL: "24 heads of 128" in a 2048-wide model is impossible (24 * 128 = 3072); we keep the head size 128
  and use 16 heads (as GPT-Neo 1.3B does). The parameter count does not depend on the head count.
- GPT-3 13B: d_model 5140 is not divisible by 40 heads; we use 5120 = 40 * 128 (the head size the table gives).
GPT-3 alternates "dense and locally banded sparse attention patterns in the layers" (section 2.1); the presets do
the same (``attention_pattern`` ["dense", "banded"]) with a 256-key band: the paper gives no width, 256 is GPT-Neo's,
the open reproduction's. The parameter count does not depend on it.
BigBird (Zaheer et al. 2020) uses block-sparse attention (64-token blocks, 3 random, 3 window, 2 global blocks, HF's
defaults); its heads are HF's (seq-cls on the first token with the body activation, the QA head with its MLP).
Reformer's sizes are those of HF's google/reformer-crime-and-punishment config (6 layers, 2 heads of 64 on a 256
hidden size, 524288 axial positions); its base model count leaves out the untied LM head.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError, suggest

# Per-family defaults: every preset starts from its family's dict. Keys are ModelConfig fields.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": dict(family="bert", vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072, activation="gelu", max_positions=512, type_vocab_size=2,
                 norm_placement="post", layer_norm_eps=1e-12, pad_token_id=0),
    "roberta": dict(family="roberta", vocab_size=50265, hidden_size=768, num_layers=12, num_heads=12,
                    intermediate_size=3072, activation="gelu", max_positions=514, position_offset=2,
                    type_vocab_size=1, norm_placement="post", layer_norm_eps=1e-5, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2, mlm_activation="gelu", classifier_activation="tanh"),
    "albert": dict(family="albert", vocab_size=30000, embedding_size=128, hidden_size=768, num_layers=12,
                   num_heads=12, intermediate_size=3072, activation="gelu_new", max_positions=512,
                   type_vocab_size=2, norm_placement="post", layer_norm_eps=1e-12, num_layer_groups=1,
                   embedding_project=True, hidden_dropout=0.0, attention_dropout=0.0, classifier_dropout=0.1,
                   pad_token_id=0, bos_token_id=2, eos_token_id=3),
    "electra": dict(family="electra", vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12,
                    intermediate_size=3072, activation="gelu", max_positions=512, type_vocab_size=2,
                    norm_placement="post", layer_norm_eps=1e-12, pad_token_id=0, mlm_activation="gelu",
                    classifier_activation="gelu"),
    "distilbert": dict(family="distilbert", vocab_size=30522, hidden_size=768, num_layers=6, num_heads=12,
                       intermediate_size=3072, activation="gelu", max_positions=512, type_vocab_size=0,
                       norm_placement="post", layer_norm_eps=1e-12, pad_token_id=0, classifier_activation="relu",
                       classifier_dropout=0.2),
    "openai-gpt": dict(family="openai-gpt", vocab_size=40478, hidden_size=768, num_layers=12, num_heads=12,
                       intermediate_size=3072, activation="gelu_new", max_positions=512, type_vocab_size=0,
                       embedding_norm=False, norm_placement="post", layer_norm_eps=1e-5, causal=True,
                       pad_token_id=None),
    "gpt2": dict(family="gpt2", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072, activation="gelu_new", max_positions=1024, type_vocab_size=0,
                 embedding_norm=False, norm_placement="pre", layer_norm_eps=1e-5, causal=True,
                 scaled_residual_init=True, pad_token_id=None, bos_token_id=50256, eos_token_id=50256),
    "gpt3": dict(family="gpt3", vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12,
                 intermediate_size=3072, activation="gelu_new", max_positions=2048, type_vocab_size=0,
                 embedding_norm=False, norm_placement="pre", layer_norm_eps=1e-5, causal=True,
                 scaled_residual_init=True, pad_token_id=None, bos_token_id=50256, eos_token_id=50256,
                 attention_pattern=["dense", "banded"], attention_window=256),
    "bigbird": dict(family="bigbird", vocab_size=50358, hidden_size=768, num_layers=12, num_heads=12,
                    intermediate_size=3072, activation="gelu_new", max_positions=4096, type_vocab_size=2,
                    norm_placement="post", layer_norm_eps=1e-12, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                    sep_token_id=66, attention_kind="bigbird", block_size=64, num_random_blocks=3,
                    classifier_activation="gelu_new", qa_head="bigbird"),
    # Reformer (Kitaev et al. 2020), HF ReformerConfig as google/reformer-crime-and-punishment sets it
    "reformer": dict(family="reformer", vocab_size=320, hidden_size=256, num_layers=6, num_heads=2,
                     attention_head_size=64, intermediate_size=512, activation="relu", max_positions=524288,
                     position_kind="axial", axial_pos_shape=[512, 1024], axial_pos_embds_dim=[64, 192],
                     type_vocab_size=0, embedding_norm=False, pooler=False, norm_placement="pre",
                     layer_norm_eps=1e-12, causal=True, reversible=True, qkv_bias=False, attention_out_bias=False,
                     lm_head_bias=True, tie_word_embeddings=False, attention_pattern=["local", "lsh"],
                     lsh_chunk_length=64, local_chunk_length=64, num_buckets=[64, 128], num_hashes=1,
                     hidden_dropout=0.05, attention_dropout=0.05, pad_token_id=0, eos_token_id=2),
}
FAMILY_DEFAULTS["gpt1"] = FAMILY_DEFAULTS["openai-gpt"]  # the name the seeds use


@dataclass(frozen=True)
class Preset:
    """One named architecture."""

    family: str  # key of FAMILY_DEFAULTS
    source: str  # paper / HF config the sizes come from
    params: int  # base-model parameter count (no head; pooler included where the family has one)
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields on top of the family defaults
    note: str = ""  # choices we made where the source is ambiguous

    def fields(self) -> dict[str, Any]:
        return {**FAMILY_DEFAULTS[self.family], **self.overrides}


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


TURC = "Turc et al. 2019, Well-Read Students Learn Better (arXiv:1908.08962); " + _hf("google/bert_uncased_L-{L}_H-{H}_A-{A}")
GPT3 = "Brown et al. 2020, Language Models are Few-Shot Learners, table 2.1 (arXiv:2005.14165)"


def _turc(layers: int, hidden: int, heads: int) -> str:
    return TURC.format(L=layers, H=hidden, A=heads)


def _size(layers: int, hidden: int, heads: int, ffn: int | None = None) -> dict[str, Any]:
    return dict(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=ffn or 4 * hidden)


PRESETS: dict[str, Preset] = {
    # ---- BERT (Devlin et al. 2019) and the compact BERTs of Turc et al. 2019 ----
    "bert-tiny": Preset("bert", _turc(2, 128, 2), 4_385_920, _size(2, 128, 2)),
    "bert-mini": Preset("bert", _turc(4, 256, 4), 11_170_560, _size(4, 256, 4)),
    "bert-small": Preset("bert", _turc(4, 512, 8), 28_763_648, _size(4, 512, 8)),
    "bert-medium": Preset("bert", _turc(8, 512, 8), 41_373_184, _size(8, 512, 8)),
    "bert-base": Preset("bert", _hf("google-bert/bert-base-uncased"), 109_482_240, _size(12, 768, 12)),
    "bert-large": Preset("bert", _hf("google-bert/bert-large-uncased"), 335_141_888, _size(24, 1024, 16)),
    # ---- RoBERTa (Liu et al. 2019) ----
    "roberta-base": Preset("roberta", _hf("FacebookAI/roberta-base"), 124_645_632, _size(12, 768, 12)),
    "roberta-large": Preset("roberta", _hf("FacebookAI/roberta-large"), 355_359_744, _size(24, 1024, 16)),
    # ---- ALBERT v2 (Lan et al. 2020): E = 128, one shared layer ----
    "albert-base": Preset("albert", _hf("albert/albert-base-v2"), 11_683_584, _size(12, 768, 12)),
    "albert-large": Preset("albert", _hf("albert/albert-large-v2"), 17_683_968, _size(24, 1024, 16)),
    "albert-xlarge": Preset("albert", _hf("albert/albert-xlarge-v2"), 58_724_864, _size(24, 2048, 16)),
    "albert-xxlarge": Preset("albert", _hf("albert/albert-xxlarge-v2"), 222_595_584, _size(12, 4096, 64)),
    # ---- ELECTRA discriminators (Clark et al. 2020) ----
    "electra-small": Preset("electra", _hf("google/electra-small-discriminator"), 13_483_008,
                            {**_size(12, 256, 4), "embedding_size": 128}),
    "electra-base": Preset("electra", _hf("google/electra-base-discriminator"), 108_891_648, _size(12, 768, 12)),
    "electra-large": Preset("electra", _hf("google/electra-large-discriminator"), 334_092_288, _size(24, 1024, 16)),
    # ---- DistilBERT (Sanh et al. 2019) ----
    "distilbert": Preset("distilbert", _hf("distilbert/distilbert-base-uncased"), 66_362_880, _size(6, 768, 12)),
    # ---- GPT-1 (Radford et al. 2018) ----
    "gpt1": Preset("openai-gpt", _hf("openai-community/openai-gpt"), 116_534_784, _size(12, 768, 12)),
    # ---- GPT-2 (Radford et al. 2019) ----
    "gpt2": Preset("gpt2", _hf("openai-community/gpt2"), 124_439_808, _size(12, 768, 12)),
    "gpt2-medium": Preset("gpt2", _hf("openai-community/gpt2-medium"), 354_823_168, _size(24, 1024, 16)),
    "gpt2-large": Preset("gpt2", _hf("openai-community/gpt2-large"), 774_030_080, _size(36, 1280, 20)),
    "gpt2-xl": Preset("gpt2", _hf("openai-community/gpt2-xl"), 1_557_611_200, _size(48, 1600, 25)),
    # ---- GPT-3 (table 2.1; see the module docstring for xl and 13b) ----
    "gpt3-small": Preset("gpt3", GPT3 + ": 125M", 125_226_240, _size(12, 768, 12)),
    "gpt3-medium": Preset("gpt3", GPT3 + ": 350M", 355_871_744, _size(24, 1024, 16)),
    "gpt3-large": Preset("gpt3", GPT3 + ": 760M", 760_300_032, _size(24, 1536, 16)),
    "gpt3-xl": Preset("gpt3", GPT3 + ": 1.3B", 1_315_723_264, _size(24, 2048, 16),
                      note="paper: 24 heads of 128 in d_model 2048 (impossible); 16 heads of 128"),
    "gpt3-2.7b": Preset("gpt3", GPT3 + ": 2.7B", 2_651_553_280, _size(32, 2560, 32)),
    "gpt3-6.7b": Preset("gpt3", GPT3 + ": 6.7B", 6_658_404_352, _size(32, 4096, 32)),
    "gpt3-13b": Preset("gpt3", GPT3 + ": 13B", 12_853_386_240, _size(40, 5120, 40),
                       note="paper: d_model 5140 (not divisible by 40 heads); 5120 = 40 x 128"),
    "gpt3-175b": Preset("gpt3", GPT3 + ": 175B", 174_604_259_328, _size(96, 12288, 96)),
    # ---- BigBird (Zaheer et al. 2020): block-sparse attention, HF attention_type='block_sparse' ----
    "bigbird-roberta-base": Preset("bigbird", _hf("google/bigbird-roberta-base"), 127_468_800, _size(12, 768, 12)),
    # ---- Reformer (Kitaev et al. 2020): reversible layers, local / LSH attention alternating, axial positions ----
    "reformer-crime": Preset("reformer", _hf("google/reformer-crime-and-punishment"), 2_584_064, {}),
    # ---- compact decoders for CPU work: GPT-2 body, 1024 positions, mirroring the compact BERTs ----
    "gpt-tiny": Preset("gpt2", "lmforge: GPT-2 body at bert-tiny's size (L2/H128/A2)", 6_960_768, _size(2, 128, 2)),
    "gpt-mini": Preset("gpt2", "lmforge: GPT-2 body at bert-mini's size (L4/H256/A4)", 16_287_488, _size(4, 256, 4)),
    "gpt-small": Preset("gpt2", "lmforge: GPT-2 body at bert-small's size (L4/H512/A8)", 38_866_432, _size(4, 512, 8)),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ConfigError with the closest names otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}.{suggest(name, PRESETS)} Run `lmforge presets` to list them "
                          f"({', '.join(PRESETS)}).")
    return PRESETS[name]


def preset_fields(name: str) -> dict[str, Any]:
    """ModelConfig fields of a preset (family defaults + overrides)."""
    return dict(get_preset(name).fields())
