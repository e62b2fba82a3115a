"""Corpus readers: stream documents out of text / .gz / jsonl / parquet files (or a HF dataset).

Every reader yields one ``str`` per document and never holds more than one document (or one parquet
record batch) in memory, so a corpus of any size streams through. ``split_sentences`` is the small
rule-based splitter that gives NSP / SOP their sentence boundaries.

File kinds by suffix (``.gz`` may wrap any of the text kinds):
  .txt / anything else   plain text; ``doc_mode="line"``: one document per line,
                         ``doc_mode="blank"``: documents separated by blank lines
  .jsonl / .json         one JSON object per line; the document is its ``text_field``
  .parquet               the ``text_field`` column (needs pyarrow)
  hf:NAME[:CONFIG][@SPLIT]  a HF ``datasets`` dataset, streamed (needs ``datasets``)
"""
from __future__ import annotations

import codecs
import gzip
import io
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from lmforge.errors import ENCODING_ERRORS, DataError, not_utf8

DocMode = Literal["line", "blank"]
DOC_MODES: tuple[str, ...] = ("line", "blank")
Progress = Callable[[int], None]  # called with the number of (on-disk) bytes consumed since last call
_HANDLERS = itertools.count()


class _CountingReader(io.RawIOBase):
    """Wraps a binary file and reports bytes read, so progress is in on-disk (compressed) bytes."""

    def __init__(self, raw: BinaryIO, progress: Progress | None) -> None:
        self._raw, self._progress = raw, progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n and self._progress is not None:
            self._progress(n)
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_lines(path: Path, progress: Progress | None, encoding_errors: str | None = None,
                replaced: dict[str, int] | None = None) -> Iterator[str]:
    """Decoded lines (newline stripped) of a text file, transparently gunzipped.

    Bytes that are not UTF-8 stop the read with file:line and the byte offset (``encoding_errors``
    "strict", or None for files that have no other choice, such as task files), or become U+FFFD
    ("replace"), counted per file in ``replaced``: the rule tokenizer training follows too.
    """
    if encoding_errors not in (None, *ENCODING_ERRORS):
        raise DataError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}, got {encoding_errors!r}")
    handler = "strict"
    if encoding_errors == "replace":
        handler = f"lmforge-replace-{next(_HANDLERS)}"  # one per read: it counts into this read's dict
        codecs.register_error(handler, _counting_replace(str(path), replaced if replaced is not None else {}))
    raw = io.BufferedReader(_CountingReader(open(path, "rb"), progress), buffer_size=1 << 20)
    stream: BinaryIO = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw  # type: ignore[assignment]
    try:
        for line in io.TextIOWrapper(stream, encoding="utf-8", errors=handler, newline=None):
            yield line.rstrip("\n")
    except UnicodeDecodeError:
        raise not_utf8(path, offer_replace=encoding_errors is not None) from None
    except (OSError, EOFError) as err:  # truncated / corrupt gzip
        raise DataError(f"{path}: cannot read ({err}); is the file complete?") from err
    finally:
        stream.close()
        raw.close()


def _counting_replace(name: str, counts: dict[str, int]) -> Callable[[UnicodeError], tuple[str, int]]:
    def replace(err: UnicodeError) -> tuple[str, int]:
        start, end = err.start, err.end  # type: ignore[attr-defined]
        counts[name] = counts.get(name, 0) + end - start
        return "\ufffd", end

    return replace


def _kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def read_text(path: Path, *, doc_mode: DocMode = "line", progress: Progress | None = None,
              encoding_errors: str = "strict", replaced: dict[str, int] | None = None) -> Iterator[str]:
    """Documents of a plain-text file. Whitespace-only documents are skipped."""
    if doc_mode == "line":
        for line in _open_lines(path, progress, encoding_errors, replaced):
            if line.strip():
                yield line
        return
    lines: list[str] = []
    for line in _open_lines(path, progress, encoding_errors, replaced):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


