"""Model = the one Transformer body + one head (or none): building, forward, save / load, resize.

Tied output layers read ``body.embeddings.word.weight`` directly (there is no second tensor), so saving,
loading and resizing keep the tie for free.
"""
from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.config import CONFIG_NAME, ModelConfig
from lmforge.errors import CheckpointError, ConfigError, InputError
from lmforge.models import hf
from lmforge.models.heads import (CHOICE_HEADS, HEAD_INPUTS, POOLER_FREE_HEADS, ROW_HEADS, SUMMARY_HEADS, HeadContext,
                                  LMPrediction, build_head, summary_token)
from lmforge.models.heads import CausalLMHead, ExtractHead
from lmforge.models.output import ModelOutput
from lmforge.models.transformer import Transformer
from lmforge.nn.losses import IGNORE_INDEX
from lmforge.nn.quantized import get_kernel, quantize_modules

WEIGHTS_NAME = "model.safetensors"


class Model(nn.Module):
    """``Model(config)``: fresh weights. See ``from_preset`` / ``from_pretrained`` for the usual entry points."""

    supports_logits_to_keep = True  # generation may pass logits_to_keep=1 at prefill
    # a seq-cls / choice training step of an encoder computes only position 0 in the last layer (what the
    # pooler / [CLS] classifier reads); False: every position, as HF does (same loss and gradients)
    cls_only_last_layer = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"Model(config) needs a ModelConfig, got {type(config).__name__}; "
                              "use Model.from_preset(name) or ModelConfig.from_dict(d).")
        self.config = config
        self.body = Transformer(config)
        self.head = build_head(config)
        self.init_weights()
        if config.quantization is not None:  # int8 / bf16 storage (lmforge compress): the modules change form
            quantize_modules(self, config.quantization, embedding="body.embeddings.word")

    def init_weights(self) -> None:
        """The initialisation of a fresh model (``Model(config)`` runs it; a model built on the meta device
        and sharded runs it after ``to_empty``, each process on its shards)."""
        config = self.config
        self.apply(self._init_module)
        if config.scaled_residual_init:
            # GPT-2: residual projections scaled by 1 / sqrt(2 * n_layers) (two residual adds per layer)
            std = config.initializer_range / math.sqrt(2 * config.num_layers)
            for layer in self.body.layers:
                nn.init.normal_(layer.attn.out.weight, mean=0.0, std=std)
                nn.init.normal_(layer.mlp.fc2.weight, mean=0.0, std=std)

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:  # as HF's _init_weights: the [PAD] row starts at 0
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, LMPrediction):
            nn.init.zeros_(module.bias)

    def quantize(self, method: str, *, kernel: str | None = None) -> Model:
        """Store the weights as ``method`` ("int8", "int8-weight" or "bf16", see lmforge.nn.quantized) in place,
        for inference; ``kernel`` picks the int8 kernel (None: the first that runs here). The config records
        both, so ``save_pretrained`` + ``from_pretrained`` give the same model. Returns the model."""
        if self.config.quantization is not None:
            raise ConfigError(f"this model is already quantized ({self.config.quantization}); quantize the float "
                              "model instead.")
        spec = {"method": method} if method == "bf16" else {"method": method, "kernel": get_kernel(method, kernel).name}
        config = self.config.replace(quantization=spec)
        quantize_modules(self, spec, embedding="body.embeddings.word")
        self._set_config(config)
        return self

    def _set_config(self, config: ModelConfig) -> None:
        self.config = config
        self.body.config = config
        self.body.embeddings.config = config

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_config(cls, config: ModelConfig) -> Model:
        return cls(config)

    @classmethod
    def from_preset(cls, name: str, head: str | None = None, **overrides: Any) -> Model:
        """A fresh model of a named preset (``lmforge presets``); ``overrides`` are ModelConfig fields."""
        return cls(ModelConfig.from_preset(name, head=head, **overrides))

    @classmethod
    def from_pretrained(cls, path: str | Path, head: str | None = None, **overrides: Any) -> Model:
        """Load an lmforge directory (config.json + model.safetensors) or an HF one (detected by model_type).

        ``head=None`` keeps the saved head; another head keeps the body and initialises the new head.
        """
        path = Path(path)
        if not path.is_dir():
            hint = " (a preset name? use Model.from_preset)" if not path.exists() else ""
            raise CheckpointError(f"{path} is not a model directory{hint}; it needs {CONFIG_NAME} and {WEIGHTS_NAME}.")
        if hf.is_hf_dir(path):
            return cls._from_hf(path, head, overrides)
        saved = ModelConfig.load(path)
        fields = saved.to_dict()
        if head is not None:
            fields["head"] = head
        fields.update(overrides)
        config = ModelConfig.from_dict(fields)
        state = read_safetensors(path / WEIGHTS_NAME)
        head_changed = config.head != saved.head or config.num_labels != saved.num_labels
        if head_changed and config.quantization is not None:
            raise ConfigError(f"{path} holds a quantized model, which loads with its own head ({saved.head!r}, "
                              f"{saved.num_labels} label(s)); change the head of the float model, then compress it.")
        model = cls._for_loading(config)
        loaded = model.load_checked(state, where=str(path), head_changed=head_changed)
        return model._init_missing(loaded)

    @classmethod
    def _for_loading(cls, config: ModelConfig) -> Model:
        """A model whose stored tensors are about to be loaded: built on the meta device and allocated without
        the random init, as HF's from_pretrained does, so loading bert-base costs reading its weights, not ~2 s
        of CPU drawing 110M numbers that are then overwritten; ``_init_missing`` initialises what the checkpoint
        lacks (a new head). A quantized model is allocated in its stored form (it never holds float32 weights)."""
        with torch.device("meta"):
            model = cls(config)
        model.to_empty(device="cpu")
        for module in model.modules():  # non-persistent buffers (the sinusoidal table): computed, not loaded
            if hasattr(module, "reset_parameters") and (config.quantization is not None
                                                        or module._non_persistent_buffers_set):
                module.reset_parameters()
        return model

    def _init_missing(self, loaded: set[str]) -> Model:
        """After loading into a ``_for_loading`` model: every tensor the checkpoint did not fill gets the init
        ``init_weights`` gives it (Linear / Embedding normal, biases 0, LayerNorm 1 / 0, GPT-2's scaled residual
        projections); a tensor tied to a loaded one is left alone. A missing tensor of another kind (not
        expected from a checkpoint that passed the load checks) rebuilds the model with the full init."""
        config = self.config
        params = dict(self.named_parameters(remove_duplicate=False))
        done = {id(params[k]) for k in loaded if k in params}
        std = config.initializer_range
        for name, tensor in params.items():
            if id(tensor) in done:  # loaded, tied to a loaded tensor, or initialised under another name
                continue
            owner = self.get_submodule(name.rpartition(".")[0])
            leaf = name.rpartition(".")[2]
            with torch.no_grad():
                if isinstance(owner, (nn.Linear, nn.Embedding)) and leaf == "weight":
                    scaled = config.scaled_residual_init and name.endswith(("attn.out.weight", "mlp.fc2.weight"))
                    nn.init.normal_(tensor, mean=0.0, std=std / math.sqrt(2 * config.num_layers) if scaled else std)
                elif isinstance(owner, (nn.Linear, LMPrediction)) and leaf == "bias":
                    nn.init.zeros_(tensor)
                elif isinstance(owner, nn.LayerNorm):
                    (nn.init.ones_ if leaf == "weight" else nn.init.zeros_)(tensor)
                else:
                    model = type(self)(config)
                    model.load_state_dict({k: v for k, v in self.state_dict().items() if k in loaded}, strict=False)
                    return model
            done.add(id(tensor))
        return self

    @classmethod
    def _from_hf(cls, path: Path, head: str | None, overrides: dict[str, Any]) -> Model:
        """An HF directory: the family's adapter translates config and weights, the Model is built here."""
        hf_config = hf.read_hf_config(path)
        adapter = hf.get_adapter(hf_config["model_type"])
        hf_state = hf.read_hf_weights(path)  # fail on a bad file before building anything
        config = adapter.config_from_hf(hf_config, head=head, where=str(path), **overrides)
        model = cls._for_loading(config)
        state = adapter.from_hf(hf_state, config, model.state_dict(keep_vars=True),
                                source=adapter.source(hf_config), where=str(path))
        model.load_state_dict(state, strict=False)
        return model._init_missing(set(state))

    def load_checked(self, state: dict[str, torch.Tensor], *, where: str, head_changed: bool = False) -> set[str]:
        """Load a state dict, raising CheckpointError naming missing / unexpected / wrongly shaped tensors;
        returns the names it loaded.

        With ``head_changed`` (another head or another number of labels than the checkpoint's), head
        tensors whose name and shape the new head shares are kept, as HF's from_pretrained does (an
        'mlm' model loaded from a 'pretraining' checkpoint keeps the trained MLM head); the rest of the
        checkpoint's head is dropped and the new head's other tensors keep their fresh init.
        """
        own = self.state_dict()
        if head_changed:
            state = {k: v for k, v in state.items()
                     if not k.startswith("head.") or (k in own and own[k].shape == v.shape)}
        missing = sorted(k for k in own if k not in state and not (head_changed and k.startswith("head.")))
        unexpected = sorted(k for k in state if k not in own)
        shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
                        for k in state if k in own and state[k].shape != own[k].shape)
        problems = [f"{label}: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}"
                    for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                         ("wrongly shaped tensors", shapes)) if names]
        if problems:
            raise CheckpointError(f"the weights in {where} do not fit its config.json ({'; '.join(problems)}). "
                                  "Check that config.json and model.safetensors belong together and were not edited.")
        self.load_state_dict(state, strict=False)
        return set(state)

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json + model.safetensors into ``path`` (each written to a temp file, then renamed)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        _atomic_write(path / CONFIG_NAME, lambda tmp: Path(tmp).write_text(self.config.to_json()))
        return path

    def export_hf(self, path: str | Path) -> Path:
        """Write an HF transformers directory (config.json with model_type + architectures, model.safetensors)
        that ``transformers.AutoModelFor...from_pretrained`` loads; the family's adapter maps config and names."""
        from safetensors.torch import save_file

        if self.config.quantization is not None:
            raise CheckpointError(f"HF export of a {self.config.quantization['method']} quantized model is not supported "
                                  "(transformers would need its own quantization config); export the float model "
                                  "that was compressed.")
        adapter = hf.get_adapter(self.config.family)
        # a pruned model goes out zero-padded to the HF shapes (a zero head / neuron adds exactly nothing)
        state, config = hf.unpruned(self.state_dict(), self.config)
        hf_config = adapter.config_to_hf(config)
        state = adapter.to_hf(state, config)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        _atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        _atomic_write(path / CONFIG_NAME,
                      lambda tmp: Path(tmp).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n"))
        return path

    # ------------------------------------------------------------------ utilities
    def num_parameters(self, *, exclude_head: bool = False) -> int:
        """Unique parameters (a tied matrix counts once); ``exclude_head`` = the base model's count."""
        module: nn.Module = self.body if exclude_head else self
        return sum(p.numel() for p in module.parameters())

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding (HF's ``get_input_embeddings``): ``body.embeddings.word``."""
        return self.body.embeddings.word

    def set_input_embeddings(self, module: nn.Embedding) -> None:
        """Replace the token embedding. A tied decoder reads ``body.embeddings.word.weight`` at every
        forward, so it stays tied to the new module."""
        if not isinstance(module, nn.Embedding):
            raise ConfigError(f"set_input_embeddings needs an nn.Embedding, got {type(module).__name__}.")
        want = (self.config.vocab_size, self.config.embed_size)
        if (module.num_embeddings, module.embedding_dim) != want:
            raise ConfigError(f"set_input_embeddings got Embedding({module.num_embeddings}, {module.embedding_dim}) "
                              f"for a model of vocab_size x embedding size {want}; to change the vocabulary "
                              "use resize_token_embeddings(n).")
        self.body.embeddings.word = module

    def get_output_embeddings(self) -> nn.Linear | None:
        """The LM decoder as an ``nn.Linear`` (HF's ``get_output_embeddings``), or None for a head without
        one. A tied decoder has no module of its own: the Linear returned then shares the word embedding's
        weight (and the MLM bias), so ``get_output_embeddings().weight is get_input_embeddings().weight``."""
        head = self.head
        if isinstance(head, (CausalLMHead, ExtractHead)):  # HF lm_head: a Linear without bias
            if head.decoder is not None:
                return head.decoder
            return _linear_view(self.get_input_embeddings().weight, None)
        lm = getattr(head, "mlm", None)
        if not isinstance(lm, LMPrediction):
            return None
        # HF's MLM decoder is a Linear with the prediction bias; ours applies the two in one F.linear
        return _linear_view(self.get_input_embeddings().weight if lm.decoder is None else lm.decoder.weight, lm.bias)

    def resize_token_embeddings(self, n: int | None = None) -> nn.Embedding:
        """Change the vocabulary to ``n`` rows, keeping the old rows (new rows get the init distribution),
        the tie, an untied decoder's rows and the MLM bias. Returns the input embedding, as HF does
        (``n=None``: no change, just the embedding)."""
        if n is None:
            return self.get_input_embeddings()
        if not isinstance(n, int) or n <= 0:
            raise ConfigError(f"resize_token_embeddings needs a positive vocabulary size, got {n!r}.")
        old = self.config.vocab_size
        if n == old:
            return self.get_input_embeddings()
        if self.config.quantization is not None:
            raise ConfigError("resize_token_embeddings on a quantized model is not supported: resize the float "
                              "model, then compress it.")
        word = self.body.embeddings.word
        self.body.embeddings.word = _resized_embedding(word, n, self.config.initializer_range)
        for module in self.modules():
            decoder = getattr(module, "decoder", None)
            if isinstance(decoder, nn.Linear) and decoder.out_features == old:
                module.decoder = _resized_linear(decoder, n, self.config.initializer_range)
            if isinstance(module, LMPrediction):
                bias = torch.zeros(n, dtype=module.bias.dtype, device=module.bias.device)
                keep = min(n, old)
                bias[:keep] = module.bias.data[:keep]
                module.bias = nn.Parameter(bias)
        ids = {k: v for k, v in (("pad_token_id", self.config.pad_token_id), ("bos_token_id", self.config.bos_token_id),
                                 ("eos_token_id", self.config.eos_token_id)) if v is not None and v >= n}
        self._set_config(self.config.replace(vocab_size=n, **{k: None for k in ids}))
        return self.get_input_embeddings()

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, *, output_hidden_states: bool = False,
                output_attentions: bool = False, past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...] | None = None,
                use_cache: bool = False, return_logits: bool = True, logits_to_keep: int = 0,
                first_token_only: bool | None = None, **head_inputs: torch.Tensor | None) -> ModelOutput:
        """Run body + head. ``head_inputs`` are the head's own keyword inputs (HEAD_INPUTS), e.g.
        ``next_sentence_label``, ``start_positions`` / ``end_positions``, ``extract_positions``.

        With ``labels`` the output holds the loss and the logits, as in HF. ``return_logits=False`` (what the
        clm objective passes) lets a CLM head compute its loss fused, without the (B, L, V) logits; the
        output's logits are then None. ``logits_to_keep=k``: LM logits of the last k positions only.
        ``first_token_only``: the last layer computes position 0 alone (a seq-cls / choice head reading the
        pooler or the first token of an encoder; last_hidden_state is then (B, 1, H)); None = only in a training
        step with labels (``cls_only_last_layer``), True = also here (``lmforge finetune``'s evaluation).
        """
        head_name = self.config.head
        allowed = HEAD_INPUTS.get(head_name or "", ())
        unknown = [k for k in head_inputs if k not in allowed]
        if unknown:
            raise InputError(f"Model.forward got unexpected input(s) {', '.join(unknown)}; the {head_name!r} head "
                             f"takes {', '.join(allowed) or 'no extra inputs'}.")
        if head_name is None and labels is not None:
            raise InputError("labels= needs a head; build the model with head='mlm' / 'clm' / 'seq-cls' ...")
        num_choices = None
        if input_ids.dim() == 3:
            if head_name not in CHOICE_HEADS:
                raise InputError(f"input_ids of shape {tuple(input_ids.shape)} (batch, choices, length) need the "
                                 f"'choice' or 'extract' head; this model has {head_name!r}.")
            num_choices = input_ids.size(1)
            flat = lambda t: None if t is None else t.reshape(-1, t.size(-1))  # (B, C, L) -> (B * C, L)  # noqa: E731
            input_ids, attention_mask = flat(input_ids), flat(attention_mask)
            token_type_ids, position_ids = flat(token_type_ids), flat(position_ids)
        # an MLM training step needs the final hidden states at the masked positions only: the last layer
        # computes just those (lmforge/models/transformer.py, output_rows); last_hidden_state is then (N, H)
        rows = None
        has_targets = labels is not None or any(v is not None for v in head_inputs.values())
        if (head_name in ROW_HEADS and labels is not None and self.training and not self.config.causal
                and past_key_values is None and not (use_cache or output_hidden_states or output_attentions)):
            rows = labels.ne(IGNORE_INDEX)  # (B, L)
        # likewise a [CLS] classifier's training step: the last layer computes position 0 alone
        first_only = first_token_only
        if first_only is None:
            first_only = (self.cls_only_last_layer and has_targets and self.training and self.reads_first_token
                          and past_key_values is None and not (use_cache or output_hidden_states or output_attentions))
        elif first_only and not self.reads_first_token:
            raise InputError(f"first_token_only=True needs an encoder whose head reads one vector per sequence from "
                             f"position 0 (seq-cls / choice on the pooler or the first token); this model has "
                             f"{head_name!r}{' on a decoder' if self.config.causal else ''}.")
        body = self.body(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
                         output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                         output_rows=rows, pool=not (head_name in POOLER_FREE_HEADS and has_targets),
                         first_token_only=first_only)
        if self.head is None:
            return body
        ctx = HeadContext(input_ids=input_ids, attention_mask=attention_mask, num_choices=num_choices,
                          word_embedding=self.body.embeddings.word, compute_logits=return_logits,
                          logits_to_keep=logits_to_keep, padding_free=self.body.padding_free)
        return self.head(body, ctx, labels, **head_inputs)

    @property
    def reads_first_token(self) -> bool:
        """True when the head reads nothing but position 0 of the last layer (the pooler or the first token of an
        encoder: seq-cls, choice), so the last layer may compute that position alone."""
        return (self.config.head in SUMMARY_HEADS and not self.config.causal
                and summary_token(self.config) in ("pooler", "first"))

    def generate(self, input_ids: torch.Tensor, **options: Any) -> Any:
        """Continue ``input_ids`` with this causal LM; the keyword arguments of ``lmforge.generate``
        (max_new_tokens, do_sample, temperature, top_k, top_p, num_beams, ...). Returns prompt + new tokens
        (B, L + N) as HF does; ``return_prompt=False``: the new tokens only."""
        from lmforge.generation import generate

        return generate(self, input_ids, **options)


