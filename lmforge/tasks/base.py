"""The Task protocol and what every task shares: split files, encoding through the tokenizer's
HF-style call, GPT-1 input transforms, padding a batch, and the truncation count.

A task turns files into model inputs and model outputs into scores::

    examples = task.read(data_dir, "train")                 # list of dicts, each with "id" and "source"
    features = task.featurize(examples[0], tokenizer, max_length=128)   # list: SQuAD gives windows
    batch = task.collate(features, pad_id=tokenizer.pad_token_id)       # tensors for Model.forward
    model = Model.from_pretrained(d, **task.head(model.config))         # {"head": ..., "num_labels": ...}
    preds = task.postprocess(logits, features, examples)    # one prediction per example
    scores = task.metric(preds, examples)                   # flat dict: mcc, accuracy, f1, exact ...

Encoders use the tokenizer's own template ([CLS] a [SEP] b [SEP]); causal decoders use GPT-1's input
transforms (``DecoderTokens``: start / delimiter / extract tokens) instead.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from lmforge.errors import DataError, InputError, suggest

Example = dict[str, Any]  # one item of a split: "id", "source" ("file:line"), the texts, the label
Feature = dict[str, Any]  # one model input: token ids (+ labels) and "example_index" back to its example

IGNORE_INDEX = -100  # label of a position that the loss and the metric skip
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# label keys the model's heads take as keyword arguments (contracts: Model.forward head_inputs)
LABEL_KEYS = ("labels", "start_positions", "end_positions")

# split aliases: GLUE says dev, SuperGLUE and HF datasets say val / validation
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "dev": ("dev", "val", "validation"), "val": ("val", "dev", "validation"),
    "validation": ("validation", "dev", "val"),
}


@dataclasses.dataclass(frozen=True)
class DecoderTokens:
    """GPT-1's added special tokens and their ids in the (resized) vocabulary."""

    start: int
    delimiter: int
    extract: int

    NAMES: ClassVar[tuple[str, str, str]] = ("<|start|>", "<|delim|>", "<|extract|>")