def read_jsonl(path: Path, *, progress: Progress | None = None, encoding_errors: str | None = None,
               replaced: dict[str, int] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line of a JSON-lines file (``.gz`` too); a line that is not a
    JSON object is an error naming file:line. Corpora, task files and prompt inputs all read through it."""
    for lineno, line in enumerate(_open_lines(path, progress, encoding_errors, replaced), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg}); jsonl needs one object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl_texts(path: Path, *, text_field: str = "text", progress: Progress | None = None,
                     encoding_errors: str = "strict", replaced: dict[str, int] | None = None) -> Iterator[str]:
    """The ``text_field`` of each JSON object, one object per line. Empty texts are skipped."""
    for lineno, obj in read_jsonl(path, progress=progress, encoding_errors=encoding_errors, replaced=replaced):
        if text_field not in obj:
            raise DataError(f"{path}:{lineno}: no field {text_field!r} (found {sorted(obj)}); "
                            "pass --text-field with the name of the text field")
        text = obj[text_field]
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: field {text_field!r} is {type(text).__name__}, expected a string")
        if text.strip():
            yield text


def read_parquet(path: Path, *, text_field: str = "text", progress: Progress | None = None) -> Iterator[str]:
    """The ``text_field`` column of a parquet file, one record batch in memory at a time."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DataError(f"{path}: reading parquet needs pyarrow; install it with "
                        "`pip install lmforge[parquet]` (or `pip install pyarrow`)") from err
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {text_field!r} (found {pf.schema_arrow.names}); "
                        "pass --text-field with the name of the text column")
    size = path.stat().st_size
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if text and text.strip():
                yield text
        if progress is not None:  # parquet is columnar: report per batch, pro rata
            progress(size * batch.num_rows // max(pf.metadata.num_rows, 1))


def read_hf_dataset(spec: str, *, text_field: str = "text") -> Iterator[str]:
    """``hf:NAME[:CONFIG][@SPLIT]``: a HF ``datasets`` dataset, streamed (split defaults to train)."""
    try:
        import datasets  # optional dependency
    except ImportError as err:
        raise DataError(f"{spec}: reading a HF dataset needs the `datasets` package; "
                        "install it with `pip install lmforge[datasets]`") from err
    body = spec.removeprefix("hf:")
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    ds = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    for row in ds:
        if text_field not in row:
            raise DataError(f"{spec}: no field {text_field!r} (found {sorted(row)}); pass --text-field")
        text = row[text_field]
        if text and text.strip():
            yield text


def read_documents(path: str | Path, *, doc_mode: DocMode = "line", text_field: str = "text",
                   progress: Progress | None = None, encoding_errors: str = "strict",
                   replaced: dict[str, int] | None = None) -> Iterator[str]:
    """Documents of one input, by its suffix (see the module docstring). Text and jsonl files that are
    not UTF-8 fail naming file:line and the byte (``encoding_errors="strict"``) or read the bad bytes as
    U+FFFD (``"replace"``, counted per file in ``replaced``)."""
    if doc_mode not in DOC_MODES:
        raise DataError(f"unknown doc mode {doc_mode!r}; choose one of {', '.join(DOC_MODES)}")
    if isinstance(path, str) and path.startswith("hf:"):
        yield from read_hf_dataset(path, text_field=text_field)
        return
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    kind = _kind(path)
    if kind == "jsonl":
        yield from read_jsonl_texts(path, text_field=text_field, progress=progress, encoding_errors=encoding_errors,
                                    replaced=replaced)
    elif kind == "parquet":
        yield from read_parquet(path, text_field=text_field, progress=progress)
    else:
        yield from read_text(path, doc_mode=doc_mode, progress=progress, encoding_errors=encoding_errors,
                             replaced=replaced)


def iter_documents(paths: Iterable[str | Path], *, doc_mode: DocMode = "line", text_field: str = "text",
                   progress: Progress | None = None, encoding_errors: str = "strict",
                   replaced: dict[str, int] | None = None) -> Iterator[str]:
    """Documents of several inputs, one after the other."""
    for path in paths:
        yield from read_documents(path, doc_mode=doc_mode, text_field=text_field, progress=progress,
                                  encoding_errors=encoding_errors, replaced=replaced)


# --- sentences -------------------------------------------------------------------------------------

# Abbreviations whose period does not end a sentence (lower-cased, without the period).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig no vol pp inc ltd co corp jan feb mar apr jun jul aug "
    "sep sept oct nov dec mt ft approx dept est gen gov lt col sgt capt rev cf al".split()
)
# A sentence ends at . ! ? (possibly repeated, possibly followed by closing quotes / brackets) that is
# followed by whitespace and then something that can open a sentence.
_END = re.compile(r"""[.!?]+['"”’)\]]*(?=\s+['"“‘(\[]?[A-Z0-9À-Þ])""")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``.

    Rules: every line is at least one sentence (corpora with one sentence per line, as BERT's, keep
    theirs); inside a line, a sentence ends at ``.``, ``!`` or ``?`` followed by a space and an upper
    case letter, a digit or an opening quote, unless the word before a ``.`` is a known abbreviation
    or a single letter (initials: "J. R. R. Tolkien"). Spans cover the text without its surrounding
    whitespace and are in order.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        start = pos
        pos += len(line) + 1
        stripped = line.strip()
        if not stripped:
            continue
        offset = start + (len(line) - len(line.lstrip()))
        s = 0
        for m in _END.finditer(stripped):
            if stripped[m.start()] == ".":
                word = stripped[s:m.start()].rsplit(None, 1)[-1].lower() if stripped[s:m.start()].strip() else ""
                word = word.lstrip("(\"'“‘")
                if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
            spans.append((offset + s, offset + m.end()))
            s = m.end()
            while s < len(stripped) and stripped[s].isspace():
                s += 1
        if s < len(stripped):
            spans.append((offset + s, offset + len(stripped)))
    return spans
