"""How each objective cuts the shards into examples: CLM windows, FULL-SENTENCES, NSP / SOP pairs;
and the batch source (pure function of (seed, epoch, index), O(1) seek, rank slices)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from lmforge.data.shards import ShardDataset
from lmforge.errors import ConfigError, DataError
from lmforge.objectives import (OBJECTIVES, BatchSource, CausalLM, MaskedLM, MaskedLMNextSentence,
                                MaskedLMSentenceOrder, MaskingConfig, build_objective)
from lmforge.objectives.base import example_rng
from lmforge.objectives.nsp import truncate_pair


def stream_with_eos(ds: ShardDataset, eos: int) -> np.ndarray:
    return np.concatenate([np.append(ds.document(i).astype(np.int64), eos) for i in range(ds.num_documents)])


def test_clm_windows_are_the_document_stream_with_eos(bert_tok, bert_train) -> None:
    obj = CausalLM(tokenizer=bert_tok, seq_len=100)
    windows = obj.examples(bert_train)
    stream = stream_with_eos(bert_train, bert_tok.sep_token_id)  # WordPiece: [SEP] ends documents
    assert len(windows) == len(stream) // 100
    got = np.concatenate([windows.example(i, seed=0, epoch=0)["input_ids"] for i in range(len(windows))])
    assert np.array_equal(got, stream[:len(got)])
    batch = obj.collate([windows.example(i, seed=0, epoch=0) for i in (3, 9)])
    assert batch["input_ids"].shape == (2, 100) and "attention_mask" not in batch
    assert batch["labels"].equal(batch["input_ids"])


def test_clm_uses_the_eos_token_of_gpt2(gpt2_tok, tmp_path) -> None:
    from lmforge.data.shards import prepare_shards

    p = tmp_path / "c.txt"
    p.write_text("Hello there.\nGeneral Kenobi!\n" * 20)
    prepare_shards([p], tokenizer=gpt2_tok, out=tmp_path / "s", val_fraction=0, progress=False)
    ds = ShardDataset(tmp_path / "s")
    obj = CausalLM(tokenizer=gpt2_tok, seq_len=8)
    assert obj.eos_token_id == 50256
    got = np.concatenate([obj.examples(ds).window(i) for i in range(len(obj.examples(ds)))])
    assert np.array_equal(got, stream_with_eos(ds, 50256)[:len(got)])


def test_full_sentences_packing(bert_tok, bert_train) -> None:
    seq_len = 64
    ex = MaskedLM(tokenizer=bert_tok, seq_len=seq_len).examples(bert_train)
    cls_id, sep_id = bert_tok.cls_token_id, bert_tok.sep_token_id
    starts = set(np.asarray(bert_train.sent_offsets).tolist())
    sent_len = np.diff(bert_train.sent_offsets)
    doc_ends = set(np.asarray(bert_train.doc_offsets[1:]).tolist())
    pieces, crossing, lengths = [], 0, []
    for i, (a, b) in enumerate(ex.ranges.tolist()):
        seq = ex.sequence(i)
        lengths.append(len(seq))
        assert len(seq) <= seq_len and seq[0] == cls_id and seq[-1] == sep_id
        inner_ends = [e for e in range(a + 1, b) if e in doc_ends]
        crossing += bool(inner_ends)
        assert (seq[1:-1] == sep_id).sum() == len(inner_ends)  # one separator between documents
        pieces.append(seq[1:-1][seq[1:-1] != sep_id])
        if a not in starts:  # only a sentence longer than the budget is cut inside
            j = int(np.searchsorted(bert_train.sent_offsets, a, side="right")) - 1
            assert sent_len[j] > seq_len - 2
    # every token appears once, in order: the sequences tile the stream
    assert np.array_equal(np.concatenate(pieces), bert_train.tokens(0, bert_train.num_tokens))
    assert crossing > 100  # sequences do cross document boundaries
    assert np.mean(lengths) > 0.85 * seq_len  # and are packed full


def pair_parts(example) -> tuple[np.ndarray, np.ndarray]:
    """Unmasked A and B of an example (labels restore the masked ids)."""
    ids = np.where(example["labels"] != -100, example["labels"], example["input_ids"])
    types = example["token_type_ids"]
    return ids[1:int((types == 0).sum()) - 1], ids[int((types == 0).sum()):-1]


def test_nsp_examples_format_and_balance(bert_tok, bert_train) -> None:
    obj = MaskedLMNextSentence(tokenizer=bert_tok, seq_len=128)
    ex = obj.examples(bert_train)
    assert obj.head == "pretraining" and obj.masking.mode == "static" and len(ex) == 10 * len(ex.chunks)
    labels = []
    for i in range(0, len(ex), 9):
        e = ex.example(i, seed=1, epoch=0)
        ids, types = e["input_ids"], e["token_type_ids"]
        n_a = int((types == 0).sum())
        assert len(ids) <= 128 and ids[0] == bert_tok.cls_token_id
        assert ids[n_a - 1] == bert_tok.sep_token_id and ids[-1] == bert_tok.sep_token_id
        assert np.array_equal(types, np.r_[np.zeros(n_a), np.ones(len(ids) - n_a)])
        assert (e["labels"][[0, n_a - 1, len(ids) - 1]] == -100).all()
        labels.append(e["next_sentence_label"])
    assert len(labels) > 5000
    assert abs(np.mean(labels) - 0.5) <= 0.02


def test_nsp_positive_is_the_true_continuation(bert_tok, bert_train) -> None:
    ex = MaskedLMNextSentence(tokenizer=bert_tok, seq_len=512).examples(bert_train)
    positives = negatives = 0
    for chunk in range(0, len(ex.chunks), 5):
        d, s0, s1, _ = ex.chunks[chunk].tolist()
        run = ex._run(s0, s1)
        a, b, label = ex.segments(chunk, example_rng(0, 0, chunk, 1))
        assert run[:len(a)] == a  # A is always the start of the chunk
        if label == 0:
            assert a + b == run
            positives += 1
        else:
            assert a + b != run
            negatives += 1
    assert positives > 100 and negatives > 100


def test_sop_negative_is_exactly_the_swapped_pair(bert_tok, bert_train) -> None:
    obj = MaskedLMSentenceOrder(tokenizer=bert_tok, seq_len=512)
    ex = obj.examples(bert_train)
    labels, checked = [], 0
    for i in range(0, len(ex), 9):
        e = ex.example(i, seed=3, epoch=0)
        first, second = pair_parts(e)
        d, s0, s1, _ = ex.chunks[i % len(ex.chunks)].tolist()
        run = ex._run(s0, s1)
        label = e["next_sentence_label"]
        labels.append(label)
        if len(first) + len(second) == len(run):  # not truncated: the pair tiles the chunk exactly
            ordered = np.r_[second, first] if label == 1 else np.r_[first, second]
            assert ordered.tolist() == run
            checked += 1
    assert checked > 1000
    assert abs(np.mean(labels) - 0.5) <= 0.02


def test_truncate_pair_cuts_the_longer_side() -> None:
    rng = np.random.default_rng(0)
    a, b = list(range(10)), list(range(100, 103))
    ta, tb = truncate_pair(a, b, 8, rng)
    assert tb == b and len(ta) == 5 and " ".join(map(str, ta)) in " ".join(map(str, a))
    ta, tb = truncate_pair(list(range(6)), list(range(100, 106)), 6, rng)
    assert len(ta) == len(tb) == 3


def test_examples_are_pure_functions_and_seek_is_exact(bert_tok, bert_train) -> None:
    for name in OBJECTIVES:
        obj = build_objective(name, tokenizer=bert_tok, seq_len=64)
        src = BatchSource(obj, bert_train, batch_size=4, seed=11)
        replay = src.iterate(epoch=0, step=0)
        for _ in range(3):
            next(replay)
        epoch, step, batch = next(replay)
        fresh = BatchSource(obj, pickle.loads(pickle.dumps(bert_train)), batch_size=4, seed=11)
        again = fresh.batch(epoch=0, step=3)  # a resumed run: seek, no replay
        assert (epoch, step) == (0, 3) and batch.keys() == again.keys()
        assert all(batch[k].equal(again[k]) for k in batch), name
        other_seed = BatchSource(obj, bert_train, batch_size=4, seed=12).batch(0, 3)
        assert not other_seed["input_ids"].equal(batch["input_ids"]) or other_seed["input_ids"].shape != batch["input_ids"].shape


def test_ranks_split_the_global_batch(bert_tok, bert_train) -> None:
    obj = build_objective("mlm+sop", tokenizer=bert_tok, seq_len=64)
    whole = BatchSource(obj, bert_train, batch_size=8, seed=5)
    parts = [BatchSource(obj, bert_train, batch_size=4, seed=5, rank=r, world_size=2) for r in range(2)]
    assert whole.steps_per_epoch == parts[0].steps_per_epoch
    ids = np.concatenate([p.example_ids(2, 17) for p in parts])
    assert np.array_equal(ids, whole.example_ids(2, 17))


def test_iterate_rolls_over_epochs(bert_tok, bert_train) -> None:
    src = BatchSource(build_objective("clm", tokenizer=bert_tok, seq_len=1024), bert_train, batch_size=64)
    positions = [(e, s) for (e, s, _), _ in zip(src.iterate(epoch=0, step=src.steps_per_epoch - 1), range(3))]
    assert positions == [(0, src.steps_per_epoch - 1), (1, 0), (1, 1)]


def test_bad_objective_inputs(bert_tok, gpt2_tok, bert_train, tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown objective 'mlm-nsp'.*Did you mean: mlm\\+nsp"):
        build_objective("mlm-nsp", tokenizer=bert_tok, seq_len=64)
    with pytest.raises(DataError, match="fewer than one global batch"):
        BatchSource(build_objective("clm", tokenizer=bert_tok, seq_len=4096), bert_train, batch_size=512)
    with pytest.raises(ConfigError, match="mask token"):
        MaskedLM(tokenizer=gpt2_tok, seq_len=64)
    with pytest.raises(ConfigError, match="masking options apply to the mlm"):
        build_objective("clm", tokenizer=bert_tok, seq_len=64, masking=MaskingConfig())
    from lmforge.data.shards import prepare_shards

    p = tmp_path / "one-sentence-docs.txt"
    p.write_text("just one line\nand another\n")
    prepare_shards([p], tokenizer=bert_tok, out=tmp_path / "s", val_fraction=0, progress=False)
    with pytest.raises(DataError, match="at least two sentences.*--doc-mode blank"):
        MaskedLMNextSentence(tokenizer=bert_tok, seq_len=64).examples(ShardDataset(tmp_path / "s"))


def test_drop_last_false_keeps_the_partial_batch(bert_tok, bert_train) -> None:
    obj = build_objective("clm", tokenizer=bert_tok, seq_len=1000)
    full = BatchSource(obj, bert_train, batch_size=7, shuffle=False)
    keep = BatchSource(obj, bert_train, batch_size=7, shuffle=False, drop_last=False)
    n = full.examples_per_epoch
    assert n % 7 and full.steps_per_epoch == n // 7 and keep.steps_per_epoch == n // 7 + 1
    assert keep.batch(0, keep.steps_per_epoch - 1)["input_ids"].shape[0] == n % 7
    seen = np.concatenate([keep.example_ids(0, s) for s in range(keep.steps_per_epoch)])
    assert np.array_equal(seen, np.arange(n))  # every example once, in order
