"""Token shards: exact round trip, dtype choice, sentence index, val split, no-op re-run, bounded
memory (chunked), tokenizer hash check, bad input."""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

import tokfixtures
from lmforge.data.readers import read_documents
from lmforge.data.shards import ShardDataset, prepare_shards, tokenizer_hash
from lmforge.errors import DataError


@pytest.fixture(scope="module")
def shakespeare(refdata, tmp_path_factory):
    """The first 6,000 lines of tiny-shakespeare (blank-line separated speeches)."""
    lines = (refdata / "text" / "tinyshakespeare.txt").read_text().splitlines()[:6000]
    p = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    p.write_text("\n".join(lines) + "\n")
    return p


def all_documents(directory) -> list[np.ndarray]:
    """Documents of train and val merged back into input order (val is every 1/f-th document)."""
    train, val = ShardDataset(directory, "train"), ShardDataset(directory, "val")
    return [train.document(i) for i in range(train.num_documents)], [val.document(i) for i in range(val.num_documents)]


def test_round_trip_is_exactly_the_tokenizer_output(shakespeare, bert_tok, tmp_path) -> None:
    res = prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "s", doc_mode="blank",
                         val_fraction=0.0, progress=False)
    docs = list(read_documents(shakespeare, doc_mode="blank"))
    ds = ShardDataset(tmp_path / "s", "train", tokenizer=bert_tok)
    assert ds.num_documents == len(docs) > 1000
    expected = [e.ids for e in bert_tok.backend.encode_batch(docs, add_special_tokens=False)]
    for i in (0, 1, 7, len(docs) // 2, len(docs) - 1):
        assert ds.document(i).tolist() == expected[i]
        assert bert_tok.decode(ds.document(i)) == bert_tok.decode(expected[i])
    flat = np.concatenate([np.asarray(e, np.int64) for e in expected])
    assert ds.num_tokens == len(flat) == res.meta["splits"]["train"]["tokens"]
    assert np.array_equal(ds.tokens(0, ds.num_tokens), flat)
    assert ds.dtype == np.uint16 and res.meta["dtype"] == "uint16"
    assert res.meta["tokenizer_hash"] == tokenizer_hash(bert_tok)
    assert (tmp_path / "s" / "tokenizer" / "tokenizer.json").is_file()


def test_sentences_tile_documents(shakespeare, bert_tok, tmp_path) -> None:
    prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "s", doc_mode="blank",
                   val_fraction=0.0, progress=False)
    ds = ShardDataset(tmp_path / "s")
    assert ds.num_sentences > ds.num_documents
    starts = ds.sent_offsets[ds.doc_sent_offsets[:-1]]
    assert np.array_equal(starts, ds.doc_offsets[:-1])  # each document starts with its first sentence
    assert ds.sent_offsets[-1] == ds.num_tokens and np.all(np.diff(ds.sent_offsets) > 0)
    sents = ds.document_sentences(0)  # "First Citizen:" / "Before we proceed any further, hear me speak."
    assert [bert_tok.decode(ds.sentence(j)) for j in sents] == [
        "first citizen :", "before we proceed any further, hear me speak."]


def test_sentence_cuts_with_byte_level_bpe(gpt2_tok, tmp_path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("Hello world. This is it! And \"so\" on.\nOne sentence only\n")
    prepare_shards([p], tokenizer=gpt2_tok, out=tmp_path / "s", val_fraction=0.0, progress=False)
    ds = ShardDataset(tmp_path / "s")
    sents = [gpt2_tok.decode(ds.sentence(j)) for j in ds.document_sentences(0)]
    assert sents == ["Hello world.", " This is it!", " And \"so\" on."]  # the space belongs to "ĠThis"
    assert len(ds.document_sentences(1)) == 1


def test_uint32_when_vocab_exceeds_65536(tmp_path) -> None:
    tok = tokfixtures.big_vocab_tokenizer(70_000)
    p = tmp_path / "c.txt"
    p.write_text("w1 w65535 w65536 w69998\nw3 w70001\n")
    res = prepare_shards([p], tokenizer=tok, out=tmp_path / "s", val_fraction=0.0, progress=False)
    ds = ShardDataset(tmp_path / "s")
    assert res.meta["dtype"] == "uint32" and ds.dtype == np.uint32
    assert ds.document(0).tolist() == [2, 65536, 65537, 69999] and ds.document(1).tolist() == [4, 0]


def test_validation_split_by_document(shakespeare, bert_tok, tmp_path) -> None:
    prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "s", doc_mode="blank",
                   val_fraction=0.1, progress=False)
    docs = list(read_documents(shakespeare, doc_mode="blank"))
    expected = [e.ids for e in bert_tok.backend.encode_batch(docs, add_special_tokens=False)]
    train, val = all_documents(tmp_path / "s")
    assert len(train) + len(val) == len(docs)
    assert len(val) == len(docs) // 10  # exactly one document in ten
    assert [d.tolist() for d in val] == expected[9::10]
    assert [d.tolist() for d in train] == [e for i, e in enumerate(expected) if i % 10 != 9]