# --------------------------------------------------------------------------- helpers
def read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; CheckpointError when it is missing, truncated or corrupted."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise CheckpointError(f"{file} does not exist; a model directory needs {WEIGHTS_NAME} next to {CONFIG_NAME}.")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{file} is corrupted or truncated ({err}); save or download the model again.") from err


def _atomic_write(target: Path, write: Any) -> None:
    tmp = str(target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 minus the umask, as open() gives
    mode = os.fstat(fd).st_mode & 0o777
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # safetensors writes a file of its own with mode 0600 in its place
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _linear_view(weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Linear:
    """An nn.Linear whose parameters ARE ``weight`` (out, in) and ``bias``: no copy, no second tensor."""
    view = nn.Linear(weight.size(1), weight.size(0), bias=False, device="meta")
    view.weight = weight
    if bias is not None:
        view.bias = bias
    return view


def _resized_embedding(old: nn.Embedding, n: int, std: float) -> nn.Embedding:
    pad = old.padding_idx if old.padding_idx is not None and old.padding_idx < n else None
    new = nn.Embedding(n, old.embedding_dim, padding_idx=pad, device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(new.weight, mean=0.0, std=std)
    keep = min(n, old.num_embeddings)
    with torch.no_grad():
        new.weight[:keep] = old.weight[:keep]
    new.weight.requires_grad_(old.weight.requires_grad)
    return new


def _resized_linear(old: nn.Linear, n: int, std: float) -> nn.Linear:
    new = nn.Linear(old.in_features, n, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(new.weight, mean=0.0, std=std)
    keep = min(n, old.out_features)
    with torch.no_grad():
        new.weight[:keep] = old.weight[:keep]
        if new.bias is not None:
            new.bias.zero_()
            new.bias[:keep] = old.bias[:keep]
    return new
