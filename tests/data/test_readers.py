"""Corpus readers: txt (line / blank documents), .gz, jsonl, parquet; errors; the sentence splitter."""
from __future__ import annotations

import gzip
import json
import sys

import pytest

from lmforge.data.readers import iter_documents, read_documents, split_sentences
from lmforge.errors import DataError

TEXT = "First doc line one.\nsecond line of it\n\n\n  \nSecond doc.\n\nThird doc, last\n"


def test_text_line_and_blank_modes(tmp_path) -> None:
    p = tmp_path / "c.txt"
    p.write_text(TEXT)
    assert list(read_documents(p, doc_mode="line")) == [
        "First doc line one.", "second line of it", "Second doc.", "Third doc, last"]
    assert list(read_documents(p, doc_mode="blank")) == [
        "First doc line one.\nsecond line of it", "Second doc.", "Third doc, last"]


def test_gzip_reads_like_plain_text_and_progress_counts_disk_bytes(tmp_path) -> None:
    plain, packed = tmp_path / "c.txt", tmp_path / "c.txt.gz"
    plain.write_text(TEXT * 50)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    seen: list[int] = []
    docs_gz = list(read_documents(packed, doc_mode="blank", progress=seen.append))
    assert docs_gz == list(read_documents(plain, doc_mode="blank"))
    assert sum(seen) == packed.stat().st_size  # progress is in on-disk (compressed) bytes


def test_jsonl_text_field_and_errors(tmp_path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in [{"text": "a b", "id": 1}, {"text": "  "}, {"text": "c"}]) + "\n")
    assert list(read_documents(p)) == ["a b", "c"]
    q = tmp_path / "d.jsonl.gz"
    q.write_bytes(gzip.compress(b'{"body": "x y"}\n{"body": "z"}\n'))
    assert list(read_documents(q, text_field="body")) == ["x y", "z"]
    with pytest.raises(DataError, match=r"no field 'text' \(found \['body'\]\).*--text-field"):
        list(read_documents(q))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        list(read_documents(bad))


def test_parquet_column(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": ["doc one", "", "doc two", None], "n": [1, 2, 3, 4]}), p, row_group_size=2)
    assert list(read_documents(p, text_field="content")) == ["doc one", "doc two"]
    with pytest.raises(DataError, match=r"no column 'text'"):
        list(read_documents(p))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch) -> None:
    p = tmp_path / "c.parquet"
    p.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match="pip install"):
        list(read_documents(p))


def test_missing_file_and_bad_mode(tmp_path) -> None:
    with pytest.raises(DataError, match="input file not found"):
        list(iter_documents([tmp_path / "nope.txt"]))
    with pytest.raises(DataError, match="unknown doc mode"):
        list(read_documents(tmp_path / "x.txt", doc_mode="para"))  # type: ignore[arg-type]


def test_non_utf8_text_is_a_data_error(tmp_path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        list(read_documents(p))


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello world. This is Mr. Smith. He said \"Hi!\" Then left.",
     ["Hello world.", "This is Mr. Smith.", "He said \"Hi!\"", "Then left."]),
    ("J. R. R. Tolkien wrote it. Did he? 3 books, e.g. this one.",
     ["J. R. R. Tolkien wrote it.", "Did he?", "3 books, e.g. this one."]),
    ("First Citizen:\nBefore we proceed any further, hear me speak.",
     ["First Citizen:", "Before we proceed any further, hear me speak."]),
    ("pi is 3.14 and e is 2.71. ok", ["pi is 3.14 and e is 2.71. ok"]),
    ("", []),
])
def test_split_sentences(text: str, expected: list[str]) -> None:
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == expected
    assert all(a < b for a, b in spans) and all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