def test_rerun_is_a_noop_until_inputs_change(shakespeare, bert_tok, tmp_path) -> None:
    out = tmp_path / "s"
    first = prepare_shards([shakespeare], tokenizer=bert_tok, out=out, progress=False)
    stamp = (out / "meta.json").stat().st_mtime_ns
    again = prepare_shards([shakespeare], tokenizer=bert_tok, out=out, progress=False)
    assert not first.up_to_date and again.up_to_date and again.chunks == 0
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    # other settings, or a touched input, rebuild
    changed = prepare_shards([shakespeare], tokenizer=bert_tok, out=out, val_fraction=0.2, progress=False)
    assert not changed.up_to_date and changed.replaced and not first.replaced
    os.utime(shakespeare, ns=(stamp, stamp + 10**9))
    assert not prepare_shards([shakespeare], tokenizer=bert_tok, out=out, val_fraction=0.2, progress=False).up_to_date
    # a damaged shard directory is rebuilt, not trusted
    (out / "train" / "docs.bin").write_bytes(b"")
    assert not prepare_shards([shakespeare], tokenizer=bert_tok, out=out, val_fraction=0.2, progress=False).up_to_date


def test_small_chunks_and_small_shard_files_give_identical_data(shakespeare, bert_tok, tmp_path) -> None:
    big = prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "big", doc_mode="blank", progress=False)
    small = prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "small", doc_mode="blank",
                           chunk_bytes=2_000, shard_tokens=10_000, progress=False)
    assert big.chunks == 1 and small.chunks > 50  # flushed per chunk: memory bounded by the chunk
    assert len(small.meta["splits"]["train"]["shards"]) >= 5
    for split in ("train", "val"):
        a, b = ShardDataset(tmp_path / "big", split), ShardDataset(tmp_path / "small", split)
        assert np.array_equal(a.tokens(0, a.num_tokens), b.tokens(0, b.num_tokens))
        for name in ("doc_offsets", "sent_offsets", "doc_sent_offsets"):
            assert np.array_equal(getattr(a, name), getattr(b, name))
    # ranges that straddle shard-file boundaries
    a, b = ShardDataset(tmp_path / "big"), ShardDataset(tmp_path / "small")
    assert np.array_equal(a.tokens(9_990, 30_011), b.tokens(9_990, 30_011))
    assert np.array_equal(a.tokens(19_999, 20_001), b.tokens(19_999, 20_001))


def test_memory_stays_bounded_by_the_chunk(shakespeare, bert_tok, tmp_path) -> None:
    """Peak Python memory does not grow with the corpus: 4x the text, same peak (chunked streaming)."""
    text = shakespeare.read_text()[:60_000]
    peaks = []
    for k in (1, 4):
        corpus = tmp_path / f"c{k}.txt"
        corpus.write_text(text * k)
        tracemalloc.start()
        try:
            prepare_shards([corpus], tokenizer=bert_tok, out=tmp_path / f"s{k}", chunk_bytes=8_000, progress=False)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.1 + 100_000, f"peak Python memory {peaks} for 1x / 4x the corpus"


def test_tokenizer_hash_mismatch_is_a_data_error(shakespeare, bert_tok, gpt2_tok, tmp_path) -> None:
    prepare_shards([shakespeare], tokenizer=bert_tok, out=tmp_path / "s", progress=False)
    with pytest.raises(DataError, match="different tokenizer.*re-run `lmforge prepare`"):
        ShardDataset(tmp_path / "s", "train", tokenizer=gpt2_tok)
    ShardDataset(tmp_path / "s", "train").verify_tokenizer(bert_tok)  # the right one passes


def test_bad_inputs(bert_tok, tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    with pytest.raises(DataError, match="corpus is empty"):
        prepare_shards([empty], tokenizer=bert_tok, out=tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.tmp-*"))
    with pytest.raises(DataError, match="input file not found"):
        prepare_shards([tmp_path / "missing.txt"], tokenizer=bert_tok, out=tmp_path / "s", progress=False)
    with pytest.raises(DataError, match="no input files"):
        prepare_shards([], tokenizer=bert_tok, out=tmp_path / "s", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    one = tmp_path / "one.txt"
    one.write_text("hello\n")
    with pytest.raises(DataError, match="not an lmforge shard directory"):
        prepare_shards([one], tokenizer=bert_tok, out=busy, progress=False)
    with pytest.raises(DataError, match="not a shard directory"):
        ShardDataset(tmp_path / "nothing")
    prepare_shards([one], tokenizer=bert_tok, out=tmp_path / "s1", val_fraction=0.1, progress=False)
    with pytest.raises(DataError, match="'val' split is empty.*--val-fraction"):
        ShardDataset(tmp_path / "s1", "val")
