"""ModelConfig: every switch of the one Transformer body and its head, as a typed dataclass.

A model family (BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT, GPT-1/2/3, BigBird) is a preset of these
fields (``lmforge/presets.py``), never a separate model file. Unknown keys and impossible values raise
``ConfigError`` naming the field. Registries (activations, position kinds, attention kinds, heads) live
next to the code that implements them and check their own names when a Model is built; this module
imports no torch.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, suggest

CONFIG_NAME = "config.json"

NORM_PLACEMENTS = ("post", "pre")  # post-LN: BERT / GPT-1; pre-LN + final norm: GPT-2 / GPT-3
CLASSIFIER_TOKENS = ("pooler", "first", "last")  # which hidden state seq-cls / choice heads read
EXTRACT_COMBINE = ("auto", "sum", "choice")  # GPT-1 extract head with (B, C, L) input, see heads.py
QA_HEADS = ("linear", "bigbird")  # the qa head's shape, see heads.QuestionAnsweringHead
SPARSE_FALLBACKS = ("dense", "error")  # "bigbird" on a sequence too short for its pattern
SPARSE_IMPLS = ("auto", "flex", "blocks", "mask")  # how the sparse kinds compute (nn/attention/sparse.py)
# how `lmforge compress` stores the weights (lmforge/nn/quantized.py runs them); None = float32
QUANTIZATION_METHODS = ("int8", "int8-weight", "bf16")


@dataclass
class ModelConfig:
    """The whole architecture of one lmforge model. Defaults are BERT-base's."""

    # ---- identity ----
    family: str = "custom"  # "bert", "roberta", "albert", "electra", "distilbert", "openai-gpt", "gpt2", "gpt3", "gpt-neo", "bigbird", "custom"; HF export picks its converter by it

    # ---- sizes ----
    vocab_size: int = 30522  # rows of the token embedding (and of tied output layers)
    hidden_size: int = 768  # H: width of every layer
    embedding_size: int | None = None  # E: width of the embeddings; None = H. E != H adds the E->H projection (ALBERT, ELECTRA-small)
    num_layers: int = 12  # Transformer blocks applied (with sharing, more than are stored)
    num_heads: int = 12  # attention heads; hidden_size must be a multiple
    intermediate_size: int | None = None  # F: MLP inner width; None = 4 * H
    max_positions: int = 512  # rows of the position table; longest input = max_positions - position_offset

    # ---- embeddings ----
    position_kind: str = "learned"  # key of lmforge.nn.embeddings.POSITION_KINDS: "learned" table or fixed "sinusoidal"
    # RoBERTa (fairseq) numbering: real tokens get positions offset, offset+1, ...; pads get pad_token_id.
    # HF RoBERTa: offset = pad_token_id + 1 = 2 with a 514-row table (512 usable). 0 = plain 0, 1, 2, ...
    position_offset: int = 0
    type_vocab_size: int = 2  # segment (token-type) ids; 0 = no segment embedding (RoBERTa has 1, GPT 0)
    embedding_norm: bool | None = None  # LayerNorm after summing the embeddings; None = family default (GPT families: none)
    # Build the E->H projection even when E == H (HF ALBERT always has embedding_hidden_mapping_in);
    # None = only when embedding_size != hidden_size
    embedding_project: bool | None = None

    # ---- blocks ----
    activation: str = "gelu"  # key of lmforge.nn.activations.ACTIVATIONS: "gelu" exact, "gelu_new" tanh approx, "relu"
    norm_placement: str = "post"  # "post" (BERT, GPT-1) or "pre" (GPT-2/3: adds body.final_norm)
    layer_norm_eps: float = 1e-12  # BERT 1e-12, GPT 1e-5
    causal: bool = False  # decoder (each position sees only the past) vs bidirectional encoder
    # key of lmforge.nn.attention.ATTENTION_KINDS: "dense", "bigbird" (block-sparse encoder), "banded" (causal window)
    attention_kind: str = "dense"
    # Per-layer attention kinds (ATTENTION_KINDS keys), cycled over the stored layers: ["dense", "banded"] alternates
    # them (GPT-3; GPT-Neo's global / local). Its length must divide the stored layers. None = attention_kind everywhere
    attention_pattern: list[str] | None = None
    attention_window: int = 256  # "banded": keys each query sees, itself included (HF GPT-Neo window_size, 256)
    block_size: int = 64  # "bigbird": tokens per block (HF BigBird block_size)
    num_random_blocks: int = 3  # "bigbird": random key blocks per query block (HF num_random_blocks)
    num_window_blocks: int = 3  # "bigbird": sliding-window key blocks centred on the query block, odd (HF: always 3)
    num_global_blocks: int = 2  # "bigbird": global blocks, the first ceil(g / 2), the last floor(g / 2) (HF: always 2)
    # "bigbird" on a sequence of at most sparse_min_length tokens ((window + global + 2 * random) blocks, 704 by
    # default), too short for the sparse pattern: "dense" = full attention and one warning (HF does it silently),
    # "error" = refuse the input
    sparse_fallback: str = "dense"
    # how "bigbird" / "banded" compute: "auto" = FlexAttention on CUDA, gathered blocks elsewhere (faster on CPU,
    # where FlexAttention has no backward); "flex"; "blocks"; "mask" = dense SDPA under the pattern's mask, O(T^2)
    sparse_impl: str = "auto"
    qkv_bias: bool = True  # biases on the q / k / v projections (GPT-Neo has none)
    attention_scale: float | None = None  # factor on q.k; None = 1 / sqrt(head_size) (GPT-Neo: 1.0, unscaled)
    # Cross-layer sharing: number of distinct layers stored; layer i uses layer i * groups // num_layers
    # (ALBERT's num_hidden_groups). None = every layer distinct, 1 = one layer shared by all (ALBERT).
    # ALBERT's inner_group_num (several layers per group) is always 1 in released models; not supported.
    num_layer_groups: int | None = None

    # ---- dropout ----
    hidden_dropout: float = 0.1  # after attention output / MLP output (HF hidden_dropout_prob, resid_pdrop)
    attention_dropout: float = 0.1  # on attention probabilities
    embedding_dropout: float | None = None  # after the embeddings; None = hidden_dropout (GPT embd_pdrop)
    classifier_dropout: float | None = None  # before classifier heads; None = hidden_dropout

    # ---- init ----
    initializer_range: float = 0.02  # std of the normal init of every Linear / Embedding
    scaled_residual_init: bool = False  # GPT-2: residual projections (attn.out, mlp.fc2) get std / sqrt(2 * num_layers)

    # ---- output layer / pooler ----
    tie_word_embeddings: bool = True  # output vocabulary projection shares the token embedding matrix
    pooler: bool | None = None  # tanh(dense(first token)) in the body; None = family default (BERT, RoBERTa, ALBERT, BigBird)

    # ---- special tokens ----
    pad_token_id: int | None = 0  # padding id (RoBERTa 1; GPT None); RoBERTa positions and GPT seq-cls read it
    bos_token_id: int | None = None  # start-of-text id (GPT-2 <|endoftext|> 50256, RoBERTa <s> 0); exported to HF configs
    eos_token_id: int | None = None  # end-of-text id (GPT-2 50256, RoBERTa </s> 2); `lmforge generate` stops on it; exported to HF
    sep_token_id: int | None = None  # separator id ([SEP], </s>); BigBird's QA head hides the question up to the first one

    # ---- head ----
    head: str | None = None  # key of lmforge.models.heads.HEADS; None = bare base model
    num_labels: int = 2  # classes of seq-cls / token-cls / extract heads; 1 = regression (MSE)
    mlm_activation: str | None = None  # MLM head transform activation; None = activation (RoBERTa/ELECTRA: "gelu")
    # seq-cls / choice on the first token: None = classifier on the pooler output (BERT, ALBERT);
    # set = dense(H, H) + this activation + out projection (RoBERTa "tanh", ELECTRA "gelu", DistilBERT "relu")
    classifier_activation: str | None = None
    # which hidden state the seq-cls / choice head reads; None = derived: "last" for causal
    # (GPT2ForSequenceClassification: the last non-pad token, no bias), "first" when classifier_activation
    # is set, else "pooler"; a choice head on a body with a pooler reads the pooler (as every HF
    # *ForMultipleChoice does; see models/heads.py summary_token)
    classifier_token: str | None = None
    # GPT-1 extract head given (B, C, L): "choice" = one score per sequence (B, C) (SWAG), "sum" = sum the C
    # extract states then classify (B, num_labels) (GPT-1 similarity: both orders); "auto" = "choice" when
    # num_labels == 1, else "sum"
    extract_combine: str = "auto"
    # the qa head: "linear" = one Linear to start / end logits (BERT); "bigbird" = HF BigBirdForQuestionAnsweringHead
    # (dense F + activation, dense H, residual + LayerNorm, then the Linear) and the question tokens up to the first
    # sep_token_id get -1e6 (HF BigBirdForQuestionAnswering.forward)
    qa_head: str = "linear"

    # ---- compression (lmforge compress; docs/compression.md) ----
    # attention heads kept in each stored layer after head pruning (None = num_heads everywhere); the head
    # size stays hidden_size // num_heads, so stored layer i has qkv (3 * n_i * hs, H) and out (H, n_i * hs)
    layer_heads: list[int] | None = None
    # MLP inner width of each stored layer after neuron pruning (None = intermediate_size everywhere)
    layer_ffn_sizes: list[int] | None = None
    # {"method": "int8" | "int8-weight" | "bf16", "kernel": name}: how the weights are stored and which kernel
    # multiplies them (lmforge.nn.quantized.KERNELS checks the name when the model is built); None = float32
    quantization: dict[str, Any] | None = None

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried through save/load (not read by the model)

    # ------------------------------------------------------------------ derived values
    def __post_init__(self) -> None:
        self.validate()

    @property
    def embed_size(self) -> int:
        """E, with the None default resolved."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size if self.intermediate_size is not None else 4 * self.hidden_size

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_stored_layers(self) -> int:
        return self.num_layer_groups if self.num_layer_groups is not None else self.num_layers

    @property
    def has_pooler(self) -> bool:
        if self.pooler is not None:
            return self.pooler
        return self.family in FAMILIES_WITH_POOLER

    @property
    def has_embedding_norm(self) -> bool:
        if self.embedding_norm is not None:
            return self.embedding_norm
        return self.family not in FAMILIES_WITHOUT_EMBEDDING_NORM

    @property
    def has_embedding_project(self) -> bool:
        if self.embedding_project is not None:
            return self.embedding_project
        return self.embed_size != self.hidden_size

    @property
    def seq_cls_token(self) -> str:
        if self.classifier_token is not None:
            return self.classifier_token
        if self.causal:
            return "last"
        return "first" if self.classifier_activation is not None else "pooler"

    @property
    def max_length(self) -> int:
        """Longest input sequence the position table allows."""
        return self.max_positions - self.position_offset

    def heads_in_layer(self, stored: int) -> int:
        """Attention heads of stored layer ``stored`` (fewer than num_heads after head pruning)."""
        return self.num_heads if self.layer_heads is None else self.layer_heads[stored]

    def ffn_in_layer(self, stored: int) -> int:
        """MLP inner width of stored layer ``stored`` (smaller than ffn_size after neuron pruning)."""
        return self.ffn_size if self.layer_ffn_sizes is None else self.layer_ffn_sizes[stored]

    @property
    def attention_kinds(self) -> set[str]:
        """Every attention kind some layer uses."""
        return set(self.attention_pattern) if self.attention_pattern else {self.attention_kind}

    def layer_attention_kind(self, stored: int) -> str:
        """The attention kind of stored layer ``stored`` (``attention_pattern`` cycled, else ``attention_kind``)."""
        if self.attention_pattern:
            return self.attention_pattern[stored % len(self.attention_pattern)]
        return self.attention_kind

    @property
    def sparse_min_length(self) -> int:
        """"bigbird": sequences of at most this many tokens fall back to full attention (HF BigBirdModel.forward:
        (5 + 2 * num_random_blocks) * block_size with its fixed 3 window and 2 global blocks)."""
        return (self.num_window_blocks + self.num_global_blocks + 2 * self.num_random_blocks) * self.block_size

    def layer_index(self, i: int) -> int:
        """Stored layer used by applied layer i (ALBERT groups: consecutive layers share one)."""
        return i * self.num_stored_layers // self.num_layers

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ConfigError naming the first impossible field. Names of registry entries (activations,
        position / attention kinds, heads) are checked by each registry where the Model looks them up
        (``lmforge.nn.registry``), so this module imports no torch."""
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_positions", "num_labels"):
            _positive(name, getattr(self, name))
        for name in ("embedding_size", "intermediate_size", "num_layer_groups"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if not isinstance(self.family, str) or not self.family:
            raise ConfigError(f"ModelConfig.family must be a non-empty string, got {self.family!r}.")
        # a JSON "false" string or a 0/1 would silently mean something else: switches are real booleans
        for name in ("causal", "scaled_residual_init", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ModelConfig.{name} must be true or false, got {getattr(self, name)!r}.")
        for name in ("embedding_norm", "embedding_project", "pooler"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ModelConfig.{name} must be true, false or null, got {getattr(self, name)!r}.")
        if not isinstance(self.extra, dict):
            raise ConfigError(f"ModelConfig.extra must be an object / dict, got {type(self.extra).__name__}.")
        for name in ("type_vocab_size", "position_offset"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"ModelConfig.{name} must be an integer >= 0, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"ModelConfig.hidden_size={self.hidden_size} is not divisible by num_heads="
                              f"{self.num_heads}; pick a hidden_size that is a multiple of num_heads.")
        if self.num_layer_groups is not None and self.num_layers % self.num_layer_groups:
            raise ConfigError(f"ModelConfig.num_layer_groups={self.num_layer_groups} does not divide num_layers="
                              f"{self.num_layers}; each group must hold the same number of layers.")
        if self.position_offset >= self.max_positions:
            raise ConfigError(f"ModelConfig.position_offset={self.position_offset} leaves no usable position in "
                              f"max_positions={self.max_positions}.")
        for name in ("activation", "position_kind", "attention_kind"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"ModelConfig.{name} must be a name (string), got {getattr(self, name)!r}.")
        for name in ("mlm_activation", "classifier_activation", "head"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(f"ModelConfig.{name} must be a name (string) or null, got {getattr(self, name)!r}.")
        _choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _choice("extract_combine", self.extract_combine, EXTRACT_COMBINE)
        _choice("qa_head", self.qa_head, QA_HEADS)
        if self.classifier_token is not None:
            _choice("classifier_token", self.classifier_token, CLASSIFIER_TOKENS)
        for name in ("hidden_dropout", "attention_dropout", "embedding_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
                raise ConfigError(f"ModelConfig.{name}={value!r} must be a probability in [0, 1).")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ConfigError(f"ModelConfig.{name}={value!r} must be a positive number.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 0 <= value < self.vocab_size):
                raise ConfigError(f"ModelConfig.{name}={value!r} must be a token id in [0, vocab_size="
                                  f"{self.vocab_size}) or null.")
        self._validate_attention()
        self._validate_compression()
        if self.seq_cls_token == "pooler" and self.head in ("seq-cls", "choice") and not self.has_pooler:
            raise ConfigError(f"ModelConfig.classifier_token='pooler' but this {self.family} config has no pooler; "
                              "set pooler=True or classifier_activation (first-token classifier).")

    def _validate_attention(self) -> None:
        """The fields of the sparse attention kinds (the names themselves: ATTENTION_KINDS when built)."""
        pattern = self.attention_pattern
        if isinstance(pattern, (list, tuple)):  # an own copy: presets share their default lists
            pattern = self.attention_pattern = list(pattern)
        if pattern is not None:
            if (not isinstance(pattern, list) or not pattern
                    or not all(isinstance(k, str) and k for k in pattern)):
                raise ConfigError(f"ModelConfig.attention_pattern must be a non-empty list of attention kind names "
                                  f"or null, got {pattern!r}.")
            if self.num_stored_layers % len(pattern):
                raise ConfigError(f"ModelConfig.attention_pattern has {len(pattern)} entries, which does not divide "
                                  f"the {self.num_stored_layers} stored layers; give one kind per layer or a cycle "
                                  "whose length divides it (e.g. ['dense', 'banded']).")
        for name in ("attention_window", "block_size", "num_window_blocks"):
            _positive(name, getattr(self, name))
        for name in ("num_random_blocks", "num_global_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"ModelConfig.{name} must be an integer >= 0, got {value!r}.")
        if self.num_window_blocks % 2 == 0:
            raise ConfigError(f"ModelConfig.num_window_blocks={self.num_window_blocks} must be odd: the window is "
                              "centred on the query block (3 = the block and one on each side, as HF).")
        _choice("sparse_fallback", self.sparse_fallback, SPARSE_FALLBACKS)
        _choice("sparse_impl", self.sparse_impl, SPARSE_IMPLS)
        if not isinstance(self.qkv_bias, bool):
            raise ConfigError(f"ModelConfig.qkv_bias must be true or false, got {self.qkv_bias!r}.")
        scale = self.attention_scale
        if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0
                                  or not math.isfinite(scale)):
            raise ConfigError(f"ModelConfig.attention_scale={scale!r} must be a positive number or null "
                              "(null = 1 / sqrt(head_size)).")
        kinds = self.attention_kinds
        if "bigbird" in kinds and self.causal:
            raise ConfigError("ModelConfig.attention_kind='bigbird' is block-sparse attention for encoders: HF "
                              "BigBird and the paper define it bidirectional (its global and random blocks see the "
                              "future). For a decoder use 'banded' (a local causal window; attention_pattern "
                              "['dense', 'banded'] alternates it with dense layers as GPT-3 does).")
        if "banded" in kinds and not self.causal:
            raise ConfigError("ModelConfig.attention_kind='banded' is the local causal window of decoders (GPT-3, "
                              "GPT-Neo) and needs causal=True; for a long-input encoder use 'bigbird'.")
        if "banded" in kinds and self.attention_window > self.max_length:
            raise ConfigError(f"ModelConfig.attention_window={self.attention_window} is larger than the context "
                              f"({self.max_length} positions): every query would see every earlier key. Use a "
                              "smaller window, or attention_kind='dense'.")
    def _validate_compression(self) -> None:
        for name, most in (("layer_heads", self.num_heads), ("layer_ffn_sizes", self.ffn_size)):
            value = getattr(self, name)
            if value is None:
                continue
            if (not isinstance(value, list) or len(value) != self.num_stored_layers
                    or any(not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= most for n in value)):
                raise ConfigError(f"ModelConfig.{name} must list {self.num_stored_layers} integer(s) in [1, {most}] "
                                  f"(one per stored layer), got {value!r}.")
        if self.layer_heads is not None and "bigbird" in self.attention_kinds:
            # BigBird draws its random key blocks per head index (HF's plan): a pruned layer's heads would get
            # other heads' patterns
            raise ConfigError("ModelConfig.layer_heads (head pruning) does not work with attention_kind 'bigbird': its "
                              "random blocks are drawn per head index. Prune the MLP (prune-ffn) instead.")
        q = self.quantization
        if q is None:
            return
        if not isinstance(q, dict) or set(q) - {"method", "kernel"} or not isinstance(q.get("kernel", ""), str):
            raise ConfigError(f"ModelConfig.quantization must be null or {{\"method\": ..., \"kernel\": ...}}, got {q!r}.")
        _choice("quantization.method", q.get("method"), QUANTIZATION_METHODS)

    # ------------------------------------------------------------------ dict / file round trips
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; an unknown key raises ConfigError naming it (with the closest field names)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object / dict, got {type(data).__name__}.")
        names = cls.field_names()
        for key in data:
            if key not in names:
                raise ConfigError(f"unknown ModelConfig field {key!r}.{suggest(str(key), names)} "
                                  f"Known fields: {', '.join(names)}.")
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """The config of a named preset (see ``lmforge presets``), with fields overridden."""
        from lmforge.presets import preset_fields

        fields = preset_fields(name)
        vocab = overrides.get("vocab_size", fields.get("vocab_size"))
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            # the preset's special ids belong to its own vocabulary; a smaller one given here drops them
            if key not in overrides and isinstance(fields.get(key), int) and isinstance(vocab, int) and fields[key] >= vocab:
                fields[key] = None
        return cls.from_dict({**fields, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with fields changed (validated; unknown names fail)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write config.json into directory ``path`` (or to ``path`` when it ends in .json)."""
        path = Path(path)
        file = path if path.suffix == ".json" else path / CONFIG_NAME
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(self.to_json())
        return file

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read config.json from a directory (or a .json file)."""
        path = Path(path)
        file = path if path.suffix == ".json" else path / CONFIG_NAME
        if not file.is_file():
            raise ConfigError(f"{file} does not exist; a model directory needs config.json.")
        try:
            data = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{file} is not valid JSON ({err}).") from err
        return cls.from_dict(data)


# families whose HF base model builds the pooler (tanh(dense(first token)))
FAMILIES_WITH_POOLER = frozenset({"bert", "roberta", "albert", "bigbird"})
# families whose embeddings are summed without a LayerNorm
FAMILIES_WITHOUT_EMBEDDING_NORM = frozenset({"openai-gpt", "gpt2", "gpt3", "gpt-neo"})


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {value!r}.")


def _choice(name: str, value: Any, choices: Any) -> None:
    if value not in choices:
        raise ConfigError(f"ModelConfig.{name}={value!r} is not one of: {', '.join(map(str, choices))}."
                          f"{suggest(str(value), [str(c) for c in choices])}")