@runtime_checkable
class Task(Protocol):
    """What fine-tuning and evaluation need from a task (see the module docstring)."""

    name: str
    kind: str  # "classification" | "regression" | "span" | "choice" | "tagging"
    labels: list[str] | None  # class names (index = class id); None for regression and spans
    main_metric: str  # the key of metric() that picks the best epoch

    def read(self, path: str | Path, split: str) -> list[Example]: ...

    def featurize(self, example: Example, tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> list[Feature]: ...

    def head(self, config: Any) -> dict[str, Any]: ...

    def collate(self, features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]: ...

    def split_outputs(self, out: Any, batch: dict[str, torch.Tensor]) -> list[Any]:
        """The model output of each feature in ``batch`` (unpadded), for postprocess."""
        ...

    def postprocess(self, logits: Sequence[Any], features: Sequence[Feature], examples: Sequence[Example]) -> list[Any]:
        """One prediction per example from the per-feature outputs of ``split_outputs``."""
        ...

    def metric(self, predictions: Sequence[Any], references: Sequence[Example]) -> dict[str, float]: ...

    def prediction_text(self, prediction: Any) -> str:
        """What predictions.tsv / predictions.json hold for one example."""
        ...


def featurize_all(task: Task, examples: Sequence[Example], tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> tuple[list[Feature], int]:
    """Features of every example, each tagged with ``example_index``; also how many were truncated."""
    features: list[Feature] = []
    truncated = 0
    for i, example in enumerate(examples):
        made = task.featurize(example, tokenizer, max_length=max_length, decoder=decoder, training=training)
        truncated += any(f.get("truncated") for f in made)
        for f in made:
            f["example_index"] = i
        features.extend(made)
    return features, truncated


def find_split_file(path: str | Path, split: str, suffixes: Sequence[str]) -> Path:
    """The file of ``split`` under ``path``: ``path`` itself when it is a file, else ``{split}{suffix}``,
    ``{split}_*{suffix}`` or ``{split}-*{suffix}`` (``dev_sample.tsv``, ``dev_matched.tsv``,
    ``dev-v2.0.json``), trying split aliases (dev / val / validation)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"data path {p} does not exist; pass the directory that holds the task's files")
    for name in SPLIT_ALIASES.get(split, (split,)):
        for suffix in suffixes:
            exact = p / f"{name}{suffix}"
            if exact.is_file():
                return exact
            matches = sorted(p.glob(f"{name}_*{suffix}")) + sorted(p.glob(f"{name}-*{suffix}"))
            if matches:
                return matches[0]
    present = sorted(f.name for f in p.iterdir() if f.is_file())
    raise DataError(f"no {split!r} split in {p}: expected {split}{suffixes[0]} (files there: "
                    f"{', '.join(present) or 'none'})")


def require_examples(examples: list[Example], path: Path, split: str) -> list[Example]:
    if not examples:
        raise DataError(f"{path}: the {split!r} split has no examples; check the file or pick another split")
    return examples


def label_id(label: str, labels: Sequence[str], where: str) -> int:
    """The id of ``label`` in ``labels``; a label outside the set is an error naming file:line."""
    try:
        return list(labels).index(label)
    except ValueError:
        raise DataError(f"{where}: label {label!r} is not one of this task's labels {list(labels)}."
                        f"{suggest(label, labels)} Fix the file or use the right --task") from None


# ---------------------------------------------------------------- encoding
# Everything goes through the tokenizer's HF-style call: truncation, overflowing windows with a stride,
# offsets, word_ids() and sequence_ids() (lmforge.tokenization.Tokenizer; an HF fast tokenizer also fits).

def encode_texts(tokenizer: Any, text: str, pair: str | None, *, max_length: int) -> tuple[Feature, bool]:
    """Encoder input for one text (pair) with the tokenizer's template; (feature, was_truncated)."""
    enc = tokenizer(text, pair, truncation=True, max_length=max_length, return_overflowing_tokens=True,
                    return_token_type_ids=True)
    # with return_overflowing_tokens every cut-off remainder is one more row: more than one = truncated
    feature = {"input_ids": list(enc["input_ids"][0]), "attention_mask": list(enc["attention_mask"][0]),
               "token_type_ids": list(enc["token_type_ids"][0])}
    return feature, len(enc["input_ids"]) > 1


def decoder_texts(tokenizer: Any, segments: Sequence[str], tokens: DecoderTokens, *,
                  max_length: int) -> tuple[Feature, bool]:
    """GPT-1 transform: ``start seg1 [delim seg2] extract``; the longest segment is cut first."""
    pieces = [list(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in segments]
    budget = max_length - 2 - (len(pieces) - 1)  # start + extract + one delimiter per extra segment
    if budget < len(pieces):
        raise InputError(f"--max-length {max_length} is too short for a GPT-1 input of {len(pieces)} segment(s)")
    truncated = sum(map(len, pieces)) > budget
    while sum(map(len, pieces)) > budget:
        longest = max(range(len(pieces)), key=lambda i: len(pieces[i]))
        pieces[longest].pop()
    ids = [tokens.start]
    for i, piece in enumerate(pieces):
        if i:
            ids.append(tokens.delimiter)
        ids.extend(piece)
    ids.append(tokens.extract)
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}, truncated


# ---------------------------------------------------------------- batching

def pad_to(rows: Sequence[Sequence[int]], value: int, length: int | None = None) -> torch.Tensor:
    """(N, L) tensor of ``rows`` right-padded with ``value`` to the longest row (or ``length``)."""
    width = length if length is not None else max(len(r) for r in rows)
    # one tensor from padded lists: a row at a time cost ~7 us a row (0.22 ms of a 32-row batch, three times)
    return torch.tensor([[*r, *([value] * (width - len(r)))] for r in rows], dtype=torch.long).view(len(rows), width)


def collate_flat(features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad one-sequence features: inputs (B, L); scalar labels (B,); per-token labels (B, L) with -100."""
    batch: dict[str, torch.Tensor] = {}
    for key in MODEL_INPUTS:
        if key in features[0]:
            batch[key] = pad_to([f[key] for f in features], pad_id if key == "input_ids" else 0)
    for key in LABEL_KEYS:
        if key not in features[0] or features[0][key] is None:
            continue
        values = [f[key] for f in features]
        if isinstance(values[0], list):
            batch[key] = pad_to(values, IGNORE_INDEX, batch["input_ids"].size(1))
        elif isinstance(values[0], float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    if "extract_positions" in features[0]:
        batch["extract_positions"] = torch.tensor([f["extract_positions"] for f in features], dtype=torch.long)
    return batch


def collate_choices(features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad multiple-choice features: each input is (C, L) -> batch (B, C, L); labels (B,)."""
    batch: dict[str, torch.Tensor] = {}
    width = max(len(row) for f in features for row in f["input_ids"])
    for key in MODEL_INPUTS:
        if key in features[0]:
            value = pad_id if key == "input_ids" else 0
            batch[key] = torch.stack([pad_to(f[key], value, width) for f in features])  # (B, C, L)
    if features[0].get("labels") is not None:
        values = [f["labels"] for f in features]
        dtype = torch.float32 if isinstance(values[0], float) else torch.long  # float: a regression score
        batch["labels"] = torch.tensor(values, dtype=dtype)
    if "extract_positions" in features[0]:
        batch["extract_positions"] = torch.tensor([f["extract_positions"] for f in features], dtype=torch.long)
    return batch


def check_task_name(name: str, known: Sequence[str]) -> None:
    if name not in known:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(known)}.{suggest(name, known)}")
