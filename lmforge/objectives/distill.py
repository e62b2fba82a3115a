"""Knowledge distillation: a frozen teacher, a student (the model of the run), and the recipes' losses.

Three recipes, each checked against its original code (the file is named where the detail is used):

* ``distilbert`` (Sanh et al. 2019; HF ``examples/research_projects/distillation/distiller.py``): on the MLM
  batch, ``alpha_ce * T^2 * KL(teacher/T || student/T)`` + ``alpha_mlm *`` MLM cross-entropy +
  ``alpha_cos *`` cosine embedding loss (target 1) of the last hidden states of the real tokens. Defaults
  are the published training command's (5.0, 2.0, 1.0, T = 2). The KL runs on the masked positions
  (``ce_positions="masked"``, distiller.py's ``--restrict_ce_to_mask``); ``"all"`` takes every real token
  as distiller.py does by default.
* ``logits``: KL + the hard LM loss only (no cosine); for MLM encoders and causal decoders alike (a
  decoder's rows are every position that predicts a next token; distilgpt2 was trained this way).
* ``tinybert`` (Jiao et al. 2020; huawei-noah/Pretrained-Language-Model ``TinyBERT/general_distill.py``):
  sum over student layers i of MSE(student attention scores_i, teacher scores_{(i+1)k-1}) with padding
  keys zeroed, plus sum over i = 0..L_s of MSE(W h^S_i + b, h^T_{ik}) (h_0 = the embeddings' output, W the
  learned ``projection``), k = L_teacher / L_student, unweighted. The prediction-layer stage of task
  distillation (soft cross-entropy) lives in ``lmforge.recipes.distill``, beside the task data.

Student initialisation from the teacher (``init_from_teacher``) follows ``scripts/extract_distilbert.py``:
word / position embeddings and the embedding LayerNorm, every student layer i from teacher layer
``layer_map[i]`` ([0, 2, 4, 7, 9, 11] for 12 -> 6), the MLM output bias (the decoder is tied to the
word embedding) and, as with its ``--vocab_transform``, the MLM transform. Segment embeddings are dropped
when the student has none (DistilBERT has none; the script drops them too).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from types import SimpleNamespace

import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.nn import losses
from lmforge.objectives.base import Batch, Metrics, ObjectiveBase

RECIPES = ("distilbert", "tinybert", "logits")
CE_POSITIONS = ("masked", "all")


@dataclass(frozen=True)
class DistillLoss:
    """The loss of one recipe (distiller.py's flag names in brackets)."""

    recipe: str = "distilbert"  # distilbert | tinybert | logits
    temperature: float = 2.0  # softmax temperature of the KL term [temperature]
    alpha_ce: float = 5.0  # weight of T^2 * KL(teacher || student) [alpha_ce]
    alpha_mlm: float = 2.0  # weight of the hard-label LM loss: MLM, or CLM for decoders [alpha_mlm / alpha_clm]
    alpha_cos: float = 1.0  # weight of the cosine loss of the last hidden states (distilbert only) [alpha_cos]
    ce_positions: str = "masked"  # KL rows: "masked" tokens [restrict_ce_to_mask] or "all" real tokens

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            from lmforge.errors import suggest

            raise ConfigError(f"unknown distillation recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}."
                              + suggest(self.recipe, RECIPES))
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        weights = {"alpha_ce": self.alpha_ce, "alpha_mlm": self.alpha_mlm, "alpha_cos": self.alpha_cos}
        if any(v < 0 for v in weights.values()) or (self.recipe != "tinybert" and not any(weights.values())):
            raise ConfigError(f"the loss weights must be >= 0 and not all 0, got {weights}")
        if self.recipe == "logits" and self.alpha_cos:
            raise ConfigError("the logits recipe has no cosine term; use --recipe distilbert for --alpha-cos")
        if self.ce_positions not in CE_POSITIONS:
            raise ConfigError(f"ce_positions must be one of {', '.join(CE_POSITIONS)}, got {self.ce_positions!r}")


# ---------------------------------------------------------------------------------------------- layer maps
def distilbert_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included: round(i (L_t - 1) / (L_s - 1)), halves up.
    It gives extract_distilbert.py's [0, 2, 4, 7, 9, 11] for 12 -> 6; one student layer takes layer 0."""
    check_depths(teacher_layers, student_layers)
    if student_layers == 1:
        return [0]
    return [math.floor(i * (teacher_layers - 1) / (student_layers - 1) + 0.5) for i in range(student_layers)]


def tinybert_layer_maps(teacher_layers: int, student_layers: int) -> tuple[list[int], list[int]]:
    """(attention map, hidden-state map) of general_distill.py: with k = L_t / L_s, student layer i's scores
    against teacher layer (i + 1) k - 1, hidden state i (0 = embeddings) against teacher hidden state i k."""
    check_depths(teacher_layers, student_layers)
    if teacher_layers % student_layers:
        raise ConfigError(f"TinyBERT maps every k-th teacher layer, so the teacher's depth must be a multiple of the "
                          f"student's: {teacher_layers} teacher layers, {student_layers} student layers "
                          "(general_distill.py asserts the same); pick a student depth that divides it")
    k = teacher_layers // student_layers
    return [(i + 1) * k - 1 for i in range(student_layers)], [i * k for i in range(student_layers + 1)]


def check_depths(teacher_layers: int, student_layers: int) -> None:
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student needs 1 to {teacher_layers} layers (the teacher's depth), got {student_layers}")


def check_layer_map(layer_map: Sequence[int], *, teacher_layers: int, student_layers: int) -> list[int]:
    """A user's map: one teacher layer per student layer, each inside the teacher."""
    layer_map = [int(i) for i in layer_map]
    if len(layer_map) != student_layers:
        raise ConfigError(f"--layer-map gives {len(layer_map)} teacher layers for a student of {student_layers}; "
                          "give one teacher layer per student layer")
    bad = [i for i in layer_map if not 0 <= i < teacher_layers]
    if bad:
        raise ConfigError(f"--layer-map points past the teacher's depth: {', '.join(map(str, bad))} (the teacher has "
                          f"layers 0 to {teacher_layers - 1})")
    return layer_map


# ---------------------------------------------------------------------------------------------- initialisation
def init_from_teacher(student: nn.Module, teacher: nn.Module, layer_map: Sequence[int]) -> list[tuple[str, str]]:
    """Copy the mapped teacher tensors into the student (in place); returns the (student, teacher) name pairs.

    Student layer i <- teacher layer ``layer_map[i]``; embeddings, final norm, pooler and head tensors by
    equal name where the student has them. A tensor whose shape differs is refused (another width: use a
    random init, as TinyBERT does)."""
    t_layers = teacher.config.num_stored_layers
    layer_map = check_layer_map(layer_map, teacher_layers=t_layers, student_layers=student.config.num_stored_layers)
    teacher_state = teacher.state_dict()
    pairs: list[tuple[str, str]] = []
    for name in student.state_dict():
        parts = name.split(".")
        if parts[:2] == ["body", "layers"]:
            source = ".".join(["body", "layers", str(layer_map[int(parts[2])]), *parts[3:]])
        elif name.startswith(("body.embeddings.", "body.final_norm.", "body.pooler.", "head.mlm.")):
            source = name
        else:
            continue  # a task head of the student: its own init
        if source in teacher_state:
            pairs.append((name, source))
    student_state = student.state_dict()
    shapes = [f"{s} {tuple(student_state[s].shape)} vs teacher {tuple(teacher_state[t].shape)}"
              for s, t in pairs if student_state[s].shape != teacher_state[t].shape]
    if shapes:
        raise ConfigError(f"the student cannot start from the teacher's weights: {'; '.join(shapes[:3])}; give a "
                          "student of the teacher's width, or --student-init random")
    with torch.no_grad():
        for s, t in pairs:
            student_state[s].copy_(teacher_state[t])
    return pairs


def check_pair(teacher_config: Any, student_config: Any, *, recipe: str) -> None:
    """What every recipe needs of the two models (one message each)."""
    if teacher_config.vocab_size != student_config.vocab_size:
        raise ConfigError(f"the teacher has a vocabulary of {teacher_config.vocab_size:,} ids and the student "
                          f"{student_config.vocab_size:,}; distillation compares their distributions id by id, "
                          "so both must use the same tokenizer")
    if teacher_config.causal != student_config.causal:
        kinds = {True: "a causal decoder", False: "a bidirectional encoder"}
        raise ConfigError(f"the teacher is {kinds[teacher_config.causal]} and the student "
                          f"{kinds[student_config.causal]}; distil into a student of the teacher's kind")
    if recipe in ("distilbert", "tinybert") and teacher_config.causal:
        raise ConfigError(f"the {recipe} recipe distils an MLM encoder; for a decoder use --recipe logits")
    if recipe == "tinybert":
        for who, c in (("teacher", teacher_config), ("student", student_config)):
            if c.attention_kind != "dense" or c.attention_pattern:
                raise ConfigError(f"TinyBERT compares dense attention score maps; the {who} uses "
                                  f"{c.attention_pattern or c.attention_kind} attention")
        if teacher_config.num_heads != student_config.num_heads:
            raise ConfigError(f"TinyBERT's attention loss compares the score maps head by head, so the student needs "
                              f"the teacher's {teacher_config.num_heads} heads (it has {student_config.num_heads}); "
                              f"keep {teacher_config.num_heads} heads at the student's width (TinyBERT-4: 312 wide, "
                              "12 heads of 26)")


# ---------------------------------------------------------------------------------------------- cached teacher logits
class TopKCache:
    """The teacher's top-k logits at every position of every training window of a causal LM, computed once
    (``build``) and memory-mapped from ``directory`` (``values.npy`` float32 (N, L, k), ``indices.npy`` int32
    (N, L, k), ``meta.json``), so later steps and epochs never run the teacher. Only for windows that are the
    same every epoch (the clm objective's); dynamic MLM masks change the teacher's input every epoch."""

    def __init__(self, directory: Path) -> None:
        import numpy as np

        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.values = np.load(directory / "values.npy", mmap_mode="r")
        self.indices = np.load(directory / "indices.npy", mmap_mode="r")

    @classmethod
    def open_or_build(cls, directory: str | Path, teacher: nn.Module, windows: Any, *, k: int, identity: dict,
                      batch_size: int = 32, log: Any = print) -> TopKCache:
        """The cache in ``directory`` when it was built for the same teacher, windows and k, else a new one
        (written to a temporary folder, then renamed: a killed build leaves nothing that looks complete)."""
        import shutil

        import numpy as np

        directory = Path(directory)
        meta = {"k": k, "windows": len(windows), "seq_len": int(windows.seq_len), **identity}
        if (directory / "meta.json").is_file():
            cache = cls(directory)
            if cache.meta == meta:
                return cache
            log(f"the teacher cache in {directory} was built for other settings; building it again")
            shutil.rmtree(directory)
        vocab = teacher.config.vocab_size
        if not 1 <= k <= vocab:
            raise ConfigError(f"--cache-topk must be between 1 and the vocabulary size {vocab}, got {k}")
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        shape = (len(windows), int(windows.seq_len), k)
        values = np.lib.format.open_memmap(tmp / "values.npy", mode="w+", dtype=np.float32, shape=shape)
        indices = np.lib.format.open_memmap(tmp / "indices.npy", mode="w+", dtype=np.int32, shape=shape)
        device = next(teacher.parameters()).device
        teacher.eval()
        log(f"caching the teacher's top-{k} logits of {len(windows):,} windows in {directory}")
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                ids = np.stack([windows.window(i) for i in range(start, min(start + batch_size, len(windows)))])
                logits = teacher(torch.from_numpy(ids).to(device)).logits.float()  # (b, L, V)
                top = logits.topk(k, dim=-1)
                values[start:start + len(ids)] = top.values.cpu().numpy()
                indices[start:start + len(ids)] = top.indices.to(torch.int32).cpu().numpy()
        values.flush()
        indices.flush()
        del values, indices
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        tmp.rename(directory)
        return cls(directory)

    def rows(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), each (B, L, k), of the given window ids."""
        ids = windows.cpu().numpy()
        return torch.from_numpy(self.values[ids]), torch.from_numpy(self.indices[ids])


class _IndexedWindows:
    """The clm objective's windows, each example carrying its window id (the cache's row)."""

    def __init__(self, windows: Any) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def example(self, index: int, *, seed: int, epoch: int) -> dict[str, Any]:
        return {**self.windows.example(index, seed=seed, epoch=epoch), "window": index}


# ---------------------------------------------------------------------------------------------- the objective
class Distillation(ObjectiveBase):
    """A pre-training objective (mlm or clm) for the data, a frozen teacher and one recipe's loss.

    ``examples`` / ``collate`` are the base objective's (dynamic MLM masking, or packed CLM windows); the
    teacher runs in eval mode without gradient on the same batch. The tinybert recipe owns the learned
    projection, which the Trainer optimizes and checkpoints (``extra_modules``)."""

    def __init__(self, base: Any, teacher: nn.Module, loss: DistillLoss, *, student_config: Any,
                 layer_maps: tuple[list[int], list[int]] | None = None, cache: TopKCache | None = None) -> None:
        check_pair(teacher.config, student_config, recipe=loss.recipe)
        if cache is not None and (loss.recipe != "logits" or base.head != "clm"):
            raise ConfigError("cached teacher logits (--cache-topk) are for --recipe logits with a causal teacher: "
                              "its windows are the same every epoch, while MLM masks change")
        self.cache = cache
        self.base, self.teacher, self.config = base, teacher, loss
        self.name = f"distill-{loss.recipe}"
        self.head, self.seq_len = base.head, base.seq_len
        self.masking = getattr(base, "masking", None)
        teacher.eval()
        teacher.requires_grad_(False)
        self.projection: nn.Module | None = None
        if loss.recipe == "tinybert":
            self.att_map, self.hidden_map = layer_maps or tinybert_layer_maps(teacher.config.num_layers,
                                                                              student_config.num_layers)
            # fit_dense of TinyBertForPreTraining: student width -> teacher width, shared by every layer
            self.projection = nn.Linear(student_config.hidden_size, teacher.config.hidden_size)
            nn.init.normal_(self.projection.weight, std=student_config.initializer_range)
            nn.init.zeros_(self.projection.bias)

    # ------------------------------------------------------------------ data: the base objective's
    def heads(self, config: Any) -> str:
        return self.base.heads(config)

    def examples(self, dataset: Any) -> Any:
        windows = self.base.examples(dataset)
        if self.cache is not None and getattr(dataset, "split", None) == "train":
            return _IndexedWindows(windows)  # validation windows run the teacher
        return windows

    def collate(self, examples: Sequence[Any]) -> Batch:
        batch = self.base.collate(examples)
        if examples and "window" in examples[0]:
            batch["window"] = torch.tensor([int(e["window"]) for e in examples])
        return batch

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"projection": self.projection} if self.projection is not None else {}

    # ------------------------------------------------------------------ loss
    def _teacher(self, batch: Batch, **kw: Any) -> Any:
        device = batch["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        self.teacher.eval()
        with torch.no_grad():
            return self.teacher(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                                token_type_ids=self._types(self.teacher, batch), **kw)

    @staticmethod
    def _types(model: nn.Module, batch: Batch) -> torch.Tensor | None:
        config = getattr(model, "config", None) or model.module.config  # DDP wraps the student
        return batch.get("token_type_ids") if config.type_vocab_size > 0 else None

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        if self.config.recipe == "tinybert":
            return self._tinybert(model, batch)
        return self._soft_targets(model, batch)

    def _soft_targets(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """distilbert and logits: KL on the soft targets + the hard LM loss (+ the cosine loss)."""
        c = self.config
        ids, labels, mask = batch["input_ids"], batch["labels"], batch.get("attention_mask")
        real = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)  # (B, L)
        want_hidden = c.alpha_cos > 0
        causal = self.head == "clm"
        gathered = not causal and c.ce_positions == "masked"  # the MLM head gathers the masked rows itself
        kw = {"output_hidden_states": want_hidden}
        s = model(ids, attention_mask=mask, token_type_ids=self._types(model, batch),
                  labels=labels if gathered else None, **kw)
        cached = self.cache is not None and "window" in batch
        if cached:  # the teacher's top-k logits of these windows, computed once
            values, indices = (x.to(ids.device) for x in self.cache.rows(batch["window"]))  # (B, L, k) each
            t = SimpleNamespace(logits=values)
        else:
            t = self._teacher(batch, labels=labels if gathered else None, **kw)
        if gathered:  # (N masked, V) each
            s_rows, t_rows, hard = s.logits, t.logits, s.loss
        elif causal:  # position j predicts token j + 1: every position but the last, where a label follows
            rows = real[:, :-1] & labels[:, 1:].ne(losses.IGNORE_INDEX)  # (B, L - 1)
            s_rows, t_rows = s.logits[:, :-1][rows], t.logits[:, :-1][rows]
            hard = losses.causal_lm_loss(s.logits, labels)
        else:  # every real token
            s_rows, t_rows = s.logits[real], t.logits[real]
            hard = losses.masked_lm_loss(s.logits, labels)
        if cached:
            t_idx = indices[:, :-1][rows]  # (N, k)
            kl = losses.topk_distillation_kl_loss(s_rows, t_rows, t_idx, temperature=c.temperature)
            t_rows = t_idx[:, :1].squeeze(-1)  # the teacher's top id (for the agreement metric)
        else:
            kl = losses.distillation_kl_loss(s_rows, t_rows, temperature=c.temperature)
        loss = c.alpha_ce * kl + c.alpha_mlm * hard
        metrics: Metrics = {"kl_loss": kl.detach(), f"{'clm' if causal else 'mlm'}_loss": hard.detach()}
        if want_hidden:
            cos = losses.cosine_embedding_loss(s.hidden_states[-1][real], t.hidden_states[-1][real])
            loss = loss + c.alpha_cos * cos
            metrics["cos_loss"] = cos.detach()
        with torch.no_grad():
            top = t_rows if cached else t_rows.argmax(-1)
            agree = (s_rows.argmax(-1) == top).float().mean() if len(s_rows) else torch.zeros(())
        tokens = real.sum()
        metrics.update(loss=loss.detach(), teacher_agreement=agree, weight=tokens, tokens=tokens)
        return loss, metrics

    def _tinybert(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """general_distill.py: attention-score MSE + projected hidden-state MSE, summed over the mapped layers."""
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        kw = {"output_hidden_states": True, "output_attentions": "scores"}
        s = model(ids, attention_mask=mask, token_type_ids=self._types(model, batch), **kw)
        t = self._teacher(batch, **kw)
        att, hidden = tinybert_terms(s, t, att_map=self.att_map, hidden_map=self.hidden_map,
                                     projection=self.projection, key_padding=mask)
        loss = att + hidden
        tokens = mask.sum() if mask is not None else torch.tensor(ids.numel())
        return loss, {"loss": loss.detach(), "att_loss": att.detach(), "hidden_loss": hidden.detach(),
                      "weight": tokens, "tokens": tokens}


def tinybert_terms(student_out: Any, teacher_out: Any, *, att_map: Sequence[int], hidden_map: Sequence[int],
                   projection: nn.Module | None, key_padding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention loss, hidden-state loss) of TinyBERT from two model outputs with ``hidden_states`` and the
    pre-softmax ``attentions`` (``output_attentions="scores"``)."""
    att = sum(losses.attention_score_loss(student_out.attentions[i], teacher_out.attentions[j], key_padding)
              for i, j in enumerate(att_map))
    hidden = sum(losses.hidden_state_loss(student_out.hidden_states[i], teacher_out.hidden_states[j], projection)
                 for i, j in enumerate(hidden_map))
    return att, hidden  # type: ignore[return-value]


__all__ = ["CE_POSITIONS", "RECIPES", "DistillLoss", "Distillation", "TopKCache", "check_layer_map", "check_pair",
           "distilbert_layer_map", "init_from_teacher", "tinybert_layer_maps", "tinybert_terms"]
