"""Your own text classification data: csv / tsv / jsonl with named columns.

``lmforge finetune --task text --data DIR --text-column review --label-column stars`` reads
``DIR/train.csv`` (or .tsv / .jsonl) and ``DIR/dev.csv``; ``--text-pair-column`` adds a second text.
The label set is the sorted set of labels in the training split; a dev label outside it is an error.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

from lmforge.data.readers import read_jsonl
from lmforge.errors import DataError
from lmforge.tasks.base import Example, find_split_file, require_examples
from lmforge.tasks.glue import ClassificationTask


@dataclasses.dataclass
class TextTask(ClassificationTask):
    """Generic classification; ``labels`` is learned from the first split read when it is None."""

    text_column: str = "text"
    pair_column: str | None = None
    label_column: str = "label"

    def read(self, path: str | Path, split: str) -> list[Example]:
        file = find_split_file(path, split, (".csv", ".tsv", ".jsonl"))
        records = self._records(file)
        if self.labels is None:
            found = sorted({str(r[self.label_column]) for _, _, r in records
                            if r.get(self.label_column) not in (None, "")})
            if not found:
                raise DataError(f"{file}: no labels in column {self.label_column!r}; pass --label-column")
            self.labels = found
        out = []
        for where, idx, rec in records:
            label = rec.get(self.label_column)
            out.append(self.make_example(idx=idx, text=str(rec[self.text_column]),
                                         pair=None if self.pair_column is None else str(rec[self.pair_column]),
                                         label=None if label in (None, "") else str(label), where=where))
        return require_examples(out, file, split)

    def _records(self, file: Path) -> list[tuple[str, str, dict[str, Any]]]:
        """(file:line, id, record) per row, with the text columns checked."""
        wanted = [c for c in (self.text_column, self.pair_column) if c is not None]
        out: list[tuple[str, str, dict[str, Any]]] = []
        if file.suffix == ".jsonl":
            for lineno, obj in read_jsonl(file):
                missing = [c for c in wanted if c not in obj]
                if missing:
                    raise DataError(f"{file}:{lineno}: no key(s) {missing} (keys: {sorted(obj)}); "
                                    "set --text-column / --text-pair-column")
                out.append((f"{file}:{lineno}", str(obj.get("id", obj.get("idx", len(out)))), obj))
            return out
        delimiter = "\t" if file.suffix == ".tsv" else ","
        with open(file, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return []
            missing = [c for c in wanted if c not in header]
            if missing:
                raise DataError(f"{file}:1: header {header} lacks column(s) {missing}; "
                                "set --text-column / --text-pair-column / --label-column")
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{file}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
                rec = dict(zip(header, row))
                out.append((f"{file}:{reader.line_num}", rec.get("id", str(len(out))), rec))
        return out


def text_task() -> TextTask:
    return TextTask("text", None, ("accuracy", "f1_macro"))
