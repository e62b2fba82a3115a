"""GLUE sentence(-pair) classification and regression, read from the official GLUE file layouts.

Layouts (as ``download_glue_data.py`` writes them; ``test.tsv`` files have no label column):
  CoLA   no header; source, label, original label, sentence       (test: header index, sentence)
  SST-2  header sentence, label
  MRPC   header Quality, #1 ID, #2 ID, #1 String, #2 String
  QQP    header id, qid1, qid2, question1, question2, is_duplicate
  STS-B  header index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score
  MNLI   header ... sentence1, sentence2, [label1 ...], gold_label; splits dev_matched / dev_mismatched
  QNLI   header index, question, sentence, label
  RTE    header index, sentence1, sentence2, label; or the SuperGLUE jsonl {premise, hypothesis, label, idx}
  WNLI   header index, sentence1, sentence2, label
Fields are tab-separated with no quoting (csv.QUOTE_NONE), exactly as the GLUE loaders read them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.data.readers import read_jsonl
from lmforge.errors import DataError
import lmforge.tasks.metrics as metrics
from lmforge.tasks.base import (DecoderTokens, Example, Feature, collate_choices, collate_flat, decoder_texts,
                                encode_texts, find_split_file, label_id, require_examples)


@dataclasses.dataclass
class ClassificationTask:
    """One text (or text pair) -> a class (or a score when ``labels`` is None: regression).

    ``transform`` picks GPT-1's decoder input transform: "classification" (start text extract),
    "entailment" (start premise delim hypothesis extract) or "similarity" (both orders, summed).
    """

    name: str
    labels: list[str] | None
    metrics: tuple[str, ...]  # keys metric() reports; the first one picks the best epoch
    transform: str = "classification"
    kind: str = "classification"
    eval_splits: tuple[str, ...] = ("dev",)  # splits `finetune` evaluates each epoch (MNLI: both dev sets)

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    # -- reading (subclasses override read_file) --
    def read(self, path: str | Path, split: str) -> list[Example]:
        file = find_split_file(path, split, (".tsv", ".jsonl", ".csv"))
        return require_examples(self.read_file(file), file, split)

    def read_file(self, file: Path) -> list[Example]:  # pragma: no cover - overridden
        raise NotImplementedError

    def make_example(self, *, idx: str, text: str, pair: str | None, label: Any, where: str) -> Example:
        value: int | float | None = None
        if label is not None and str(label) != "":
            if self.labels is None:
                try:
                    value = float(label)
                except ValueError:
                    raise DataError(f"{where}: score {label!r} is not a number") from None
            else:
                value = label_id(str(label), self.labels, where)
        return {"id": idx, "source": where, "text": text, "text_pair": pair, "label": value}

    # -- model side --
    def head(self, config: Any) -> dict[str, Any]:
        n = 1 if self.labels is None else len(self.labels)
        if getattr(config, "causal", False):
            # GPT-1: similarity pairs arrive as 2 sequences whose extract states are summed
            return {"head": "extract", "num_labels": n, "extract_combine": "sum"}
        return {"head": "seq-cls", "num_labels": n}

    def featurize(self, example: Example, tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> list[Feature]:
        text, pair = example["text"], example["text_pair"]
        if decoder is None:
            feature, cut = encode_texts(tokenizer, text, pair, max_length=max_length)
        elif pair is not None and self.transform == "similarity":
            # GPT-1: no inherent order between the two sentences, so encode both orders; the extract
            # representations of the two are summed before the classifier
            a, cut_a = decoder_texts(tokenizer, [text, pair], decoder, max_length=max_length)
            b, cut_b = decoder_texts(tokenizer, [pair, text], decoder, max_length=max_length)
            feature = {k: [a[k], b[k]] for k in a}
            feature["extract_positions"] = [len(a["input_ids"]) - 1, len(b["input_ids"]) - 1]
            cut = cut_a or cut_b
        else:
            segments = [text] if pair is None else [text, pair]
            feature, cut = decoder_texts(tokenizer, segments, decoder, max_length=max_length)
            feature["extract_positions"] = len(feature["input_ids"]) - 1
        feature["labels"] = example["label"]
        feature["truncated"] = cut
        return [feature]

    def collate(self, features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
        if isinstance(features[0]["input_ids"][0], list):
            return collate_choices(features, pad_id=pad_id)
        return collate_flat(features, pad_id=pad_id)

    def split_outputs(self, out: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per feature: its row of class logits (C,) or its score (1,)."""
        return list(out.logits.detach().float().cpu())

    def postprocess(self, logits: Sequence[torch.Tensor], features: Sequence[Feature],
                    examples: Sequence[Example]) -> list[Any]:
        """Class ids (argmax) or scores, one per example (one feature per example here)."""
        logits = torch.stack(list(logits)).float()
        if self.labels is None:
            return [float(v) for v in logits.reshape(-1).tolist()]
        return [int(i) for i in logits.argmax(-1).tolist()]

    def metric(self, predictions: Sequence[Any], references: Sequence[Example]) -> dict[str, float]:
        y = np.asarray([ex["label"] for ex in references])
        p = np.asarray(predictions)
        if any(ex["label"] is None for ex in references):
            raise DataError(f"{self.name}: this split has no labels (a test split?); use `lmforge predict`")
        out: dict[str, float] = {}
        for key in self.metrics:
            out[key] = METRICS[key](p, y)
        return out

    def prediction_text(self, prediction: Any) -> str:
        """The value written to predictions.tsv: the label name, or the score."""
        return f"{prediction:.6g}" if self.labels is None else self.labels[int(prediction)]


