"""MLM + sentence-order prediction (ALBERT). ``OBJECTIVES["mlm+sop"]``.

A and B are always two consecutive runs of sentences of one document (a chunk split at a random
sentence boundary, as for NSP); with probability 0.5 they are swapped (label 1). The pair is
truncated before the swap, so a negative is exactly its positive with the segments exchanged:
``[CLS] B [SEP] A [SEP]``. Masking defaults to ALBERT's n-gram masking of whole words (mlm.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lmforge.objectives.mlm import MaskingConfig
from lmforge.objectives.nsp import MaskedLMNextSentence, _PairExamples, truncate_pair


class _SentenceOrderExamples(_PairExamples):
    def segments(self, chunk: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        """(A, B, swap): consecutive segments; swapping happens in ``pair`` after truncation."""
        _, s0, s1, _ = (int(x) for x in self.chunks[chunk])
        a_end = int(rng.integers(s0 + 1, s1))
        swap = int(rng.random() < 0.5)
        return self._run(s0, a_end), self._run(a_end, s1), swap

    def pair(self, chunk: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        a, b, swap = self.segments(chunk, rng)
        a, b = truncate_pair(a, b, self.max_num_tokens, rng)
        return (b, a, 1) if swap else (a, b, 0)


class MaskedLMSentenceOrder(MaskedLMNextSentence):
    """ALBERT pre-training: MLM + sentence-order prediction, the "pretraining" head."""

    name = "mlm+sop"
    pair_name = "sop"
    # ALBERT's masking: n-grams of whole words, n <= 3 with p(n) ~ 1/n (google-research/albert
    # create_pretraining_data.py: --ngram 3, --do_whole_word_mask True), static copies as BERT
    default_masking = MaskingConfig(mode="static", dupe_factor=10, whole_word=True, max_ngram=3)

    def examples(self, dataset: Any) -> _SentenceOrderExamples:
        return _SentenceOrderExamples(dataset, self)
