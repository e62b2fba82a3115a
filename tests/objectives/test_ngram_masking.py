"""ALBERT n-gram masking (MaskingConfig.max_ngram): span lengths follow p(n) ~ 1/n, spans are whole words that
never cross a special token, 15% of tokens are still selected and 80 / 10 / 10 still holds."""
from __future__ import annotations

import numpy as np
import pytest

from lmforge.errors import ConfigError
from lmforge.objectives import build_objective
from lmforge.objectives.mlm import Masker, MaskingConfig

V, MASK, SEP = 1000, 3, 2  # ids 0..4 are special


def _masker(**kw) -> Masker:
    cont = np.zeros(V, dtype=bool)
    cont[500:] = True  # ids >= 500 continue the word before them (like "##x")
    return Masker(config=MaskingConfig(**kw), vocab_size=V, special_ids=[0, 1, 2, 3, 4], mask_token_id=MASK,
                  continuation=cont if kw.get("whole_word") else None)


def test_span_lengths_follow_one_over_n():
    # a long sequence at a low rate: spans rarely meet, so the accepted lengths are ALBERT's proposal
    # p(n) = (1, 1/2, 1/3) / (11/6) = 54.5% / 27.3% / 18.2%
    m = _masker(max_ngram=3, mask_prob=0.02)
    rng = np.random.default_rng(0)
    spans: list[int] = []
    for _ in range(40):
        ids = rng.integers(5, 500, size=20000)
        spans += m.select_spans(ids, rng)[1]
    counts = np.bincount(spans, minlength=4)[1:]
    n = counts.sum()
    expected = np.array([6, 3, 2]) / 11
    # 4.5 binomial standard deviations from the sample size, plus 1% for the few spans that meet
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / n) + 0.01
    assert n > 5000
    assert np.all(np.abs(counts / n - expected) < tolerance), (counts / n, expected, tolerance)


def test_spans_are_whole_words_and_stop_at_special_tokens():
    m = _masker(max_ngram=3, whole_word=True, mask_prob=0.3)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids = rng.integers(5, 1000, size=200)
        ids[rng.choice(200, 6, replace=False)] = SEP
        ids[0] = 1
        chosen, spans = m.select_spans(ids, rng)
        picked = np.zeros(200, dtype=bool)
        picked[chosen] = True
        assert not picked[ids == SEP].any() and not picked[0]
        # a chosen continuation piece always has its word's previous piece chosen too
        cont = (ids >= 500) & (np.concatenate([[1], ids[:-1]]) >= 5)
        assert np.all(picked[1:][cont[1:] & picked[1:]] == picked[:-1][cont[1:] & picked[1:]])
        assert all(1 <= s <= 3 for s in spans)


def test_rate_and_80_10_10_still_hold():
    m = _masker(max_ngram=3, whole_word=True)
    rng = np.random.default_rng(2)
    selected = candidates = n_mask = n_random = n_keep = 0
    for _ in range(200):
        ids = rng.integers(5, 1000, size=256)
        masked, labels = m(ids, rng)
        sel = labels != -100
        selected += sel.sum()
        candidates += len(ids)
        n_mask += (masked[sel] == MASK).sum()
        n_keep += (masked[sel] == ids[sel]).sum()
        n_random += ((masked[sel] != MASK) & (masked[sel] != ids[sel])).sum()
    # whole words that overshoot k are skipped, so the rate sits a little under 15%
    assert 0.13 < selected / candidates <= 0.15
    for got, p in ((n_mask, 0.8), (n_random, 0.1 * (1 - 1 / 995)), (n_keep, 0.1 + 0.1 / 995)):
        assert abs(got / selected - p) < 4.5 * np.sqrt(p * (1 - p) / selected)


def test_max_ngram_one_is_bert_masking_bit_for_bit():
    a, b = _masker(), _masker(max_ngram=1)
    ids = np.random.default_rng(3).integers(5, 1000, size=300)
    out_a, out_b = a(ids, np.random.default_rng(4)), b(ids, np.random.default_rng(4))
    assert all(np.array_equal(x, y) for x, y in zip(out_a, out_b))


def test_bad_ngram_is_one_clear_error():
    with pytest.raises(ConfigError, match="--ngram"):
        MaskingConfig(max_ngram=0)


def test_mlm_sop_defaults_to_albert_ngram_masking(bert_tok):
    obj = build_objective("mlm+sop", tokenizer=bert_tok, seq_len=64)
    assert (obj.masking.max_ngram, obj.masking.whole_word, obj.masking.mode) == (3, True, "static")
    assert build_objective("mlm+nsp", tokenizer=bert_tok, seq_len=64).masking.max_ngram == 1
