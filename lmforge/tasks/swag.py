"""SWAG multiple choice from the official CSV (``,video-id,fold-ind,startphrase,sent1,sent2,gold-source,
ending0,ending1,ending2,ending3,label``; test.csv has no label).

Each of the 4 endings becomes one sequence: encoders read ``sent1`` paired with ``sent2 + " " + ending``
(as HF ``run_swag``); decoders read GPT-1's ``start sent1 delim sent2 ending extract``. The choice head
scores each sequence and a softmax over the 4 picks the ending.
"""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import DataError
import lmforge.tasks.metrics as metrics
from lmforge.tasks.base import (DecoderTokens, Example, Feature, collate_choices, decoder_texts, encode_texts,
                                find_split_file, require_examples)

ENDINGS = ("ending0", "ending1", "ending2", "ending3")


@dataclasses.dataclass
class SwagTask:
    name: str = "swag"
    kind: str = "choice"
    labels: list[str] | None = dataclasses.field(default_factory=lambda: ["0", "1", "2", "3"])
    eval_splits: tuple[str, ...] = ("val",)
    main_metric: str = "accuracy"

    def read(self, path: str | Path, split: str) -> list[Example]:
        file = find_split_file(path, split, (".csv",))
        out = []
        with open(file, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            missing = [c for c in ("sent1", "sent2", *ENDINGS) if c not in header]
            if missing:
                raise DataError(f"{file}:1: not the SWAG CSV layout: no column(s) {missing}")
            for row in reader:
                where = f"{file}:{reader.line_num}"
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
                rec = dict(zip(header, row))
                label = rec.get("label", "")
                if label not in ("", "0", "1", "2", "3"):
                    raise DataError(f"{where}: label {label!r} is not one of 0, 1, 2, 3")
                out.append({"id": rec.get("", str(len(out))) or str(len(out)), "source": where,
                            "context": rec["sent1"], "lead": rec["sent2"],
                            "endings": [rec[k] for k in ENDINGS], "label": int(label) if label else None})
        return require_examples(out, file, split)

    def head(self, config: Any) -> dict[str, Any]:
        if getattr(config, "causal", False):
            return {"head": "extract", "num_labels": 1, "extract_combine": "choice"}  # one score per ending
        return {"head": "choice", "num_labels": 1}

    def featurize(self, example: Example, tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> list[Feature]:
        rows, cut = [], False
        for ending in example["endings"]:
            second = f"{example['lead']} {ending}"
            if decoder is None:
                f, c = encode_texts(tokenizer, example["context"], second, max_length=max_length)
            else:
                f, c = decoder_texts(tokenizer, [example["context"], second], decoder, max_length=max_length)
                f["extract_positions"] = len(f["input_ids"]) - 1
            rows.append(f)
            cut = cut or c
        feature: Feature = {k: [r[k] for r in rows] for k in rows[0]}  # each (C, L_c)
        feature["labels"] = example["label"]
        feature["truncated"] = cut
        return [feature]

    def collate(self, features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_choices(features, pad_id=pad_id)

    def split_outputs(self, out: Any, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return list(out.logits.detach().float().cpu())  # (C,) per feature

    def postprocess(self, logits: Sequence[torch.Tensor], features: Sequence[Feature],
                    examples: Sequence[Example]) -> list[int]:
        return [int(row.reshape(-1).argmax()) for row in logits]

    def metric(self, predictions: Sequence[int], references: Sequence[Example]) -> dict[str, float]:
        if any(ex["label"] is None for ex in references):
            raise DataError("swag: this split has no labels (test.csv?); use `lmforge predict`")
        return {"accuracy": metrics.accuracy(np.asarray(predictions), np.asarray([ex["label"] for ex in references]))}

    def prediction_text(self, prediction: int) -> str:
        return str(prediction)