METRICS = {
    "mcc": metrics.mcc, "accuracy": metrics.accuracy, "f1": metrics.f1,
    "f1_macro": lambda p, y: metrics.f1(p, y, average="macro"),
    "pearson": metrics.pearson, "spearman": metrics.spearman,
}


def read_tsv(file: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) per non-blank row of a tab-separated file, no quoting."""
    rows = []
    with open(file, encoding="utf-8-sig", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line:
                rows.append((lineno, line.split("\t")))
    return rows


@dataclasses.dataclass
class GlueTask(ClassificationTask):
    """A GLUE task read by column names from a headered TSV (or by position for CoLA)."""

    text_column: str = "sentence"
    pair_column: str | None = None
    label_column: str = "label"
    headerless: bool = False  # CoLA train/dev: source, label, original label, sentence
    jsonl_columns: tuple[str, str, str] | None = None  # SuperGLUE layout: (text, pair, label) keys

    def read_file(self, file: Path) -> list[Example]:
        if file.suffix == ".jsonl":
            return self._read_jsonl(file)
        rows = read_tsv(file)
        if not rows:
            return []
        if self.headerless and rows[0][1][:2] != ["index", "sentence"]:
            return self._read_cola(file, rows)
        header_line, header = rows[0]
        missing = [c for c in (self.text_column, self.pair_column) if c is not None and c not in header]
        if missing:
            raise DataError(f"{file}:{header_line}: header {header} lacks column(s) {missing}; is this the "
                            f"GLUE {self.name} file? (--task picks the layout)")
        has_label = self.label_column in header
        col = {name: i for i, name in enumerate(header)}
        out = []
        for lineno, fields in rows[1:]:
            where = f"{file}:{lineno}"
            if len(fields) != len(header):
                raise DataError(f"{where}: {len(fields)} tab-separated fields, the header has {len(header)}; "
                                "fix the row (a stray tab or a line break inside a field?)")
            out.append(self.make_example(
                idx=fields[col["index"]] if "index" in col else str(len(out)),
                text=fields[col[self.text_column]],
                pair=fields[col[self.pair_column]] if self.pair_column else None,
                label=fields[col[self.label_column]] if has_label else None, where=where))
        return out

    def _read_cola(self, file: Path, rows: list[tuple[int, list[str]]]) -> list[Example]:
        out = []
        for lineno, fields in rows:
            where = f"{file}:{lineno}"
            if len(fields) != 4:
                raise DataError(f"{where}: {len(fields)} tab-separated fields; CoLA rows have 4 "
                                "(source, label, original label, sentence)")
            out.append(self.make_example(idx=str(len(out)), text=fields[3], pair=None, label=fields[1], where=where))
        return out

    def _read_jsonl(self, file: Path) -> list[Example]:
        if self.jsonl_columns is None:
            raise DataError(f"{file}: GLUE {self.name} is read from .tsv files; no jsonl layout is known")
        text_key, pair_key, label_key = self.jsonl_columns
        out = []
        for lineno, obj in read_jsonl(file):
            where = f"{file}:{lineno}"
            missing = [k for k in (text_key, pair_key) if k not in obj]
            if missing:
                raise DataError(f"{where}: missing key(s) {missing}")
            label = obj.get(label_key)
            out.append(self.make_example(idx=str(obj.get("idx", len(out))), text=obj[text_key], pair=obj[pair_key],
                                         label=None if label is None else str(label), where=where))
        return out


_BINARY = ["0", "1"]
_NLI2 = ["entailment", "not_entailment"]

GLUE_TASKS: dict[str, GlueTask] = {
    "glue-cola": GlueTask("glue-cola", _BINARY, ("mcc", "accuracy"), headerless=True),
    "glue-sst2": GlueTask("glue-sst2", _BINARY, ("accuracy",)),
    "glue-mrpc": GlueTask("glue-mrpc", _BINARY, ("f1", "accuracy"), transform="similarity",
                          text_column="#1 String", pair_column="#2 String", label_column="Quality"),
    "glue-qqp": GlueTask("glue-qqp", _BINARY, ("f1", "accuracy"), transform="similarity",
                         text_column="question1", pair_column="question2", label_column="is_duplicate"),
    "glue-stsb": GlueTask("glue-stsb", None, ("pearson", "spearman"), transform="similarity", kind="regression",
                          text_column="sentence1", pair_column="sentence2", label_column="score"),
    "glue-mnli": GlueTask("glue-mnli", ["contradiction", "entailment", "neutral"], ("accuracy",),
                          transform="entailment", text_column="sentence1", pair_column="sentence2",
                          label_column="gold_label", eval_splits=("dev_matched", "dev_mismatched")),
    "glue-qnli": GlueTask("glue-qnli", _NLI2, ("accuracy",), transform="entailment",
                          text_column="question", pair_column="sentence"),
    "glue-rte": GlueTask("glue-rte", _NLI2, ("accuracy",), transform="entailment",
                         text_column="sentence1", pair_column="sentence2",
                         jsonl_columns=("premise", "hypothesis", "label")),
    "glue-wnli": GlueTask("glue-wnli", _BINARY, ("accuracy",), transform="entailment",
                          text_column="sentence1", pair_column="sentence2"),
}
